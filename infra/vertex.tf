# Vertex AI custom training jobs are NOT created by Terraform: they are
# submitted per run by .github/workflows/train.yml (manual) or by the retrain
# trigger function, with:
#   service account : google_service_account.training  (output training_service_account_email)
#   image           : local.training_image_uri           (output training_image_uri)
#   machine         : var.training_machine_type + var.training_accelerator_type x count
#   data / output   : /gcs/<training bucket>/ham10000 and /gcs/<training bucket>/runs/<id>
#                     (Cloud Storage FUSE mount that Vertex AI provides under /gcs/)
# Terraform only provides the identity, permissions, image repository, bucket
# and this spec (output vertex_training_spec) so both submitters agree.

locals {
  vertex_training_spec = {
    region            = var.region
    service_account   = google_service_account.training.email
    image_uri         = local.training_image_uri
    machine_type      = var.training_machine_type
    accelerator_type  = var.training_accelerator_type
    accelerator_count = var.training_accelerator_count
    data_dir          = "/gcs/${google_storage_bucket.data["training"].name}/ham10000"
    runs_dir          = "/gcs/${google_storage_bucket.data["training"].name}/runs"
    config            = "training/configs/gpu.json"
  }
}
