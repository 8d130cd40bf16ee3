"""Following one lesion over time, the pure parts: consent and duration, how the bands moved, the reminder file.

A person follows a spot with explicit consent for a chosen time (1, 3, 6 or 12 months); DeepSkin keeps the spot's
photos, results and reports that long instead of the usual 30 days (deepskin.services.lesions stores them).
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, date, datetime, timedelta

from deepskin.core.refused import Refused

# Months a person may choose -> the days kept (infra/storage.tf has one lifecycle rule per value).
FOLLOW_DAYS = {1: 31, 3: 92, 6: 183, 12: 365}
BAND_RANK = {"low": 0, "medium": 1, "high": 2}
# The reminder offered: a new photo this long after the latest one, if the history is still kept then.
REMIND_AFTER = timedelta(days=92)


def days_consented(consent: object, months: object) -> int:
    """The days to keep a followed spot; a named refusal unless consent is an explicit yes and months one of
    FOLLOW_DAYS (booleans are not months, and "yes" is not True: only the JSON value true counts)."""
    if consent is not True:
        raise Refused(400, "consent_required", "Following a spot keeps its photos and results for longer: it needs "
                                               "your explicit consent (consent: true).")
    if isinstance(months, bool) or months not in FOLLOW_DAYS:
        choices = ", ".join(map(str, FOLLOW_DAYS))
        raise Refused(400, "invalid_duration", f"Choose how long to keep the history: {choices} months.")
    return FOLLOW_DAYS[months]


def band_changes(entries: list[dict]) -> list[dict]:
    """Each assessed photo against the assessed one before it (entries oldest first): the bands, and whether the
    band rose (low < medium < high). Photos that were not assessed (no band) are left out of the comparison."""
    banded = [e for e in entries if e.get("risk") in BAND_RANK]
    return [{"from": a["result_id"], "to": b["result_id"], "from_band": a["risk"], "to_band": b["risk"],
             "moved_up": BAND_RANK[b["risk"]] > BAND_RANK[a["risk"]]} for a, b in itertools.pairwise(banded)]


def suggested_reminder(latest_photo: date, expires: date, today: date) -> date | None:
    """REMIND_AFTER the latest photo, but while the history is kept (the day before it expires) and not in the
    past; None when no day is left."""
    last_day = expires - timedelta(days=1)
    if last_day <= today:
        return None
    return max(min(latest_photo + REMIND_AFTER, last_day), today + timedelta(days=1))


def reminder_ics(lesion_id: str, day: date, expires: date, now: datetime | None = None) -> str:
    """An RFC 5545 calendar with one all-day event on `day` and a morning alarm, for the person's own calendar.

    It names no result, no band and no token: calendars are often synchronised to other services. The UID is
    derived (not the lesion's id), so that downloading the same reminder twice replaces rather than duplicates."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    uid = hashlib.sha256(f"{lesion_id}/{day.isoformat()}".encode()).hexdigest()[:32]
    description = (f"Take a new photo of the spot you follow and add it to its history in DeepSkin, with your key "
                   f"for that spot. DeepSkin keeps the history until {expires.isoformat()}. If the spot changes, "
                   "bleeds or itches, see a doctor without waiting.")
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//DeepSkin//Follow a spot//EN", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", "BEGIN:VEVENT", f"UID:{uid}@deepskin", f"DTSTAMP:{stamp}",
             f"DTSTART;VALUE=DATE:{day:%Y%m%d}", f"DTEND;VALUE=DATE:{day + timedelta(days=1):%Y%m%d}",
             "SUMMARY:Photograph the spot you follow (DeepSkin)", f"DESCRIPTION:{ics_text(description)}",
             "TRANSP:TRANSPARENT", "BEGIN:VALARM", "ACTION:DISPLAY", "DESCRIPTION:Photograph the spot you follow",
             "TRIGGER;RELATED=START:PT9H", "END:VALARM", "END:VEVENT", "END:VCALENDAR"]
    return "".join(fold(line) + "\r\n" for line in lines)


def ics_text(text: str) -> str:
    """RFC 5545 3.3.11: backslash, semicolon, comma and newline escaped."""
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def fold(line: str, limit: int = 75) -> str:
    """RFC 5545 3.1: lines of at most 75 octets, continued after CRLF and one space (never inside a character)."""
    parts, current = [], ""
    for char in line:
        if len((current + char).encode()) > (limit if not parts else limit - 1):
            parts.append(current)
            current = ""
        current += char
    return "\r\n ".join([*parts, current])
