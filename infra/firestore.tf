# Firestore in native mode. Collections used by the product: predictions,
# feedback, lesions (followed spots), models (promotion decisions), ledger, jobs. predictions, feedback and
# lesions carry personal health data and have a TTL policy on `expire_at` (a timestamp the functions set to
# creation time + var.retention_days; for a followed spot, its results and their reports: the spot's start +
# the 1 to 12 months its owner chose). Firestore deletes expired documents typically within 24 hours of expiry.
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
  ttl_collections = toset(["predictions", "feedback", "lesions"])
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
