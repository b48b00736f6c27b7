//! The embedded home: everything `bifrost up` needs on one machine.

pub mod archive;
pub(crate) mod builder;
mod dispatcher;
mod logs;
pub mod process;
mod runtime;
pub mod sandbox;
pub(crate) mod sources;
mod store;

pub use crate::ports::PushHandler;
pub use builder::{LocalBuilder, strip_ansi};
pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use logs::{LogLimits, LogWriter};
pub use runtime::{ProcessRuntime, RuntimeEvent, SidecarLauncher};
pub use sources::{GitSources, MAX_READ_BYTES};
pub use store::{DueDelivery, SqliteStore};
