# Apps run here. Autopilot: Google manages nodes, hardening, upgrades;
# Bifrost's deploy function applies each app's objects (bifrost render).
resource "google_container_cluster" "apps" {
  #checkov:skip=CKV_GCP_12:Autopilot always runs GKE Dataplane V2, which enforces NetworkPolicy; the network_policy block is not accepted on Autopilot
  #checkov:skip=CKV_GCP_61:Autopilot manages node networking; turn on VPC flow logs on the subnet if you need them
  #checkov:skip=CKV_GCP_69:Autopilot always enables the GKE metadata server (Workload Identity); node_config is not settable
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC need a Workspace group; add authenticator_groups_config once you have one (docs/gcp.md)
  name                = "bifrost-apps"
  location            = var.region
  enable_autopilot    = true
  deletion_protection = true

  resource_labels = {
    app        = "bifrost"
    managed-by = "terraform"
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  release_channel {
    channel = "REGULAR"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = "172.16.0.0/28"
  }

  master_authorized_networks_config {
    gcp_public_cidrs_access_enabled = true
  }

  ip_allocation_policy {}

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  dynamic "database_encryption" {
    for_each = local.kms == null ? [] : [local.kms]
    content {
      state    = "ENCRYPTED"
      key_name = database_encryption.value
    }
  }

  depends_on = [google_project_service.apis]
}

# The router cluster's wildcard Ingress (`*.<apps_domain>`) takes this
# address (annotation kubernetes.io/ingress.global-static-ip-name); point
# the wildcard DNS record here.
resource "google_compute_global_address" "routers" {
  count      = var.routers ? 1 : 0
  name       = "bifrost-router"
  depends_on = [google_project_service.apis]
}

# Cloud Build applies the router cluster's objects on each build
# (cloudbuild.yaml, steps render-routers and apply-routers). They include a
# Role and RoleBinding (pods get/list/watch for discovery): granting RBAC
# needs container.admin, not container.developer.
resource "google_project_iam_member" "builds_apply_routers" {
  count   = var.routers ? 1 : 0
  project = var.project_id
  role    = "roles/container.admin"
  member  = "serviceAccount:${data.google_project.this.number}@cloudbuild.gserviceaccount.com"
}
