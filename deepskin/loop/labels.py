"""The clinicians' labels as the retraining job reads them: each report checked again, its image downloaded.

Reports are in Firestore, which every function may write (infra/permissions.py): a label is trusted only if
the feedback function (deepskin.loop.feedback) could have stored it (`trusted_label`). The images go to the
job's scratch folder (deepskin.loop.launchers.scratch_dir); training.retrain turns the rows into its data.
"""

from __future__ import annotations

from pathlib import Path

from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud import firestore, storage

from deepskin.core.report import LABELS, TRAINING_LABEL, clinician_report_id
from deepskin.loop import ledger
from deepskin.loop.feedback import EXTENSIONS, OTHER_EXTENSION, training_copy_name
from deepskin.services import identity, store
from deepskin.services.config import settings


def clinician_labels(folder: Path) -> tuple[list[dict], int]:
    """Download the images of the trusted clinician labels whose report still exists; (one row per label:
    training.feedback_set.COLUMNS; how many labels were dropped as untrusted)."""
    folder.mkdir(parents=True, exist_ok=True)
    reports = (store.firestore_client().collection(store.FEEDBACK)
               .where(filter=firestore.FieldFilter("counts_as", "==", TRAINING_LABEL)).stream())
    rows, dropped = [], 0
    for report in reports:
        data = report.to_dict()
        if not data.get("training_image"):
            continue  # the upload was gone, or never assessed, when the report came
        if not trusted_label(report.id, data):
            dropped += 1
            continue
        path, copy = folder / data["training_image"].rsplit("/", 1)[-1], store.blob_at(data["training_image"])
        try:
            copy.reload()  # its metadata: the group the feedback function wrote with it
            copy.download_to_filename(str(path), if_generation_match=copy.generation)
        except (NotFound, PreconditionFailed):
            path.unlink(missing_ok=True)
            continue
        rows.append({"image_id": report.id, "prediction_id": data["prediction_id"],
                     "group": held_out_group(copy, data["prediction_id"]), "label": data["label"],
                     "histopathology": bool(data.get("histopathology")), "path": path,
                     "clinician": ledger.pseudonym(str(data["reporter"]))})
    return rows, dropped


def held_out_group(copy: storage.Blob, prediction_id: str) -> str:
    """The group that holds a label out with its lesion's others: the one the feedback function wrote on the
    training copy, never the report's (Firestore); a copy made before copies carried it, its own prediction."""
    return (copy.metadata or {}).get("group") or prediction_id


def trusted_label(report_id: str, report: dict) -> bool:
    """A label the feedback function could have stored: a known label from a clinician allowed now, in the
    report whose id is that clinician's on that prediction, on the image copied for this report and this
    label (gs://<training bucket>/feedback/<report id>.<label>.<ext>, nothing else)."""
    image, reporter, label = str(report.get("training_image")), str(report.get("reporter")), report.get("label")
    copies = {f"gs://{settings().training_bucket}/{training_copy_name(report_id, str(label), extension)}"
              for extension in (*EXTENSIONS.values(), OTHER_EXTENSION)}
    return (report.get("role") == "clinician" and label in LABELS and identity.still_clinician(reporter)
            and report_id == clinician_report_id(str(report.get("prediction_id")), reporter) and image in copies)
