//! The deployment lifecycle: one closed enum and the one transition table.
//!
//! Every store (SQLite, Firestore) asks [`allowed`] before it writes a status,
//! and the SQLite store also installs [`TRANSITIONS`] as a trigger guard. No
//! other code decides what is allowed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a deployment is in its lifecycle.
///
/// The seed's sequence is `queued → validating → building → built → deploying
/// → running → healthy`. Three terminal states end it: `failed` (retryable),
/// `cancelled` (a user stopped it; retryable) and `superseded` (a newer
/// deployment of the same project replaced it; final).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Validating,
    Building,
    Built,
    Deploying,
    Running,
    Healthy,
    Failed,
    Cancelled,
    Superseded,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Queued,
        Status::Validating,
        Status::Building,
        Status::Built,
        Status::Deploying,
        Status::Running,
        Status::Healthy,
        Status::Failed,
        Status::Cancelled,
        Status::Superseded,
    ];

    /// The happy path, in order.
    pub const PIPELINE: [Status; 7] = [
        Status::Queued,
        Status::Validating,
        Status::Building,
        Status::Built,
        Status::Deploying,
        Status::Running,
        Status::Healthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Validating => "validating",
            Status::Building => "building",
            Status::Built => "built",
            Status::Deploying => "deploying",
            Status::Running => "running",
            Status::Healthy => "healthy",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Superseded => "superseded",
        }
    }

    /// Terminal states end a deployment's run; only `failed` and `cancelled`
    /// can be retried (back to `queued`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Failed | Status::Cancelled | Status::Superseded)
    }

    /// In flight: not terminal and not yet serving (`healthy` is live, not in flight).
    pub fn is_in_flight(self) -> bool {
        !self.is_terminal() && self != Status::Healthy
    }

    /// The next state on the happy path, if any.
    pub fn next(self) -> Option<Status> {
        let i = Status::PIPELINE.iter().position(|s| *s == self)?;
        Status::PIPELINE.get(i + 1).copied()
    }

    /// The name of the event published when a deployment enters this state.
    pub fn event_type(self) -> String {
        format!("deployment.{}", self.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown status {0:?} (expected one of queued, validating, building, built, deploying, running, healthy, failed, cancelled, superseded)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// Why a transition is allowed: the kind is recorded in the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransitionKind {
    /// One step along the pipeline.
    Advance,
    /// Any non-terminal state may fail.
    Fail,
    /// A user stopped it.
    Cancel,
    /// A newer deployment of the project replaced it.
    Supersede,
    /// `failed`/`cancelled` → `queued`, attempt + 1.
    Retry,
}

/// The one transition table, as data. Built at compile time from the rules
/// above so the SQLite trigger, the Firestore adapter and the property tests
/// all read the same list.
pub const TRANSITIONS: &[(Status, Status, TransitionKind)] = &{
    use Status::*;
    use TransitionKind::*;
    [
        (Queued, Validating, Advance),
        (Validating, Building, Advance),
        (Building, Built, Advance),
        (Built, Deploying, Advance),
        (Deploying, Running, Advance),
        (Running, Healthy, Advance),
        (Queued, Failed, Fail),
        (Validating, Failed, Fail),
        (Building, Failed, Fail),
        (Built, Failed, Fail),
        (Deploying, Failed, Fail),
        (Running, Failed, Fail),
        (Healthy, Failed, Fail),
        (Queued, Cancelled, Cancel),
        (Validating, Cancelled, Cancel),
        (Building, Cancelled, Cancel),
        (Built, Cancelled, Cancel),
        (Deploying, Cancelled, Cancel),
        (Running, Cancelled, Cancel),
        (Healthy, Cancelled, Cancel),
        (Queued, Superseded, Supersede),
        (Validating, Superseded, Supersede),
        (Building, Superseded, Supersede),
        (Built, Superseded, Supersede),
        (Deploying, Superseded, Supersede),
        (Running, Superseded, Supersede),
        (Healthy, Superseded, Supersede),
        (Failed, Queued, Retry),
        (Cancelled, Queued, Retry),
    ]
};

/// The kind of the transition `from → to`, or `None` if the table forbids it.
pub fn allowed(from: Status, to: Status) -> Option<TransitionKind> {
    TRANSITIONS.iter().find(|(f, t, _)| *f == from && *t == to).map(|(_, _, k)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = Status> {
        proptest::sample::select(Status::ALL.to_vec())
    }

    #[test]
    fn pipeline_is_the_seed_sequence() {
        let names: Vec<_> = Status::PIPELINE.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["queued", "validating", "building", "built", "deploying", "running", "healthy"]);
        for pair in Status::PIPELINE.windows(2) {
            assert_eq!(allowed(pair[0], pair[1]), Some(TransitionKind::Advance));
        }
    }

    #[test]
    fn no_pair_appears_twice() {
        for (i, (f, t, _)) in TRANSITIONS.iter().enumerate() {
            assert!(!TRANSITIONS[i + 1..].iter().any(|(f2, t2, _)| f2 == f && t2 == t), "{f} -> {t} listed twice");
        }
    }

    proptest! {
        #[test]
        fn every_non_terminal_state_can_fail(s in any_status()) {
            prop_assert_eq!(allowed(s, Status::Failed).is_some(), !s.is_terminal());
        }

        #[test]
        fn terminal_states_only_lead_back_to_queued(from in any_status(), to in any_status()) {
            if from.is_terminal() && let Some(kind) = allowed(from, to) {
                prop_assert_eq!(to, Status::Queued);
                prop_assert_eq!(kind, TransitionKind::Retry);
                prop_assert!(from != Status::Superseded);
            }
        }

        #[test]
        fn advancing_is_exactly_one_step(from in any_status(), to in any_status()) {
            let is_advance = allowed(from, to) == Some(TransitionKind::Advance);
            prop_assert_eq!(is_advance, from.next() == Some(to));
        }

        #[test]
        fn no_self_loops(s in any_status()) {
            prop_assert!(allowed(s, s).is_none());
        }

        #[test]
        fn random_walks_reach_healthy_only_through_running(steps in proptest::collection::vec(any_status(), 1..40)) {
            // Walk the table, taking each proposed step only when it is allowed.
            let mut cur = Status::Queued;
            for want in steps {
                if allowed(cur, want).is_some() {
                    if want == Status::Healthy {
                        prop_assert_eq!(cur, Status::Running);
                    }
                    cur = want;
                }
            }
        }

        #[test]
        fn status_names_round_trip(s in any_status()) {
            prop_assert_eq!(s.as_str().parse::<Status>().ok(), Some(s));
            let json = serde_json::to_string(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }
}
