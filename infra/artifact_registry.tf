# Docker repository for the training image (docker/training.Dockerfile, run by
# Vertex AI) and the serving image (docker/serving.Dockerfile, Cloud Run).
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Google-managed keys: the repository holds code images, no health data, and a customer key could stop every deploy if lost
  project       = var.project_id
  location      = var.region
  repository_id = var.name_prefix
  description   = "DeepSkin training and serving container images"
  format        = "DOCKER"

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.image_keep_count
    }
  }

  cleanup_policies {
    id     = "delete-old-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.apis]
}

# Vertex AI pulls images from a repository in the same project with its own
# service agent, so the training SA needs no reader role here. The deploy and
# train workflows push with the CI identity (roles/artifactregistry.writer,
# granted in the bootstrap, see README).
