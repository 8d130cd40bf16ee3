"""Feedback function (entry point feedback_http): POST a report on a prediction; POST /retrain (clinicians).

The rules (who may report, what counts as a training label, idempotency) live in deepskin.loop.feedback;
this file only translates HTTP.
"""

from __future__ import annotations

import flask
import functions_framework

from deepskin.core.refused import Refused
from deepskin.core.report import MAX_BODY, parse_report
from deepskin.loop import feedback
from deepskin.services import identity
from deepskin.services.http import body_limit, refusal, with_cors


@functions_framework.http
def feedback_http(request: flask.Request) -> flask.Response:
    return with_cors(request, route, "POST, OPTIONS",
                     "Content-Type, X-DeepSkin-Token, X-DeepSkin-Clinician, Authorization")


def route(request: flask.Request) -> flask.Response:
    try:
        if request.path not in ("/", "/feedback", "/retrain"):
            raise Refused(404, "not_found")
        if request.method != "POST":
            raise Refused(405, "method_not_allowed")
        if request.path == "/retrain":
            return manual_retrain(request)
        report = parse_report(read_json(request))
        answer = feedback.submit(report, request.headers.get("X-DeepSkin-Token"), request.headers)
        return flask.make_response(flask.jsonify(answer), 202)
    except Refused as refused:
        return refusal(refused)


def read_json(request: flask.Request) -> bytes:
    if request.mimetype != "application/json":
        raise Refused(415, "unsupported_media_type", "Send the report as application/json.")
    with body_limit(request, MAX_BODY):
        return request.get_data()


def manual_retrain(request: flask.Request) -> flask.Response:
    clinician = identity.clinician_identity(request.headers)
    if clinician is None:
        raise Refused(403, "clinician_identity_required", "Only a verified clinician may ask to retrain.")
    return flask.make_response(flask.jsonify({"message_id": feedback.request_retrain(clinician)}), 202)
