# The analytics function: health downsampling and reports, every 5 minutes.
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
