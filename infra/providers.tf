provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = merge(
    {
      app        = var.name_prefix
      managed-by = "terraform"
    },
    var.labels,
  )
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  project_number = data.google_project.this.number

  # Google-managed service agents (created when the APIs are enabled).
  pubsub_service_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  bucket_names = {
    uploads  = "${var.project_id}-${var.name_prefix}-uploads"
    results  = "${var.project_id}-${var.name_prefix}-results"
    models   = "${var.project_id}-${var.name_prefix}-models"
    training = "${var.project_id}-${var.name_prefix}-training"
    sources  = "${var.project_id}-${var.name_prefix}-fn-sources"
  }

  artifact_registry_host = "${var.region}-docker.pkg.dev"
  image_repository       = "${local.artifact_registry_host}/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
  training_image_uri     = var.training_image_digest == "" ? "" : "${local.image_repository}/training@${var.training_image_digest}"
  serving_image_uri      = var.serving_image_digest == "" ? "" : "${local.image_repository}/serving@${var.serving_image_digest}"
}
