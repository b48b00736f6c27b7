//! Test infrastructure, never shipped: the store contract suite every store
//! runs, the launcher for Google's emulators (and the storage one), and
//! golden files that only `cargo xtask bless` rewrites, and a known history
//! analytics runs are checked against.

pub mod contract;
pub mod emulator;
pub mod golden;
pub mod history;
