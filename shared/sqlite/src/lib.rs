//! The embedded home's store: SQLite (one file, WAL), the outbox written
//! in the same transaction as each state change, and the dispatcher that
//! delivers it to the functions.

mod dispatcher;
mod store;

pub use dispatcher::{DeliveryObserver, Dispatcher, DispatcherConfig, Duplicates};
pub use store::{DueDelivery, SqliteStore};
