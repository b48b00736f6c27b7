# The analytics function: health downsampling, the outbox re-publisher and
# the analytics windows owed (cost, anomalies), every 5 minutes.
resource "google_cloud_scheduler_job" "analytics" {
  name      = "bifrost-analytics"
  region    = var.region
  schedule  = var.analytics_schedule
  time_zone = "Etc/UTC"

  retry_config {
    retry_count = 3
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.functions["analytics"].uri}/run"
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloud_run_v2_service.functions["analytics"].uri
    }
  }

  depends_on = [google_project_service.apis]
}

# Backfills: one window, analysed by the same image as a job and exited.
#   gcloud run jobs execute bifrost-analytics --region REGION \
#     --args=--window=2026-11-29T10:00Z/1h
resource "google_cloud_run_v2_job" "analytics" {
  name                = "bifrost-analytics"
  location            = var.region
  deletion_protection = false

  template {
    task_count = 1
    template {
      service_account = google_service_account.function["analytics"].email
      timeout         = "3600s"
      max_retries     = 1
      containers {
        image = "${local.registry}/analytics${var.image_tag}"
        resources {
          limits = {
            cpu    = "1"
            memory = "512Mi"
          }
        }
        dynamic "env" {
          for_each = local.common_env
          content {
            name  = env.key
            value = env.value
          }
        }
        dynamic "env" {
          for_each = var.bigquery_export ? ["bifrost_analytics"] : []
          content {
            name  = "BIFROST_BIGQUERY_DATASET"
            value = env.value
          }
        }
      }
    }
  }

  depends_on = [google_project_service.apis]
}
