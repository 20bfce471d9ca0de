# Terraform and provider versions. Credentials come from the environment of whoever runs it
# (`gcloud auth application-default login` or the CI's workload identity), never from these files.
terraform {
  # optional() attributes and the `check` block need >= 1.5.
  required_version = ">= 1.5"

  required_providers {
    # Google Cloud provider: buckets, IAM, GKE, Artifact Registry.
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
}

# Project and region of every resource.
provider "google" {
  project = var.project_id
  region  = var.region
}
