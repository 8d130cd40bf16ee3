# Firestore in native mode. Every collection the code writes has a TTL policy on
# `expire_at`, set by the code (deepskin.services.store.lifecycle_fields), except
# two single documents that hold no personal data (tests/infra check_firestore_ttl):
#   predictions, feedback      health data: creation + var.retention_days; a user's
#                              report expires with its prediction, a clinician's
#                              label after var.labelled_retention_days
#   lesions                    followed spots (and their results and reports): the
#                              spot's start + the 1 to 12 months its owner chose
#   seen (ledger/state/seen)   the ledger's record of each counted message:
#                              + var.retention_days, past its report's life
#   jobs (top-level jobs/ and  retraining jobs and gate decisions, which name
#   models/decisions/jobs/)    clinicians and operators: + var.record_retention_days
#   ledger/state, models/baseline  counters and the pinned baseline: no TTL
# A TTL policy applies to a collection group: "jobs" covers both collections of
# that name. Firestore deletes expired documents typically within 24 hours.
resource "google_firestore_database" "main" {
  project     = var.project_id
  name        = "(default)"
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.force_destroy ? "DELETE_PROTECTION_DISABLED" : "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = var.force_destroy ? "DELETE" : "ABANDON"

  depends_on = [google_project_service.apis]
}

locals {
  ttl_collections = toset(["predictions", "feedback", "lesions", "seen", "jobs"])
}

resource "google_firestore_field" "expire_at_ttl" {
  for_each = local.ttl_collections

  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = each.value
  field      = "expire_at"

  ttl_config {}

  # Keep the default single-field indexes (inherited): index_config is omitted.
}

# The sweeper's query: pending results claimed before a cutoff (store.sweep_abandoned).
resource "google_firestore_index" "pending_by_claim_time" {
  project    = var.project_id
  database   = google_firestore_database.main.name
  collection = "predictions"

  fields {
    field_path = "status"
    order      = "ASCENDING"
  }

  fields {
    field_path = "claimed_at"
    order      = "ASCENDING"
  }
}
