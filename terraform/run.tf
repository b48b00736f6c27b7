resource "google_artifact_registry_repository" "bifrost" {
  location      = var.region
  repository_id = "bifrost"
  description   = "Bifrost's own images and the apps it builds."
  format        = "DOCKER"
  kms_key_name  = local.kms
  depends_on    = [google_project_service.apis]
}

locals {
  # Every function's service and the analytics job.
  common_env = {
    BIFROST_GCP_PROJECT    = var.project_id
    BIFROST_APPS_DOMAIN    = var.apps_domain
    BIFROST_SOURCES_BUCKET = google_storage_bucket.data["sources"].name
    BIFROST_SCRIPTS_BUCKET = google_storage_bucket.data["scripts"].name
  }
  gke_env = {
    BIFROST_GKE_ENDPOINT   = "https://${google_container_cluster.apps.endpoint}"
    BIFROST_GKE_CA_CERT    = google_container_cluster.apps.master_auth[0].cluster_ca_certificate
    BIFROST_APPS_NAMESPACE = "apps"
    BIFROST_SIDECAR_IMAGE  = "${local.registry}/sidecar${var.image_tag}"
    BIFROST_GKE_ROUTERS    = var.routers ? "true" : "false"
  }
  function_env = {
    build = {
      BIFROST_REGION                = var.region
      BIFROST_BUILD_LOGS_BUCKET     = google_storage_bucket.data["build-logs"].name
      BIFROST_ARTIFACT_REPOSITORY   = "${local.registry}/apps"
      BIFROST_BUILD_SERVICE_ACCOUNT = google_service_account.builds.id
    }
    deploy  = local.gke_env
    verify  = local.gke_env
    gateway = local.gke_env
    analytics = merge(
      { BIFROST_ANALYTICS_EVERY = var.analytics_every, BIFROST_RETENTION = var.retention },
      var.bigquery_export ? { BIFROST_BIGQUERY_DATASET = "bifrost_analytics" } : {},
    )
  }
}

resource "google_cloud_run_v2_service" "functions" {
  for_each            = toset(local.functions)
  name                = "bifrost-${each.value}"
  location            = var.region
  deletion_protection = false
  # Pushes come from Pub/Sub through Google's front end; only the public
  # services take traffic from the internet.
  ingress = contains(local.public_functions, each.value) ? "INGRESS_TRAFFIC_ALL" : "INGRESS_TRAFFIC_INTERNAL_ONLY"

  template {
    service_account                  = google_service_account.function[each.value].email
    timeout                          = each.value == "build" ? "900s" : "60s"
    max_instance_request_concurrency = each.value == "build" ? 4 : 80

    scaling {
      min_instance_count = each.value == "gateway" ? 1 : 0
      max_instance_count = 20
    }

    containers {
      image = "${local.registry}/${each.value}${var.image_tag}"
      resources {
        limits = {
          cpu    = "1"
          memory = each.value == "build" ? "1Gi" : "512Mi"
        }
        cpu_idle = true
      }
      dynamic "env" {
        for_each = local.common_env
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name  = "BIFROST_API_URL"
        value = "https://bifrost-gateway-${data.google_project.this.number}.${var.region}.run.app"
      }
      # Per-function settings: where build builds and pushes; where deploy,
      # verify and the gateway (replica status) find the apps' cluster.
      dynamic "env" {
        for_each = lookup(local.function_env, each.value, {})
        content {
          name  = env.key
          value = env.value
        }
      }
      dynamic "env" {
        for_each = each.value == "web" ? [1] : []
        content {
          name = "BIFROST_SESSION_KEY"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.bifrost["session_key"].secret_id
              version = "latest"
            }
          }
        }
      }
      dynamic "env" {
        for_each = contains(["gateway", "deploy"], each.value) ? [1] : []
        content {
          name = "BIFROST_ENCRYPTION_KEY"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.bifrost["encryption_key"].secret_id
              version = "latest"
            }
          }
        }
      }
      startup_probe {
        http_get {
          path = "/healthz"
        }
      }
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [google_project_service.apis]
}
