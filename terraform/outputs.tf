output "gateway_url" {
  description = "The API and webhook endpoint (`bifrost --server <url>`; GitHub webhook: <url>/webhooks/github)."
  value       = google_cloud_run_v2_service.functions["gateway"].uri
}

output "dashboard_url" {
  description = "The dashboard (Cloud Run service `bifrost-web`)."
  value       = google_cloud_run_v2_service.functions["web"].uri
}

output "registry" {
  description = "Artifact Registry path images are pushed to."
  value       = local.registry
}

output "apps_cluster" {
  description = "The GKE Autopilot cluster apps run on."
  value       = google_container_cluster.apps.name
}

output "sources_bucket" {
  description = "Bucket of uploaded sources and build contexts."
  value       = google_storage_bucket.data["sources"].name
}

output "event_topics" {
  description = "Pub/Sub topic per event type."
  value       = { for s, t in google_pubsub_topic.events : s => t.name }
}

output "routers_address" {
  description = "With routers = true: the router cluster's Ingress address; point *.<apps_domain> here."
  value       = var.routers ? google_compute_global_address.routers[0].address : null
}
