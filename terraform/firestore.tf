resource "google_firestore_database" "bifrost" {
  name                              = "(default)"
  location_id                       = var.region
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  depends_on                        = [google_project_service.apis]
}

# The composite indexes the store's queries need (shared/gcp/src/firestore.rs).
locals {
  firestore_indexes = {
    deployments_by_project = { collection = "deployments", fields = [["project_id", "ASCENDING"], ["created_ms", "DESCENDING"], ["id", "DESCENDING"]] }
    deployments_all        = { collection = "deployments", fields = [["created_ms", "DESCENDING"], ["id", "DESCENDING"]] }
    audit_by_deployment    = { collection = "audit", fields = [["deployment_id", "ASCENDING"], ["seq", "ASCENDING"]] }
    events_by_deployment   = { collection = "events", fields = [["deployment_id", "ASCENDING"], ["seq", "ASCENDING"]] }
    feed_by_deployment     = { collection = "feed", fields = [["deployment_id", "ASCENDING"], ["seq", "ASCENDING"]] }
    health_by_deployment   = { collection = "health", fields = [["deployment_id", "ASCENDING"], ["at_ms", "ASCENDING"]] }
    health_raw_by_time     = { collection = "health", fields = [["span_s", "ASCENDING"], ["at_ms", "ASCENDING"]] }
    traffic_by_project     = { collection = "traffic_minutes", fields = [["project_id", "ASCENDING"], ["minute_ms", "ASCENDING"]] }
    analytics_by_project   = { collection = "analytics", fields = [["project_id", "ASCENDING"], ["start_ms", "ASCENDING"]] }
  }
}

resource "google_firestore_index" "bifrost" {
  for_each   = local.firestore_indexes
  database   = google_firestore_database.bifrost.name
  collection = each.value.collection

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value[0]
      order      = fields.value[1]
    }
  }
}
