//! The embedded home's builder and runtime: builds and replicas run as
//! processes in the sandbox (own uid, Landlock, cgroups, allow-listed
//! environment) under a supervisor that ends their whole tree.

mod blobs;
pub(crate) mod builder;
pub mod host;
pub mod process;
mod runtime;
pub mod sandbox;

pub use blobs::DirBlobs;
pub use builder::{LocalBuilder, strip_ansi};
pub use runtime::{ProcessRuntime, RuntimeEvent, SidecarLauncher};
