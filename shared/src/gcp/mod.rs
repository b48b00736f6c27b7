//! The GCP home's adapters, behind the same ports as the embedded ones and
//! tested against Google's own emulators where one runs here; where none
//! can run (GKE, Cloud Build), checked by the exact objects they send.

#[cfg(feature = "gcp")]
pub mod cloud_build;
#[cfg(feature = "gcp")]
pub mod emulator;
#[cfg(feature = "gcp")]
pub mod firestore;
#[cfg(feature = "gke")]
pub mod gke;
#[cfg(feature = "gcp")]
pub mod gke_runtime;
#[cfg(feature = "gcp")]
pub mod pubsub;
#[cfg(feature = "gcp")]
pub mod storage;

#[cfg(feature = "gcp")]
pub use self::firestore::{FirestoreConfig, FirestoreStore};
