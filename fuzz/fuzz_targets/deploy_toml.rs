//! deploy.toml parser and validator: never panics, and every error points
//! inside the document.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = bifrost_core::config::parse(text) {
            assert!(!errors.is_empty());
            let lines = text.split('\n').count() as u32;
            for e in errors {
                assert!(e.line >= 1 && e.line <= lines + 1, "{e}");
                assert!(e.column >= 1);
            }
        }
    }
});
