//! GitHub webhook body parsing: never panics on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bifrost_gateway::webhook::parse_payload(data);
});
