# Refactoring records: where resources of an existing deployment moved when
# their definitions were folded into for_each. `terraform plan` moves the state
# instead of destroying and recreating the resource. Once every deployment
# (every state) has been applied with these blocks they may be deleted.

# functions.tf: the seven google_cloudfunctions2_function resources became
# instances of google_cloudfunctions2_function.fn (issue 16).
moved {
  from = google_cloudfunctions2_function.predict_event
  to   = google_cloudfunctions2_function.fn["predict_event"]
}

moved {
  from = google_cloudfunctions2_function.predict_http
  to   = google_cloudfunctions2_function.fn["predict_http"]
}

moved {
  from = google_cloudfunctions2_function.predict_dead
  to   = google_cloudfunctions2_function.fn["predict_dead"]
}

moved {
  from = google_cloudfunctions2_function.feedback
  to   = google_cloudfunctions2_function.fn["feedback"]
}

moved {
  from = google_cloudfunctions2_function.retrain_trigger
  to   = google_cloudfunctions2_function.fn["retrain_trigger"]
}

moved {
  from = google_cloudfunctions2_function.sweeper
  to   = google_cloudfunctions2_function.fn["sweeper"]
}

moved {
  from = google_cloudfunctions2_function.ops
  to   = google_cloudfunctions2_function.fn["ops"]
}

# functions.tf: local.event_functions is derived from local.functions, so the
# retrain trigger's Eventarc invoker binding is keyed like its function.
moved {
  from = google_cloud_run_service_iam_member.eventarc_invoker["retrain"]
  to   = google_cloud_run_service_iam_member.eventarc_invoker["retrain_trigger"]
}

# iam.tf: retrain_vertex_user and sweeper_vertex_user became one resource.
moved {
  from = google_project_iam_member.retrain_vertex_user
  to   = google_project_iam_member.vertex_user["retrain"]
}

moved {
  from = google_project_iam_member.sweeper_vertex_user
  to   = google_project_iam_member.vertex_user["sweeper"]
}

# iam.tf: the build account's project roles became one log-writer binding; its Artifact Registry writer role
# moved onto the one repository (issue 23), so that instance is destroyed, not moved.
moved {
  from = google_project_iam_member.build["roles/logging.logWriter"]
  to   = google_project_iam_member.build_log_writer
}
