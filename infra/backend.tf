# Remote state in a GCS bucket created once by the bootstrap in infra/README.md.
# Partial configuration: pass the bucket at init time, e.g.
#   terraform -chdir=infra init -backend-config="bucket=$TF_STATE_BUCKET" -backend-config="prefix=deepskin"
# For a throw-away local experiment use `terraform init -backend=false` (validate only).
terraform {
  backend "gcs" {}
}
