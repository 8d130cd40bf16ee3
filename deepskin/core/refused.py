"""The one error answer: a request found wanting."""

from __future__ import annotations


class DeepSkinError(Exception):
    """Anything DeepSkin's Python client raises: catch this one to handle them all."""


class Refused(DeepSkinError):
    """A 4xx answer: the HTTP status, a stable code for programs and a sentence for people.

    The services raise it wherever a request fails a check (deepskin.services.http turns it into the JSON
    body {"error": code, "detail": sentence}); the Python client raises it when the service answers so.
    """

    def __init__(self, status: int, code: str, detail: str = ""):
        super().__init__(f"HTTP {status} {code}" + (f": {detail}" if detail else ""))
        self.status, self.code, self.detail = status, code, detail
