//! Delivery analytics through `bifrost up` from the platform's own
//! records: three commits made hours apart go live, the second is rolled
//! back, a fix follows — DORA's four keys come out with the numbers that
//! history implies, over each period, through the API and the CLI.

use bifrost_e2e::{Platform, python_app};
use chrono::{Duration, Utc};

#[tokio::test]
async fn dora_keys_come_from_what_went_live_was_rolled_back_and_fixed() {
    let p = Platform::start();
    let repo = python_app("web", "");
    p.add_project("web", &repo);
    let hours_ago = |h: i64| (Utc::now() - Duration::hours(h)).to_rfc3339();
    let start = Utc::now();

    repo.commit_at(&[("VERSION", "1")], "feat: first", &hours_ago(3));
    let v1 = p.push(&repo, "dora-1").await;
    p.healthy(&v1).await;
    repo.commit_at(&[("VERSION", "2")], "feat: second", &hours_ago(2));
    let v2 = p.push(&repo, "dora-2").await;
    p.healthy(&v2).await;
    // v2 is the failed change: rolled back.
    assert_eq!(p.cli(&["rollback", "web", "--wait"]).code, 0);
    repo.commit_at(&[("VERSION", "3")], "fix: the second, again", &hours_ago(1));
    let v3 = p.push(&repo, "dora-3").await;
    p.healthy(&v3).await;
    let took = (Utc::now() - start).num_seconds() as f64;

    let out = p.cli(&["analytics", "show", "web", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let a = out.json();
    assert_eq!((a["project"].as_str(), a["days"].as_u64()), (Some("web"), Some(30)), "{a:#}");
    let week = a["periods"].as_array().and_then(|p| p.iter().find(|p| p["days"] == 7)).map(|p| p["dora"].clone());
    let week = week.unwrap_or_else(|| panic!("no 7-day period: {a:#}"));
    // v1, v2, the rollback and v3 went live; the rollback is not judged.
    assert_eq!((week["changes"].as_u64(), week["failed_changes"].as_u64()), (Some(4), Some(1)), "{week:#}");
    assert!((week["deployment_frequency_per_day"].as_f64().unwrap_or(0.0) - 4.0 / 7.0).abs() < 1e-9, "{week:#}");
    assert!((week["change_failure_rate"].as_f64().unwrap_or(0.0) - 1.0 / 3.0).abs() < 1e-9, "{week:#}");
    // Lead times are about 3, 2 and 1 h (plus the test's own time): the
    // median is v2's, the p90 v1's.
    let hours = |k: &str| week[k].as_f64().unwrap_or(0.0) / 3600.0;
    let slack = took / 3600.0;
    assert!(hours("lead_time_seconds_p50") >= 2.0 && hours("lead_time_seconds_p50") <= 2.0 + slack, "{week:#}");
    assert!(hours("lead_time_seconds_p90") >= 3.0 && hours("lead_time_seconds_p90") <= 3.0 + slack, "{week:#}");
    // Restored when the rollback went live, within the test's time.
    let restore = week["time_to_restore_seconds_p50"].as_f64().unwrap_or(-1.0);
    assert!(restore >= 0.0 && restore <= took, "{restore} of {took}: {week:#}");
    assert_eq!(week["bands"]["deployment_frequency"], "high", "{week:#}");
    assert_eq!(week["bands"]["lead_time"], "elite");
    assert_eq!(week["bands"]["change_failure_rate"], "medium");
    assert_eq!(week["bands"]["time_to_restore"], "elite");
    assert_eq!(week["performance"], "medium", "the weakest key");
    // Over 30 days the same four changes are less than weekly.
    assert_eq!(a["dora"]["bands"]["deployment_frequency"], "medium", "{a:#}");

    // Every project, and the text a person reads.
    let summary = p.client().get("/api/v1/analytics/summary?days=7").await;
    assert_eq!(summary.status, 200, "{:?}", summary.body);
    assert_eq!(summary.body["projects"][0]["dora"], week, "{:#}", summary.body);
    let text = p.cli(&["analytics", "show", "web"]).stdout;
    assert!(text.contains("7 days") && text.contains("33% (1/3)") && text.contains("medium"), "{text}");

    // A period out of range changes nothing and says why.
    let bad = p.client().get("/api/v1/analytics/projects/web?days=0").await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert!(bad.body["error"]["message"].as_str().is_some_and(|m| m.contains("from 1 to 365")), "{:?}", bad.body);
    assert_ne!(p.cli(&["analytics", "show", "web", "--days", "400"]).code, 0);
    assert_eq!(p.client().get("/api/v1/analytics/projects/nope").await.status, 404);
}
