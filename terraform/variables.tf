variable "project_id" {
  description = "The GCP project Bifrost runs in."
  type        = string
}

variable "region" {
  description = "Region for Cloud Run, Artifact Registry, GKE, buckets and Firestore."
  type        = string
  default     = "europe-west1"
}

variable "image_tag" {
  description = "Tag (or digest suffix, e.g. \"@sha256:...\") of the Bifrost images cloudbuild.yaml pushed."
  type        = string
}

variable "apps_domain" {
  description = "Apps are served at <app>.<apps_domain>; point a wildcard DNS record at the GKE ingress."
  type        = string
}

variable "push_ack_deadline_seconds" {
  description = "How long a function has to answer a Pub/Sub push before it is redelivered (builds run longer: see build_ack_deadline_seconds)."
  type        = number
  default     = 60
}

variable "build_ack_deadline_seconds" {
  description = "Ack deadline of the build function's subscription (Pub/Sub's maximum is 600)."
  type        = number
  default     = 600
}

variable "max_delivery_attempts" {
  description = "Deliveries before an event goes to its dead-letter topic (5-100)."
  type        = number
  default     = 10
}

variable "analytics_schedule" {
  description = "Cron schedule (Cloud Scheduler) of the analytics function: health downsampling, the outbox re-publisher and the analytics windows it owes."
  type        = string
  default     = "*/5 * * * *"
}

variable "bigquery_export" {
  description = "Stream analytics results (cost per window, anomalies) to the BigQuery dataset bifrost_analytics as well as Firestore."
  type        = bool
  default     = false
}

variable "analytics_every" {
  description = "Length of an analytics window (5m, 1h; or off). Each scheduled call analyses the closed windows owed since the last (up to 7 days back)."
  type        = string
  default     = "5m"
}

variable "retention" {
  description = "How long health reports, traffic minutes and analytics results are kept in Firestore (at least 15d), or off."
  type        = string
  default     = "30d"
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key (projects/.../cryptoKeys/...) for buckets, Artifact Registry, Pub/Sub and secrets. Google-managed keys when empty."
  type        = string
  default     = ""
}

variable "routers" {
  description = "The router cluster fronts every app (docs/router-cluster.md): a global address for its wildcard Ingress, and the deploy function stops making per-app Ingresses. Apply `bifrost render --target gke-router` first."
  type        = bool
  default     = false
}
