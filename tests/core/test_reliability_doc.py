"""docs/reliability.md is the template filled in by benchmarks/reliability_doc.py, and nothing else: no hand
edits, no figure without the test or benchmark that produced it."""

from __future__ import annotations

import re

from benchmarks.reliability_doc import DOC, PLACEHOLDER, RENDERED, REPO, TEMPLATE, TESTS, beside, collapse, render


def test_the_document_is_the_template_filled_in():
    regenerate = "edit docs/reliability.template.md, then run python -m benchmarks.reliability_doc"
    assert collapse(DOC.read_text(encoding="utf-8")) == TEMPLATE.read_text(encoding="utf-8"), regenerate


def test_every_figure_has_a_value_and_names_its_source():
    rendered = list(RENDERED.finditer(DOC.read_text(encoding="utf-8")))
    assert len(rendered) == len(PLACEHOLDER.findall(TEMPLATE.read_text(encoding="utf-8")))
    for match in rendered:
        value = match["body"].removesuffix(beside(match["source"], match["body"]))
        assert value.strip() and value != match["body"], match.group(0)


def test_every_figure_comes_from_the_source_named_beside_it():
    for match in PLACEHOLDER.finditer(TEMPLATE.read_text(encoding="utf-8")):
        source = REPO / match["source"]
        assert source.is_file(), match.group(0)
        if match["source"].startswith("tests/"):
            # A test records it with the `figure` fixture, or (the corpus table) asserts the file it is made of.
            assert f'figure("{match["name"]}"' in source.read_text(encoding="utf-8") or match["name"] == "corpus_table"
            assert any(match["source"].startswith(tests) for tests in TESTS), f"{match['source']} is not run"


def test_the_check_can_fail():
    template = "Cases: {{fuzz_cases@tests/reliability/test_fuzz.py}}.\n"
    document = render(template, {"fuzz_cases": "10,200"})
    assert collapse(document) == template
    assert collapse(re.sub("Cases", "Runs", document)) != template
