resource "google_pubsub_topic" "events" {
  for_each     = toset(local.statuses)
  name         = "bifrost-deployment-${each.value}"
  kms_key_name = local.kms
  # Events are small; a week of retention lets a redrive replay them.
  message_retention_duration = "604800s"
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letters" {
  for_each                   = local.subscriptions
  name                       = "bifrost-dead-${each.key}"
  kms_key_name               = local.kms
  message_retention_duration = "604800s"
}

# Dead letters are pushed to the analytics service, which records them in
# Firestore for the API (`bifrost events dead`, the dashboard) to list and
# redrive; the topic keeps them a week as well.
resource "google_pubsub_subscription" "dead_letters" {
  for_each                   = local.subscriptions
  name                       = "bifrost-dead-${each.key}"
  topic                      = google_pubsub_topic.dead_letters[each.key].id
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.functions["analytics"].uri}/push/dead-letter"
    oidc_token {
      service_account_email = google_service_account.pubsub_invoker.email
      audience              = google_cloud_run_v2_service.functions["analytics"].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "push" {
  for_each             = local.subscriptions
  name                 = "bifrost-${each.key}"
  topic                = google_pubsub_topic.events[each.value.status].id
  ack_deadline_seconds = each.value.function == "build" ? var.build_ack_deadline_seconds : var.push_ack_deadline_seconds
  # One deployment's events arrive in order (ordering key = deployment id).
  enable_message_ordering = true

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.functions[each.value.function].uri}/push/${each.value.function}"
    oidc_token {
      service_account_email = google_service_account.pubsub_invoker.email
      audience              = google_cloud_run_v2_service.functions[each.value.function].uri
    }
  }

  # 429/5xx from a function: redelivered with backoff.
  retry_policy {
    minimum_backoff = "1s"
    maximum_backoff = "60s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letters[each.key].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub's own agent must be allowed to move messages to dead-letter topics.
data "google_project" "this" {}

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.subscriptions
  topic    = google_pubsub_topic.dead_letters[each.key].id
  role     = "roles/pubsub.publisher"
  member   = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each     = local.subscriptions
  subscription = google_pubsub_subscription.push[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
