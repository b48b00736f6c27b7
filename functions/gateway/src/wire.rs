//! The REST API's wire types live in `bifrost-api` (shared with the CLI
//! and the dashboard); the gateway builds them from the domain.

pub use bifrost_api::*;
