"""The page against the real local services: emulators, the predict and feedback functions, web/.

The services are local/stack.py's: each function a functions-framework process and web/ served with its
/config.json, on free loopback ports (so a `make run` on 8080-8088 is not disturbed), talking to the
session's emulators (tests/conftest.py). Set DEEPSKIN_WEB_URL (printed by `make run`, together with the
emulator variables) to test a running stack instead.

Chromium is the system one (/usr/bin/chromium, apt package `chromium`): `playwright install` is never run.
axe-core comes from tests/web/node_modules (`npm ci` in tests/web). Either missing fails the run loudly.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from browser_support import OPERATOR_KEY

from local.stack import Ports, Stack

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCREENSHOTS = HERE / "screenshots"
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = os.environ.get("DEEPSKIN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class Services:
    web_url: str
    predict_url: str
    feedback_url: str | None


@pytest.fixture(scope="session")
def stack(emulators: dict[str, str]) -> Iterator[Services]:
    running = os.environ.get("DEEPSKIN_WEB_URL")
    if running:
        with urllib.request.urlopen(f"{running.rstrip('/')}/config.json", timeout=10) as response:
            config = json.load(response)
        yield Services(running.rstrip("/"), config["predict_url"], config["feedback_url"])
        return
    if not (REPO / "web" / "index.html").is_file():
        pytest.fail("web/index.html is missing")
    # Stack.start() would start a second set of emulators: start only its functions and web server, which
    # inherit this session's emulator environment (the functions' CORS list follows the web port).
    local = Stack(Ports.free())
    try:
        with pytest.MonkeyPatch.context() as patch:  # the functions keep the environment they started with
            patch.setenv("DEEPSKIN_LOCAL_CLINICIAN_KEYS", hashlib.sha256(OPERATOR_KEY.encode()).hexdigest())
            local.start_functions()
        local.start_web()
        assert "predict_http" in local.functions, local.notes
        yield Services(local.url("web"), local.url("predict"),
                       local.url("feedback") if "feedback_http" in local.functions else None)
    finally:
        local.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless system Chromium; fails (never skips) when it or Playwright is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install it (apt-get install -y chromium). "
                    "The web tests need a real browser and must not be skipped.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: .venv/bin/pip install playwright (never `playwright install`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def axe_source() -> Path:
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `npm ci` in tests/web (package.json pins axe-core).")
    return AXE


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS
