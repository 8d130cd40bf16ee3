"""The pure parts of following a spot: consent and duration, band changes, the reminder day and calendar file,
and the same-spot hint."""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from deepskin.core import follow, spot
from deepskin.core.refused import Refused

LESIONS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "lesions").glob("*.jpg"))


@pytest.mark.parametrize("consent", [None, False, "true", "yes", 1])
def test_following_without_an_explicit_yes_is_refused_by_name(consent):
    with pytest.raises(Refused) as refused:
        follow.days_consented(consent, 3)
    assert (refused.value.status, refused.value.code) == (400, "consent_required")


@pytest.mark.parametrize("months", [None, 0, 2, 13, 24, "3", 3.5, True])
def test_only_the_offered_durations_are_accepted(months):
    with pytest.raises(Refused) as refused:
        follow.days_consented(True, months)
    assert refused.value.code == "invalid_duration"


def test_the_durations_are_up_to_a_year():
    assert {months: follow.days_consented(True, months) for months in (1, 3, 6, 12)} == {1: 31, 3: 92, 6: 183, 12: 365}


def entries(*bands):
    return [{"result_id": f"r{n}", "risk": band} for n, band in enumerate(bands)]


def test_a_band_that_rises_is_a_move_up_and_one_that_falls_or_stays_is_not():
    changes = follow.band_changes(entries("low", "low", "medium", "low", "high"))
    assert [(c["from_band"], c["to_band"], c["moved_up"]) for c in changes] == [
        ("low", "low", False), ("low", "medium", True), ("medium", "low", False), ("low", "high", True)]


def test_photos_without_a_band_are_skipped_in_the_comparison():
    changes = follow.band_changes(entries("medium", None, "high"))
    assert [(c["from"], c["to"], c["moved_up"]) for c in changes] == [("r0", "r2", True)]


def test_the_reminder_falls_while_the_history_is_kept():
    today = date(2027, 1, 10)
    assert follow.suggested_reminder(date(2027, 1, 10), date(2027, 12, 1), today) == date(2027, 4, 12)
    assert follow.suggested_reminder(date(2027, 1, 10), date(2027, 2, 10), today) == date(2027, 2, 9)
    assert follow.suggested_reminder(date(2026, 1, 1), date(2027, 12, 1), today) == date(2027, 1, 11)
    assert follow.suggested_reminder(date(2027, 1, 5), date(2027, 1, 11), today) is None


def unfold(text: str) -> list[str]:
    return text.replace("\r\n ", "").split("\r\n")[:-1]


def test_the_reminder_is_a_valid_rfc5545_calendar():
    ics = follow.reminder_ics("a" * 32, date(2027, 3, 1), date(2027, 6, 1), now=datetime(2027, 1, 1, 8, tzinfo=UTC))
    assert ics.endswith("\r\n") and "\n" not in ics.replace("\r\n", "")
    assert all(len(line.encode()) <= 75 for line in ics.split("\r\n"))
    lines = unfold(ics)
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
    nesting = []
    for line in lines:  # every component closed, in order
        if line.startswith("BEGIN:"):
            nesting.append(line[6:])
        elif line.startswith("END:"):
            assert nesting.pop() == line[4:]
    assert nesting == []
    props = {}
    for name, value in (line.split(":", 1) for line in lines):
        props.setdefault(name, value)  # the event's own DESCRIPTION comes before the alarm's
    assert props["VERSION"] == "2.0" and props["PRODID"]
    assert props["DTSTART;VALUE=DATE"] == "20270301" and props["DTEND;VALUE=DATE"] == "20270302"
    assert props["DTSTAMP"] == "20270101T080000Z" and re.fullmatch(r"[0-9a-f]{32}@deepskin", props["UID"])
    assert "2027-06-01" in props["DESCRIPTION"] and "\\," in props["DESCRIPTION"]  # commas escaped
    assert "a" * 32 not in ics  # the lesion's id stays out of a calendar that may be synchronised elsewhere


def test_long_lines_fold_without_splitting_a_character():
    line = "DESCRIPTION:" + "é" * 100
    folded = follow.fold(line)
    assert all(len(part.encode()) <= 75 for part in folded.split("\r\n"))
    assert folded.replace("\r\n ", "") == line


def reencoded(data: bytes, brightness: float = 1.0, quality: int = 80) -> bytes:
    image = ImageEnhance.Brightness(Image.open(io.BytesIO(data)).convert("RGB")).enhance(brightness)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_the_same_photo_retaken_looks_alike_and_a_different_lesion_less_so():
    original = LESIONS[0].read_bytes()
    same = spot.fingerprint(original)
    again = spot.fingerprint(reencoded(original, brightness=1.1, quality=60))
    assert spot.distance(same, same) == 0
    assert spot.looks_same(same, again)
    others = [spot.distance(same, spot.fingerprint(path.read_bytes())) for path in LESIONS[1:]]
    assert spot.distance(same, again) < min(others)
