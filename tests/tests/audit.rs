//! The audit trail as a user checks it: `bifrost audit` writes a Markdown
//! report with the policy violations, mode changes and chaos events that
//! happened; `bifrost audit verify` passes on an untouched trail and fails,
//! naming what broke, after the database is tampered with behind the
//! platform's back — a record edited, a deployment's whole chain deleted,
//! the newest records cut (against a head kept from earlier).

use bifrost_e2e::Platform;
use bifrost_sqlite::SqliteStore;

fn static_site(name: &str, body: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("deploy.toml"), format!("[app]\nname = \"{name}\"\nruntime = \"static\"\n"))
        .expect("toml");
    std::fs::write(dir.path().join("index.html"), body).expect("html");
    dir
}

fn deploy(p: &Platform, dir: &tempfile::TempDir) -> i32 {
    p.cli(&["deploy", &dir.path().display().to_string(), "--wait"]).code
}

#[tokio::test]
async fn the_report_tells_what_happened_and_verify_finds_tampering() {
    let p = Platform::start();
    assert_eq!(deploy(&p, &static_site("web", "v1")), 0);
    assert_eq!(deploy(&p, &static_site("web", "v2")), 0);
    assert_eq!(deploy(&p, &static_site("other", "x")), 0);
    let out = p.cli(&["chaos", "web", "--error-rate", "0.5", "--for", "5m"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(p.cli(&["chaos", "web", "--recover"]).code, 0);
    assert_eq!(p.cli(&["rollback", "web", "--wait"]).code, 0);
    assert_eq!(p.cli(&["policies", "data", "deploy", "--set", "min_disk_gb=100000"]).code, 0);
    assert_ne!(deploy(&p, &static_site("web", "v3")), 0, "blocked by policy");

    // The report: each section holds what happened, and nothing of another app.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("report.md");
    let out = p.cli(&["audit", "web", "--since", "1h", "-o", file.to_str().expect("path")]);
    assert_eq!(out.code, 0, "{out:?}");
    let report = std::fs::read_to_string(&file).expect("report written");
    let section = |title: &str| -> String {
        let start = report.find(&format!("## {title}\n")).unwrap_or_else(|| panic!("no {title} in:\n{report}"));
        let rest = &report[start + title.len() + 4..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    };
    assert!(report.contains("Every hash chain and the global anchor verify"), "{report}");
    let violations = section("Policy violations");
    assert!(violations.contains("deploy v1") && violations.contains("is below minimum 100000GB"), "{violations}");
    let modes = section("Mode changes");
    assert!(modes.contains("| rollback |") && modes.contains("| live |") && modes.contains("| replaced |"), "{modes}");
    let chaos = section("Chaos events");
    assert!(chaos.contains("chaos on: 50% of requests answered 500") && chaos.contains("chaos off"), "{chaos}");
    assert!(section("Policy changes").contains("min\\_disk\\_gb=100000"), "{report}");
    assert!(section("Who did what").contains("token:admin"), "{report}");
    assert!(!report.contains("| other |"), "another app's records are in web's report:\n{report}");

    // An untouched trail verifies; its head is printed to keep.
    let out = p.cli(&["audit", "verify", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["ok"], true, "{v:#}");
    let head = v["head"].as_str().expect("head").to_string();

    // Tampering behind the platform's back, on the live database.
    let db = SqliteStore::open(&p.data_dir.join("bifrost.db"), vec![]).expect("open the database");
    let other_id = p.client().get("/api/v1/projects/other").await.body["id"].as_str().expect("id").to_string();
    for sql in [
        "DROP TRIGGER audit_no_update".to_string(),
        "DROP TRIGGER audit_no_delete".to_string(),
        // An edit: a failure that never happened…
        "UPDATE audit SET reason = 'all good' WHERE to_status = 'failed'".to_string(),
        // …a whole deployment's chain gone…
        format!("DELETE FROM audit WHERE project_id = '{other_id}'"),
    ] {
        db.execute_raw(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let out = p.cli(&["audit", "verify"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("has been altered (hash mismatch)"), "the edit: {}", out.stderr);
    assert!(out.stderr.contains("the audit trail's anchor breaks at record"), "the deleted chain: {}", out.stderr);
    let report = p.cli(&["audit", "--since", "1h"]);
    assert!(report.stdout.contains("does **not** verify"), "the report warns: {report:?}");

    // …and the newest records cut: only a head kept elsewhere tells.
    let max: u64 = p.client().get("/api/v1/audit?limit=1").await.body[0]["seq"].as_u64().expect("seq");
    db.execute_raw(&format!("DELETE FROM audit WHERE seq >= {}", max - 1)).expect("cut");
    let out = p.cli(&["audit", "verify", "--head", &head]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("is not in the audit trail: records after it were removed"), "{}", out.stderr);
}
