"""A short run of benchmarks/load_test.py against the whole local stack: 40 uploads, 8 at a time.

Asserts only what must hold under load: every upload ends with exactly one final result document, none lost,
none doubled, none failed. Timings are printed, never asserted (this machine is shared; docs/reliability.md has the
figures of the full 300-upload run).
"""

from __future__ import annotations

from benchmarks.load_test import run_load

UPLOADS, CONCURRENCY = 40, 8


def test_every_upload_gets_exactly_one_result_under_load(running_stack):
    # The first upload loads the model in on_upload; not part of the measured run.
    warm = run_load(running_stack.gcs, running_stack.db, uploads=1, concurrency=1, timeout=120)
    assert not warm.lost and not warm.unexpected

    report = run_load(running_stack.gcs, running_stack.db, UPLOADS, CONCURRENCY, timeout=150)
    print("\n" + report.summary())
    assert report.not_uploaded == 0
    assert len(report.documents) == UPLOADS  # one per upload: nothing doubled
    assert set(report.documents) == report.expected_ids  # under the ids store.result_id derives
    assert report.lost == set()
    # The model's own answers only: `unusable` where the served model finds a fixture photo out of scope.
    assert set(report.statuses) <= {"done", "unusable"}
