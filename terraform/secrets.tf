# Values are added out of band (docs/gcp.md): terraform state never holds them.
locals {
  secrets = {
    encryption_key = "bifrost-encryption-key"
    webhook_secret = "bifrost-github-webhook-secret"
    session_key    = "bifrost-session-key"
  }
}

resource "google_secret_manager_secret" "bifrost" {
  for_each  = local.secrets
  secret_id = each.value
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

# The gateway reads the encryption key and the webhook secret (it seals
# secrets and checks webhook signatures); not the dashboard's session key.
resource "google_secret_manager_secret_iam_member" "gateway" {
  for_each  = { for k, v in google_secret_manager_secret.bifrost : k => v if k != "session_key" }
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function["gateway"].email}"
}

# deploy signs the health sidecars' report tokens with the key.
resource "google_secret_manager_secret_iam_member" "deploy" {
  secret_id = google_secret_manager_secret.bifrost["encryption_key"].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function["deploy"].email}"
}

# The dashboard seals its session cookies with its own key.
resource "google_secret_manager_secret_iam_member" "web" {
  secret_id = google_secret_manager_secret.bifrost["session_key"].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function["web"].email}"
}
