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
# infra/permissions.py is the table of what each identity may do to each bucket
# (and why); tests/infra/test_permissions.py fails when these bindings differ
# from it. A prefix (null: none) limits a binding to the objects under it (an IAM
# condition on the object name). The models bucket (the registry pointer, the
# pinned baseline, candidates awaiting approval) is written by the training
# identity alone: every function only reads it.
locals {
  bucket_bindings = {
    "uploads|predict_event|roles/storage.objectViewer" = { bucket = "uploads", sa = "predict_event", role = "roles/storage.objectViewer", prefix = null }
    "results|predict_event|roles/storage.objectUser"   = { bucket = "results", sa = "predict_event", role = "roles/storage.objectUser", prefix = null }
    "models|predict_event|roles/storage.objectViewer"  = { bucket = "models", sa = "predict_event", role = "roles/storage.objectViewer", prefix = null }
    "uploads|predict_http|roles/storage.objectUser"    = { bucket = "uploads", sa = "predict_http", role = "roles/storage.objectUser", prefix = null }
    "results|predict_http|roles/storage.objectUser"    = { bucket = "results", sa = "predict_http", role = "roles/storage.objectUser", prefix = null }
    "models|predict_http|roles/storage.objectViewer"   = { bucket = "models", sa = "predict_http", role = "roles/storage.objectViewer", prefix = null }
    # The owner's delete erases the training copy of a clinician-labelled upload: delete only, feedback/ only.
    "training|predict_http|object_deleter"        = { bucket = "training", sa = "predict_http", role = google_project_iam_custom_role.object_deleter.id, prefix = "feedback/" }
    "uploads|feedback|roles/storage.objectViewer" = { bucket = "uploads", sa = "feedback", role = "roles/storage.objectViewer", prefix = null }
    # Create only (never replace), and only under feedback/ (expires with retention_days).
    "training|feedback|roles/storage.objectCreator" = { bucket = "training", sa = "feedback", role = "roles/storage.objectCreator", prefix = "feedback/" }
    "models|ops|roles/storage.objectViewer"         = { bucket = "models", sa = "ops", role = "roles/storage.objectViewer", prefix = null }
  }

  function_sa_emails = { for key, sa in google_service_account.fn : key => sa.email }
}

# Deleting an object needs no other right: a function that must erase objects it
# may neither read nor write gets this role alone (bound with a prefix above).
resource "google_project_iam_custom_role" "object_deleter" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_object_deleter"
  title       = "DeepSkin object deleter"
  description = "Delete objects, nothing else: the owner's delete of a training copy (infra/permissions.py)."
  permissions = ["storage.objects.delete"]
}

resource "google_storage_bucket_iam_member" "functions" {
  for_each = local.bucket_bindings

  bucket = google_storage_bucket.data[each.value.bucket].name
  role   = each.value.role
  member = "serviceAccount:${google_service_account.fn[each.value.sa].email}"

  dynamic "condition" {
    for_each = each.value.prefix[*]
    content {
      title       = "only-${trimsuffix(condition.value, "/")}"
      description = "Only the objects under ${condition.value}"
      expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.data[each.value.bucket].name}/objects/${condition.value}\")"
    }
  }
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

# The retrain trigger dead-letters poison messages itself (deepskin.loop.ledger.dead_letter
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
# Firestore IAM is per project/database, never per collection: every runtime
# that writes any collection gets roles/datastore.user (and so could write them
# all); the ops function only reads, so it gets roles/datastore.viewer instead.
# infra/permissions.py lists the collections each one uses, and why nothing that
# decides what is served or trained is kept in Firestore.
locals {
  firestore_writers = ["predict_event", "predict_http", "predict_dead", "feedback", "retrain", "sweeper", "training"]
  runtime_sa_emails = merge(local.function_sa_emails, { training = google_service_account.training.email })
}

resource "google_project_iam_member" "firestore_user" {
  for_each = { for key in local.firestore_writers : key => local.runtime_sa_emails[key] }

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
