# Values the operator copies into cluster.yaml, infra/k8s and the job configs (docs/operations.md).

output "bucket_url" {
  description = "gs:// URL of the embeddings bucket (shards, checkpoints, the store)."
  value       = "gs://${google_storage_bucket.embeddings.name}"
}

output "runtime_service_account" {
  description = "Email of the runtime service account (cluster.yaml serviceAccounts, k8s annotation)."
  value       = google_service_account.runtime.email
}

output "image_repository" {
  description = "Docker repository for infra/build_push.sh."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/embedder"
}

output "gke_cluster" {
  description = "GKE cluster name, for `gcloud container clusters get-credentials`."
  value       = google_container_cluster.main.name
}

output "workload_identity_member" {
  description = "IAM member of the Ray pods' Kubernetes service account."
  value       = "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_namespace}/${var.k8s_service_account}]"
}
