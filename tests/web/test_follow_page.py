"""Following a spot on the page at phone width, in a real browser against the real local functions and emulators:
consent (refused without it), a later photo added with the spot's key, the history side by side, the calendar
reminder, and the one-action delete.

Screenshots land in tests/web/screenshots/ (gitignored); DEEPSKIN_UPDATE_DOCS_SCREENSHOT=1 also refreshes the
README's docs/screenshot-follow.png (the phone-width history).
"""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from browser_support import check_accessible, opened, shoot
from PIL import Image
from playwright.sync_api import Page, expect

from deepskin.services import store
from deepskin.services.config import settings

REPO = Path(__file__).resolve().parents[2]
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))
DOCS_SCREENSHOT = REPO / "docs" / "screenshot-follow.png"

pytestmark = pytest.mark.usefixtures("clean_firestore")


@pytest.fixture
def page(browser, stack) -> Page:
    with opened(browser, stack.web_url + "/") as page:
        yield page


def assessed(page: Page, photo: Path) -> None:
    page.locator("#photo").set_input_files(str(photo))
    page.get_by_role("button", name="Check this photo").click()
    expect(page.locator("#result-title")).to_be_focused(timeout=60_000)
    expect(page.locator("#band-text")).to_have_text(re.compile(r"^(Low|Medium|High) risk$"))


def documents(collection: str) -> list[dict]:
    return [s.to_dict() for s in store.firestore_client().collection(collection).stream()]


def test_following_a_spot_at_phone_width(page: Page, axe_source, screenshots):
    page.get_by_label(re.compile("I understand")).check()
    page.get_by_role("button", name="Continue").click()
    assessed(page, LESIONS[0])

    page.get_by_role("button", name="Follow this spot").click()
    expect(page.locator("#follow-panel")).to_be_visible()
    check_accessible(page, axe_source, "follow offer")
    page.get_by_role("button", name="Start following").click()  # without consent
    expect(page.locator("#follow-error")).to_have_text("Please tick the box to agree first.")
    expect(page.locator("#follow-consent")).to_be_focused()
    assert documents(store.LESIONS) == []

    page.get_by_label("6 months").check()
    page.get_by_label(re.compile("I agree that DeepSkin keeps this photo")).check()
    page.get_by_role("button", name="Start following").click()
    expect(page.locator("#history")).to_be_focused()
    expect(page.locator("#history-list li")).to_have_count(1)
    expect(page.locator("#history-change")).to_contain_text("One photo so far")
    [lesion] = documents(store.LESIONS)
    assert lesion["months"] == 6 and len(lesion["result_ids"]) == 1
    key = page.locator("#history-key").inner_text()

    # Months later: another photo of the spot, added with the key (still in this page's memory here).
    page.get_by_role("button", name="Check another photo").click()
    assessed(page, LESIONS[2])  # another lesion: the same-spot hint cannot confirm it
    page.get_by_role("button", name="Follow this spot").click()
    expect(page.get_by_label("Your key for the spot")).to_have_value(key)
    page.get_by_role("button", name="Add this photo to it").click()
    expect(page.locator("#history")).to_be_focused()
    items = page.locator("#history-list li")
    expect(items).to_have_count(2)
    for n in range(2):  # each photo shown, with its date and band
        assert items.nth(n).locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
        expect(items.nth(n).locator("time")).to_have_text(re.compile(r"\d{4}"))
        expect(items.nth(n).locator(".history-band")).to_have_text(re.compile(r"^(Low|Medium|High) risk$"))
    first, second = (items.nth(n).bounding_box() for n in range(2))
    assert first["y"] == second["y"] and first["x"] < second["x"]  # side by side at phone width
    expect(page.locator("#history-change")).to_have_text(re.compile(r"^The assessment (moved up|did not move up)"))
    expect(page.locator("#history-same")).to_contain_text("DeepSkin cannot confirm that the photo of")
    expect(page.locator("#history-same")).to_contain_text("A hint, not a check")
    check_accessible(page, axe_source, "history")
    shoot(page, screenshots, "7-follow")
    if os.environ.get("DEEPSKIN_UPDATE_DOCS_SCREENSHOT"):
        page.locator("#history").screenshot(path=str(screenshots / "phone-7-history.png"))
        with Image.open(screenshots / "phone-7-history.png") as image:
            image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                          dither=Image.Dither.NONE).save(DOCS_SCREENSHOT, optimize=True)
        assert DOCS_SCREENSHOT.stat().st_size < 300_000

    # The reminder: a calendar file for the chosen day, downloaded, not sent anywhere.
    expect(page.locator("#reminder-date")).to_have_value(re.compile(r"^\d{4}-\d{2}-\d{2}$"))  # suggested
    chosen = date.today() + timedelta(days=30)
    page.get_by_label("Remind me to take a new photo on").fill(chosen.isoformat())
    with page.expect_download() as download:
        page.get_by_role("button", name="Download a calendar reminder").click()
    ics = Path(download.value.path()).read_bytes().decode()
    assert ics.startswith("BEGIN:VCALENDAR\r\n") and f"DTSTART;VALUE=DATE:{chosen:%Y%m%d}\r\n" in ics
    assert download.value.suggested_filename.endswith(".ics")

    # One action deletes every photo, result and report of the spot.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete this spot's history").click()
    expect(page.locator("#history-deleted")).to_be_focused()
    expect(page.locator("#history-deleted")).to_contain_text("every photo, result and feedback")
    expect(page.locator("#history")).to_be_hidden()
    assert documents(store.LESIONS) == [] and documents(store.PREDICTIONS) == []
    photos = store.storage_client().list_blobs(settings().results_bucket, prefix="lesions/")
    assert [blob.name for blob in photos if f"/{key.split('.')[0]}/" in blob.name] == []  # (others: earlier tests')
