//! The analytics results, streamed to BigQuery with `tabledata.insertAll`
//! (the optional export of seed 000: "writing results to BigQuery"). Two
//! tables in one dataset (terraform/bigquery.tf): `window_results`, a row
//! per project and window (its cost), and `anomalies`, a row per anomaly.
//! Each row's `insertId` is its key (project, window[, series, time]), so
//! a window exported again is deduplicated by BigQuery (best effort, for
//! about a minute; queries can group by the same key). BigQuery cannot run
//! here: `tests/bigquery_golden.rs` pins the exact requests.

use std::sync::Arc;

use async_trait::async_trait;
use bifrost_core::analytics::run::AnalyticsResult;
use bifrost_core::ports::ResultsExport;
use serde_json::{Value, json};

use crate::cloud_build::TokenSource;

/// Where the rows go.
#[derive(Clone, Debug)]
pub struct BigQueryConfig {
    pub gcp_project: String,
    pub dataset: String,
    /// `https://bigquery.googleapis.com` (a fake in tests).
    pub endpoint: String,
}

/// Rows of one insertAll call at most (BigQuery recommends ≤ 500).
pub const MAX_ROWS: usize = 500;

fn ts(t: &bifrost_core::domain::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The `window_results` rows of `results`.
pub fn window_rows(results: &[AnalyticsResult]) -> Vec<Value> {
    results
        .iter()
        .map(|r| {
            let (start, end) = (ts(&r.window.start), ts(&r.window.end));
            let by_deployment: Vec<Value> =
                r.cost.by_deployment.iter().map(|(d, c)| json!({"deployment_id": d, "cost": c})).collect();
            json!({
                "insertId": format!("{}~{start}~{end}", r.project_id),
                "json": {
                    "project": r.project,
                    "project_id": r.project_id,
                    "window_start": start,
                    "window_end": end,
                    "run_id": r.run_id,
                    "computed_at": ts(&r.computed_at),
                    "currency": r.currency,
                    "cost_total": r.cost.total,
                    "cost_cpu": r.cost.cpu,
                    "cost_memory": r.cost.memory,
                    "cost_idle": r.cost.idle,
                    "requests": r.cost.requests,
                    "errors": r.errors,
                    "cost_per_1000_requests": r.cost.per_1000_requests,
                    "by_deployment": by_deployment,
                    "anomalies": r.anomalies.len(),
                },
            })
        })
        .collect()
}

/// The `anomalies` rows of `results`.
pub fn anomaly_rows(results: &[AnalyticsResult]) -> Vec<Value> {
    results
        .iter()
        .flat_map(|r| {
            r.anomalies.iter().map(move |a| {
                json!({
                    "insertId": format!("{}~{}~{}", r.project_id, a.series, ts(&a.at)),
                    "json": {
                        "project": r.project,
                        "project_id": r.project_id,
                        "series": a.series,
                        "at": ts(&a.at),
                        "value": a.value,
                        "baseline": a.baseline,
                        "score": a.score,
                        "window_start": ts(&r.window.start),
                        "run_id": r.run_id,
                    },
                })
            })
        })
        .collect()
}

/// One insertAll request body: every row is checked (no row skipped, no
/// unknown field ignored), so a schema drift fails loudly.
pub fn insert_all_body(rows: &[Value]) -> Value {
    json!({
        "kind": "bigquery#tableDataInsertAllRequest",
        "skipInvalidRows": false,
        "ignoreUnknownValues": false,
        "rows": rows,
    })
}

pub struct BigQueryExport {
    cfg: BigQueryConfig,
    http: reqwest::Client,
    auth: Arc<dyn TokenSource>,
}

impl BigQueryExport {
    pub fn new(cfg: BigQueryConfig, auth: Arc<dyn TokenSource>) -> BigQueryExport {
        BigQueryExport { cfg, http: reqwest::Client::new(), auth }
    }

    async fn insert(&self, table: &str, rows: &[Value]) -> Result<(), String> {
        let url = format!(
            "{}/bigquery/v2/projects/{}/datasets/{}/tables/{table}/insertAll",
            self.cfg.endpoint.trim_end_matches('/'),
            self.cfg.gcp_project,
            self.cfg.dataset
        );
        for chunk in rows.chunks(MAX_ROWS) {
            let headers = self.auth.headers().await?;
            let answer = self
                .http
                .post(&url)
                .headers(headers)
                .json(&insert_all_body(chunk))
                .send()
                .await
                .map_err(|e| format!("BigQuery {table}: {e}"))?;
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let why = body["error"]["message"].as_str().unwrap_or("no message");
                return Err(format!("BigQuery {table}: HTTP {status}: {why}"));
            }
            // A 200 may still refuse rows: each has its own errors.
            if let Some(errors) = body["insertErrors"].as_array().filter(|e| !e.is_empty()) {
                let first = &errors[0]["errors"][0];
                return Err(format!(
                    "BigQuery {table}: {} rows refused, the first at index {}: {} ({})",
                    errors.len(),
                    errors[0]["index"],
                    first["message"].as_str().unwrap_or("no message"),
                    first["reason"].as_str().unwrap_or("no reason"),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ResultsExport for BigQueryExport {
    async fn export(&self, results: &[AnalyticsResult]) -> Result<(), String> {
        let windows = window_rows(results);
        if !windows.is_empty() {
            self.insert("window_results", &windows).await?;
        }
        let anomalies = anomaly_rows(results);
        if !anomalies.is_empty() {
            self.insert("anomalies", &anomalies).await?;
        }
        Ok(())
    }
}
