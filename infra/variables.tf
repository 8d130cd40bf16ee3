variable "project_id" {
  description = "Google Cloud project ID that hosts DeepSkin (must already exist with billing linked)."
  type        = string
}

variable "region" {
  description = "Region for functions, buckets, Eventarc, Artifact Registry and Vertex AI. Buckets are regional in this region so the Eventarc storage trigger can use it."
  type        = string
  default     = "europe-west1"
}

variable "firestore_location" {
  description = "Firestore location ID (a region such as europe-west1 or a multi-region such as eur3). Cannot be changed after creation."
  type        = string
  default     = "europe-west1"
}

variable "name_prefix" {
  description = "Short prefix for resource names (buckets, functions, service accounts, repositories). Lowercase letters, digits and hyphens; at most 12 characters so service-account IDs stay within 30 characters."
  type        = string
  default     = "deepskin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name_prefix))
    error_message = "name_prefix must match ^[a-z][a-z0-9-]{1,11}$."
  }
}

variable "labels" {
  description = "Extra labels applied to every resource that supports labels."
  type        = map(string)
  default     = {}
}

variable "enable_apis" {
  description = "Whether Terraform enables the required Google APIs (set false when a platform team manages services)."
  type        = bool
  default     = true
}

variable "labelled_retention_days" {
  description = "Days a clinician's label and its training copy (training bucket feedback/) are kept, apart from the uploads' retention_days: the retention the product's consent states. Raise it above retention_days only where that consent covers it."
  type        = number
  default     = 30

  validation {
    condition     = var.labelled_retention_days >= 1 && var.labelled_retention_days <= 3650
    error_message = "labelled_retention_days must be between 1 and 3650."
  }
}

variable "retention_days" {
  description = "Days after which uploaded images, heatmaps and feedback-derived training data are deleted (bucket lifecycle), and the value the functions use to set the Firestore expire_at TTL field."
  type        = number
  default     = 30

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 3650
    error_message = "retention_days must be between 1 and 3650."
  }
}

variable "record_retention_days" {
  description = "DEEPSKIN_RECORD_RETENTION_DAYS: days a retraining job's record and a promotion gate decision (both may name a clinician or operator; no image, no report text) are kept before the Firestore TTL on expire_at deletes them."
  type        = number
  default     = 365

  validation {
    condition     = var.record_retention_days >= 1 && var.record_retention_days <= 3650
    error_message = "record_retention_days must be between 1 and 3650."
  }
}

variable "training_data_retention_days" {
  description = "Days after which any other object in the training bucket (e.g. the copied public HAM10000 data set) is deleted. The training workflow re-syncs the data set when it is missing."
  type        = number
  default     = 365
}

variable "model_noncurrent_versions_kept" {
  description = "How many noncurrent (superseded) versions of each model object the versioned models bucket keeps for rollback."
  type        = number
  default     = 5
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete non-empty buckets and the Firestore database. Keep false in production; set true only to tear a project down."
  type        = bool
  default     = false
}

variable "invoker_members" {
  description = "IAM members (e.g. user:alice@example.com, group:clinicians@example.com, serviceAccount:web@p.iam.gserviceaccount.com) granted roles/run.invoker on the HTTP functions. allUsers and allAuthenticatedUsers are rejected."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.invoker_members : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "invoker_members must not contain allUsers or allAuthenticatedUsers: the HTTP functions handle health data."
  }
}

variable "edge_domain" {
  description = "DNS name of the load balancer in front of predict_http and feedback (edge.tf), e.g. api.deepskin.example.org: Google issues its certificate, and its A record must point at output edge_ip. Clients call https://<edge_domain>/predict/ and /feedback/."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", var.edge_domain))
    error_message = "edge_domain must be a plain lower-case DNS name such as api.deepskin.example.org."
  }
}

variable "edge_rate_limits" {
  description = "Requests a minute that one caller (its ID token) may send through the edge to each function before Cloud Armor answers 429 (edge.tf). A person checks a photo or two a minute; a clinic's client that posts for many people needs a higher limit."
  type = object({
    predict_per_minute  = number
    feedback_per_minute = number
  })
  default = {
    predict_per_minute  = 30
    feedback_per_minute = 30
  }

  validation {
    condition     = var.edge_rate_limits.predict_per_minute >= 1 && var.edge_rate_limits.feedback_per_minute >= 1
    error_message = "edge_rate_limits must allow at least one request a minute."
  }
}

variable "operator_members" {
  description = "IAM members (e.g. group:deepskin-operators@example.com) granted roles/run.invoker on the ops function, the operator page's data (served model, gate decisions, feedback counts, ledger). allUsers and allAuthenticatedUsers are rejected."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.operator_members : !contains(["allUsers", "allAuthenticatedUsers"], m)])
    error_message = "operator_members must not contain allUsers or allAuthenticatedUsers: the ops function is for operators only."
  }
}

variable "functions_source_root" {
  description = "Directory holding the staged function sources written by infra/stage_functions.py (one sub-directory per function), relative to the infra/ module."
  type        = string
  default     = "../build/functions"
}

variable "python_runtime" {
  description = "Cloud Functions runtime for all functions."
  type        = string
  default     = "python311"
}

variable "model_path" {
  description = "Value for DEEPSKIN_MODEL_PATH in the predict functions, relative to the function source root (models/ is staged next to main.py). Empty string leaves the deepskin default."
  type        = string
  default     = ""
}

variable "model_check_seconds" {
  description = "DEEPSKIN_MODEL_CHECK_SECONDS for the predict functions: at most how often (seconds) an instance checks the models bucket's current.json for a newly promoted or rolled-back model, so a promotion reaches serving without a redeploy."
  type        = number
  default     = 60

  validation {
    condition     = var.model_check_seconds >= 1 && var.model_check_seconds <= 86400
    error_message = "model_check_seconds must be between 1 and 86400."
  }
}

variable "allowed_origins" {
  description = "DEEPSKIN_ALLOWED_ORIGINS: exact browser origins (scheme://host[:port], no path, no wildcard) allowed by CORS on the predict and feedback HTTP functions, e.g. [\"https://deepskin.example.org\"]. Empty: no browser origin is allowed (server-to-server calls with an identity token still work)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for o in var.allowed_origins : can(regex("^https?://[^/*,\\s]+$", o))])
    error_message = "allowed_origins entries must look like https://host[:port] (no path, comma or wildcard)."
  }
}

variable "operator_emails" {
  description = "DEEPSKIN_OPERATORS: Google account e-mails (verified) the ops function admits. Each must also be allowed to invoke it (operator_members, e.g. through a group). Their ID token must be minted for output ops_http_url or one of operator_token_audiences. Empty: nobody reads the operator page."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.operator_emails : can(regex("^[^@,\\s]+@[^@,\\s]+\\.[^@,\\s]+$", e))])
    error_message = "operator_emails must be plain e-mail addresses (no commas or spaces)."
  }
}

variable "operator_token_audiences" {
  description = "Audiences accepted on operators' ID tokens besides the ops function's own URL (output ops_http_url), e.g. the OAuth client ID of the sign-in an operator's tool uses. Each one widens where a token minted for something else is accepted: keep it short."
  type        = list(string)
  default     = []
}

variable "clinician_emails" {
  description = "DEEPSKIN_CLINICIANS: Google account e-mails (verified) whose feedback counts as a training label and who may ask for a retrain (POST /retrain). Their ID token must be minted for output feedback_http_url, and they must also be allowed to invoke the feedback function (invoker_members, e.g. through a group). Empty: nobody is a clinician; user feedback still works."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.clinician_emails : can(regex("^[^@,\\s]+@[^@,\\s]+\\.[^@,\\s]+$", e))])
    error_message = "clinician_emails must be plain e-mail addresses (no commas or spaces)."
  }
}

variable "retrain_min_labels" {
  description = "DEEPSKIN_RETRAIN_MIN_LABELS: new clinician training labels (since the last job) that make the retrain trigger start a Vertex AI training job."
  type        = number
  default     = 50

  validation {
    condition     = var.retrain_min_labels >= 1
    error_message = "retrain_min_labels must be at least 1."
  }
}

variable "retrain_config" {
  description = "DEEPSKIN_RETRAIN_CONFIG: training config, relative to the training image's working directory, passed by the retrain trigger to `python -m training.retrain --config` in the Vertex AI job."
  type        = string
  default     = "training/configs/gpu.json"

  validation {
    condition     = can(regex("^training/configs/[A-Za-z0-9_.-]+\\.json$", var.retrain_config))
    error_message = "retrain_config must be a training/configs/<name>.json path."
  }
}

variable "predict_min_instances" {
  description = "Minimum warm instances for each predict function. 0 scales to zero (cheapest, ~2 s cold start); 1 removes cold starts for about the price of one always-on 1 vCPU/1 GiB instance."
  type        = number
  default     = 0
}

variable "predict_max_instances" {
  description = "Maximum instances for each predict function (caps cost and Firestore write rate)."
  type        = number
  default     = 10
}

variable "predict_concurrency" {
  description = "Requests handled at once by one predict instance. ONNX inference is CPU-bound on the single vCPU, so 1 avoids requests queueing behind each other inside an instance."
  type        = number
  default     = 1
}

variable "feedback_max_instances" {
  description = "Maximum instances for the feedback HTTP function."
  type        = number
  default     = 5
}

variable "job_timeout_seconds" {
  description = "Longest a retraining job may run: Vertex AI stops it there, the sweeper cancels it and frees the ledger."
  type        = number
  default     = 21600
}

variable "sweep_schedule" {
  description = "Cron schedule (UTC) of the sweeper: abandoned results and dead retraining jobs are closed this often."
  type        = string
  default     = "*/5 * * * *"
}

variable "retrain_max_instances" {
  description = "Maximum instances for the retrain trigger function (1 serialises retraining decisions)."
  type        = number
  default     = 1
}

variable "feedback_topic_name" {
  description = "Pub/Sub topic the feedback function publishes to (matches DEEPSKIN_FEEDBACK_TOPIC)."
  type        = string
  default     = "feedback"
}

variable "feedback_dead_letter_topic_name" {
  description = "Pub/Sub dead-letter topic for feedback messages that fail delivery max_delivery_attempts times."
  type        = string
  default     = "feedback-dead"
}

variable "max_delivery_attempts" {
  description = "Delivery attempts before a feedback message is moved to the dead-letter topic (Pub/Sub allows 5 to 100)."
  type        = number
  default     = 5
}

variable "configure_eventarc_dead_letter" {
  description = "Run gcloud (local-exec) after apply to attach the dead-letter and retry policy to the Eventarc-managed subscription of the retrain trigger, which the provider cannot manage. Needs gcloud on the machine running Terraform."
  type        = bool
  default     = true
}

# Images by digest, never by a tag: a tag can be moved to other bytes after review, a digest cannot.
variable "training_image_digest" {
  description = "Digest (sha256:<64 hex>) of the training image in Artifact Registry that the retrain function's Vertex AI jobs run; the train workflow prints it after its push (repository variable TRAINING_IMAGE_DIGEST). Empty until a first image exists: the retrain trigger then refuses to launch jobs."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(sha256:[0-9a-f]{64})?$", var.training_image_digest))
    error_message = "training_image_digest must be empty or sha256:<64 lowercase hex>, never a tag."
  }
}

variable "serving_image_digest" {
  description = "Digest (sha256:<64 hex>) of the Cloud Run serving image (docker/serving.Dockerfile) reported in the outputs; empty until one is pushed."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(sha256:[0-9a-f]{64})?$", var.serving_image_digest))
    error_message = "serving_image_digest must be empty or sha256:<64 lowercase hex>, never a tag."
  }
}

variable "training_machine_type" {
  description = "Vertex AI machine type for training custom jobs (g2-standard-8 pairs with NVIDIA_L4; use a2-highgpu-1g for NVIDIA_TESLA_A100)."
  type        = string
  default     = "g2-standard-8"
}

variable "training_accelerator_type" {
  description = "Vertex AI accelerator type for training custom jobs."
  type        = string
  default     = "NVIDIA_L4"
}

variable "training_accelerator_count" {
  description = "Number of accelerators attached to the training worker."
  type        = number
  default     = 1
}

variable "image_keep_count" {
  description = "Number of most recent image versions Artifact Registry keeps per image (older untagged versions are cleaned up)."
  type        = number
  default     = 10
}

variable "promotion_approval" {
  description = "DEEPSKIN_PROMOTION_APPROVAL in the functions and the retrain jobs: \"required\" (a person promotes each candidate the gate passed, python -m training.promote --approve ID) or \"gate\" (the gate promotes alone)."
  type        = string
  default     = "required"

  validation {
    condition     = contains(["required", "gate"], var.promotion_approval)
    error_message = "promotion_approval must be \"required\" or \"gate\"."
  }
}

variable "retrain_min_clinicians" {
  description = "DEEPSKIN_RETRAIN_MIN_CLINICIANS for the retrain trigger: how many distinct clinicians' new labels a training job needs, by threshold or by hand (one clinician alone cannot steer the model)."
  type        = number
  default     = 2

  validation {
    condition     = var.retrain_min_clinicians >= 2
    error_message = "A job needs the labels of at least two distinct clinicians."
  }
}

variable "retrain_min_new_labels" {
  description = "DEEPSKIN_RETRAIN_MIN_NEW_LABELS for the retrain trigger: new clinician labels any training job needs, one started by hand (POST /retrain) too."
  type        = number
  default     = 10

  validation {
    condition     = var.retrain_min_new_labels >= 1
    error_message = "A job needs at least one new label."
  }
}

variable "manual_retrains_per_day" {
  description = "DEEPSKIN_MANUAL_RETRAINS_PER_DAY for the retrain trigger: training jobs one clinician may start by hand (POST /retrain) per UTC day."
  type        = number
  default     = 2
}
