# Values are added out of band (docs/gcp.md): terraform state never holds them.
resource "google_secret_manager_secret" "encryption_key" {
  secret_id = "bifrost-encryption-key"
  replication {
    user_managed {
      replicas {
        location = var.region
        dynamic "customer_managed_encryption" {
          for_each = local.kms == null ? [] : [local.kms]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "webhook_secret" {
  secret_id = "bifrost-github-webhook-secret"
  replication {
    user_managed {
      replicas {
        location = var.region
        dynamic "customer_managed_encryption" {
          for_each = local.kms == null ? [] : [local.kms]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "gateway" {
  for_each  = { encryption = google_secret_manager_secret.encryption_key.id, webhook = google_secret_manager_secret.webhook_secret.id }
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function["gateway"].email}"
}
