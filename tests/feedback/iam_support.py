"""The permission table (infra/permissions.py) enforced on the emulators, which enforce no IAM themselves.

`acting_as(identity)` gives the code under test a storage client that behaves as that identity would on
Google Cloud: each request is read the way Cloud Storage authorises it (read, create, replace or delete of
an object name in a bucket), checked against the identity's grants and recorded; a request the table does
not allow gets the 403 Cloud Storage would send and never reaches the emulator. Firestore calls are recorded
(top-level collection, read or write) to be compared with the table: Firestore IAM could not refuse them.

A `cut` predicate stands for an instance that died just after the server acted: the matching request is
carried out, then Died is raised instead of the answer coming back.
"""

# pylint: disable=protected-access  # a reference's path: what Firestore's client knows of the collection

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from unittest import mock
from urllib.parse import parse_qs, unquote, urlsplit

import permissions
import requests
from google.cloud import storage
from google.cloud.firestore_v1 import base_batch, collection, document, query, transaction
from permissions import FIRESTORE_READ, FIRESTORE_WRITE

from deepskin.services import store
from deepskin.services.config import settings

BUCKET_KEYS = ("uploads", "results", "models", "training")  # local.buckets (infra/storage.tf)
OBJECT = re.compile(r"^(?:/download)?/storage/v1/b/(?P<bucket>[^/]+)/o(?:/(?P<name>[^/]+))?$")
UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")
UNRESTRICTED = store.storage_client  # the emulator as its owner: what the harness itself looks at


class Died(BaseException):
    """The function's instance stopped right there (killed, timed out): no handler in it runs."""


@dataclass(frozen=True)
class Call:
    bucket: str  # the bucket's key in the table (uploads, results, models, training)
    name: str  # the object's name; a listing's prefix
    operation: str  # permissions.READ, CREATE, REPLACE or DELETE


@dataclass
class Calls:
    identity: str
    storage: set[Call] = field(default_factory=set)
    refused: list[Call] = field(default_factory=list)
    firestore: set[tuple[str, str]] = field(default_factory=set)  # (top-level collection, read or write)
    cut: Callable[[Call], bool] | None = None

    def grants(self) -> tuple[permissions.Grant, ...]:
        return permissions.STORAGE[self.identity]

    def allowed(self, call: Call) -> bool:
        return any(grant.allows(call.bucket, call.name, call.operation) for grant in self.grants())

    def unused_grants(self) -> list[permissions.Grant]:
        return [grant for grant in self.grants()
                if not any(grant.allows(call.bucket, call.name, call.operation) for call in self.storage)]

    def firestore_outside_the_table(self) -> set[tuple[str, str]]:
        table = permissions.FIRESTORE[self.identity]
        return {(name, mode) for name, mode in self.firestore if mode not in table.get(name, ())}

    def firestore_unused(self) -> set[tuple[str, str]]:
        table = permissions.FIRESTORE[self.identity]
        return {(name, mode) for name, modes in table.items() for mode in modes} - self.firestore


def bucket_keys() -> dict[str, str]:
    """Bucket name -> its key in the table."""
    config = settings()
    names = (config.uploads_bucket, config.results_bucket, config.models_bucket, config.training_bucket)
    return dict(zip(names, BUCKET_KEYS))


class ActingSession(requests.Session):
    """The HTTP session of one identity's storage client."""

    def __init__(self, calls: Calls):
        super().__init__()
        self.calls = calls

    def request(self, method, url, data=None, headers=None, **kwargs):  # pylint: disable=arguments-differ
        call = self.authorised_as(method, url, data)
        if call is not None:
            self.calls.storage.add(call)
            if not self.calls.allowed(call):
                self.calls.refused.append(call)
                return forbidden(method, url, self.calls.identity, call)
        response = super().request(method, url, data=data, headers=headers, **kwargs)
        if call is not None and self.calls.cut is not None and self.calls.cut(call):
            self.calls.cut = None
            raise Died(f"after {method} {call.bucket}/{call.name}")
        return response

    def authorised_as(self, method: str, url: str, data) -> Call | None:
        """What Cloud Storage would check for this request; None for a resumable upload's later requests,
        which the upload's first request authorised."""
        parts = urlsplit(url)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if match := UPLOAD.match(parts.path):
            if "upload_id" in params:
                return None
            name = params.get("name") or upload_metadata(data).get("name", "")
            created = params.get("ifGenerationMatch") == "0" or not self.exists(match["bucket"], name)
            return Call(self.key(match["bucket"]), name,
                        permissions.CREATE if created else permissions.REPLACE)
        match = OBJECT.match(parts.path)
        if match is None:
            raise AssertionError(f"a storage request this harness cannot read: {method} {url}")
        if match["name"] is None:  # a listing
            return Call(self.key(match["bucket"]), params.get("prefix", ""), permissions.READ)
        name = unquote(match["name"])
        operation = {"GET": permissions.READ, "DELETE": permissions.DELETE}.get(method, permissions.REPLACE)
        return Call(self.key(match["bucket"]), name, operation)

    @staticmethod
    def key(bucket: str) -> str:
        return bucket_keys().get(bucket, bucket)

    def exists(self, bucket: str, name: str) -> bool:
        return UNRESTRICTED().bucket(bucket).get_blob(name) is not None


def upload_metadata(data) -> dict:
    """The object resource at the head of a multipart upload's body, or a resumable upload's JSON body."""
    body = data if isinstance(data, bytes) else (data or "").encode() if isinstance(data, str) else b""
    match = re.search(rb"\{.*?\}(?=\r\n--|$)", body, flags=re.DOTALL)
    try:
        return json.loads(match[0]) if match else {}
    except ValueError:
        return {}


def forbidden(method: str, url: str, identity: str, call: Call) -> requests.Response:
    """The answer Cloud Storage gives a request its caller has no permission for."""
    response = requests.Response()
    response.status_code, response.url = 403, url
    response.request = requests.Request(method, url).prepare()
    response.headers["Content-Type"] = "application/json"
    message = f"{identity} does not have storage.objects {call.operation} access to {call.bucket}/{call.name}"
    response._content = json.dumps({"error": {"code": 403, "message": message}}).encode()
    return response


# (class, method, read or write, the path of the document or collection it acts on)
FIRESTORE_CALLS = [
    *((document.DocumentReference, name, FIRESTORE_WRITE, lambda ref, *_a, **_k: ref._path)
      for name in ("create", "set", "update", "delete")),
    *((base_batch.BaseWriteBatch, name, FIRESTORE_WRITE, lambda _b, ref, *_a, **_k: ref._path)
      for name in ("create", "set", "update", "delete")),
    (document.DocumentReference, "get", FIRESTORE_READ, lambda ref, *_a, **_k: ref._path),
    *((query.Query, name, FIRESTORE_READ, lambda q, *_a, **_k: q._parent._path) for name in ("get", "stream")),
    *((collection.CollectionReference, name, FIRESTORE_READ, lambda c, *_a, **_k: c._path)
      for name in ("get", "stream", "list_documents")),
    (transaction.Transaction, "get", FIRESTORE_READ,
     lambda _t, ref, *_a, **_k: ref._path if hasattr(ref, "_path") else ref._parent._path),
]


def recording(calls: Calls, cls, name: str, mode: str, path_of):
    original = getattr(cls, name)

    def recorded(*args, **kwargs):
        calls.firestore.add((path_of(*args, **kwargs)[0], mode))  # its top-level collection
        return original(*args, **kwargs)

    return mock.patch.object(cls, name, recorded)


@contextmanager
def acting_as(identity: str, calls: Calls | None = None) -> Iterator[Calls]:
    """Storage as `identity` (the table enforced), Firestore recorded, until the block ends; into `calls`
    when given (one identity's calls over several blocks)."""
    calls = calls or Calls(identity)
    client = storage.Client(project=settings().project, _http=ActingSession(calls))
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(store, "storage_client", lambda: client))
        for cls, name, mode, path_of in FIRESTORE_CALLS:
            stack.enter_context(recording(calls, cls, name, mode, path_of))
        yield calls
