//! The sidecar's gRPC contract, generated from
//! `bifrost/sidecar/v1/sidecar.proto`. The platform's ingest needs
//! these types, not the sidecar, so they live in their own small crate.
//!
//! *Boundary*: fields are only ever added (new numbers); sidecars of an
//! older release keep reporting to a newer platform.

#[allow(clippy::all, rust_2018_idioms)]
mod generated {
    tonic::include_proto!("bifrost.sidecar.v1");
}

pub use generated::*;
