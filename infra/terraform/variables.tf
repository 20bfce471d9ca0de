# Inputs. Only project_id has no default; see docs/operations.md for a terraform.tfvars example.

variable "project_id" {
  description = "Google Cloud project id that holds everything (the `your-gcp-project` placeholder in cluster.yaml and infra/k8s)."
  type        = string
}

variable "region" {
  description = "Region of the bucket, the image repository and the GKE cluster (keep them together: no egress)."
  type        = string
  default     = "europe-west4"
}

variable "zone" {
  description = "Zone of the GKE cluster and its node pools (L4 GPUs must be offered there)."
  type        = string
  default     = "europe-west4-a"
}

variable "bucket_name" {
  description = "Name of the embeddings bucket; empty means \"<project_id>-embeddings\"."
  type        = string
  default     = ""
}

variable "public_read" {
  description = "Publish the bucket read-only to everyone (allUsers objectViewer) for a released store."
  type        = bool
  default     = false
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted object version is kept before lifecycle deletes it."
  type        = number
  default     = 30
}

variable "scratch_prefix_days" {
  description = "Days after which objects under scratch/ (shards, intermediate outputs) are deleted."
  type        = number
  default     = 90
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of the Ray pods (infra/k8s/serviceaccount.yaml)."
  type        = string
  default     = "embedder"
}

variable "k8s_service_account" {
  description = "Kubernetes service account of the Ray pods, bound to the runtime Google service account."
  type        = string
  default     = "embedder-runtime"
}

variable "spot" {
  description = "Run the CPU and GPU worker pools on Spot VMs (preemptible, much cheaper; jobs resume)."
  type        = bool
  default     = true
}

variable "cpu_machine_type" {
  description = "Machine type of the CPU worker pool (cube reading, shard building)."
  type        = string
  default     = "n2-highmem-16"
}

variable "cpu_max_nodes" {
  description = "Upper bound of the CPU worker pool's autoscaling (lower bound is 0)."
  type        = number
  default     = 48
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU worker pool (g2-standard-8 = 1 NVIDIA L4)."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_type" {
  description = "Accelerator type attached to each GPU node."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_max_nodes" {
  description = "Upper bound of the GPU worker pool's autoscaling (lower bound is 0)."
  type        = number
  default     = 32

  validation {
    condition     = var.gpu_max_nodes >= 1
    error_message = "gpu_max_nodes must be at least 1 (the pool scales from 0 up to it)."
  }
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the GKE cluster and a non-empty bucket (set false to tear down)."
  type        = bool
  default     = true
}
