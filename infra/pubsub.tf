# Feedback flow: feedback_http publishes to `feedback`; retrain_trigger consumes
# it through an Eventarc trigger (functions.tf). Messages that fail
# var.max_delivery_attempts times go to `feedback-dead`, which keeps them in a
# pull subscription for inspection and replay.
#
# Retention: messages name result and report ids and labels, so nothing keeps
# them past their use. No topic sets message_retention_duration (topic
# retention keeps messages even once acknowledged, for seek); no subscription
# retains acknowledged messages; an unacknowledged one is dropped after
# local.message_retention (a day: the retries take under an hour, and a dead
# letter is inspected within a day).
locals {
  message_retention = "86400s"
}

resource "google_pubsub_topic" "feedback" {
  #checkov:skip=CKV_GCP_83:messages carry document ids, labels and object names, never images, comments or reporters; Google-managed keys
  name    = var.feedback_topic_name
  project = var.project_id

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "feedback_dead" {
  #checkov:skip=CKV_GCP_83:messages carry document ids, labels and object names, never images, comments or reporters; Google-managed keys
  name    = var.feedback_dead_letter_topic_name
  project = var.project_id

  depends_on = [google_project_service.apis]
}

# Uploads whose storage events ran out of deliveries: predict_dead (entry point
# on_upload_dead) gives each a final `failed` result, so none is lost silently.
resource "google_pubsub_topic" "uploads_dead" {
  #checkov:skip=CKV_GCP_83:messages carry document ids, labels and object names, never images, comments or reporters; Google-managed keys
  name    = "${var.name_prefix}-uploads-dead"
  project = var.project_id

  # The forwarded notification names the object only; the image stays in its bucket.
  depends_on = [google_project_service.apis]
}

# Cloud Scheduler ticks the sweeper (functions/sweeper) through this topic.
resource "google_pubsub_topic" "sweep" {
  #checkov:skip=CKV_GCP_83:messages carry document ids, labels and object names, never images, comments or reporters; Google-managed keys
  name    = "${var.name_prefix}-sweep"
  project = var.project_id

  depends_on = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "sweep" {
  name        = "${var.name_prefix}-sweep"
  project     = var.project_id
  region      = var.region
  description = "Ticks the sweeper: abandoned results become failed, a dead retraining job frees the ledger."
  schedule    = var.sweep_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.sweep.id
    data       = base64encode("{}")
  }

  depends_on = [google_project_service.apis]
}

# Without a subscription, messages published to the dead-letter topic are lost.
resource "google_pubsub_subscription" "feedback_dead" {
  name    = "${var.feedback_dead_letter_topic_name}-store"
  project = var.project_id
  topic   = google_pubsub_topic.feedback_dead.id

  ack_deadline_seconds       = 60
  message_retention_duration = local.message_retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = "" # never expire the subscription itself
  }
}

# Subscription policies applied to the deliveries of the retrain trigger and of
# the storage trigger. The subscriptions themselves are created and owned by
# Eventarc (2nd gen functions with event triggers), and the Google provider
# cannot set dead lettering on them (hashicorp/terraform-provider-google#25069,
# #17697), so these values are applied with gcloud in
# terraform_data.subscription_policy below.
locals {
  feedback_subscription_policy = {
    min_retry_delay            = "10s"  # exponential backoff from 10 s ...
    max_retry_delay            = "600s" # ... up to 10 min between attempts
    max_delivery_attempts      = var.max_delivery_attempts
    dead_letter_topic          = google_pubsub_topic.feedback_dead.id
    message_retention_duration = local.message_retention
  }

  upload_subscription_policy = merge(local.feedback_subscription_policy, {
    dead_letter_topic = google_pubsub_topic.uploads_dead.id
  })

  dead_lettered_triggers = {
    retrain = {
      trigger = google_cloudfunctions2_function.fn["retrain_trigger"].event_trigger[0].trigger
      policy  = local.feedback_subscription_policy
    }
    predict_event = {
      trigger = google_cloudfunctions2_function.fn["predict_event"].event_trigger[0].trigger
      policy  = local.upload_subscription_policy
    }
  }
}

# The Pub/Sub service agent forwards undeliverable messages: it needs publisher
# on the dead-letter topic (topic-level) and subscriber on the source
# subscription (granted on the Eventarc-managed subscription below).
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.feedback_dead.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_topic_iam_member" "uploads_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.uploads_dead.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "terraform_data" "subscription_policy" {
  for_each = var.configure_eventarc_dead_letter ? local.dead_lettered_triggers : {}

  # Re-run whenever the function's Eventarc trigger or the policy changes.
  triggers_replace = [each.value.trigger, each.value.policy]

  provisioner "local-exec" {
    interpreter = ["bash", "-c"]
    command     = <<-EOT
      set -euo pipefail
      trigger="${each.value.trigger}"
      sub="$(gcloud eventarc triggers describe "$${trigger##*/}" \
        --project="${var.project_id}" --location="${var.region}" \
        --format='value(transport.pubsub.subscription)')"
      test -n "$sub"
      gcloud pubsub subscriptions update "$sub" \
        --dead-letter-topic="${each.value.policy.dead_letter_topic}" \
        --max-delivery-attempts="${each.value.policy.max_delivery_attempts}" \
        --min-retry-delay="${each.value.policy.min_retry_delay}" \
        --max-retry-delay="${each.value.policy.max_retry_delay}" \
        --message-retention-duration="${each.value.policy.message_retention_duration}" \
        --no-retain-acked-messages
      gcloud pubsub subscriptions add-iam-policy-binding "$sub" \
        --member="${local.pubsub_service_agent}" \
        --role="roles/pubsub.subscriber" >/dev/null
    EOT
  }

  depends_on = [
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_pubsub_topic_iam_member.uploads_dead_letter_publisher,
  ]
}
