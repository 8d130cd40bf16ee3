"""The pages' web server (local/stack.py, as `make run` starts it, without the rest of the stack): every answer
carries the security headers, and the pages keep to what their Content-Security-Policy allows."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from local.stack import web_server

WEB = Path(__file__).resolve().parents[2] / "web"
CONFIG = {"predict_url": "http://127.0.0.1:8081", "feedback_url": "http://127.0.0.1:8082/",
          "ops_url": "http://localhost:8085"}


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = web_server(WEB, 0, CONFIG)
    try:
        yield f"http://{server.server_address[0]}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def headers_of(url: str) -> dict[str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(response.headers)
    except urllib.error.HTTPError as error:  # a 404 carries them too
        return dict(error.headers)


@pytest.mark.parametrize("path", ["/", "/index.html", "/ops.html", "/app.js", "/styles.css", "/config.json",
                                  "/no-such-file"])
def test_every_answer_carries_the_security_headers(web, path):
    headers = headers_of(web + path)
    policy = dict(directive.split(" ", 1) for directive in headers["Content-Security-Policy"].split("; "))
    assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["img-src"] == "'self' data: blob:"
    # Only the functions the pages are told about in /config.json, by origin.
    assert policy["connect-src"] == "'self' http://127.0.0.1:8081 http://127.0.0.1:8082 http://localhost:8085"
    assert "script-src" not in policy and "style-src" not in policy  # default-src: no inline script or style
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "camera=(self)" in headers["Permissions-Policy"]


def test_config_json_still_names_the_functions(web):
    with urllib.request.urlopen(web + "/config.json", timeout=10) as response:
        assert json.load(response) == CONFIG


class InlineCode(HTMLParser):
    """What a page has that `default-src 'self'` would block: inline scripts and styles, event-handler attributes."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if (tag == "script" and "src" not in names) or tag == "style":
            self.found.append(f"<{tag}> without a file")
        self.found += [f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on")]


@pytest.mark.parametrize("page", ["index.html", "ops.html"])
def test_the_pages_have_no_inline_code_that_their_policy_would_block(page):
    parser = InlineCode()
    parser.feed((WEB / page).read_text(encoding="utf-8"))
    assert parser.found == []
