"""Access and privacy as tests: no secrets in the repository, no personal data in logs or stored copies, and
an owner's delete that leaves nothing behind in any store.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import subprocess
import uuid

import pytest
from PIL import Image
from support import (
    COMMENT,
    LESIONS,
    PERSONAL_STRINGS,
    REPO,
    contains_personal_data,
    deliver_upload,
    every_store,
    photo_with_personal_metadata,
    put_object,
)

from deepskin.clients.client import Client
from deepskin.services import results, store
from deepskin.services.config import settings

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
    "service-account JSON": re.compile(r'"type"\s*:\s*"service_account"'),
    "Google API key": re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
    "Google OAuth client secret": re.compile(r"GOCSPX-[0-9A-Za-z_\-]{20,}"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[0-9A-Za-z]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[0-9A-Za-z-]{10,}"),
}
# PNG chunks a heatmap may have: pixels and colour, never text, time or EXIF.
PNG_PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs"}

pytestmark = pytest.mark.usefixtures("clean_firestore")


def repository_text_files():
    """Tracked files and new ones git does not ignore (the lead commits them): text only."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\0" not in data[:8192]:
            yield name, data.decode("utf-8", errors="replace")


def test_no_secrets_in_the_repository():
    found = [(name, kind) for name, text in repository_text_files()
             for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    assert found == []


def test_logs_carry_no_image_bytes_exif_or_personal_data(http_client, event_client, feedback_client, caplog,
                                                         capfd):
    photo = photo_with_personal_metadata()
    caplog.set_level(logging.DEBUG)  # everything any library would log, not only what production keeps
    answer = http_client.post("/predict", data=photo, content_type="image/jpeg").get_json()
    assert answer["status"] == "done"
    assert deliver_upload(event_client, put_object(f"privacy/{uuid.uuid4()}.jpg", photo)) == 200
    report = {"prediction_id": answer["id"], "label": "nv", "role": "user", "comment": f"{COMMENT} says hi",
              "idempotency_key": "k1"}
    assert feedback_client.post("/feedback", json=report, headers={"X-DeepSkin-Token": answer["token"]}
                                ).status_code == 202
    captured = capfd.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert answer["id"] in logs  # the logs are there, and carry ids
    leaked = [text for text in (*PERSONAL_STRINGS, "Exif", "JFIF", answer["token"], answer["heatmap_png_base64"][:40],
                                "/9j/", r"\xff\xd8") if text in logs]
    assert leaked == []


def png_chunk_types(data: bytes) -> set[bytes]:
    kinds, pos = set(), 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        kinds.add(kind)
        pos += 12 + length
    return kinds


def assert_no_metadata(data: bytes) -> None:
    assert contains_personal_data(data) == []
    assert set(Image.open(io.BytesIO(data)).getexif()) <= {0x0112}  # Orientation at most


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_stored_derivative_is_free_of_metadata(http_client, feedback_client, fmt, clinician):
    photo = photo_with_personal_metadata(fmt)
    answer = http_client.post("/predict", data=photo, content_type=f"image/{fmt.lower()}").get_json()
    assert answer["status"] == "done"
    gcs, doc = store.storage_client(), store.get_result(answer["id"])
    assert_no_metadata(gcs.bucket(doc["upload"]["bucket"]).blob(doc["upload"]["name"]).download_as_bytes())
    assert png_chunk_types(store.read_heatmap(answer["id"])) <= PNG_PIXEL_CHUNKS

    report = {"prediction_id": answer["id"], "label": "mel", "role": "clinician", "idempotency_key": "k1"}
    assert feedback_client.post("/feedback", json=report, headers=clinician
                                ).status_code == 202
    [feedback] = [s.to_dict() for s in store.firestore_client().collection(store.FEEDBACK).stream()]
    copy = store.blob_at(feedback["training_image"])
    assert_no_metadata(copy.download_as_bytes())
    copy.reload()  # the copy carries its label, and its retention counts from the label (labelled_retention_days)
    upload = gcs.bucket(doc["upload"]["bucket"]).get_blob(doc["upload"]["name"])
    assert copy.metadata["label"] == "mel" and upload.time_created <= copy.custom_time <= copy.time_created


def test_the_python_client_strips_metadata_before_uploading(tmp_path):
    path = tmp_path / "lesion.jpg"
    path.write_bytes(photo_with_personal_metadata())
    uploaded = Client().upload(path, wait=False)
    [blob] = [b for b in store.storage_client().list_blobs(settings().uploads_bucket, prefix="uploads/")
              if b.metadata and b.metadata.get(results.TOKEN_KEY) ==
              results.token_sha256(uploaded["token"])]
    assert_no_metadata(blob.download_as_bytes())


def test_delete_leaves_nothing_in_any_store(http_client, event_client, feedback_client, clinician):
    """tests/functions and tests/feedback check the named objects one by one; this looks in every store."""
    before = every_store()
    token = "owner-token-for-the-delete-test"
    obj = put_object(f"uploads/{uuid.uuid4()}.jpg", LESIONS[2].read_bytes(),
                     metadata={results.TOKEN_KEY: results.token_sha256(token)})
    assert deliver_upload(event_client, obj) == 200  # event path: upload, heatmap, result
    id_ = store.result_id(obj["bucket"], obj["name"], obj["generation"])
    for role, headers in (("user", {"X-DeepSkin-Token": token}), ("clinician", clinician)):
        report = {"prediction_id": id_, "label": "bcc", "role": role, "idempotency_key": role}
        assert feedback_client.post("/feedback", json=report, headers=headers).status_code == 202
    objects, documents = every_store()
    assert len(objects - before[0]) == 3 and len(documents - before[1]) == 3  # upload, heatmap, training copy

    assert http_client.delete(f"/results/{id_}", headers={"X-DeepSkin-Token": token}).status_code == 200
    assert every_store() == before
