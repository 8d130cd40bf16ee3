"""Feedback function (entry point feedback_http): POST a report on a prediction; POST /retrain (clinicians).

The rules (who may report, what counts as a training label, idempotency) live in deepskin.feedback;
this file only translates HTTP.
"""

from __future__ import annotations

import flask
import functions_framework
from werkzeug.exceptions import RequestEntityTooLarge

from deepskin import feedback
from deepskin.cors import with_cors


@functions_framework.http
def feedback_http(request: flask.Request) -> flask.Response:
    return with_cors(request, route, "POST, OPTIONS",
                     "Content-Type, X-DeepSkin-Token, X-DeepSkin-Clinician, Authorization")


def route(request: flask.Request) -> flask.Response:
    try:
        if request.path not in ("/", "/feedback", "/retrain"):
            raise feedback.Refused(404, "not_found")
        if request.method != "POST":
            raise feedback.Refused(405, "method_not_allowed")
        if request.path == "/retrain":
            return manual_retrain(request)
        report = feedback.parse_report(read_json(request))
        answer = feedback.submit(report, request.headers.get("X-DeepSkin-Token"), request.headers)
        return flask.make_response(flask.jsonify(answer), 202)
    except feedback.Refused as refused:
        body = flask.json.dumps({"error": refused.code, "detail": refused.detail})
        # Streamed, so that functions-framework does not drain an oversize body into memory after we answer.
        return flask.Response(iter([body]) if refused.status == 413 else body, refused.status,
                              mimetype="application/json")


def read_json(request: flask.Request) -> bytes:
    if request.mimetype != "application/json":
        raise feedback.Refused(415, "unsupported_media_type", "Send the report as application/json.")
    # Refuse by the declared length before reading a byte; max_content_length stops a chunked body too.
    if (request.content_length or 0) > feedback.MAX_BODY:
        raise feedback.Refused(413, "too_large", f"The limit is {feedback.MAX_BODY} bytes.")
    request.max_content_length = feedback.MAX_BODY
    try:
        return request.get_data()
    except RequestEntityTooLarge:
        raise feedback.Refused(413, "too_large", f"The limit is {feedback.MAX_BODY} bytes.") from None


def manual_retrain(request: flask.Request) -> flask.Response:
    clinician = feedback.clinician_identity(request.headers)
    if clinician is None:
        raise feedback.Refused(403, "clinician_identity_required", "Only a verified clinician may ask to retrain.")
    return flask.make_response(flask.jsonify({"message_id": feedback.request_retrain(clinician)}), 202)
