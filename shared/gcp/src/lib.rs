//! The GCP home's adapters, behind the same ports as the embedded ones and
//! tested against Google's own emulators where one runs here; where none
//! can run (GKE, Cloud Build, BigQuery), checked by the exact objects they send.
//!
//! Without the `clients` feature only [`gke`] manifest rendering is built
//! (the CLI's `bifrost render --target gke`).

#[cfg(feature = "clients")]
pub mod bigquery;
#[cfg(feature = "clients")]
pub mod cloud_build;
#[cfg(feature = "clients")]
pub mod firestore;
pub mod gke;
pub mod gke_router;
#[cfg(feature = "clients")]
pub mod gke_runtime;
#[cfg(feature = "clients")]
pub mod pubsub;
#[cfg(feature = "clients")]
pub mod storage;

#[cfg(feature = "clients")]
pub use self::firestore::{FirestoreConfig, FirestoreStore};
