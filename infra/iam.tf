# Identities. One runtime service account per function, one for Vertex AI
# training, one for Eventarc triggers and one for Cloud Functions builds. Each
# gets only the roles it needs, bound on the bucket / topic / service account
# where IAM allows it; only roles that have no narrower resource are granted at
# project level (Firestore, Vertex AI job creation, Eventarc receiving, builds).

locals {
  function_service_accounts = {
    predict_event = "Runtime identity of the predict storage-event function"
    predict_http  = "Runtime identity of the predict HTTP function"
    predict_dead  = "Runtime identity of the predict dead-letter function"
    feedback      = "Runtime identity of the feedback HTTP function"
    retrain       = "Runtime identity of the retrain trigger function"
    ops           = "Runtime identity of the operator (ops) HTTP function"
    sweeper       = "Runtime identity of the scheduled sweeper function"
  }
}

resource "google_service_account" "fn" {
  for_each = local.function_service_accounts

  project      = var.project_id
  account_id   = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  display_name = each.value

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "training" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-training"
  display_name = "Vertex AI custom jobs (training.train, .export, .promote, .retrain)"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "eventarc" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-eventarc"
  display_name = "Eventarc triggers delivering events to the DeepSkin functions"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-build"
  display_name = "Cloud Build identity for building the DeepSkin functions"

  depends_on = [google_project_service.apis]
}

# --- bucket-level bindings ----------------------------------------------------------
locals {
  bucket_bindings = {
    # The models bucket holds the registry pointer (current.json): every function
    # only reads it; the training identity (the promotion path) alone writes it.
    # predict (event): read the upload, write/overwrite heatmaps, read the model.
    "uploads|predict_event|roles/storage.objectViewer" = { bucket = "uploads", sa = "predict_event", role = "roles/storage.objectViewer" }
    "results|predict_event|roles/storage.objectUser"   = { bucket = "results", sa = "predict_event", role = "roles/storage.objectUser" }
    "models|predict_event|roles/storage.objectViewer"  = { bucket = "models", sa = "predict_event", role = "roles/storage.objectViewer" }
    # predict (HTTP): store posted images, write heatmaps, serve the delete path.
    "uploads|predict_http|roles/storage.objectUser"  = { bucket = "uploads", sa = "predict_http", role = "roles/storage.objectUser" }
    "results|predict_http|roles/storage.objectUser"  = { bucket = "results", sa = "predict_http", role = "roles/storage.objectUser" }
    "models|predict_http|roles/storage.objectViewer" = { bucket = "models", sa = "predict_http", role = "roles/storage.objectViewer" }
    # feedback: copy a labelled image into training/feedback/ (expires with retention_days).
    "uploads|feedback|roles/storage.objectViewer"   = { bucket = "uploads", sa = "feedback", role = "roles/storage.objectViewer" }
    "training|feedback|roles/storage.objectCreator" = { bucket = "training", sa = "feedback", role = "roles/storage.objectCreator" }
    # retrain trigger: inspect the training data and the current model.
    "training|retrain|roles/storage.objectViewer" = { bucket = "training", sa = "retrain", role = "roles/storage.objectViewer" }
    "models|retrain|roles/storage.objectViewer"   = { bucket = "models", sa = "retrain", role = "roles/storage.objectViewer" }
    # ops: read the served model's card.
    "models|ops|roles/storage.objectViewer" = { bucket = "models", sa = "ops", role = "roles/storage.objectViewer" }
  }

  function_sa_emails = { for key, sa in google_service_account.fn : key => sa.email }
}

resource "google_storage_bucket_iam_member" "functions" {
  for_each = local.bucket_bindings

  bucket = google_storage_bucket.data[each.value.bucket].name
  role   = each.value.role
  member = "serviceAccount:${google_service_account.fn[each.value.sa].email}"
}

# Training job: read HAM10000/feedback and write runs/ in the training bucket;
# write the promoted model (promotion gate) in the models bucket.
resource "google_storage_bucket_iam_member" "training" {
  for_each = toset(["training", "models"])

  bucket = google_storage_bucket.data[each.key].name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.training.email}"
}

# --- topic-level bindings ---------------------------------------------------------------
resource "google_pubsub_topic_iam_member" "feedback_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.feedback.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.fn["feedback"].email}"
}

# The retrain trigger dead-letters poison messages itself (deepskin.services.jobs.dead_letter
# publishes them to DEEPSKIN_FEEDBACK_DEAD_TOPIC, then acknowledges them).
resource "google_pubsub_topic_iam_member" "retrain_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.feedback_dead.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.fn["retrain"].email}"
}

# --- service-account-level bindings ---------------------------------------------------
# The retrain function submits Vertex AI custom jobs that run as the training SA.
resource "google_service_account_iam_member" "retrain_acts_as_training" {
  service_account_id = google_service_account.training.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.fn["retrain"].email}"
}

# predict_http signs short-lived V4 URLs (browser upload / heatmap download)
# with its own key-less identity via the IAM signBlob API.
resource "google_service_account_iam_member" "predict_http_self_sign" {
  service_account_id = google_service_account.fn["predict_http"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.fn["predict_http"].email}"
}

# --- project-level bindings (no narrower resource exists) -------------------------------
# Firestore IAM is per project/database: every runtime that reads or writes
# predictions, feedback, models, ledger or jobs needs roles/datastore.user;
# the ops function only reads, so it gets roles/datastore.viewer instead.
resource "google_project_iam_member" "firestore_user" {
  for_each = merge({ for key, email in local.function_sa_emails : key => email if key != "ops" },
  { training = google_service_account.training.email })

  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${each.value}"
}

resource "google_project_iam_member" "ops_firestore_viewer" {
  project = var.project_id
  role    = "roles/datastore.viewer"
  member  = "serviceAccount:${google_service_account.fn["ops"].email}"
}

# Vertex AI jobs have no per-resource IAM: roles/aiplatform.user at project level
# is the narrowest predefined role with aiplatform.customJobs.create.
#   retrain: submits the jobs. They run as the training SA, which the retrain SA
#            may act as (serviceAccountUser on that one SA only, above), not as
#            any other identity.
#   sweeper: reads a job's state, and cancels one past its timeout.
resource "google_project_iam_member" "vertex_user" {
  for_each = toset(["retrain", "sweeper"])

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# Eventarc: the trigger identity must be allowed to receive events (project
# level only); run.invoker on the event functions is in functions.tf.
resource "google_project_iam_member" "eventarc_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.eventarc.email}"
}

# Eventarc storage triggers: the Cloud Storage service agent publishes the
# object notifications to the Pub/Sub topic Eventarc creates.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "gcs_agent_pubsub_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Function builds run as a dedicated SA instead of the default compute SA. It writes logs (project level
# only) and pushes the functions' images to the one DeepSkin repository (build_config.docker_repository in
# functions.tf), not to every repository of the project.
resource "google_project_iam_member" "build_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.build.email}"
}

resource "google_artifact_registry_repository_iam_member" "build_writer" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.build.email}"
}

# Builds read the function source that Cloud Functions copies into its own
# gcf-v2-sources-* bucket; the condition keeps them away from the data buckets.
resource "google_project_iam_member" "build_sources_reader" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:${google_service_account.build.email}"

  condition {
    title       = "gcf-sources-only"
    description = "Only the Cloud Functions source buckets"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\") || resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.data["sources"].name}\")"
  }
}
