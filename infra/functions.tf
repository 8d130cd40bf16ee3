# Cloud Functions (2nd gen, runtime var.python_runtime). Sources are staged by
# `python infra/stage_functions.py` into build/functions/<name>/ (function code
# + the deepskin modules it imports + its data folders, models/ for predict) and zipped here.
#
# Every function is one entry of local.functions (what differs: description,
# staged source, entry point, service account, sizing, ingress, environment,
# trigger) and one instance of google_cloudfunctions2_function.fn.
#
# A 2nd gen function has exactly ONE trigger (HTTP or one event trigger), so the
# predict code is deployed three times from the same archive:
#   * predict_event: entry point on_upload, Eventarc storage "finalized" trigger
#     on the uploads bucket, internal ingress only;
#   * predict_http:  entry point predict_http, HTTPS, authenticated callers only;
#   * predict_dead:  entry point on_upload_dead, the storage trigger's dead letters.
#
# Sizing of both scoring predict functions (local.predict_sizing: 1 GiB, 1 vCPU,
# concurrency 1, timeout 60 s, min instances 0 by default): ONNX inference is
# CPU-bound (~20 ms warm on one vCPU) so a second concurrent request would only
# queue behind the first inside the instance; concurrency 1 lets Cloud Run scale
# out instead. 1 GiB holds the runtime, onnxruntime, the ~18 MB model and decoded
# images with headroom. Scale to zero keeps idle cost at storage only; the price
# is a ~2 s cold start (set var.predict_min_instances = 1 to remove it). 60 s
# bounds a stuck request well above cold start + inference + heatmap +
# Firestore/GCS writes.
#
# No function allows unauthenticated access: HTTP functions grant
# roles/run.invoker only to var.invoker_members, event functions only to the
# Eventarc trigger service account.

locals {
  # Cloud Run / Cloud Functions service name of each function. Kept apart from
  # local.functions: local.feedback_audience needs the feedback name, and the
  # feedback entry of local.functions carries that audience in its environment.
  function_names = {
    predict_event   = "${var.name_prefix}-predict-event"
    predict_http    = "${var.name_prefix}-predict-http"
    predict_dead    = "${var.name_prefix}-predict-dead"
    feedback        = "${var.name_prefix}-feedback"
    retrain_trigger = "${var.name_prefix}-retrain-trigger"
    ops             = "${var.name_prefix}-ops"
    sweeper         = "${var.name_prefix}-sweeper"
  }

  # The feedback function verifies clinicians' Google ID tokens against its own
  # URL (DEEPSKIN_FEEDBACK_AUDIENCE). google_cloudfunctions2_function.fn["feedback"]'s
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
  # The same for the ops function, whose operators' tokens it verifies (DEEPSKIN_OPS_AUDIENCES).
  ops_audience = "https://${var.region}-${var.project_id}.cloudfunctions.net/${local.function_names.ops}"

  # Environment read by deepskin/services/config.py (every function imports it).
  common_env = {
    GOOGLE_CLOUD_PROJECT         = var.project_id
    DEEPSKIN_UPLOADS_BUCKET      = google_storage_bucket.data["uploads"].name
    DEEPSKIN_RESULTS_BUCKET      = google_storage_bucket.data["results"].name
    DEEPSKIN_MODELS_BUCKET       = google_storage_bucket.data["models"].name
    DEEPSKIN_TRAINING_BUCKET     = google_storage_bucket.data["training"].name
    DEEPSKIN_FEEDBACK_TOPIC      = google_pubsub_topic.feedback.name
    DEEPSKIN_FEEDBACK_DEAD_TOPIC = google_pubsub_topic.feedback_dead.name
    DEEPSKIN_RETENTION_DAYS      = tostring(var.retention_days)
    # A clinician's label and its training copy (feedback function; storage.tf's feedback/ rule).
    DEEPSKIN_LABELLED_RETENTION_DAYS = tostring(var.labelled_retention_days)
    # Jobs and gate decisions (Firestore TTL, firestore.tf).
    DEEPSKIN_RECORD_RETENTION_DAYS = tostring(var.record_retention_days)
    # Whether a person approves each candidate the gate passes: the retrain trigger passes it on to its
    # Vertex AI jobs, and the operator page shows it.
    DEEPSKIN_PROMOTION_APPROVAL = var.promotion_approval
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

  # Ops: who is an operator (checked by the function itself, on top of IAM's
  # operator_members), and the audiences their ID tokens may be minted for.
  ops_env = merge(local.common_env, {
    DEEPSKIN_OPERATORS     = join(",", var.operator_emails)
    DEEPSKIN_OPS_AUDIENCES = join(",", concat([local.ops_audience], var.operator_token_audiences))
  })

  # Retrain trigger: when to train (ledger threshold) and how VertexLauncher
  # submits the Vertex AI custom job (deepskin/loop/launchers.py; same spec as vertex.tf).
  retrain_env = merge(local.common_env, {
    DEEPSKIN_JOB_LAUNCHER             = "vertex"
    DEEPSKIN_RETRAIN_MIN_LABELS       = tostring(var.retrain_min_labels)
    DEEPSKIN_RETRAIN_MIN_CLINICIANS   = tostring(var.retrain_min_clinicians)
    DEEPSKIN_MANUAL_RETRAINS_PER_DAY  = tostring(var.manual_retrains_per_day)
    DEEPSKIN_RETRAIN_MIN_NEW_LABELS   = tostring(var.retrain_min_new_labels)
    DEEPSKIN_RETRAIN_CONFIG           = var.retrain_config
    DEEPSKIN_REGION                   = var.region
    DEEPSKIN_TRAINING_IMAGE           = local.training_image_uri
    DEEPSKIN_TRAINING_SERVICE_ACCOUNT = google_service_account.training.email
    DEEPSKIN_TRAINING_MACHINE_TYPE    = var.training_machine_type
    DEEPSKIN_TRAINING_ACCELERATOR     = var.training_accelerator_type
    DEEPSKIN_TRAINING_ACCELERATORS    = tostring(var.training_accelerator_count)
    DEEPSKIN_JOB_TIMEOUT_S            = tostring(var.job_timeout_seconds)
    # Passed on to the job, which keeps only labels whose reporter is a clinician now.
    DEEPSKIN_CLINICIANS = join(",", var.clinician_emails)
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

# --- the functions ----------------------------------------------------------------
locals {
  # Sizing of the two functions that score images (see the header).
  predict_sizing = {
    memory        = "1Gi"
    cpu           = "1"
    concurrency   = var.predict_concurrency
    min_instances = var.predict_min_instances
    max_instances = var.predict_max_instances
    timeout       = 60
  }

  # One entry per function, keyed like function_names:
  #   source          : staged archive (local.staged), functions/<source>/main.py
  #   entry_point     : the functions_framework function in that main.py
  #   service_account : key of its runtime identity in google_service_account.fn (iam.tf)
  #   sizing          : memory, vCPUs, concurrent requests per instance, min/max
  #                     instances, timeout (seconds)
  #   ingress         : ALLOW_INTERNAL_ONLY for event functions; the edge's load balancer for predict_http and
  #                     feedback; ALLOW_ALL for ops
  #                     functions, which IAM still guards (an identity token is required)
  #   env             : environment_variables
  #   trigger         : null for an HTTP function; otherwise the Eventarc trigger:
  #                     event_type, retry_policy, and filters (attribute => value)
  #                     or pubsub_topic
  functions = {
    predict_event = {
      description     = "Scores every image finalized in the uploads bucket (entry point on_upload)."
      source          = "predict"
      entry_point     = "on_upload"
      service_account = "predict_event"
      sizing          = local.predict_sizing
      ingress         = "ALLOW_INTERNAL_ONLY"
      env             = local.predict_env
      trigger = {
        event_type   = "google.cloud.storage.object.v1.finalized"
        filters      = { bucket = google_storage_bucket.data["uploads"].name }
        retry_policy = "RETRY_POLICY_RETRY"
      }
    }

    # Same source, a second function because a function has one trigger.
    predict_http = {
      description     = "Scores an image POSTed by an authenticated caller (entry point predict_http)."
      source          = "predict"
      entry_point     = "predict_http"
      service_account = "predict_http"
      sizing          = local.predict_sizing
      ingress         = "ALLOW_INTERNAL_AND_GCLB" # through the edge's per-caller limits only (edge.tf); IAM still requires an identity token
      env             = local.predict_env
      trigger         = null
    }

    # The dead letter of predict_event's storage trigger. 512 MiB: it writes one
    # document and never decodes an image.
    predict_dead = {
      description     = "Gives an upload whose storage events ran out of deliveries a final failed result (entry point on_upload_dead)."
      source          = "predict"
      entry_point     = "on_upload_dead"
      service_account = "predict_dead"
      sizing          = { memory = "512Mi", cpu = "1", concurrency = 10, min_instances = 0, max_instances = 2, timeout = 30 }
      ingress         = "ALLOW_INTERNAL_ONLY"
      env             = local.predict_env
      trigger = {
        event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
        pubsub_topic = google_pubsub_topic.uploads_dead.id
        retry_policy = "RETRY_POLICY_RETRY"
      }
    }

    # HTTP. Concurrency 10: I/O-bound (Firestore + Pub/Sub).
    feedback = {
      description     = "Records clinician/user feedback on a prediction and publishes it to the feedback topic (entry point feedback_http)."
      source          = "feedback"
      entry_point     = "feedback_http"
      service_account = "feedback"
      sizing          = { memory = "512Mi", cpu = "1", concurrency = 10, min_instances = 0, max_instances = var.feedback_max_instances, timeout = 30 }
      ingress         = "ALLOW_INTERNAL_AND_GCLB" # through the edge's per-caller limits only (edge.tf); IAM still requires an identity token
      env             = local.feedback_env
      trigger         = null
    }

    # Pub/Sub event on the feedback topic.
    retrain_trigger = {
      description     = "Consumes feedback messages and submits Vertex AI training jobs when enough new labels exist (entry point on_feedback)."
      source          = "retrain_trigger"
      entry_point     = "on_feedback"
      service_account = "retrain"
      sizing          = { memory = "512Mi", cpu = "1", concurrency = 1, min_instances = 0, max_instances = var.retrain_max_instances, timeout = 120 }
      ingress         = "ALLOW_INTERNAL_ONLY"
      env             = local.retrain_env
      trigger = {
        event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
        pubsub_topic = google_pubsub_topic.feedback.id
        retry_policy = "RETRY_POLICY_RETRY"
      }
    }

    # Cloud Scheduler tick through the sweep topic. One instance: one sweep at a time.
    sweeper = {
      description     = "Fails abandoned results and frees the retrain ledger from a job that is no longer running (entry point on_sweep)."
      source          = "sweeper"
      entry_point     = "on_sweep"
      service_account = "sweeper"
      sizing          = { memory = "512Mi", cpu = "1", concurrency = 1, min_instances = 0, max_instances = 1, timeout = 120 }
      ingress         = "ALLOW_INTERNAL_ONLY"
      env             = local.retrain_env # the same jobs, read and cancelled
      trigger = {
        event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
        pubsub_topic = google_pubsub_topic.sweep.id
        retry_policy = "RETRY_POLICY_DO_NOT_RETRY" # the next tick sweeps again
      }
    }

    # HTTP, operators only: the operator page's data (deepskin/loop/ops.py), read-only.
    # Only var.operator_members may invoke it (http_invoker), and the function
    # admits only a verified ID token of var.operator_emails (local.ops_env).
    # Concurrency 10: I/O-bound (Firestore + the models bucket).
    ops = {
      description     = "The served model, the promotion gate's decisions, feedback counts and the ledger, for operators (entry point ops_http)."
      source          = "ops"
      entry_point     = "ops_http"
      service_account = "ops"
      sizing          = { memory = "512Mi", cpu = "1", concurrency = 10, min_instances = 0, max_instances = 2, timeout = 30 }
      ingress         = "ALLOW_ALL" # IAM still requires an operator's identity token
      env             = local.ops_env
      trigger         = null
    }
  }
}

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:only the ops function takes ALLOW_ALL ingress (operators' browsers), with no public invoker (run.invoker to named members, tests/infra); predict_http and feedback take load-balancer traffic only (edge.tf); event functions are internal only
  for_each = local.functions

  name        = local.function_names[each.key]
  project     = var.project_id
  location    = var.region
  description = each.value.description

  build_config {
    runtime         = var.python_runtime
    entry_point     = each.value.entry_point
    service_account = google_service_account.build.id
    # The build account may push to this repository only (iam.tf), so its images go there, not to gcf-artifacts.
    docker_repository = google_artifact_registry_repository.images.id
    source {
      storage_source {
        bucket = google_storage_bucket.data["sources"].name
        object = google_storage_bucket_object.function_source[each.value.source].name
      }
    }
  }

  service_config {
    available_memory                 = each.value.sizing.memory
    available_cpu                    = each.value.sizing.cpu
    max_instance_request_concurrency = each.value.sizing.concurrency
    min_instance_count               = each.value.sizing.min_instances
    max_instance_count               = each.value.sizing.max_instances
    timeout_seconds                  = each.value.sizing.timeout
    ingress_settings                 = each.value.ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.fn[each.value.service_account].email
    environment_variables            = each.value.env
  }

  # No block for an HTTP function (trigger = null: the splat gives []).
  dynamic "event_trigger" {
    for_each = each.value.trigger[*]
    content {
      trigger_region        = var.region
      event_type            = event_trigger.value.event_type
      pubsub_topic          = try(event_trigger.value.pubsub_topic, null)
      retry_policy          = event_trigger.value.retry_policy
      service_account_email = google_service_account.eventarc.email

      dynamic "event_filters" {
        for_each = try(event_trigger.value.filters, {})
        content {
          attribute = event_filters.key
          value     = event_filters.value
        }
      }
    }
  }

  lifecycle {
    # feedback: DEEPSKIN_FEEDBACK_AUDIENCE is computed, not read from this
    # resource (see local.feedback_audience): fail loudly if the platform ever
    # serves the function elsewhere, instead of silently refusing every clinician.
    postcondition {
      condition     = each.key != "feedback" || self.url == local.feedback_audience
      error_message = "The feedback function's URL differs from DEEPSKIN_FEEDBACK_AUDIENCE (local.feedback_audience): clinician tokens would be refused."
    }
    postcondition {
      condition     = each.key != "ops" || self.url == local.ops_audience
      error_message = "The ops function's URL differs from local.ops_audience (DEEPSKIN_OPS_AUDIENCES): operator tokens would be refused."
    }
  }

  # Ordering only (depends_on cannot differ per instance): the union of what the
  # functions need before their first deploy. The storage trigger needs the
  # Cloud Storage agent's publisher role, event triggers the Eventarc receiver
  # role, every build the build identity's roles.
  depends_on = [
    google_project_iam_member.gcs_agent_pubsub_publisher,
    google_project_iam_member.eventarc_event_receiver,
    google_project_iam_member.build_log_writer,
    google_artifact_registry_repository_iam_member.build_writer,
  ]
}

# --- invokers ------------------------------------------------------------------
# 2nd gen functions are Cloud Run services with the function's name; invocation
# is controlled by roles/run.invoker on that service.
locals {
  # Who may call each HTTP function: var.invoker_members the two user-facing ones, var.operator_members
  # the operator page's data.
  http_invokers = {
    predict_http = var.invoker_members
    feedback     = var.invoker_members
    ops          = var.operator_members
  }

  http_invoker_bindings = merge([
    for function, members in local.http_invokers : {
      for member in members : "${function}|${member}" => { function = function, member = member }
    }
  ]...)

  # Every function with an event trigger.
  event_functions = {
    for key, fn in local.functions : key => google_cloudfunctions2_function.fn[key].name if fn.trigger != null
  }
}

resource "google_cloud_run_service_iam_member" "http_invoker" {
  for_each = local.http_invoker_bindings

  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.value.function].name
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
