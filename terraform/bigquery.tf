# The analytics results' optional BigQuery export (docs/analytics.md): a
# dataset with two tables the analytics service and job stream rows into
# with insertAll. Their schemas are the JSON files beside this one;
# shared/gcp/tests/bigquery_golden.rs checks them against the rows sent.
resource "google_bigquery_dataset" "analytics" {
  count                      = var.bigquery_export ? 1 : 0
  dataset_id                 = "bifrost_analytics"
  location                   = var.region
  description                = "Bifrost analytics: cost and anomalies per project and window."
  delete_contents_on_destroy = false

  dynamic "default_encryption_configuration" {
    for_each = local.kms == null ? [] : [local.kms]
    content {
      kms_key_name = default_encryption_configuration.value
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "analytics" {
  #checkov:skip=CKV_GCP_80:encrypted with the dataset's key when kms_key_name is set (Google-managed otherwise, as every other resource here)
  for_each            = var.bigquery_export ? toset(["window_results", "anomalies"]) : toset([])
  dataset_id          = google_bigquery_dataset.analytics[0].dataset_id
  table_id            = each.value
  deletion_protection = true
  schema              = file("${path.module}/bigquery/${each.value}.schema.json")

  time_partitioning {
    type  = "DAY"
    field = each.value == "anomalies" ? "at" : "window_start"
  }
}

# The analytics service account writes rows into this dataset only.
resource "google_bigquery_dataset_iam_member" "analytics_writer" {
  count      = var.bigquery_export ? 1 : 0
  dataset_id = google_bigquery_dataset.analytics[0].dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.function["analytics"].email}"
}
