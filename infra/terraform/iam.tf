# Identities. The runtime service account is what Ray code runs as (GCE VMs from cluster.yaml, and
# GKE pods through workload identity); it gets object access on the one bucket and nothing else.
# No service-account keys are created: credentials come from the metadata server.

# Runtime identity of all Ray processes.
resource "google_service_account" "runtime" {
  account_id   = "embedder-runtime"
  display_name = "embedder Ray runtime (bucket access only)"
}

# Least privilege on the data: create/read/overwrite/delete objects in this bucket only
# (objectUser has no IAM or bucket-settings rights). Granted on the bucket, not the project.
resource "google_storage_bucket_iam_member" "runtime_objects" {
  bucket = google_storage_bucket.embeddings.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.runtime.email}"
}

# Pull the images (GCE workers from cluster.yaml run as the runtime account).
resource "google_artifact_registry_repository_iam_member" "runtime_pull" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.runtime.email}"
}

# Workload identity: the Kubernetes service account <namespace>/<name> may act as the runtime account.
resource "google_service_account_iam_member" "runtime_workload_identity" {
  service_account_id = google_service_account.runtime.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_namespace}/${var.k8s_service_account}]"

  depends_on = [google_container_cluster.main] # the identity pool exists once the cluster does
}

# Identity of the GKE nodes themselves (kubelet, logging): no data access.
resource "google_service_account" "gke_nodes" {
  account_id   = "embedder-gke-nodes"
  display_name = "embedder GKE nodes (logging, metrics, image pulls)"
}

# The minimal roles GKE documents for a node service account.
resource "google_project_iam_member" "gke_nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.gke_nodes.email}"
}

# GKE nodes pull the images.
resource "google_artifact_registry_repository_iam_member" "gke_nodes_pull" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.gke_nodes.email}"
}
