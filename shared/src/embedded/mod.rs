//! The embedded home: everything `bifrost up` needs on one machine.

mod dispatcher;
mod sources;
mod store;

pub use crate::ports::PushHandler;
pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use sources::{GitSources, MAX_READ_BYTES};
pub use store::{DueDelivery, SqliteStore};
