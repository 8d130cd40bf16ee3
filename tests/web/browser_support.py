"""Shared by the browser tests: open a page that must log no error, axe-core, screenshots at two widths."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, expect

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
OPERATOR_KEY = "web-test-operator-key"  # the clinician key the web suite's functions accept (conftest.py)


@contextmanager
def opened(browser, url: str) -> Iterator[Page]:
    """A fresh phone-sized page at `url`, once it says it is ready; it must not log errors."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(url)
    expect(page.locator("body[data-ready=true]")).to_have_count(1)
    yield page
    context.close()
    # The page must not log errors; 4xx answers it handles itself show up as "Failed to load resource".
    assert [e for e in errors if "Failed to load resource" not in e] == []


def check_accessible(page: Page, axe_source: Path, where: str) -> None:
    """axe-core on the current state: no serious or critical violations."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated rather than added as a <script>: the page's Content-Security-Policy refuses inline scripts.
        page.evaluate(axe_source.read_text(encoding="utf-8"))
    results = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                        nodes: v.nodes.map(n => n.target.join(' '))}));
    }""")
    bad = [v for v in results if v["impact"] in ("serious", "critical")]
    assert bad == [], f"axe violations on {where}: {bad}"


def shoot(page: Page, screenshots: Path, name: str) -> None:
    """Full-page screenshots at phone and desktop width; the page is left at phone width."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(screenshots / f"{label}-{name}.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= size["width"], f"{name}: the page scrolls sideways at {size['width']} px ({width} px wide)"
