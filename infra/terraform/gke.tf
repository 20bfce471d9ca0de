# GKE cluster for KubeRay (infra/k8s): an on-demand system pool for the Ray head and the operator,
# and CPU and GPU worker pools that autoscale to zero (Spot by default).

# Zonal cluster with workload identity; the default pool is replaced by the pools below.
resource "google_container_cluster" "main" {
  name     = "embedder"
  location = var.zone
  # Pools are managed separately; GKE needs one initial node to create the cluster.
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = var.deletion_protection

  # Pods get Google credentials for their Kubernetes service account (no keys).
  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  # Regular release channel: tested upgrades of Kubernetes and the GPU driver.
  release_channel {
    channel = "REGULAR"
  }
}

# Ray head, KubeRay operator and system pods: on-demand, small, always on.
resource "google_container_node_pool" "system" {
  name     = "system"
  cluster  = google_container_cluster.main.id
  location = var.zone

  autoscaling {
    total_min_node_count = 1
    total_max_node_count = 3
  }

  node_config {
    machine_type    = "n2-standard-8"
    disk_size_gb    = 100
    service_account = google_service_account.gke_nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels = {
      "embedder/pool" = "system"
    }
    # Pods use workload identity through the GKE metadata server.
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# CPU workers: cube reading and shard building; zero nodes when idle.
resource "google_container_node_pool" "cpu" {
  name     = "cpu-workers"
  cluster  = google_container_cluster.main.id
  location = var.zone

  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.cpu_max_nodes
  }

  node_config {
    machine_type    = var.cpu_machine_type
    disk_size_gb    = 200
    spot            = var.spot
    service_account = google_service_account.gke_nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels = {
      "embedder/pool" = "cpu"
    }
    # Only pods that tolerate Spot land here (the Ray worker groups do).
    dynamic "taint" {
      for_each = var.spot ? [1] : []
      content {
        key    = "cloud.google.com/gke-spot"
        value  = "true"
        effect = "NO_SCHEDULE"
      }
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# GPU workers: training and embedding; autoscale from zero, one L4 per node, driver installed by GKE.
resource "google_container_node_pool" "gpu" {
  name     = "gpu-workers"
  cluster  = google_container_cluster.main.id
  location = var.zone

  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.gpu_max_nodes
  }

  node_config {
    machine_type    = var.gpu_machine_type
    disk_size_gb    = 200
    spot            = var.spot
    service_account = google_service_account.gke_nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels = {
      "embedder/pool" = "gpu"
    }

    guest_accelerator {
      type  = var.gpu_type
      count = 1
      # GKE installs the default NVIDIA driver for the node's version.
      gpu_driver_installation_config {
        gpu_driver_version = "DEFAULT"
      }
    }

    # GKE adds the nvidia.com/gpu taint itself; the Spot taint keeps other pods off.
    dynamic "taint" {
      for_each = var.spot ? [1] : []
      content {
        key    = "cloud.google.com/gke-spot"
        value  = "true"
        effect = "NO_SCHEDULE"
      }
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}
