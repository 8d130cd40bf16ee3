"""The pages' markup, read as text: every id names one element (scripts find elements by id, and a second
element of the same id is silently never found)."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"


class Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids += [value for name, value in attrs if name == "id" and value]


def ids_in(html: str) -> list[str]:
    parser = Ids()
    parser.feed(html)
    return parser.ids


@pytest.mark.parametrize("page", sorted(p.name for p in WEB.glob("*.html")))
def test_every_id_names_one_element(page):
    repeated = [name for name, count in Counter(ids_in((WEB / page).read_text(encoding="utf-8"))).items() if count > 1]
    assert repeated == []


def test_the_check_can_fail():
    assert ids_in('<p id="a"></p><fieldset id="b"><div id="a"></div></fieldset>') == ["a", "b", "a"]
