//! The health sidecar as a library: what `bifrost-sidecar` runs, and the
//! generated gRPC types the platform's ingest serves.
//!
//! - [`procstat`] — the app's CPU %, RSS, threads and open fds from /proc.
//! - [`probe`] — TCP connect and HTTP GET of the health path, with latency.
//! - [`buffer`] — reports not yet acknowledged, bounded (oldest dropped).
//! - [`stream`] — the reporting loop: probe, read, send, reconnect.

pub mod buffer;
pub mod probe;
pub mod procstat;
pub mod stream;

pub use bifrost_sidecar_proto as proto;
