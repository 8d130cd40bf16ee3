"""The page's questions about the spot's history, in a real browser against the real local functions: the
answers travel with the photo, come back in the stored result, a reported growth is never "low", and "Not
sure" (the default) sends nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import check_accessible, opened
from playwright.sync_api import Page, expect
from test_page import BAND_TEXT, consent, firestore_client, send_photo

from deepskin.services import store

PHONE = min((Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "phone").glob("*.jpg"))

pytestmark = pytest.mark.usefixtures("clean_firestore")


def test_answers_travel_with_the_photo_and_growth_is_never_low(browser, stack, axe_source):
    with opened(browser, stack.web_url + "/") as page:
        consent(page)
        page.locator("#photo").set_input_files(str(PHONE))
        for question in ("Has it changed lately", "Has it grown?", "Has it bled", "Does it itch?", "Does it hurt?",
                         "Is it raised"):
            expect(group(page, question).get_by_label("Not sure")).to_be_checked()
        group(page, "Has it grown?").get_by_label("Yes", exact=True).check()
        group(page, "Does it itch?").get_by_label("No", exact=True).check()
        check_accessible(page, axe_source, "photo step with questions")
        send_photo(page)
        expect(page.locator("#result-title")).to_be_focused(timeout=60_000)
        expect(page.locator("#band-text")).to_have_text(BAND_TEXT)
        (doc,) = [d.to_dict() for d in firestore_client().collection(store.PREDICTIONS).stream()]
        assert doc["status"] == "done" and doc["patient"] == {"grew": "yes", "itches": "no"}
        assert doc["risk"] != "low"
        expect(page.locator("#band-text")).not_to_have_text("Low risk")
        page.get_by_role("button", name="Check another photo").click()
        expect(group(page, "Has it grown?").get_by_label("Not sure")).to_be_checked()  # answers are per spot


def group(page: Page, question: str):
    return page.get_by_role("group", name=question)
