# One service account per function, each with only what it does.
resource "google_service_account" "function" {
  for_each     = toset(local.functions)
  account_id   = "bifrost-${each.value}"
  display_name = "Bifrost ${each.value} function"
}

# Pub/Sub signs its pushes as this account; only it may invoke the
# private functions.
resource "google_service_account" "pubsub_invoker" {
  account_id   = "bifrost-pubsub-push"
  display_name = "Bifrost Pub/Sub push invoker"
}

# The account the apps' Cloud Build builds run as (not Cloud Build's
# default, which is project-wide editor in older projects).
resource "google_service_account" "builds" {
  account_id   = "bifrost-builds"
  display_name = "Bifrost app builds (Cloud Build)"
}

resource "google_artifact_registry_repository_iam_member" "builds_push" {
  location   = google_artifact_registry_repository.bifrost.location
  repository = google_artifact_registry_repository.bifrost.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.builds.email}"
}

# The build function submits builds that run as that account.
resource "google_service_account_iam_member" "build_acts_as_builds" {
  service_account_id = google_service_account.builds.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.function["build"].email}"
}

resource "google_service_account" "scheduler" {
  account_id   = "bifrost-scheduler"
  display_name = "Bifrost Cloud Scheduler invoker"
}

locals {
  # Project-level roles per function (docs/gcp.md explains each).
  function_roles = {
    gateway   = ["roles/datastore.user", "roles/pubsub.publisher", "roles/container.viewer"]
    web       = []
    validate  = ["roles/datastore.user", "roles/pubsub.publisher"]
    build     = ["roles/datastore.user", "roles/pubsub.publisher", "roles/cloudbuild.builds.editor"]
    deploy    = ["roles/datastore.user", "roles/pubsub.publisher", "roles/container.developer"]
    verify    = ["roles/datastore.user", "roles/pubsub.publisher", "roles/container.viewer"]
    analytics = ["roles/datastore.user"]
  }
  function_role_pairs = flatten([
    for f, roles in local.function_roles : [for r in roles : { function = f, role = r }]
  ])
}

resource "google_project_iam_member" "function" {
  for_each = { for p in local.function_role_pairs : "${p.function}/${p.role}" => p }
  project  = var.project_id
  role     = each.value.role
  member   = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

resource "google_cloud_run_v2_service_iam_member" "pubsub_invoker" {
  for_each = toset(local.push_functions)
  name     = google_cloud_run_v2_service.functions[each.value].name
  location = var.region
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pubsub_invoker.email}"
}

resource "google_cloud_run_v2_service_iam_member" "scheduler_invoker" {
  name     = google_cloud_run_v2_service.functions["analytics"].name
  location = var.region
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

# The gateway (API + webhooks) and the dashboard are public; both check
# Bifrost tokens and GitHub signatures themselves.
resource "google_cloud_run_v2_service_iam_member" "public" {
  for_each = toset(local.public_functions)
  name     = google_cloud_run_v2_service.functions[each.value].name
  location = var.region
  role     = "roles/run.invoker"
  member   = "allUsers"
}
