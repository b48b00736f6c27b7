//! The GCP home's adapters, behind the same ports as the embedded ones and
//! tested against Google's own emulators where one runs here.

pub mod firestore;

pub use self::firestore::{FirestoreConfig, FirestoreStore};
pub mod emulator;
