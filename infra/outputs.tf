output "project_id" {
  description = "Project the stack is deployed in."
  value       = var.project_id
}

output "region" {
  description = "Region of the functions, buckets, Artifact Registry and Vertex AI jobs."
  value       = var.region
}

output "uploads_bucket" {
  description = "Private bucket for uploaded lesion images (DEEPSKIN_UPLOADS_BUCKET); objects expire after retention_days and trigger predict_event."
  value       = google_storage_bucket.data["uploads"].name
}

output "results_bucket" {
  description = "Private bucket for heatmaps (DEEPSKIN_RESULTS_BUCKET); objects expire after retention_days."
  value       = google_storage_bucket.data["results"].name
}

output "models_bucket" {
  description = "Private, versioned bucket for promoted ONNX models and model cards (DEEPSKIN_MODELS_BUCKET)."
  value       = google_storage_bucket.data["models"].name
}

output "training_bucket" {
  description = "Private bucket for training data (ham10000/), feedback images (feedback/) and run outputs (runs/) (DEEPSKIN_TRAINING_BUCKET)."
  value       = google_storage_bucket.data["training"].name
}

output "function_sources_bucket" {
  description = "Bucket holding the zipped function sources uploaded by Terraform."
  value       = google_storage_bucket.data["sources"].name
}

output "predict_http_url" {
  description = "HTTPS URL of the predict HTTP function; callers need roles/run.invoker and an identity token with this URL as audience."
  value       = google_cloudfunctions2_function.fn["predict_http"].service_config[0].uri
}

output "feedback_http_url" {
  description = "HTTPS URL of the feedback HTTP function (https://<region>-<project>.cloudfunctions.net/<name>); callers need roles/run.invoker and an identity token with exactly this URL as audience: it is DEEPSKIN_FEEDBACK_AUDIENCE, against which clinician tokens are verified."
  value       = google_cloudfunctions2_function.fn["feedback"].url
}

output "ops_http_url" {
  description = "HTTPS URL of the ops function (the operator page's data), the audience its operators' ID tokens are minted for; only var.operator_members may invoke it, and only var.operator_emails are admitted."
  value       = local.ops_audience
}

output "function_names" {
  description = "Name of each Cloud Function by its key in local.functions (predict_event, predict_http, predict_dead, feedback, retrain_trigger, sweeper, ops), e.g. for `gcloud functions logs read`."
  value       = { for key, fn in google_cloudfunctions2_function.fn : key => fn.name }
}

output "feedback_topic" {
  description = "Pub/Sub topic the feedback function publishes to (DEEPSKIN_FEEDBACK_TOPIC)."
  value       = google_pubsub_topic.feedback.name
}

output "feedback_dead_letter_topic" {
  description = "Pub/Sub dead-letter topic for feedback messages that exhausted max_delivery_attempts."
  value       = google_pubsub_topic.feedback_dead.name
}

output "feedback_dead_letter_subscription" {
  description = "Pull subscription that retains dead-lettered feedback messages for inspection and replay."
  value       = google_pubsub_subscription.feedback_dead.name
}

output "firestore_database" {
  description = "Firestore database ID (native mode) holding predictions, feedback, models, ledger and jobs."
  value       = google_firestore_database.main.name
}

output "function_service_accounts" {
  description = "Runtime service account email of each function, by its key in google_service_account.fn (predict_event, predict_http, predict_dead, feedback, retrain, sweeper, ops)."
  value       = local.function_sa_emails
}

output "training_service_account_email" {
  description = "Service account Vertex AI custom training jobs must run as (--service-account)."
  value       = google_service_account.training.email
}

output "eventarc_service_account_email" {
  description = "Service account used by the Eventarc triggers to invoke the event functions."
  value       = google_service_account.eventarc.email
}

output "build_service_account_email" {
  description = "Service account Cloud Build uses to build the functions."
  value       = google_service_account.build.email
}

output "artifact_registry_repository" {
  description = "Docker repository path (HOST/PROJECT/REPO) for the training and serving images."
  value       = local.image_repository
}

output "training_image_uri" {
  description = "Training image URI (docker/training.Dockerfile) pinned by var.training_image_digest (repository@sha256:...); empty before the first image."
  value       = local.training_image_uri
}

output "serving_image_uri" {
  description = "Cloud Run serving image URI (docker/serving.Dockerfile) pinned by var.serving_image_digest; empty before the first image."
  value       = local.serving_image_uri
}

output "vertex_training_spec" {
  description = "Settings for submitting Vertex AI custom training jobs (region, service account, image, machine, accelerator, /gcs data and runs paths)."
  value       = local.vertex_training_spec
}

output "edge_ip" {
  description = "IP address of the edge load balancer (edge.tf): var.edge_domain's DNS A record must point here."
  value       = google_compute_global_address.edge.address
}

output "edge_predict_url" {
  description = "Where clients POST photos and read or delete results: predict_http behind the per-caller limits (edge.tf)."
  value       = "https://${var.edge_domain}/predict"
}

output "edge_feedback_url" {
  description = "Where clients POST reports: the feedback function behind the per-caller limits (edge.tf). Clinicians still mint their ID tokens for output feedback_http_url."
  value       = "https://${var.edge_domain}/feedback"
}
