//! Checking the whole audit trail. Each deployment's records form a hash
//! chain; on top, every record appended since the anchor existed carries a
//! global *anchor*: SHA-256 of the anchor before it (in append order) and
//! the record's own hash. A deployment's chain alone cannot tell that it
//! was deleted whole; the anchor chain can (the next record's anchor no
//! longer follows). What nothing inside the store can tell is a cut of the
//! newest records: for that, keep the head anchor `verify` prints somewhere
//! else and pass it back (`bifrost audit verify --head`).

use std::collections::BTreeMap;

use crate::domain::AuditRecord;
use crate::policies::{PolicyVersion, verify_policy_chain};

/// The anchor after `prev` for a record whose hash is `record_hash`.
pub fn anchor(prev: &str, record_hash: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [prev, record_hash] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditCheck {
    pub records: usize,
    pub deployments: usize,
    pub policy_versions: usize,
    /// The newest anchor: keep it elsewhere to detect a later cut.
    pub head: Option<String>,
    /// Everything that is wrong, each naming the record or chain.
    pub problems: Vec<String>,
}

/// Checks every record (oldest first, as appended), each deployment's
/// chain, the global anchors, each policy's versions, and — when given —
/// that a head kept from an earlier check is still in the trail.
pub fn verify(records: &[AuditRecord], policies: &[Vec<PolicyVersion>], kept_head: Option<&str>) -> AuditCheck {
    let mut check = AuditCheck { records: records.len(), ..AuditCheck::default() };
    let mut heads: BTreeMap<&str, &str> = BTreeMap::new();
    let mut prev_anchor: Option<&str> = None;
    let mut seen_kept = kept_head.is_none();
    for r in records {
        let d = r.deployment_id.as_str();
        if !r.verify() {
            check.problems.push(format!("audit record {} of deployment {d} has been altered (hash mismatch)", r.seq));
        }
        let expected_prev = heads.get(d).copied().unwrap_or("");
        if r.prev_hash != expected_prev {
            let what = if expected_prev.is_empty() {
                "its first records are missing"
            } else {
                "a record before it is missing or was changed"
            };
            check
                .problems
                .push(format!("audit record {} of deployment {d} does not link to the one before it ({what})", r.seq));
        }
        heads.insert(d, &r.hash);
        match (&r.anchor, prev_anchor) {
            // Records from before anchors existed come first.
            (None, None) => {}
            (None, Some(_)) => check.problems.push(format!(
                "audit record {} of deployment {d} has no anchor after anchored records (written behind the platform's back)",
                r.seq
            )),
            (Some(a), prev) => {
                if *a != anchor(prev.unwrap_or(""), &r.hash) {
                    check.problems.push(format!(
                        "the audit trail's anchor breaks at record {} (deployment {d}): records before it were deleted, \
                         reordered or altered",
                        r.seq
                    ));
                }
                prev_anchor = Some(a);
                if kept_head == Some(a.as_str()) {
                    seen_kept = true;
                }
            }
        }
    }
    check.deployments = heads.len();
    check.head = prev_anchor.map(str::to_string);
    if !seen_kept {
        check.problems.push(format!(
            "the head anchor kept earlier ({}) is not in the audit trail: records after it were removed",
            kept_head.unwrap_or_default()
        ));
    }
    for versions in policies {
        check.policy_versions += versions.len();
        if let Err(e) = verify_policy_chain(versions) {
            check.problems.push(e);
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, AuditEntry, now};
    use crate::status::Status;

    /// A trail as a store appends it: per-deployment chains, global anchors.
    fn trail(steps: &[(&str, Status)]) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = vec![];
        let mut anchor_head = String::new();
        for (i, (d, to)) in steps.iter().enumerate() {
            let prev = out.iter().rev().find(|r| r.deployment_id == *d);
            let prev_hash = prev.map(|p| p.hash.clone()).unwrap_or_default();
            let from = prev.map(|p| p.to);
            let (at, actor) = (now(), Actor::system("t"));
            let e = AuditEntry { at: &at, actor: &actor, from, to: *to, reason: "r", evidence: None };
            let hash = e.hash(&prev_hash, d);
            anchor_head = anchor(&anchor_head, &hash);
            out.push(AuditRecord {
                seq: i as u64 + 1,
                deployment_id: d.to_string(),
                project_id: "p".into(),
                at,
                actor,
                from,
                to: *to,
                reason: "r".into(),
                evidence: None,
                prev_hash,
                hash,
                anchor: Some(anchor_head.clone()),
            });
        }
        out
    }

    fn sample() -> Vec<AuditRecord> {
        use Status::*;
        trail(&[("a", Queued), ("b", Queued), ("a", Validating), ("b", Validating), ("c", Queued), ("a", Building)])
    }

    #[test]
    fn an_untouched_trail_passes_and_names_its_head() {
        let t = sample();
        let c = verify(&t, &[], None);
        assert_eq!(c.problems, Vec::<String>::new());
        assert_eq!((c.records, c.deployments), (6, 3));
        assert_eq!(c.head.as_deref(), t.last().and_then(|r| r.anchor.as_deref()));
        assert!(verify(&t, &[], c.head.as_deref()).problems.is_empty());
    }

    #[test]
    fn an_edited_record_is_named() {
        let mut t = sample();
        t[2].reason = "nothing happened".into();
        let c = verify(&t, &[], None);
        assert!(c.problems.iter().any(|p| p.starts_with("audit record 3 of deployment a has been altered")), "{c:?}");
    }

    #[test]
    fn a_deployments_whole_chain_deleted_breaks_the_anchor() {
        let t: Vec<_> = sample().into_iter().filter(|r| r.deployment_id != "b").collect();
        let c = verify(&t, &[], None);
        assert_eq!(c.deployments, 2);
        assert!(c.problems.iter().any(|p| p.starts_with("the audit trail's anchor breaks at record 3")), "{c:?}");
    }

    #[test]
    fn a_record_deleted_from_the_middle_of_a_chain_is_found_twice() {
        let t: Vec<_> = sample().into_iter().filter(|r| r.seq != 3).collect();
        let c = verify(&t, &[], None);
        assert!(c.problems.iter().any(|p| p.contains("record 6 of deployment a does not link")), "{c:?}");
        assert!(c.problems.iter().any(|p| p.contains("anchor breaks at record 4")), "{c:?}");
    }

    #[test]
    fn a_cut_of_the_newest_records_is_found_only_against_a_kept_head() {
        let t = sample();
        let head = verify(&t, &[], None).head;
        let cut = &t[..4];
        assert!(verify(cut, &[], None).problems.is_empty(), "nothing inside the store can tell");
        let c = verify(cut, &[], head.as_deref());
        assert!(c.problems.iter().any(|p| p.contains("is not in the audit trail")), "{c:?}");
    }

    #[test]
    fn records_from_before_anchors_pass_but_not_after_them() {
        let mut t = sample();
        t[0].anchor = None;
        t[1].anchor = None;
        // Anchoring starts over from "" after the legacy records.
        let mut head = String::new();
        for r in t.iter_mut().skip(2) {
            head = anchor(&head, &r.hash);
            r.anchor = Some(head.clone());
        }
        assert!(verify(&t, &[], None).problems.is_empty());
        t[4].anchor = None;
        let c = verify(&t, &[], None);
        assert!(c.problems.iter().any(|p| p.contains("record 5 of deployment c has no anchor")), "{c:?}");
    }
}
