"""A short run of benchmarks/load_test.py against the whole local stack: 40 uploads, 8 at a time.

Asserts only what must hold under load: every upload ends with exactly one final result document, none lost,
none written twice (counted in on_upload's log, one line per result written), none failed. Timings are printed,
never asserted (this machine is shared; benchmarks/load_test.py prints the full 300-upload run's).
"""

from __future__ import annotations

import re
from collections import Counter

from benchmarks.load_test import run_load

UPLOADS, CONCURRENCY = 40, 8


def results_written(log: str) -> Counter:
    """Result id -> how many times a result was written for it (predict_service.record logs each write)."""
    return Counter(re.findall(r"result ([0-9a-f]{32}): (?:done|unusable|rejected|failed)\b", log))


def test_every_upload_gets_exactly_one_result_under_load(running_stack, figure):
    # The first upload loads the model in on_upload; not part of the measured run.
    warm = run_load(running_stack.gcs, running_stack.db, uploads=1, concurrency=1, timeout=120)
    assert not warm.lost and not warm.unexpected

    report = run_load(running_stack.gcs, running_stack.db, UPLOADS, CONCURRENCY, timeout=150)
    print("\n" + report.summary())
    assert report.not_uploaded == 0
    assert len(report.documents) == UPLOADS
    assert set(report.documents) == report.expected_ids  # under the ids store.result_id derives
    assert report.lost == set()
    written = results_written(running_stack.stack.functions["on_upload"].log_path.read_text(errors="replace"))
    assert report.expected_ids <= set(written)  # the log sees every write, so it would see a second one
    doubled = {id_: n for id_, n in written.items() if id_ in report.expected_ids and n > 1}
    assert doubled == {}
    figure("load_uploads", UPLOADS)
    figure("load_concurrency", CONCURRENCY)
    figure("load_lost", len(report.lost))
    figure("load_doubled", len(doubled))
    # The model's own answers only: `unusable` where the served model finds a fixture photo out of scope.
    assert set(report.statuses) <= {"done", "unusable"}
