//! One module per page; each holds the server functions its page calls.

pub mod audit;
pub mod dead;
pub mod deployment;
pub mod login;
pub mod policies;
pub mod project;
pub mod projects;
pub mod report;
pub mod rollout;

/// Milliseconds since the Unix epoch, on either side.
pub fn now_ms() -> i64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now() as i64
    }
    #[cfg(not(feature = "hydrate"))]
    {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}
