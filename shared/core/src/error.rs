//! The store layer's one error enum.

use crate::status::Status;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id:?} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    /// The transition table forbids `from → to`.
    #[error("transition {from} → {to} is not allowed")]
    InvalidTransition { from: Status, to: Status },
    /// Compare-and-set lost: the deployment moved on since it was read.
    #[error(
        "deployment {id} is {actual} (version {actual_version}), not {expected}{}",
        expected_version.map(|v| format!(" (version {v})")).unwrap_or_default()
    )]
    Conflict { id: String, expected: Status, actual: Status, expected_version: Option<u64>, actual_version: u64 },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl StoreError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound { kind, id: id.into() }
    }
}
