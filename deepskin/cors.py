"""CORS for the HTTP functions: the web page calls them from its own origin, on Google Cloud too.

Only origins listed in DEEPSKIN_ALLOWED_ORIGINS get the Allow-Origin header; a preflight from any other
origin is refused. Authentication is separate (IAM / tokens): CORS only tells browsers what may read answers.
"""

from __future__ import annotations

from collections.abc import Callable

import flask

from deepskin.config import settings


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
