//! Analytics through `bifrost up` from the platform's own records: three
//! commits made hours apart go live (the first's time from its push), the second is rolled back, a fix
//! follows — DORA's four keys come out with the numbers that history
//! implies; and a live app's minute of traffic and replica reports is
//! analysed by hand into its cost, once, at the admin's prices.

use bifrost_e2e::{AppClient, Platform, python_app};
use chrono::{Duration, Timelike, Utc};
use serde_json::json;

#[tokio::test]
async fn dora_keys_come_from_what_went_live_was_rolled_back_and_fixed() {
    let p = Platform::start();
    let repo = python_app("web", "");
    p.add_project("web", &repo);
    let hours_ago = |h: i64| (Utc::now() - Duration::hours(h)).to_rfc3339();
    let start = Utc::now();

    // v1's push says it was made 3 h ago; git says 5 h: the push's word
    // counts (GitHub's `head_commit.timestamp`).
    repo.commit_at(&[("VERSION", "1")], "feat: first", &hours_ago(5));
    let v1 = p.push_made_at(&repo, "dora-1", &hours_ago(3)).await;
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

    // The deployment page's markers: only the anomalies (no run analysed any).
    let marks = p.client().get("/api/v1/analytics/projects/web/anomalies?days=1").await;
    assert_eq!(marks.status, 200, "{:?}", marks.body);
    assert_eq!((marks.body["project"].as_str(), marks.body["days"].as_i64()), (Some("web"), Some(1)));
    assert!(marks.body["anomalies"].as_array().is_some_and(Vec::is_empty), "{:?}", marks.body);
    assert!(marks.body.get("dora").is_none(), "no four keys: {:?}", marks.body);
    assert_eq!(p.client().get("/api/v1/analytics/projects/nope/anomalies").await.status, 404);
}

/// The per-replica-minute charge of a replica at the default resources
/// (250m, 256Mi) using less than it asked for, at `prices` per hour.
fn default_replica_minute(cpu_core_hour: f64, memory_gib_hour: f64) -> f64 {
    (0.25 * cpu_core_hour + 0.25 * memory_gib_hour) / 60.0
}

#[tokio::test]
async fn a_minute_of_a_live_apps_traffic_is_analysed_into_its_cost_once_at_the_admins_prices() {
    let p = Platform::start_with(&[("BIFROST_ANALYTICS_EVERY", "off")]);
    let repo = python_app("shop", "");
    p.add_project("shop", &repo);
    let d = p.push(&repo, "cost-1").await;
    p.healthy(&d).await;

    // Prices: an admin sets them; a viewer may read but not change them;
    // a negative price changes nothing.
    let set = p.cli(&[
        "analytics",
        "prices",
        "set",
        "--currency",
        "EUR",
        "--cpu-core-hour",
        "1.2",
        "--memory-gib-hour",
        "0.4",
    ]);
    assert_eq!(set.code, 0, "{set:?}");
    let viewer = p.client().post("/api/v1/tokens", json!({"name": "vic", "role": "viewer"})).await;
    let vt = viewer.body["token"].as_str().expect("a viewer token").to_string();
    let refused = p.cli_as(&vt, &["analytics", "prices", "set", "--cpu-core-hour", "0"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("admin"), "{}", refused.stderr);
    let bad = p.cli(&["analytics", "prices", "set", "--memory-gib-hour=-1"]);
    assert!(bad.code != 0 && bad.stderr.contains("memory_gib_hour"), "{bad:?}");
    let now_prices = p.cli_as(&vt, &["analytics", "prices", "show", "--json"]).json();
    assert_eq!(now_prices, json!({"currency": "EUR", "cpu_core_hour": 1.2, "memory_gib_hour": 0.4, "default": false}));

    // Traffic through one whole minute, and until the sampler closes it.
    let app = AppClient::new(&p, "shop");
    let next_minute = {
        let t = Utc::now() + Duration::minutes(1);
        t - Duration::seconds(t.second() as i64) - Duration::nanoseconds(t.nanosecond() as i64)
    };
    let minute = next_minute.format("%Y-%m-%dT%H:%MZ").to_string();
    let mut sent = 0u64;
    while Utc::now() < next_minute + Duration::seconds(75) {
        assert_eq!(app.get("/", &[]).await.status(), 200);
        sent += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let window = format!("{minute}/1m");
    let run = p.cli(&["analytics", "run", "--window", &window, "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!((run.json()["stored"].as_u64(), run.json()["already"].as_u64()), (Some(1), Some(0)), "{run:?}");
    let again = p.cli(&["analytics", "run", "--window", &window, "--json"]).json();
    assert_eq!((again["stored"].as_u64(), again["already"].as_u64()), (Some(0), Some(1)), "{again}");

    let a = p.cli(&["analytics", "show", "shop", "--json"]).json();
    let cost = &a["cost"];
    assert_eq!((cost["currency"].as_str(), a["analysed"]["windows"].as_u64()), (Some("EUR"), Some(1)), "{a:#}");
    // One replica for the whole minute, under its request: charged the request.
    let want = default_replica_minute(1.2, 0.4);
    assert!((cost["total"].as_f64().unwrap_or(0.0) - want).abs() < 1e-12, "{} ≠ {want}: {a:#}", cost["total"]);
    assert!((cost["by_deployment"][d.as_str()].as_f64().unwrap_or(0.0) - want).abs() < 1e-12, "{a:#}");
    // The routers' count of that minute: about 5 a second, none failed.
    let requests = cost["requests"].as_u64().unwrap_or(0);
    assert!(requests > 100 && requests <= sent, "{requests} of {sent}: {a:#}");
    let per_1000 = cost["per_1000_requests"].as_f64().unwrap_or(0.0);
    assert!((per_1000 - want * 1000.0 / requests as f64).abs() < 1e-12, "{a:#}");
    assert_eq!(a["anomalies"], json!([]), "too little history for a baseline");

    // A window that has not ended, or is not a window, is refused.
    let future = (Utc::now() + Duration::hours(1)).format("%Y-%m-%dT%H:%MZ/1h").to_string();
    let early = p.cli(&["analytics", "run", "--window", &future]);
    assert!(early.code != 0 && early.stderr.contains("has not ended"), "{early:?}");
    let text = p.cli(&["analytics", "show", "shop"]).stdout;
    assert!(text.contains("EUR") && text.contains("1 windows analysed"), "{text}");
}
