# Services DeepSkin needs. serviceusage.googleapis.com and
# cloudresourcemanager.googleapis.com must be enabled by the bootstrap
# (infra/README.md) because Terraform needs them to enable the rest.
locals {
  required_apis = [
    "aiplatform.googleapis.com",       # Vertex AI custom training jobs
    "artifactregistry.googleapis.com", # training/serving images, function images
    "cloudbuild.googleapis.com",       # Cloud Functions builds
    "cloudfunctions.googleapis.com",   # 2nd gen functions
    "cloudscheduler.googleapis.com",   # the sweeper's schedule
    "compute.googleapis.com",          # the edge: load balancer and Cloud Armor (edge.tf)
    "cloudresourcemanager.googleapis.com",
    "eventarc.googleapis.com",       # storage + Pub/Sub triggers
    "firestore.googleapis.com",      # predictions, feedback, models, ledger, jobs
    "iam.googleapis.com",            # service accounts
    "iamcredentials.googleapis.com", # Workload Identity Federation, identity tokens
    "logging.googleapis.com",
    "pubsub.googleapis.com",  # feedback topics, Eventarc transport
    "run.googleapis.com",     # 2nd gen functions run on Cloud Run
    "storage.googleapis.com", # buckets
  ]
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(local.required_apis) : toset([])

  project = var.project_id
  service = each.value

  # Never switch an API off on destroy: other workloads in the project may use it.
  disable_on_destroy         = false
  disable_dependent_services = false
}
