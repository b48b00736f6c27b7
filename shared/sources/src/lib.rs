//! Source trees for builds, in either home: a git checkout of a commit, or
//! an uploaded archive, unpacked only after [`archive::check`] passed.
//! Both builders (local and Cloud Build) read checkouts through it, so the
//! GCP functions need neither SQLite nor the process runtime.

pub mod archive;
mod git;

pub use git::{GitSources, MAX_READ_BYTES};
