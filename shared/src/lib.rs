//! Bifrost's core: the domain, the one transition table, deploy.toml, events
//! and the ports every home implements. The embedded adapters (SQLite store,
//! outbox dispatcher, git sources) sit behind the `embedded` feature so the
//! wasm dashboard and the sidecar never compile them.
//!
//! The GCP adapters (Firestore store, ...) sit behind the `gcp` feature.
//!
//! *Invariant*: the domain knows nothing of HTTP, and nothing of GCP beyond
//! the shape of a Pub/Sub push envelope; only `gcp/` talks to Google.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod ports;
pub mod repo;
pub mod seal;
pub mod status;

#[cfg(feature = "embedded")]
pub mod embedded;

#[cfg(any(feature = "gcp", feature = "gke"))]
pub mod gcp;

pub use domain::{Actor, Deployment, Project, Role, Source};
pub use error::{StoreError, StoreResult};
pub use events::{Event, Outcome, PushEnvelope, Subscription};
pub use status::Status;

/// The store contract suite, shared by every store's tests.
#[cfg(feature = "contract")]
pub mod contract;
