# Buckets. Every bucket is private: uniform bucket-level access (no object ACLs)
# and public access prevention enforced, so no IAM binding can ever make an
# object public. Images and heatmaps are health data: they expire after
# var.retention_days via lifecycle rules, and soft delete is switched off so a
# delete (lifecycle or the product's delete path) really removes the bytes.

# Data buckets that hold user-derived health data: delete after retention_days,
# no versioning (a versioned bucket would keep deleted images as noncurrent copies).
resource "google_storage_bucket" "uploads" {
  name          = local.bucket_names.uploads
  project       = var.project_id
  location      = upper(var.region)
  storage_class = "STANDARD"
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = false
  }

  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      age = var.retention_days
    }
    action {
      type = "Delete"
    }
  }

  # Browser uploads from the web page go through signed URLs issued by an
  # authenticated function, never through public access.
  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "results" {
  name          = local.bucket_names.results
  project       = var.project_id
  location      = upper(var.region)
  storage_class = "STANDARD"
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = false
  }

  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      age = var.retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Training bucket: the public HAM10000 copy under ham10000/, run outputs under
# runs/ and feedback-derived images under feedback/. Feedback images and runs
# expire after retention_days like every other user-derived object; everything
# else (the public data set) after training_data_retention_days.
resource "google_storage_bucket" "training" {
  name          = local.bucket_names.training
  project       = var.project_id
  location      = upper(var.region)
  storage_class = "STANDARD"
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = false
  }

  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      age            = var.retention_days
      matches_prefix = ["feedback/", "runs/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = var.training_data_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Models bucket: EXCLUDED from age-based deletion on purpose. It holds the
# promoted ONNX model and model card, which contain no images or personal data
# and must outlive retention_days to keep serving. It is versioned so a bad
# promotion can be rolled back; superseded versions are deleted once more than
# model_noncurrent_versions_kept newer versions exist.
resource "google_storage_bucket" "models" {
  name          = local.bucket_names.models
  project       = var.project_id
  location      = upper(var.region)
  storage_class = "STANDARD"
  force_destroy = var.force_destroy

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      with_state         = "ARCHIVED"
      num_newer_versions = var.model_noncurrent_versions_kept
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Function source archives uploaded by Terraform (code + model, no user data).
# Cloud Build copies the source at build time, so old archives can expire.
resource "google_storage_bucket" "sources" {
  name          = local.bucket_names.sources
  project       = var.project_id
  location      = upper(var.region)
  storage_class = "STANDARD"
  force_destroy = true # only build inputs that Terraform re-uploads

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = false
  }

  lifecycle_rule {
    condition {
      age = var.retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}
