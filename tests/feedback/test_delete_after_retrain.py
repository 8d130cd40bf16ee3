"""An owner's delete reaches every copy of their photo, after it was labelled and trained on.

Upload, clinician label (which copies the photo to the training bucket), a real retraining job (which
downloads it to its scratch folder), then the owner's delete; then every bucket, every Firestore collection
and everything the job left on disk are searched for the photo's bytes and its result id.
"""

from __future__ import annotations

import io
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from feedback_support import (
    CLINICIAN,
    LESIONS,
    RETRAIN_SUBSCRIPTION,
    all_jobs,
    pull,
    redeliver_pulled,
    report,
)
from google.cloud.firestore import FieldFilter
from PIL import Image

from deepskin.loop import launchers
from deepskin.services import predict_service, store
from deepskin.services.config import settings


def every_object() -> Iterator[tuple[str, bytes]]:
    """(name and metadata, content) of every object in every bucket."""
    config = settings()
    for bucket in (config.uploads_bucket, config.results_bucket, config.models_bucket, config.training_bucket):
        for blob in store.storage_client().list_blobs(bucket):
            yield f"gs://{bucket}/{blob.name} {blob.metadata}", blob.download_as_bytes()


def every_document() -> Iterator[tuple[str, str]]:
    """(path, contents) of every document of every collection, subcollections included (also those under a
    document that does not itself exist, such as models/decisions)."""
    collections = list(store.firestore_client().collections())
    while collections:
        for ref in collections.pop().list_documents():
            snapshot = ref.get()
            yield ref.path, repr(snapshot.to_dict()) if snapshot.exists else ""
            collections.extend(ref.collections())


def job_files(job_id: str) -> Iterator[tuple[str, bytes]]:
    """Every file on this machine's temporary disk that belongs to the job: scratch, run folder, log."""
    temp = Path(tempfile.gettempdir())
    for top in (*temp.glob(f"*{job_id}*"), *temp.glob(f"*/*{job_id}*")):
        for path in (top.rglob("*") if top.is_dir() else [top]):
            if path.is_file():
                yield str(path), path.read_bytes()


def unique_photo(index: int) -> bytes:
    """A fixture lesion photo whose bytes no other test has uploaded (the stores are shared by the session)."""
    image = Image.open(LESIONS[index]).convert("RGB")
    image.putpixel((0, 0), tuple(secrets.token_bytes(3)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def test_an_owners_delete_reaches_every_copy_after_a_retrain(feedback_client, trigger_client, http_client):
    made = []
    for index in range(3):  # the label threshold in these tests: the third label starts a job
        token = secrets.token_urlsafe(24)
        outcome = predict_service.predict_bytes(unique_photo(index), "image/jpeg", token)
        assert outcome.fields["status"] == "done"
        made.append((outcome.id, token))
    photos = {id_: [store.blob_at(f"gs://{doc['upload']['bucket']}/{doc['upload']['name']}").download_as_bytes()]
              for id_, doc in ((id_, store.get_result(id_)) for id_, _ in made)}
    for id_, _ in made:
        assert feedback_client.post("/feedback", json=report(id_, role="clinician"), headers=CLINICIAN
                                    ).status_code == 202
        [copy] = [s.to_dict()["training_image"] for s in store.firestore_client().collection(store.FEEDBACK)
                  .where(filter=FieldFilter("prediction_id", "==", id_)).stream()]
        photos[id_].append(store.blob_at(copy).download_as_bytes())  # the training copy, metadata stripped
    redeliver_pulled(trigger_client, pull(RETRAIN_SUBSCRIPTION))
    [job_id] = all_jobs()
    launchers.launcher().wait(job_id, timeout=400)
    job = all_jobs()[job_id]  # the job did download the photos (done or failed after)
    kept = job["feedback_images"] + job["feedback_calibration_labels"] + job["feedback_test_labels"]
    assert kept + job["feedback_duplicates_dropped"] == 3

    for id_, token in made:
        assert http_client.delete(f"/results/{id_}", headers={"X-DeepSkin-Token": token}).status_code == 200

    files, documents = [*every_object(), *job_files(job_id)], list(every_document())
    found = [(where, id_) for id_, copies in photos.items() for where, content in files
             if id_.encode() in content or id_ in where or any(photo in content for photo in copies)]
    found += [(path, id_) for id_ in photos for path, contents in documents if id_ in path + contents]
    assert found == []
