# Logs of access to the buckets below.
resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:this is the access-log bucket itself; logging it into itself would loop
  name                        = "${var.project_id}-bifrost-access-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }
  dynamic "encryption" {
    for_each = local.kms == null ? [] : [local.kms]
    content {
      default_kms_key_name = encryption.value
    }
  }
}

# sources: uploaded sources (`bifrost deploy` of a directory) and build
# contexts, kept 30 days. build-logs: the logs Cloud Build writes
# (log-<build>.txt), which the build function streams into the deployment's
# log, kept 30 days. scripts: routing scripts pushed live (`bifrost scripts
# push`; the gateway writes them, the routers load them), kept.
locals {
  data_buckets = {
    sources      = { delete_after_days = 30 }
    "build-logs" = { delete_after_days = 30 }
    scripts      = { delete_after_days = null }
  }
}

resource "google_storage_bucket" "data" {
  for_each                    = local.data_buckets
  name                        = "${var.project_id}-bifrost-${each.key}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }
  dynamic "lifecycle_rule" {
    for_each = each.value.delete_after_days == null ? [] : [each.value.delete_after_days]
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }
  dynamic "encryption" {
    for_each = local.kms == null ? [] : [local.kms]
    content {
      default_kms_key_name = encryption.value
    }
  }
}

# gateway stores uploads; validate reads them; build reads them and writes
# (and on a retry overwrites) build contexts.
resource "google_storage_bucket_iam_member" "sources" {
  for_each = { gateway = "roles/storage.objectCreator", validate = "roles/storage.objectViewer", build = "roles/storage.objectUser" }
  bucket   = google_storage_bucket.data["sources"].name
  role     = each.value
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

# Builds run as their own account: they read the build context, write their
# log, push the image; the build function reads the log.
resource "google_storage_bucket_iam_member" "builds" {
  for_each = {
    sources   = { bucket = "sources", role = "roles/storage.objectViewer", member = google_service_account.builds.email }
    logs      = { bucket = "build-logs", role = "roles/storage.objectUser", member = google_service_account.builds.email }
    log_tails = { bucket = "build-logs", role = "roles/storage.objectViewer", member = google_service_account.function["build"].email }
  }
  bucket = google_storage_bucket.data[each.value.bucket].name
  role   = each.value.role
  member = "serviceAccount:${each.value.member}"
}

resource "google_storage_bucket_iam_member" "scripts_writer" {
  bucket = google_storage_bucket.data["scripts"].name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.function["gateway"].email}"
}
