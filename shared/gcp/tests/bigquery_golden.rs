//! What the BigQuery export sends, pinned (BigQuery cannot run here): the
//! exact `tabledata.insertAll` requests — path and body — for a known
//! result with an anomaly, in `tests/golden/bigquery/` (`cargo xtask
//! bless` rewrites them after a deliberate change), against a fake that
//! answers as BigQuery does; and a row BigQuery refuses fails the export.

use std::sync::{Arc, Mutex};

use bifrost_core::analytics::cost::Cost;
use bifrost_core::analytics::run::{AnalyticsResult, SeriesAnomaly};
use bifrost_core::analytics::window::Window;
use bifrost_core::ports::ResultsExport;
use bifrost_gcp::bigquery::{BigQueryConfig, BigQueryExport};
use bifrost_gcp::cloud_build::NoCredentials;
use bifrost_testkit::golden;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn result() -> AnalyticsResult {
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&chrono::Utc);
    AnalyticsResult {
        project_id: "p_01golden".into(),
        project: "shop".into(),
        window: Window { start: at("2026-11-29T10:00:00Z"), end: at("2026-11-29T10:05:00Z") },
        run_id: "run_01golden".into(),
        computed_at: at("2026-11-29T10:05:02.250Z"),
        cost: Cost {
            total: 0.25,
            cpu: 0.2,
            memory: 0.05,
            idle: 0.125,
            by_deployment: [("d_01a".to_string(), 0.25)].into(),
            requests: 3000,
            per_1000_requests: Some(0.25 / 3.0),
        },
        currency: "USD".into(),
        errors: 12,
        anomalies: vec![SeriesAnomaly {
            series: "requests_per_s".into(),
            at: at("2026-11-29T10:00:00Z"),
            value: 100.0,
            baseline: 10.0,
            score: 1000.0,
        }],
    }
}

/// A fake BigQuery: keeps each request's line and body, answers `answer`.
async fn fake(answer: &'static str) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(vec![]));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() < head_end + 4 + length {
                        continue;
                    }
                    let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + length]).to_string();
                    let line = head.lines().next().unwrap_or("").to_string();
                    keep.lock().expect("lock").push((line, body));
                    buf.drain(..head_end + 4 + length);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if conn.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn export(endpoint: String) -> BigQueryExport {
    let cfg = BigQueryConfig { gcp_project: "acme".into(), dataset: "bifrost_analytics".into(), endpoint };
    BigQueryExport::new(cfg, Arc::new(NoCredentials))
}

#[tokio::test]
async fn a_windows_result_and_its_anomaly_are_streamed_as_the_golden_insert_all_requests() {
    let (url, seen) = fake(r#"{"kind": "bigquery#tableDataInsertAllResponse"}"#).await;
    export(url).export(&[result()]).await.expect("exports");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for ((line, body), table) in seen.iter().zip(["window_results", "anomalies"]) {
        assert_eq!(
            line,
            &format!("POST /bigquery/v2/projects/acme/datasets/bifrost_analytics/tables/{table}/insertAll HTTP/1.1")
        );
        let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        let text = serde_json::to_string_pretty(&body).expect("json") + "\n";
        golden::check(&format!("shared/gcp/tests/golden/bigquery/{table}.insert_all.json"), &text);
    }
}

#[tokio::test]
async fn rows_bigquery_refuses_fail_the_export_with_its_reason() {
    let (url, _) = fake(
        r#"{"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": [{"index": 0, "errors": [{"reason": "invalid", "location": "cost_total", "message": "no such field: cost_total."}]}]}"#,
    )
    .await;
    let e = export(url).export(&[result()]).await.expect_err("refused rows fail the export");
    assert!(e.contains("window_results") && e.contains("no such field: cost_total.") && e.contains("invalid"), "{e}");
}

/// The names of a schema's fields, nested records as `parent.child`.
fn schema_names(fields: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    for f in fields.as_array().expect("a list of fields") {
        let name = format!("{prefix}{}", f["name"].as_str().expect("a name"));
        if let Some(nested) = f.get("fields") {
            schema_names(nested, &format!("{name}."), out);
        }
        out.push(name);
    }
}

/// The names a row carries, nested objects (in lists) as `parent.child`.
fn row_names(row: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in row.as_object().expect("an object") {
        let name = format!("{prefix}{k}");
        if let Some(first) = v.as_array().and_then(|a| a.first()).filter(|f| f.is_object()) {
            row_names(first, &format!("{name}."), out);
        }
        out.push(name);
    }
}

#[test]
fn terraforms_table_schemas_have_exactly_the_fields_the_rows_carry() {
    let r = result();
    for (table, rows) in [
        ("window_results", bifrost_gcp::bigquery::window_rows(std::slice::from_ref(&r))),
        ("anomalies", bifrost_gcp::bigquery::anomaly_rows(&[r])),
    ] {
        let path = golden::root().join(format!("terraform/bigquery/{table}.schema.json"));
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("the schema file")).expect("JSON");
        let (mut want, mut have) = (vec![], vec![]);
        schema_names(&schema, "", &mut want);
        row_names(&rows[0]["json"], "", &mut have);
        want.sort();
        have.sort();
        assert_eq!(want, have, "{table}: terraform's schema and the rows differ");
    }
}
