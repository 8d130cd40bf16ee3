"""What each runtime identity may do to the buckets and to Firestore: the one table, checked both ways.

- tests/infra/test_iam_matches_permissions.py compares it with the bindings in iam.tf (local.bucket_bindings, the
  training identity's bindings, the Firestore roles): a grant in one and not in the other fails.
- tests/feedback/test_permissions.py runs each identity's flows against the emulators with this table
  enforced the way Cloud Storage enforces IAM (a call outside it gets a 403), records every storage and
  Firestore call, and fails on a call the table does not allow or a grant that no flow uses.

Cloud Storage. A grant is a role on a bucket, limited to a prefix where one is named (an IAM condition on the
object's name). What each role allows, in the terms of the calls the code makes:
  read     get an object or its metadata, list                   storage.objects.get, .list
  create   write an object where none is (ifGenerationMatch=0)   storage.objects.create
  replace  write over an existing object                          storage.objects.create + .delete
  delete   delete an object                                       storage.objects.delete

Firestore. Its IAM is per database, not per collection: an identity that writes anything gets
roles/datastore.user and, as far as IAM goes, may write every collection; one that only reads gets
roles/datastore.viewer. The collections below are what each identity's code touches (checked by the
recording), not a boundary that IAM keeps. So nothing a function must be unable to change is decided from
Firestore: the registry pointer, the pinned baseline and the candidates awaiting approval are in the models
bucket, which only the training identity writes (deepskin.services.registry); the retraining job checks each
label again (deepskin.loop.labels.trusted_label) and the sweep each job handle (deepskin.loop.ledger) before
using them.
"""

from __future__ import annotations

from dataclasses import dataclass

READ, CREATE, REPLACE, DELETE = "read", "create", "replace", "delete"
VIEWER, CREATOR, USER = "roles/storage.objectViewer", "roles/storage.objectCreator", "roles/storage.objectUser"
DELETER = "object_deleter"  # google_project_iam_custom_role.object_deleter (iam.tf): storage.objects.delete only
ROLES = {VIEWER: {READ}, CREATOR: {CREATE}, USER: {READ, CREATE, REPLACE, DELETE}, DELETER: {DELETE}}


@dataclass(frozen=True)
class Grant:
    bucket: str  # a key of local.buckets (storage.tf)
    role: str
    prefix: str = ""  # "": the whole bucket

    def allows(self, bucket: str, name: str, operation: str) -> bool:
        return bucket == self.bucket and name.startswith(self.prefix) and operation in ROLES[self.role]


# Runtime identities: the keys of local.function_service_accounts (iam.tf), and the training jobs' identity.
STORAGE: dict[str, tuple[Grant, ...]] = {
    # Reads the upload an event names and the served model; writes (and, on a retry, replaces) its heatmap,
    # and deletes it when the result was deleted meanwhile.
    "predict_event": (Grant("uploads", VIEWER), Grant("results", USER), Grant("models", VIEWER)),
    # The same, for images it stores itself; the owner's delete erases the upload, the heatmap and the
    # training copy of a clinician-labelled upload (delete only: it can neither read nor add training data).
    "predict_http": (Grant("uploads", USER), Grant("results", USER), Grant("models", VIEWER),
                     Grant("training", DELETER, "feedback/")),
    "predict_dead": (),
    # Copies a clinician-labelled upload to training/feedback/: create only, never replace, nowhere else.
    "feedback": (Grant("uploads", VIEWER), Grant("training", CREATOR, "feedback/")),
    "retrain": (),  # counts messages and submits jobs: no bucket
    "sweeper": (),
    "ops": (Grant("models", VIEWER),),  # the pointer and the served model's card
    # The Vertex AI jobs: the data sets, feedback images and run folders; the registry (the promotion path).
    "training": (Grant("training", USER), Grant("models", USER)),
}

FIRESTORE_READ, FIRESTORE_WRITE = "read", "write"
R, W, RW = frozenset({FIRESTORE_READ}), frozenset({FIRESTORE_WRITE}), frozenset({FIRESTORE_READ, FIRESTORE_WRITE})
# identity -> {top-level collection: what its code does there}
FIRESTORE: dict[str, dict[str, frozenset[str]]] = {
    "predict_event": {"predictions": RW},
    "predict_http": {"predictions": RW, "feedback": RW},  # the owner's delete removes the reports on a result
    "predict_dead": {"predictions": RW},
    "feedback": {"predictions": RW, "feedback": RW},  # counts the reports on a prediction (their cap)
    "retrain": {"feedback": R, "ledger": RW, "jobs": RW},  # a label's report names its clinician (two are needed)
    "sweeper": {"predictions": RW, "ledger": RW, "jobs": RW},
    "ops": {"models": R, "feedback": R, "ledger": R, "jobs": R},  # decisions, counts, the ledger and its job
    "training": {"feedback": R, "ledger": RW, "jobs": RW, "models": W},  # labels in; job state, decisions out
}


def firestore_role(collections: dict[str, frozenset[str]]) -> str | None:
    """The narrowest Firestore role for an identity's entry of FIRESTORE (IAM cannot scope it further)."""
    modes = set().union(*collections.values())
    if FIRESTORE_WRITE in modes:
        return "roles/datastore.user"
    return "roles/datastore.viewer" if modes else None
