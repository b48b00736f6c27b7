//! Bifrost's core: the one transition table, the domain, deploy.toml (and
//! the build plans a checkout implies), events, the ports every home
//! implements, and auth. Every home and every function builds on it.
//!
//! *Invariant*: no I/O crate is in this crate's tree (no SQLite, HTTP,
//! gRPC, Google or Kubernetes client, no tokio net or fs): it decides,
//! adapters do. It builds for wasm (the dashboard) and the sidecar.

pub mod analytics;
pub mod audit;
pub mod auth;
pub mod config;
pub mod decide;
pub mod domain;
pub mod error;
pub mod events;
pub mod policies;
pub mod ports;
pub mod repo;
pub mod routes;
pub mod scripts;
pub mod seal;
pub mod status;

pub use domain::{Actor, Deployment, Project, Role, Source};
pub use error::{StoreError, StoreResult};
pub use events::{Event, Outcome, PushEnvelope, Subscription};
pub use status::Status;
