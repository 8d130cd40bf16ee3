# Cloud Functions (2nd gen, runtime var.python_runtime). Sources are staged by
# `python infra/stage_functions.py` into build/functions/<name>/ (function code
# + the deepskin package, + models/ for predict) and zipped here.
#
# A 2nd gen function has exactly ONE trigger (HTTP or one event trigger), so the
# predict code is deployed twice from the same archive:
#   * predict_event: entry point on_upload, Eventarc storage "finalized" trigger
#     on the uploads bucket, internal ingress only;
#   * predict_http:  entry point predict_http, HTTPS, authenticated callers only.
#
# Sizing of both predict functions (1 GiB, 1 vCPU, concurrency 1, timeout 60 s,
# min instances 0 by default): ONNX inference is CPU-bound (~20 ms warm on one
# vCPU) so a second concurrent request would only queue behind the first inside
# the instance; concurrency 1 lets Cloud Run scale out instead. 1 GiB holds the
# runtime, onnxruntime, the ~18 MB model and decoded images with headroom.
# Scale to zero keeps idle cost at storage only; the price is a ~2 s cold start
# (set var.predict_min_instances = 1 to remove it). 60 s bounds a stuck request
# well above cold start + inference + heatmap + Firestore/GCS writes.
#
# No function allows unauthenticated access: HTTP functions grant
# roles/run.invoker only to var.invoker_members, event functions only to the
# Eventarc trigger service account.

locals {
  function_names = {
    predict_event = "${var.name_prefix}-predict-event"
    predict_http  = "${var.name_prefix}-predict-http"
    predict_dead  = "${var.name_prefix}-predict-dead"
    feedback      = "${var.name_prefix}-feedback"
    retrain       = "${var.name_prefix}-retrain-trigger"
    ops           = "${var.name_prefix}-ops"
    sweeper       = "${var.name_prefix}-sweeper"
  }

  # The feedback function verifies clinicians' Google ID tokens against its own
  # URL (DEEPSKIN_FEEDBACK_AUDIENCE). google_cloudfunctions2_function.feedback's
  # url / service_config[0].uri cannot be used in that function's own
  # environment_variables (a self-reference: Terraform rejects the cycle), so
  # the URL is built from inputs only: a 2nd gen function is always served at
  # the deterministic https://<region>-<project>.cloudfunctions.net/<name>
  # (its `url` attribute), and Cloud Run IAM accepts ID tokens minted for that
  # audience. The Cloud Run run.app URI is not used: service_config[0].uri may be
  # the hash-based legacy URL, which differs from any URL computable here.
  # A postcondition on the function checks the pattern after every apply, and
  # output feedback_http_url returns this same URL, so clients mint tokens for
  # exactly the audience the function checks. (Domain-scoped project IDs such
  # as example.com:proj are not supported by this pattern.)
  feedback_audience = "https://${var.region}-${var.project_id}.cloudfunctions.net/${local.function_names.feedback}"

  # Environment read by deepskin/config.py (every function imports it).
  common_env = {
    GOOGLE_CLOUD_PROJECT         = var.project_id
    DEEPSKIN_UPLOADS_BUCKET      = google_storage_bucket.data["uploads"].name
    DEEPSKIN_RESULTS_BUCKET      = google_storage_bucket.data["results"].name
    DEEPSKIN_MODELS_BUCKET       = google_storage_bucket.data["models"].name
    DEEPSKIN_TRAINING_BUCKET     = google_storage_bucket.data["training"].name
    DEEPSKIN_FEEDBACK_TOPIC      = google_pubsub_topic.feedback.name
    DEEPSKIN_FEEDBACK_DEAD_TOPIC = google_pubsub_topic.feedback_dead.name
    DEEPSKIN_RETENTION_DAYS      = tostring(var.retention_days)
    # Exact browser origins allowed by CORS on the HTTP functions. Always set:
    # unset, config.py would fall back to the local stack's localhost origins;
    # an empty list allows no browser origin at all.
    DEEPSKIN_ALLOWED_ORIGINS = join(",", var.allowed_origins)
    LOG_EXECUTION_ID         = "true"
  }

  # Predict (both entry points): the bundled model unless var.model_path says
  # otherwise, replaced by the registry's promoted model (the models bucket's
  # current.json), checked every model_check_seconds.
  predict_env = merge(
    local.common_env,
    var.model_path == "" ? {} : { DEEPSKIN_MODEL_PATH = var.model_path },
    {
      DEEPSKIN_MODEL_CHECK_SECONDS = tostring(var.model_check_seconds)
    },
  )

  # Feedback: who counts as a clinician, and the audience their tokens must carry.
  feedback_env = merge(local.common_env, {
    DEEPSKIN_FEEDBACK_AUDIENCE = local.feedback_audience
    DEEPSKIN_CLINICIANS        = join(",", var.clinician_emails)
  })

  # Retrain trigger: when to train (ledger threshold) and how VertexLauncher
  # submits the Vertex AI custom job (deepskin/jobs.py; same spec as vertex.tf).
  retrain_env = merge(local.common_env, {
    DEEPSKIN_JOB_LAUNCHER             = "vertex"
    DEEPSKIN_RETRAIN_MIN_LABELS       = tostring(var.retrain_min_labels)
    DEEPSKIN_RETRAIN_CONFIG           = var.retrain_config
    DEEPSKIN_REGION                   = var.region
    DEEPSKIN_TRAINING_IMAGE           = local.training_image_uri
    DEEPSKIN_TRAINING_SERVICE_ACCOUNT = google_service_account.training.email
    DEEPSKIN_TRAINING_MACHINE_TYPE    = var.training_machine_type
    DEEPSKIN_TRAINING_ACCELERATOR     = var.training_accelerator_type
    DEEPSKIN_TRAINING_ACCELERATORS    = tostring(var.training_accelerator_count)
    DEEPSKIN_JOB_TIMEOUT_S            = tostring(var.job_timeout_seconds)
  })

  staged = toset(["predict", "feedback", "retrain_trigger", "ops", "sweeper"])
}

data "archive_file" "function" {
  for_each = local.staged

  type        = "zip"
  source_dir  = "${path.module}/${var.functions_source_root}/${each.value}"
  output_path = "${path.module}/../build/zips/${each.value}.zip"
  excludes    = ["**/__pycache__/**", "**/*.pyc"]
}

resource "google_storage_bucket_object" "function_source" {
  for_each = local.staged

  # Content-addressed name: a code change produces a new object and a redeploy.
  name   = "${each.value}/${data.archive_file.function[each.value].output_md5}.zip"
  bucket = google_storage_bucket.data["sources"].name
  source = data.archive_file.function[each.value].output_path
}

# --- predict: storage event ---------------------------------------------------
resource "google_cloudfunctions2_function" "predict_event" {
  name        = local.function_names.predict_event
  project     = var.project_id
  location    = var.region
  description = "Scores every image finalized in the uploads bucket (entry point on_upload)."

  build_config {
    runtime         = var.python_runtime
    entry_point     = "on_upload"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.data["sources"].name
        object = google_storage_bucket_object.function_source["predict"].name
      }
    }
  }

  service_config {
    available_memory                 = "1Gi"
    available_cpu                    = "1"
    max_instance_request_concurrency = var.predict_concurrency
    min_instance_count               = var.predict_min_instances
    max_instance_count               = var.predict_max_instances
    timeout_seconds                  = 60
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.fn["predict_event"].email
    environment_variables            = local.predict_env
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.storage.object.v1.finalized"
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.eventarc.email
    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.data["uploads"].name
    }
  }

  depends_on = [
    google_project_iam_member.gcs_agent_pubsub_publisher,
    google_project_iam_member.eventarc_event_receiver,
    google_project_iam_member.build,
  ]
}

# --- predict: HTTP (same source, second resource because one trigger each) ----
resource "google_cloudfunctions2_function" "predict_http" {
  name        = local.function_names.predict_http
  project     = var.project_id
  location    = var.region
  description = "Scores an image POSTed by an authenticated caller (entry point predict_http)."

  build_config {
    runtime         = var.python_runtime
    entry_point     = "predict_http"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.data["sources"].name
        object = google_storage_bucket_object.function_source["predict"].name
      }
    }
  }

  service_config {
    available_memory                 = "1Gi"
    available_cpu                    = "1"
    max_instance_request_concurrency = var.predict_concurrency
    min_instance_count               = var.predict_min_instances
    max_instance_count               = var.predict_max_instances
    timeout_seconds                  = 60
    ingress_settings                 = "ALLOW_ALL" # reachable, but IAM still requires an identity token
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.fn["predict_http"].email
    environment_variables            = local.predict_env
  }

  depends_on = [google_project_iam_member.build]
}

# --- predict: dead letter of the storage trigger ----------------------------------
resource "google_cloudfunctions2_function" "predict_dead" {
  name        = local.function_names.predict_dead
  project     = var.project_id
  location    = var.region
  description = "Gives an upload whose storage events ran out of deliveries a final failed result (entry point on_upload_dead)."

  build_config {
    runtime         = var.python_runtime
    entry_point     = "on_upload_dead"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.data["sources"].name
        object = google_storage_bucket_object.function_source["predict"].name
      }
    }
  }

  service_config {
    available_memory                 = "512Mi" # writes one document; never decodes an image
    available_cpu                    = "1"
    max_instance_request_concurrency = 10
    min_instance_count               = 0
    max_instance_count               = 2
    timeout_seconds                  = 30
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.fn["predict_dead"].email
    environment_variables            = local.predict_env
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.uploads_dead.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.eventarc.email
  }

  depends_on = [
    google_project_iam_member.eventarc_event_receiver,
    google_project_iam_member.build,
  ]
}

# --- feedback: HTTP -------------------------------------------------------------
resource "google_cloudfunctions2_function" "feedback" {
  name        = local.function_names.feedback
  project     = var.project_id
  location    = var.region
  description = "Records clinician/user feedback on a prediction and publishes it to the feedback topic (entry point feedback_http)."

  build_config {
    runtime         = var.python_runtime
    entry_point     = "feedback_http"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.data["sources"].name
        object = google_storage_bucket_object.function_source["feedback"].name
      }
    }
  }

  service_config {
    available_memory                 = "512Mi"
    available_cpu                    = "1"
    max_instance_request_concurrency = 10 # I/O-bound (Firestore + Pub/Sub)
    min_instance_count               = 0
    max_instance_count               = var.feedback_max_instances
    timeout_seconds                  = 30
    ingress_settings                 = "ALLOW_ALL" # IAM still requires an identity token
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.fn["feedback"].email
    environment_variables            = local.feedback_env
  }

  lifecycle {
    # DEEPSKIN_FEEDBACK_AUDIENCE is computed, not read from this resource (see
    # local.feedback_audience): fail loudly if the platform ever serves the
    # function elsewhere, instead of silently refusing every clinician.
    postcondition {
      condition     = self.url == local.feedback_audience
      error_message = "The feedback function's URL differs from DEEPSKIN_FEEDBACK_AUDIENCE (local.feedback_audience): clinician tokens would be refused."
    }
  }

  depends_on = [google_project_iam_member.build]
}

# --- retrain trigger: Pub/Sub event on the feedback topic ------------------------
resource "google_cloudfunctions2_function" "retrain_trigger" {
  name        = local.function_names.retrain
  project     = var.project_id
  location    = var.region
  description = "Consumes feedback messages and submits Vertex AI training jobs when enough new labels exist (entry point on_feedback)."

  build_config {
    runtime         = var.python_runtime
    entry_point     = "on_feedback"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.data["sources"].name
        object = google_storage_bucket_object.function_source["retrain_trigger"].name
      }
    }
  }

  service_config {
    available_memory                 = "512Mi"
    available_cpu                    = "1"
    max_instance_request_concurrency = 1
    min_instance_count               = 0
    max_instance_count               = var.retrain_max_instances
    timeout_seconds                  = 120
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.fn["retrain"].email
    environment_variables            = local.retrain_env
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.feedback.id
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.eventarc.email
  }

  depends_on = [
    google_project_iam_member.eventarc_event_receiver,
    google_project_iam_member.build,
  ]
}

# --- sweeper: Cloud Scheduler tick through the sweep topic ---------------------------
resource "google_cloudfunctions2_function" "sweeper" {
  name        = local.function_names.sweeper
  project     = var.project_id
  location    = var.region
  description = "Fails abandoned results and frees the retrain ledger from a job that is no longer running (entry point on_sweep)."

  build_config {
    runtime         = var.python_runtime
    entry_point     = "on_sweep"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.data["sources"].name
        object = google_storage_bucket_object.function_source["sweeper"].name
      }
    }
  }

  service_config {
    available_memory                 = "512Mi"
    available_cpu                    = "1"
    max_instance_request_concurrency = 1
    min_instance_count               = 0
    max_instance_count               = 1 # one sweep at a time
    timeout_seconds                  = 120
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.fn["sweeper"].email
    environment_variables            = local.retrain_env # the same jobs, read and cancelled
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
    pubsub_topic          = google_pubsub_topic.sweep.id
    retry_policy          = "RETRY_POLICY_DO_NOT_RETRY" # the next tick sweeps again
    service_account_email = google_service_account.eventarc.email
  }

  depends_on = [
    google_project_iam_member.eventarc_event_receiver,
    google_project_iam_member.build,
  ]
}

# --- invokers ------------------------------------------------------------------
# 2nd gen functions are Cloud Run services with the function's name; invocation
# is controlled by roles/run.invoker on that service.
locals {
  http_functions = {
    predict_http = google_cloudfunctions2_function.predict_http.name
    feedback     = google_cloudfunctions2_function.feedback.name
  }

  http_invoker_bindings = {
    for pair in setproduct(keys(local.http_functions), var.invoker_members) :
    "${pair[0]}|${pair[1]}" => { function = pair[0], member = pair[1] }
  }

  event_functions = {
    predict_event = google_cloudfunctions2_function.predict_event.name
    predict_dead  = google_cloudfunctions2_function.predict_dead.name
    retrain       = google_cloudfunctions2_function.retrain_trigger.name
    sweeper       = google_cloudfunctions2_function.sweeper.name
  }
}

resource "google_cloud_run_service_iam_member" "http_invoker" {
  for_each = local.http_invoker_bindings

  project  = var.project_id
  location = var.region
  service  = local.http_functions[each.value.function]
  role     = "roles/run.invoker"
  member   = each.value.member
}

resource "google_cloud_run_service_iam_member" "eventarc_invoker" {
  for_each = local.event_functions

  project  = var.project_id
  location = var.region
  service  = each.value
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.eventarc.email}"
}

# --- ops: HTTP, operators only ------------------------------------------------------
# The operator page's data (deepskin/ops.py): read-only. Only var.operator_members
# may invoke it (below); the function itself trusts that check on Cloud Run.
resource "google_cloudfunctions2_function" "ops" {
  name        = local.function_names.ops
  project     = var.project_id
  location    = var.region
  description = "The served model, the promotion gate's decisions, feedback counts and the ledger, for operators (entry point ops_http)."

  build_config {
    runtime         = var.python_runtime
    entry_point     = "ops_http"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.data["sources"].name
        object = google_storage_bucket_object.function_source["ops"].name
      }
    }
  }

  service_config {
    available_memory                 = "512Mi"
    available_cpu                    = "1"
    max_instance_request_concurrency = 10 # I/O-bound (Firestore + the models bucket)
    min_instance_count               = 0
    max_instance_count               = 2
    timeout_seconds                  = 30
    ingress_settings                 = "ALLOW_ALL" # IAM still requires an operator's identity token
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.fn["ops"].email
    environment_variables            = local.common_env
  }

  depends_on = [google_project_iam_member.build]
}
