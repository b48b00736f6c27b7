# Bifrost on Google Cloud: one Cloud Run service per function, fed by
# Pub/Sub push subscriptions (one topic per event type), state in Firestore,
# builds in Cloud Build, apps on GKE Autopilot. See docs/gcp.md.

locals {
  # Every event type (deployment.<status>) gets a topic.
  statuses = ["queued", "validating", "building", "built", "deploying", "running", "healthy", "failed", "cancelled", "superseded"]

  # Which function consumes which event: derived in functions/src/lib.rs
  # (subscriptions()); functions/tests/subscriptions.rs checks this table.
  subscriptions = {
    "validate-queued"     = { function = "validate", status = "queued" }
    "validate-validating" = { function = "validate", status = "validating" }
    "build-building"      = { function = "build", status = "building" }
    "deploy-built"        = { function = "deploy", status = "built" }
    "deploy-deploying"    = { function = "deploy", status = "deploying" }
    "verify-running"      = { function = "verify", status = "running" }
    "deploy-healthy"      = { function = "deploy", status = "healthy" }
    "deploy-superseded"   = { function = "deploy", status = "superseded" }
    "deploy-cancelled"    = { function = "deploy", status = "cancelled" }
    "deploy-failed"       = { function = "deploy", status = "failed" }
  }

  # Services fed by Pub/Sub (private) and the public ones.
  push_functions   = ["validate", "build", "deploy", "verify", "analytics"]
  public_functions = ["gateway", "web"]
  functions        = concat(local.public_functions, local.push_functions)

  registry = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.bifrost.repository_id}"
  kms      = var.kms_key_name == "" ? null : var.kms_key_name
}

resource "google_project_service" "apis" {
  for_each = toset([
    "run.googleapis.com",
    "pubsub.googleapis.com",
    "firestore.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "container.googleapis.com",
    "secretmanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "storage.googleapis.com",
    "iam.googleapis.com",
    "bigquery.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}
