"""web/ in a real browser (system Chromium via Playwright) against the real local functions and emulators.

The whole flow: consent -> photo -> result (band text, heatmap) -> feedback (stored in Firestore) -> delete
(result, feedback, upload and heatmap gone); a non-image; keyboard use and focus; axe-core on every state.
Screenshots at phone and desktop width land in tests/web/screenshots/ (gitignored);
DEEPSKIN_UPDATE_DOCS_SCREENSHOT=1 also refreshes the README's docs/screenshot-result.png (e.g. after a new model).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from browser_support import check_accessible, opened, shoot
from google.cloud import firestore, storage
from PIL import Image
from playwright.sync_api import Page, expect

from deepskin.services import store
from deepskin.services.config import settings

REPO = Path(__file__).resolve().parents[2]
LESION = REPO / "tests" / "fixtures" / "lesions" / "ISIC_0024306.jpg"
DOCS_SCREENSHOT = REPO / "docs" / "screenshot-result.png"
BAND_TEXT = re.compile(r"^(Low|Medium|High) risk$")

pytestmark = pytest.mark.usefixtures("clean_firestore")


# --- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def page(browser, stack) -> Page:
    with opened(browser, stack.web_url + "/") as page:
        yield page


def update_docs_screenshot(source: Path) -> None:
    """The README's copy (committed, so opt-in): 256 colours keep it well under 300 KB."""
    with Image.open(source) as image:
        quantized = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    quantized.save(DOCS_SCREENSHOT, optimize=True)
    assert DOCS_SCREENSHOT.stat().st_size < 300_000


def focused_id(page: Page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def consent(page: Page) -> None:
    page.get_by_label(re.compile("I understand")).check()
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#photo-title")).to_be_focused()


def send_photo(page: Page, **files) -> None:
    if files:
        page.locator("#photo").set_input_files(**files)
    page.get_by_role("button", name="Check this photo").click()


def firestore_client() -> firestore.Client:
    return firestore.Client(project=settings().project)


# --- tests ------------------------------------------------------------------------------------------------

def test_lesion_flow_feedback_and_delete(page: Page, stack, axe_source, screenshots):
    check_accessible(page, axe_source, "consent")
    shoot(page, screenshots, "1-consent")
    consent(page)
    check_accessible(page, axe_source, "photo step")

    page.locator("#photo").set_input_files(str(LESION))
    expect(page.locator("#preview-img")).to_be_visible()
    expect(page.get_by_role("button", name="Check this photo")).to_be_enabled()
    # The optional facts travel with the photo and come back in the stored result.
    page.get_by_label("Age in years").fill("62")
    page.get_by_label("Sex").select_option("female")
    page.get_by_label("Where on the body").select_option("back")
    shoot(page, screenshots, "2-photo")
    send_photo(page)

    # The result: band as words (and colour), the odds in words, classes, heatmap over the photo.
    expect(page.locator("#result-title")).to_be_focused(timeout=60_000)
    band = page.locator("#band-text")
    expect(band).to_have_text(BAND_TEXT)
    risk = band.inner_text().split()[0].lower()
    expect(page.locator("#band")).to_have_class(re.compile(rf"\bband-{risk}\b"))
    expect(page.locator("#band-advice")).to_contain_text("not a diagnosis")
    expect(page.locator("#odds")).to_have_text(re.compile(r"^(About \d+ in \d+|Fewer than 1 in 200|More than 9 in 10) "
                                                          r"lesions like this were malignant"))
    expect(page.locator("#classes-body tr")).to_have_count(7)
    # The named type is marked in the table, and the sentence says it is relative, not the largest chance.
    expect(page.locator("#classes-body tr.named")).to_have_count(1)
    expect(page.locator("#top-class")).to_contain_text("stands out most for how common it usually is")
    expect(page.locator("#classes-body")).to_contain_text("Mole (melanocytic nevus)")
    expect(page.locator("#classes-body")).to_contain_text("Basal cell carcinoma")
    expect(page.locator("#model-version")).to_have_text(re.compile(r"\S+"))
    heatmap = page.locator("#heatmap")
    expect(heatmap).to_be_visible()
    assert heatmap.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator("#result-photo").evaluate("img => img.complete && img.naturalWidth > 0")
    box, heat = page.locator("#photo-square").bounding_box(), heatmap.bounding_box()
    assert abs(box["width"] - box["height"]) < 1 and heat == box  # the overlay covers exactly the square
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0  # the token stays in memory
    assert page.context.cookies() == []
    check_accessible(page, axe_source, "result")
    shoot(page, screenshots, "3-result")
    if os.environ.get("DEEPSKIN_UPDATE_DOCS_SCREENSHOT"):
        update_docs_screenshot(screenshots / "desktop-3-result.png")

    expect(page.locator("#status")).to_contain_text("Result ready")
    toggle = page.get_by_role("checkbox", name="Show heatmap")
    expect(toggle).to_be_checked()
    toggle.uncheck()
    expect(heatmap).to_be_hidden()
    toggle.check()
    expect(heatmap).to_be_visible()

    # What the stored result points at, to check the delete afterwards.
    db = firestore_client()
    docs = list(db.collection(store.PREDICTIONS).stream())
    assert len(docs) == 1
    prediction_id, doc = docs[0].id, docs[0].to_dict()
    assert doc["status"] == "done" and doc["risk"] == risk
    assert doc["patient"] == {"age": 62.0, "sex": "female", "site": "back"}
    named = page.locator("#classes-body tr.named").get_attribute("data-class")
    assert named == doc["top_class"]
    upload = doc["upload"]
    gcs = storage.Client(project=settings().project)
    upload_blob = gcs.bucket(upload["bucket"]).blob(upload["name"])
    heatmap_blob = gcs.bucket(settings().results_bucket).blob(f"{store.HEATMAPS_PREFIX}{prediction_id}.png")
    assert upload_blob.exists() and heatmap_blob.exists()

    # Feedback: "Was this wrong?" -> the correct label -> stored in Firestore.
    if stack.feedback_url is None:
        pytest.fail("functions/feedback/main.py is missing: the feedback function is needed for this test")
    page.get_by_role("button", name="Was this wrong?").click()
    expect(page.locator("#feedback-form")).to_be_visible()
    expect(page.get_by_role("radio").first).to_be_focused()
    check_accessible(page, axe_source, "feedback form")
    page.get_by_role("radio", name="Melanoma").check()
    page.get_by_label("Comment (optional)").fill("My dermatologist said melanoma.")
    page.get_by_role("button", name="Send feedback").click()
    done = page.locator("#feedback-done")
    expect(done).to_be_focused(timeout=20_000)
    expect(done).to_contain_text("Thank you")
    shoot(page, screenshots, "4-feedback")
    reports = [s.to_dict() for s in db.collection(store.FEEDBACK)
               .where(filter=firestore.FieldFilter("prediction_id", "==", prediction_id)).stream()]
    assert len(reports) == 1, reports
    assert reports[0]["label"] == "mel" and reports[0].get("role") == "user"

    # Delete: confirmed, then the page lists what was erased, and nothing remains.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete my image and result").click()
    deleted = page.locator("#deleted")
    expect(deleted).to_be_focused(timeout=20_000)
    expect(deleted).to_contain_text("Your photo")
    expect(deleted).to_contain_text("The heatmap")
    expect(deleted).to_contain_text("The result record")
    expect(deleted).to_contain_text("A feedback report")
    expect(page.locator("#result-done")).to_be_hidden()
    check_accessible(page, axe_source, "deleted")
    shoot(page, screenshots, "5-deleted")
    assert not db.collection(store.PREDICTIONS).document(prediction_id).get().exists
    assert list(db.collection(store.FEEDBACK).stream()) == []
    assert not upload_blob.exists() and not heatmap_blob.exists()

    page.get_by_role("button", name="Check another photo").click()
    expect(page.locator("#photo-title")).to_be_focused()
    expect(page.locator("#upload")).to_be_disabled()


def test_non_image_gets_a_clear_message(page: Page, axe_source, screenshots):
    consent(page)
    # A file the browser itself knows is not an image: refused before anything is sent.
    page.locator("#photo").set_input_files(files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                   "buffer": b"this is not an image\n" * 20}])
    error = page.locator("#photo-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not a photo")
    expect(page.get_by_role("button", name="Check this photo")).to_be_disabled()

    # A non-image that claims to be a JPEG: the predict function refuses it, and the page says why and how
    # to retake the photo.
    send_photo(page, files=[{"name": "fake.jpg", "mimeType": "image/jpeg", "buffer": b"this is not an image\n" * 20}])
    expect(page.locator("#result-title")).to_be_focused(timeout=60_000)
    expect(page.locator("#result-title")).to_have_text("We could not assess this photo")
    expect(page.locator("#retake-message")).to_have_text(re.compile(r"\w"))
    expect(page.locator("#result-retake")).to_contain_text("good, even light")
    expect(page.locator("#result-retake")).to_contain_text("in focus")
    expect(page.locator("#result-retake")).to_contain_text("Centre the lesion")
    expect(page.locator("#result-done")).to_be_hidden()
    expect(page.get_by_role("button", name="Was this wrong?")).to_be_hidden()
    check_accessible(page, axe_source, "retake")
    shoot(page, screenshots, "6-retake")

    page.get_by_role("button", name="Try another photo").click()
    expect(page.locator("#photo-title")).to_be_focused()
    expect(page.locator("#preview")).to_be_hidden()


def test_keyboard_only_consent_and_status(page: Page):
    """Tab order reaches the consent controls; errors and step changes are announced and move focus."""
    continue_button = page.get_by_role("button", name="Continue")
    continue_button.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#consent-error")).to_be_visible()
    expect(page.locator("#consent")).to_be_focused()
    expect(page.locator("#consent")).to_have_attribute("aria-invalid", "true")
    page.keyboard.press("Space")
    expect(page.locator("#consent")).to_be_checked()
    page.keyboard.press("Tab")
    assert focused_id(page) == "" and page.evaluate("document.activeElement.textContent") == "Continue"
    page.keyboard.press("Enter")
    expect(page.locator("#photo-title")).to_be_focused()
    expect(page.locator("#status")).to_have_text("Choose or take a photo")
    page.keyboard.press("Tab")
    assert focused_id(page) == "photo"  # the real file input is in the tab order, not just its label
    file_input = page.locator("#photo")
    assert file_input.get_attribute("capture") == "environment"
    assert file_input.get_attribute("accept") == "image/jpeg,image/png,image/webp"


def test_odds_in_words(page: Page):
    words = page.evaluate("""async () => {
        const {oddsInWords} = await import('./app.js');
        return [0.001, 0.01, 0.034, 0.2, 0.34, 0.5, 0.72, 0.97].map(oddsInWords);
    }""")
    starts = [w.split(" lesions")[0] for w in words]
    assert starts == ["Fewer than 1 in 200", "About 1 in 100", "About 1 in 29", "About 1 in 5", "About 1 in 3",
                      "About 5 in 10", "About 7 in 10", "More than 9 in 10"]
    assert all("not a diagnosis" in w for w in words)


def test_page_is_self_contained(page: Page, stack):
    """Works offline from the local stack: no request leaves the loopback servers."""
    for name in ("index.html", "app.js", "follow.js", "styles.css"):
        assert not re.search(r"https?://", (REPO / "web" / name).read_text()), f"web/{name} names an external URL"
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    assert requested and all(url.startswith(stack.web_url) for url in requested), requested
