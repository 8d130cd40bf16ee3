"""Helpers for the reliability tests: objects in the uploads bucket, storage events, photos with personal EXIF."""

from __future__ import annotations

import io
import json
import signal
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from google.cloud import pubsub_v1
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image

from deepskin.services import store
from deepskin.services.config import settings
from local import bridge
from local.emulators import launch, signal_group
from local.stack import FunctionProcess, Stack

REPO = Path(__file__).resolve().parents[2]
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))

# Personal data a phone puts in a photo: none of it may reach a log or a stored copy.
OWNER = "Dr Owner Quimbleton"
COMMENT = "Jane Doe"
GPS_PLACE = "Quimbleton Street surgery"
PERSONAL_STRINGS = (OWNER, COMMENT, GPS_PLACE)


def put_object(name: str, data: bytes, content_type: str = "image/jpeg", metadata: dict | None = None) -> dict:
    """An object in the session's uploads bucket; its JSON resource, as the finalize notification carries it."""
    blob = store.storage_client().bucket(settings().uploads_bucket).blob(name)
    blob.metadata = metadata
    blob.upload_from_string(data, content_type=content_type)
    return dict(blob._properties)  # pylint: disable=protected-access


def deliver_upload(event_client, obj: dict) -> int:
    """Deliver the object's finalize event to on_upload exactly as local/bridge.py builds it."""
    published = Timestamp()
    published.FromDatetime(datetime.now(UTC))
    message = pubsub_v1.types.PubsubMessage(data=json.dumps(obj).encode(), message_id=str(time.time_ns()),
                                            publish_time=published)
    headers, body = bridge.storage_event(message)
    return event_client.post("/", headers=headers, data=body).status_code


def result_for(obj: dict) -> dict | None:
    return store.get_result(store.result_id(obj["bucket"], obj["name"], obj["generation"]))


def every_store() -> tuple[set[str], set[str]]:
    """(every object in the four buckets, every document in predictions, feedback and lesions), as paths."""
    config, gcs, db = settings(), store.storage_client(), store.firestore_client()
    buckets = (config.uploads_bucket, config.results_bucket, config.models_bucket, config.training_bucket)
    objects = {f"gs://{bucket}/{blob.name}" for bucket in buckets for blob in gcs.list_blobs(bucket)}
    documents = {f"{collection}/{s.id}" for collection in (store.PREDICTIONS, store.FEEDBACK, store.LESIONS)
                 for s in db.collection(collection).stream()}
    return objects, documents


def personal_exif() -> Image.Exif:
    """EXIF as a phone writes it: GPS position, the camera owner's name, a caption; rotated 90 degrees."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the one tag a stripped copy keeps
    exif[0x013B] = OWNER  # Artist
    exif[0x010E] = COMMENT  # ImageDescription
    exif[0xA430] = OWNER  # CameraOwnerName
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 26.4), 3: "W", 4: (0.0, 7.0, 39.0), 0x1C: GPS_PLACE}
    return exif


def photo_with_personal_metadata(fmt: str = "JPEG") -> bytes:
    """A real lesion photo carrying personal EXIF (and, per format, a comment, XMP or text chunk)."""
    image = Image.open(LESIONS[0])
    extra = {"JPEG": {"comment": COMMENT.encode()},
             "WEBP": {"xmp": f"<x:xmpmeta><dc:creator>{OWNER}</dc:creator></x:xmpmeta>".encode(), "quality": 90},
             "PNG": {"pnginfo": png_text({"Author": OWNER, "Comment": COMMENT})}}[fmt]
    out = io.BytesIO()
    image.save(out, fmt, exif=personal_exif().tobytes(), **extra)
    return out.getvalue()


def png_text(fields: dict[str, str]):
    from PIL.PngImagePlugin import PngInfo  # pylint: disable=import-outside-toplevel

    info = PngInfo()
    for key, value in fields.items():
        info.add_text(key, value)
    return info


def contains_personal_data(data: bytes) -> list[str]:
    return [text for text in PERSONAL_STRINGS if text.encode() in data or text.encode("utf-16-le") in data]


# --- breaking the running stack -----------------------------------------------------------------------------

def kill_function(stack: Stack, target: str) -> None:
    """SIGKILL a function's whole process group (gunicorn's arbiter and worker): no clean-up runs."""
    function = stack.functions[target]
    signal_group(function.process.pid, signal.SIGKILL)
    function.process.wait()


def restart_function(stack: Stack, target: str, timeout: float = 90.0) -> None:
    """Start the function again with the arguments it had, on the same port, as a platform restart would."""
    old = stack.functions[target]
    env = {**stack.function_env(), **stack.emulators.env}  # this process's environment is the session's
    launched = launch(old.name, list(old.process.args), old.ready_url, old.log_path.parent, env)
    stack.functions[target] = FunctionProcess(**vars(launched))
    stack.functions[target].wait_ready(time.monotonic() + timeout)


@contextmanager
def paused(stack: Stack, emulator: str):
    """SIGSTOP an emulator's process group for the block's duration: it accepts connections, answers nothing."""
    [process] = [e.process for e in stack.emulators.running if e.name == emulator]
    signal_group(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        signal_group(process.pid, signal.SIGCONT)
