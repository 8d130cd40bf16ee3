"""web/ops.html, the operator page, in a real browser against the real ops function and emulators.

Closed without a clinician key; with one: the served model and its numbers, the evaluation plots, the
decisions newest first, feedback by role and label, the ledger and the running job; axe-core on each state.
"""

from __future__ import annotations

import os

import pytest
from browser_support import OPERATOR_KEY, check_accessible, opened, shoot
from playwright.sync_api import Page, expect

from deepskin.loop import ops


@pytest.fixture
def page(browser, stack) -> Page:
    if os.environ.get("DEEPSKIN_WEB_URL"):
        pytest.skip("the operator key is the one this suite's own functions accept, not a running stack's")
    with opened(browser, stack.web_url + "/ops.html") as page:
        yield page


def sign_in(page: Page, key: str) -> None:
    page.get_by_label("Clinician key").fill(key)
    page.get_by_role("button", name="Open").click()


def test_a_wrong_key_opens_nothing(page: Page, axe_source, learning_loop):
    check_accessible(page, axe_source, "operator sign-in")
    sign_in(page, "not-the-key")
    expect(page.locator("#sign-in-error")).to_have_text("This key does not open the operator page.")
    expect(page.get_by_label("Clinician key")).to_be_focused()
    expect(page.locator("#overview")).to_be_hidden()
    assert learning_loop["version"] not in page.content()


def test_the_page_shows_model_decisions_feedback_and_the_running_job(page: Page, axe_source, screenshots,
                                                                     learning_loop):
    sign_in(page, OPERATOR_KEY)
    expect(page.locator("#model-title")).to_be_focused()
    expect(page.locator("#model")).to_contain_text(learning_loop["version"])
    expect(page.locator("#model")).to_contain_text("roc_auc")
    expect(page.locator("#model")).to_contain_text("the gate promotes alone")  # the local stack's setting
    rows = page.locator("#decisions tbody tr")
    expect(rows).to_have_count(2)
    assert [rows.nth(i).get_attribute("data-decision") for i in range(2)] == ["promoted", "refused"]
    expect(rows.nth(1)).to_contain_text("cand-1")
    expect(rows.nth(1)).to_contain_text("roc_auc: candidate 0.850 vs current 0.920: failed")
    expect(rows.nth(0)).to_contain_text("auc: candidate 0.930 vs baseline 0.920")
    expect(rows.nth(0)).to_contain_text("baseline: auc 0.920")
    expect(rows.nth(0)).to_contain_text("feedback_test_labels 31")
    expect(rows.nth(0)).to_contain_text("test_ci95 -0.034 to -0.008, test_difference -0.021")
    expect(rows.nth(1)).to_contain_text("none recorded")
    pairs = {(role, label) for role, label in learning_loop["reports"]}
    expect(page.locator("#feedback tbody tr")).to_have_count(len(pairs))
    expect(page.locator("#feedback")).to_contain_text("clinician")
    expect(page.locator("#ledger")).to_contain_text("job-running (running)")
    plots = page.locator("#plots img")
    expect(plots).to_have_count(len(ops.plot_names()))
    page.wait_for_function("[...document.querySelectorAll('#plots img')].every(i => i.complete && i.naturalWidth)")
    check_accessible(page, axe_source, "operator overview")
    shoot(page, screenshots, "ops-overview")
