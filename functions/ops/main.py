"""Operator function (entry point ops_http): GET / (the overview as JSON), GET /plots/<name>.png.

Open to operators only, checked twice: IAM lets only var.operator_members invoke this function
(infra/functions.tf), and every request must carry an operator's verified identity
(deepskin.services.identity.operator_identity: a Google ID token of an e-mail in var.operator_emails; locally the
clinician key). The data is deepskin.loop.ops's: counts and model numbers, never a report's text.
"""

from __future__ import annotations

import flask
import functions_framework

from deepskin.core.refused import Refused
from deepskin.loop import ops
from deepskin.services import identity
from deepskin.services.http import refusal, with_cors


@functions_framework.http
def ops_http(request: flask.Request) -> flask.Response:
    return with_cors(request, route, "GET, OPTIONS", "X-DeepSkin-Clinician, Authorization")


def route(request: flask.Request) -> flask.Response:
    try:
        response = answer(request)
    except Refused as refused:
        return refusal(refused)
    response.headers["Cache-Control"] = "no-store"
    return response


def answer(request: flask.Request) -> flask.Response:
    if identity.operator_identity(request.headers) is None:
        raise Refused(403, "operator_identity_required", "Only an operator may read this page.")
    if request.method != "GET":
        raise Refused(405, "method_not_allowed")
    if request.path == "/":
        return flask.jsonify(ops.overview())
    if request.path.startswith("/plots/") and (plot := ops.plot_path(request.path.removeprefix("/plots/"))):
        return flask.send_file(plot, mimetype="image/png")
    raise Refused(404, "not_found")
