# The edge: per-caller request limits in front of the two user-facing HTTP
# functions (predict_http, feedback), so that one identity cannot flood the
# functions, the buckets or Firestore.
#
# A global external Application Load Balancer on var.edge_domain (Google-managed
# certificate) routes /predict/... to predict_http and /feedback/... to the
# feedback function (the prefix is cut: /predict/results/<id> arrives as
# /results/<id>). Each route's backend carries a Cloud Armor policy that
# throttles every caller to var.edge_rate_limits requests a minute, keyed on the
# Authorization header: the caller's Google ID token, the identity IAM checks
# (a token lives an hour). A caller over the limit gets 429. Both functions
# accept only internal and load-balancer traffic (ALLOW_INTERNAL_AND_GCLB,
# functions.tf), so the limits cannot be bypassed through the functions' own
# URLs; IAM still requires an identity token on every request. The code adds
# its own limits where it knows more: a prediction takes a few reports per role
# (deepskin/loop/feedback.py).
#
# Clients use output edge_predict_url and edge_feedback_url; clinicians still
# mint their ID tokens for output feedback_http_url (the audience the feedback
# function checks). Point var.edge_domain's DNS A record at output edge_ip.

locals {
  # The HTTP functions behind the edge: the path prefix that reaches each, and its limit.
  edge_functions = {
    predict_http = { prefix = "/predict/", per_minute = var.edge_rate_limits.predict_per_minute }
    feedback     = { prefix = "/feedback/", per_minute = var.edge_rate_limits.feedback_per_minute }
  }
}

resource "google_compute_global_address" "edge" {
  project = var.project_id
  name    = "${var.name_prefix}-edge"

  depends_on = [google_project_service.apis]
}

resource "google_compute_managed_ssl_certificate" "edge" {
  project = var.project_id
  name    = "${var.name_prefix}-edge"

  managed {
    domains = [var.edge_domain]
  }

  depends_on = [google_project_service.apis]
}

# One serverless network endpoint group per function: the load balancer's way to its Cloud Run service.
resource "google_compute_region_network_endpoint_group" "edge" {
  for_each = local.edge_functions

  project               = var.project_id
  name                  = "${var.name_prefix}-edge-${replace(each.key, "_", "-")}"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = google_cloudfunctions2_function.fn[each.key].name
  }
}

resource "google_compute_security_policy" "edge" {
  #checkov:skip=CKV_GCP_73:the Log4j (JNDI lookup) WAF rule guards Java backends; behind this policy are Python functions that log no request header
  for_each = local.edge_functions

  project     = var.project_id
  name        = "${var.name_prefix}-edge-${replace(each.key, "_", "-")}"
  description = "Per-caller request limit in front of ${local.function_names[each.key]}."

  rule {
    action      = "throttle"
    priority    = 1000
    description = "At most ${each.value.per_minute} requests a minute per caller (its ID token); 429 beyond."

    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }

    rate_limit_options {
      conform_action      = "allow"
      exceed_action       = "deny(429)"
      enforce_on_key      = "HTTP_HEADER"
      enforce_on_key_name = "Authorization"

      rate_limit_threshold {
        count        = each.value.per_minute
        interval_sec = 60
      }
    }
  }

  # Cloud Armor requires a default rule; the one above matches every request first.
  rule {
    action      = "allow"
    priority    = 2147483647
    description = "Default rule."

    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
  }
}

resource "google_compute_backend_service" "edge" {
  for_each = local.edge_functions

  project               = var.project_id
  name                  = "${var.name_prefix}-edge-${replace(each.key, "_", "-")}"
  protocol              = "HTTPS"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  security_policy       = google_compute_security_policy.edge[each.key].id

  backend {
    group = google_compute_region_network_endpoint_group.edge[each.key].id
  }
}

resource "google_compute_url_map" "edge" {
  project         = var.project_id
  name            = "${var.name_prefix}-edge"
  default_service = google_compute_backend_service.edge["predict_http"].id

  host_rule {
    hosts        = [var.edge_domain]
    path_matcher = "functions"
  }

  path_matcher {
    name            = "functions"
    default_service = google_compute_backend_service.edge["predict_http"].id

    # One route a function: its prefix, cut off before the request reaches it.
    dynamic "route_rules" {
      for_each = local.edge_functions
      content {
        priority = index(keys(local.edge_functions), route_rules.key) + 1
        service  = google_compute_backend_service.edge[route_rules.key].id

        match_rules {
          prefix_match = route_rules.value.prefix
        }

        route_action {
          url_rewrite {
            path_prefix_rewrite = "/"
          }
        }
      }
    }
  }
}

resource "google_compute_target_https_proxy" "edge" {
  project          = var.project_id
  name             = "${var.name_prefix}-edge"
  url_map          = google_compute_url_map.edge.id
  ssl_certificates = [google_compute_managed_ssl_certificate.edge.id]
}

resource "google_compute_global_forwarding_rule" "edge" {
  project               = var.project_id
  name                  = "${var.name_prefix}-edge"
  target                = google_compute_target_https_proxy.edge.id
  ip_address            = google_compute_global_address.edge.id
  port_range            = "443"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
