"""What every HTTP function shares: CORS, the body-size guard, and the JSON answer of a Refused.

CORS: only origins listed in DEEPSKIN_ALLOWED_ORIGINS get the Allow-Origin header; a preflight from any
other origin is refused. Authentication is separate (IAM / tokens): CORS only tells browsers what may read
answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import flask
from werkzeug.exceptions import RequestEntityTooLarge

from deepskin.core.refused import Refused
from deepskin.services.config import settings


def with_cors(request: flask.Request, handle: Callable[[flask.Request], flask.Response], methods: str,
              headers: str) -> flask.Response:
    """Answer a preflight, or `handle` the request; either way add the CORS headers for an allowed origin."""
    origin = request.headers.get("Origin")
    allowed = origin in settings().allowed_origins
    if request.method == "OPTIONS":
        response = flask.Response(status=204 if allowed else 403)
        if allowed:
            response.headers.update({"Access-Control-Allow-Methods": methods,
                                     "Access-Control-Allow-Headers": headers,
                                     "Access-Control-Max-Age": "3600"})
    else:
        response = handle(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
    response.headers.add("Vary", "Origin")
    return response


@contextmanager
def body_limit(request: flask.Request, limit: int) -> Iterator[None]:
    """Read the body inside this block: more than `limit` bytes is Refused(413) before a byte is read when the
    length is declared, and (max_content_length) as soon as the limit is passed when it is not (chunked)."""
    too_large = Refused(413, "too_large", f"The limit is {limit} bytes.")
    if (request.content_length or 0) > limit:
        raise too_large
    request.max_content_length = limit
    try:
        yield
    except RequestEntityTooLarge:
        raise too_large from None


def refusal(refused: Refused) -> flask.Response:
    """{"error": code, "detail": sentence} with the refusal's status."""
    body = json.dumps({"error": refused.code, "detail": refused.detail})
    # Streamed, so that functions-framework does not drain an oversize body into memory after we answer.
    return flask.Response(iter([body]) if refused.status == 413 else body, refused.status, mimetype="application/json")
