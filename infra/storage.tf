# Buckets. Every bucket is private: uniform bucket-level access (no object ACLs)
# and public access prevention enforced, so no IAM binding can ever make an
# object public. Images and heatmaps are health data: they expire after
# var.retention_days via lifecycle rules (a followed spot's photos after the
# months its owner chose, at most 12), and soft delete is switched off so a
# delete (lifecycle or the product's delete path) really removes the bytes.
#
# One resource, one entry per bucket in local.buckets:
#   versioning      : keep noncurrent versions (only the models bucket)
#   soft_delete_off : retention_duration_seconds = 0 (every bucket with user data)
#   force_destroy   : allow `terraform destroy` of a non-empty bucket
#   lifecycle_rules : Delete rules; each rule is a condition (keys of the
#                     lifecycle_rule condition block, absent keys unset)

locals {
  buckets = {
    # Data buckets that hold user-derived health data: delete after retention_days,
    # no versioning (a versioned bucket would keep deleted images as noncurrent
    # copies). Browser uploads go through signed URLs issued by an authenticated
    # function, never through public access.
    uploads = {
      versioning      = false
      soft_delete_off = true
      force_destroy   = var.force_destroy
      lifecycle_rules = [{ age = var.retention_days }]
    }
    # Heatmaps expire after retention_days. Photos of a followed spot (deepskin.services.lesions) live under
    # lesions/<days>d/, one prefix per duration a person may choose (deepskin.core.follow.FOLLOW_DAYS), with the
    # spot's start as custom_time: each is deleted <days> after the spot was first followed, a photo added later
    # included. The last rule is a backstop for anything else: the longest duration, plus a day.
    results = {
      versioning      = false
      soft_delete_off = true
      force_destroy   = var.force_destroy
      lifecycle_rules = [
        { age = var.retention_days, matches_prefix = ["heatmaps/"] },
        { days_since_custom_time = 31, matches_prefix = ["lesions/31d/"] },
        { days_since_custom_time = 92, matches_prefix = ["lesions/92d/"] },
        { days_since_custom_time = 183, matches_prefix = ["lesions/183d/"] },
        { days_since_custom_time = 365, matches_prefix = ["lesions/365d/"] },
        { age = 366 },
      ]
    }

    # Training bucket: the public HAM10000 copy under ham10000/, run outputs under
    # runs/ and clinician-labelled images under feedback/. Labelled images are kept
    # for labelled_retention_days (the consented retention of a clinician's label,
    # as its report in Firestore), runs for retention_days; everything else (the
    # public data set) after training_data_retention_days.
    training = {
      versioning      = false
      soft_delete_off = true
      force_destroy   = var.force_destroy
      lifecycle_rules = [
        # feedback/ holds copies of clinician-labelled uploads whose custom_time is
        # the time of the label (deepskin.loop.feedback.copy_for_training): kept
        # as long as the label's report, apart from the uploads' retention.
        { days_since_custom_time = var.labelled_retention_days, matches_prefix = ["feedback/"] },
        # Backstop by the copy's own age (e.g. an object written without custom_time).
        { age = var.labelled_retention_days, matches_prefix = ["feedback/"] },
        { age = var.retention_days, matches_prefix = ["runs/"] },
        { age = var.training_data_retention_days },
      ]
    }

    # Models bucket: EXCLUDED from age-based deletion on purpose. It holds the
    # promoted ONNX model and model card, which contain no images or personal data
    # and must outlive retention_days to keep serving. It is versioned so a bad
    # promotion can be rolled back; superseded versions are deleted once more than
    # model_noncurrent_versions_kept newer versions exist.
    models = {
      versioning      = true
      soft_delete_off = false
      force_destroy   = var.force_destroy
      lifecycle_rules = [{ with_state = "ARCHIVED", num_newer_versions = var.model_noncurrent_versions_kept }]
    }

    # Function source archives uploaded by Terraform (code + model, no user data).
    # Cloud Build copies the source at build time, so old archives can expire.
    sources = {
      versioning      = false
      soft_delete_off = false
      force_destroy   = true # only build inputs that Terraform re-uploads
      lifecycle_rules = [{ age = var.retention_days }]
    }
  }
}

resource "google_storage_bucket" "data" {
  #checkov:skip=CKV_GCP_62:usage logs would copy object names of health data into another bucket; Cloud Audit Logs record access instead
  #checkov:skip=CKV_GCP_78:versioning is off on purpose in the data buckets (a deleted image must not survive as a noncurrent version); the models bucket has it
  for_each = local.buckets

  name          = local.bucket_names[each.key]
  project       = var.project_id
  location      = upper(var.region)
  storage_class = "STANDARD"
  force_destroy = each.value.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = each.value.versioning
  }

  dynamic "soft_delete_policy" {
    for_each = each.value.soft_delete_off ? [0] : []
    content {
      retention_duration_seconds = 0
    }
  }

  dynamic "lifecycle_rule" {
    for_each = each.value.lifecycle_rules
    content {
      condition {
        age                    = try(lifecycle_rule.value.age, null)
        days_since_custom_time = try(lifecycle_rule.value.days_since_custom_time, null)
        matches_prefix         = try(lifecycle_rule.value.matches_prefix, null)
        with_state             = try(lifecycle_rule.value.with_state, null)
        num_newer_versions     = try(lifecycle_rule.value.num_newer_versions, null)
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_project_service.apis]
}
