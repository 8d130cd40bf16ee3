"""Operator function (entry point ops_http): GET / (the overview as JSON), GET /plots/<name>.png.

Open to operators only. On Google Cloud that is IAM: only var.operator_members may invoke this function
(infra/functions.tf), so a request that arrives is an operator's. Locally (emulators) the clinician key of
deepskin.feedback stands in. The data is deepskin.ops's: counts and model numbers, never a report's text.
"""

from __future__ import annotations

import os

import flask
import functions_framework

from deepskin import feedback, ops
from deepskin.cors import with_cors


@functions_framework.http
def ops_http(request: flask.Request) -> flask.Response:
    return with_cors(request, route, "GET, OPTIONS", "X-DeepSkin-Clinician, Authorization")


def route(request: flask.Request) -> flask.Response:
    if not operator(request.headers):
        return refuse(403, "operator_identity_required")
    if request.method != "GET":
        return refuse(405, "method_not_allowed")
    if request.path == "/":
        response = flask.jsonify(ops.overview())
    elif request.path.startswith("/plots/") and (plot := ops.plot_path(request.path.removeprefix("/plots/"))):
        response = flask.send_file(plot, mimetype="image/png")
    else:
        return refuse(404, "not_found")
    response.headers["Cache-Control"] = "no-store"
    return response


def operator(headers) -> bool:
    """Locally, a known clinician key; on Cloud Run, IAM has already admitted only operators; else nobody."""
    if feedback.local_stand_in():
        return feedback.clinician_identity(headers) is not None
    return bool(os.environ.get("K_SERVICE"))


def refuse(status: int, code: str) -> flask.Response:
    return flask.Response(flask.json.dumps({"error": code}), status, mimetype="application/json")
