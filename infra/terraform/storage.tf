# The embeddings bucket (training shards, checkpoints, the embedding store) and the image repository.

# Bucket name: the variable, or "<project>-embeddings" when left empty.
locals {
  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-embeddings"
}

# One regional bucket beside the compute: uniform access (IAM only, no ACLs), versioned, and public
# access prevented unless a store is being published.
resource "google_storage_bucket" "embeddings" {
  name     = local.bucket_name
  location = var.region
  # Standard class: the store is read often while published.
  storage_class = "STANDARD"
  # IAM only; object ACLs are disabled (no per-object public links by accident).
  uniform_bucket_level_access = true
  # "enforced" blocks allUsers/allAuthenticatedUsers grants; "inherited" allows the publish grant.
  public_access_prevention = var.public_read ? "inherited" : "enforced"
  # A non-empty bucket is only deleted when deletion protection is switched off.
  force_destroy = !var.deletion_protection

  # Keep previous versions of overwritten/deleted objects (undo an accidental re-run or delete).
  versioning {
    enabled = true
  }

  # Previous versions are deleted after noncurrent_version_days.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # Scratch data (shards, intermediate outputs) expires.
  lifecycle_rule {
    condition {
      age            = var.scratch_prefix_days
      matches_prefix = ["scratch/"]
    }
    action {
      type = "Delete"
    }
  }

  # Multipart uploads of preempted writers never completed: clean them up.
  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}

# Publishing: everyone may read objects (not list IAM, not write) when public_read is true.
resource "google_storage_bucket_iam_member" "public_read" {
  count  = var.public_read ? 1 : 0
  bucket = google_storage_bucket.embeddings.name
  role   = "roles/storage.objectViewer"
  member = "allUsers"
}

# Docker images built by infra/build_push.sh (<region>-docker.pkg.dev/<project>/embedder/embedder).
resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = "embedder"
  description   = "embedder container images (GPU workers, CPU head)"
  format        = "DOCKER"
}
