"""Predict functions: one archive, two entry points (infra/functions.tf deploys each as its own function).

- on_upload: Eventarc `google.cloud.storage.object.v1.finalized` on the uploads bucket.
- on_upload_dead: the dead-letter topic of on_upload's subscription: an upload whose deliveries ran out.
- predict_http: POST an image (optional age, sex, site and answers to the questions about the lesion,
  deepskin.core.patient.FIELDS, as form fields or query parameters), then GET or
  DELETE its result with the returned capability token. POST /lesions follows a result (a followed spot's
  history, deepskin.services.lesions); /lesions/<id> is read, added to and deleted with the lesion's token.
The work is done in deepskin.services.predict_service; this file only translates events and HTTP.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets

import flask
import functions_framework
from cloudevents.http import CloudEvent

from deepskin.core import checks
from deepskin.core.patient import FIELDS, InvalidPatientInfo, PatientInfo
from deepskin.core.refused import Refused
from deepskin.services import lesions, predict_service, results, store
from deepskin.services.http import body_limit, refusal, with_cors

# One line per result written (its id and status, never image data): what operators and the load test read.
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

RESULT_PATH = re.compile(r"^/results/(?P<id>[0-9a-f]{32})(?P<heatmap>/heatmap)?/?$")
LESION_PATH = re.compile(r"^/lesions/(?P<id>[0-9a-f]{32})"
                         r"(?P<part>/results|/reminder\.ics|/photos/(?P<result>[0-9a-f]{32}))?/?$")
RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
LESION_TOKEN = "X-DeepSkin-Lesion-Token"  # a header name, no secret  # nosec B105
MAX_JSON = 4 * 1024
RAW_TYPES = ("image/", "application/octet-stream")
# Room for the multipart framing around an image of the maximum size.
MAX_BODY = checks.MAX_BYTES + 64 * 1024


@functions_framework.cloud_event
def on_upload(cloud_event: CloudEvent) -> None:
    data = cloud_event.data
    predict_service.handle_upload(data["bucket"], data["name"], data["generation"], data.get("size", 0),
                                  data.get("metadata"))


@functions_framework.cloud_event
def on_upload_dead(cloud_event: CloudEvent) -> None:
    """Pub/Sub forwards the undeliverable storage notification itself: its data is the object resource."""
    message = (cloud_event.data or {}).get("message") or {}
    obj = json.loads(base64.b64decode(message.get("data") or "") or b"{}")
    if {"bucket", "name", "generation"} <= obj.keys():
        predict_service.handle_exhausted(obj["bucket"], obj["name"], obj["generation"], obj.get("metadata"))


@functions_framework.http
def predict_http(request: flask.Request) -> flask.Response:
    return with_cors(request, route, "GET, POST, DELETE, OPTIONS",
                     f"Content-Type, X-DeepSkin-Token, {LESION_TOKEN}, Authorization")


def route(request: flask.Request) -> flask.Response:
    try:
        if request.method == "POST" and request.path in ("/", "/predict"):
            return post_image(request)
        if request.method == "POST" and request.path.rstrip("/") == "/lesions":
            return follow_result(request)
        if (lesion := LESION_PATH.match(request.path)) is not None:
            return lesion_request(request, lesion)
        match = RESULT_PATH.match(request.path)
        if match is None:
            raise Refused(404, "not_found")
        return result_request(request, match["id"], heatmap=bool(match["heatmap"]))
    except Refused as refused:
        return refusal(refused)


def result_request(request: flask.Request, id_: str, heatmap: bool) -> flask.Response:
    token = request.headers.get("X-DeepSkin-Token")  # never a query parameter: URLs are logged and kept
    doc = results.owned_result(id_, token)
    if doc is None:
        raise Refused(404, "not_found")  # the same answer whether or not the result exists
    if request.method == "GET" and heatmap:
        png = store.read_heatmap(id_)
        if png is None:
            raise Refused(404, "not_found")
        return flask.Response(png, mimetype="image/png")
    if request.method == "GET":
        return flask.jsonify({"id": id_, **results.public_fields(doc)})
    if request.method == "DELETE" and not heatmap:
        return flask.jsonify({"id": id_, "deleted": store.delete_result(id_)})
    raise Refused(405, "method_not_allowed")


def follow_result(request: flask.Request) -> flask.Response:
    """Start a followed spot from the owner's result: {"result_id", "consent": true, "months"}."""
    body = read_json(request)
    id_, token, history = lesions.start(result_id(body), request.headers.get("X-DeepSkin-Token"),
                                        body.get("consent"), body.get("months"))
    response = flask.jsonify({**history, "id": id_, "token": token})
    response.status_code = 201
    return response


def lesion_request(request: flask.Request, match: re.Match) -> flask.Response:
    id_, part = match["id"], match["part"] or ""
    lesion = lesions.owned_lesion(id_, request.headers.get(LESION_TOKEN))  # a header, as for results
    if lesion is None:
        raise Refused(404, "not_found")  # the same answer whether or not the lesion exists
    if request.method == "GET" and not part:
        return flask.jsonify(lesions.history(id_, lesion))
    if request.method == "DELETE" and not part:
        return flask.jsonify({"id": id_, "deleted": lesions.delete(id_)})
    if request.method == "POST" and part == "/results":
        return flask.jsonify(lesions.add(id_, lesion, result_id(read_json(request)),
                                         request.headers.get("X-DeepSkin-Token")))
    if request.method == "GET" and part == "/reminder.ics":
        return flask.Response(lesions.reminder(id_, lesion, request.args.get("date")), mimetype="text/calendar",
                              headers={"Content-Disposition": 'attachment; filename="deepskin-reminder.ics"'})
    if request.method == "GET" and match["result"]:
        data, content_type = lesions.photo(lesion, match["result"])
        return flask.Response(data, mimetype=content_type)
    raise Refused(405, "method_not_allowed")


def read_json(request: flask.Request) -> dict:
    with body_limit(request, MAX_JSON):
        body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Refused(400, "invalid_json", "Send a JSON object.")
    return body


def result_id(body: dict) -> str:
    value = body.get("result_id")
    if not isinstance(value, str) or not RESULT_ID.match(value):
        raise Refused(400, "invalid_result_id", "result_id: the id of one of your results.")
    return value


def post_image(request: flask.Request) -> flask.Response:
    data, content_type = read_image(request)
    patient = read_patient(request)
    token = secrets.token_urlsafe(24)
    outcome = predict_service.predict_bytes(data, content_type, token, patient)
    body = {"id": outcome.id, "token": token, **results.public_fields(outcome.fields)}
    if outcome.heatmap_png:
        body["heatmap_png_base64"] = base64.b64encode(outcome.heatmap_png).decode()
    return flask.jsonify(body)


def read_patient(request: flask.Request) -> PatientInfo:
    """Optional age, sex, site and answers: multipart form fields, or query parameters beside a raw image body."""
    fields = request.form if request.mimetype == "multipart/form-data" else request.args
    try:
        return PatientInfo.parse(**{field: fields.get(field) for field in FIELDS})
    except InvalidPatientInfo as exc:
        raise Refused(400, "invalid_patient_info", str(exc)) from None


def read_image(request: flask.Request) -> tuple[bytes, str]:
    """(bytes, content type) from a raw image body or the multipart field `image`."""
    with body_limit(request, MAX_BODY):
        if request.mimetype == "multipart/form-data":
            part = request.files.get("image")
            if part is None:
                raise Refused(400, "missing_image_field", "Send the photo in the form field `image`.")
            data, content_type = part.read(), part.mimetype or "application/octet-stream"
        elif request.mimetype.startswith(RAW_TYPES):
            data, content_type = request.get_data(), request.mimetype
        else:
            raise Refused(415, "unsupported_media_type", "Send a photo (image/*) or a multipart form.")
    if not data:
        raise Refused(400, "empty", "The photo is empty.")
    if len(data) > checks.MAX_BYTES:
        raise Refused(413, "too_large", f"The limit is {checks.MAX_BYTES} bytes.")
    return data, content_type
