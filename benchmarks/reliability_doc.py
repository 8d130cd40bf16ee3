"""Regenerate docs/reliability.md from docs/reliability.template.md and what the tests and benchmarks measure.

    .venv/bin/python -m benchmarks.reliability_doc          # runs the tests below, then the memory benchmark

Every `{{name@source}}` in the template becomes the figure `name` as `source` produced it: a test records
it with the `figure` fixture (tests/conftest.py; read back here from the run's JUnit XML), a benchmark
prints it, or the test file asserts it (the nasty-file corpus). The figure is written with its source
beside it, between markers that tests/core/test_reliability_doc.py uses to check that the document is
exactly the template filled in. Nothing is written unless every test passed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "docs" / "reliability.template.md"
DOC = REPO / "docs" / "reliability.md"
TESTS = ("tests/reliability", "tests/feedback/test_jobs_never_jam.py", "tests/feedback/test_delete_after_retrain.py",
         "tests/core/test_checks.py", "tests/feedback/test_permissions.py", "tests/feedback/test_trusted_records.py",
         "tests/identity")
PLACEHOLDER = re.compile(r"\{\{(?P<name>[a-z0-9_]+)@(?P<source>[^}]+)\}\}")
RENDERED = re.compile(r"<!-- figure (?P<name>[a-z0-9_]+)@(?P<source>[^ ]+) -->(?P<body>.*?)<!-- /figure -->",
                      re.DOTALL)
CORPUS = REPO / "tests" / "fixtures" / "nasty"


def run_tests() -> dict[str, str]:
    """Run TESTS; the figures they recorded, plus `suite` (the counts). Exits if any test failed."""
    with tempfile.TemporaryDirectory() as folder:
        junit = Path(folder) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                        *TESTS], cwd=REPO, check=False)
        suite = ElementTree.parse(junit).getroot().find("testsuite")
    counts = {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    if counts["failures"] or counts["errors"]:
        sys.exit(f"not written: {counts['failures']} failed and {counts['errors']} errors in {', '.join(TESTS)}")
    figures = {prop.get("name").removeprefix("figure."): prop.get("value")
               for prop in suite.iter("property") if prop.get("name", "").startswith("figure.")}
    figures["suite"] = (f"{counts['tests'] - counts['skipped']} passed, {counts['skipped']} skipped, 0 failed "
                        f"in {float(suite.get('time')):.0f} s")
    return figures


def memory_table() -> str:
    return subprocess.run([sys.executable, "-m", "benchmarks.decode_memory"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()


def corpus_table() -> str:
    """The nasty-file corpus with the outcome tests/reliability/test_hostile_input.py asserts for each file."""
    rows = ["| file | bytes | outcome |", "| --- | --- | --- |"]
    for name, expected in json.loads((CORPUS / "expected.json").read_text(encoding="utf-8")).items():
        outcome = "/".join(filter(None, (expected["status"], expected["reason"])))
        if "http" in expected:
            outcome += f"; HTTP {expected['http']['code']} `{expected['http']['error']}`"
        rows.append(f"| `{name}` | {(CORPUS / name).stat().st_size:,} | {outcome} |")
    return "\n".join(rows)


def beside(source: str, value: str) -> str:
    """How a figure names its source: after a table on a line of its own, after a number in brackets."""
    return f"\n\n<sub>from `{source}`</sub>" if "\n" in value else f" (`{source}`)"


def render(template: str, figures: dict[str, str]) -> str:
    def fill(match: re.Match) -> str:
        name, source, value = match["name"], match["source"], figures[match["name"]]
        return f"<!-- figure {name}@{source} -->{value}{beside(source, value)}<!-- /figure -->"

    return PLACEHOLDER.sub(fill, template)


def collapse(document: str) -> str:
    """The template a generated document came from: every rendered figure back to its placeholder."""
    return RENDERED.sub(lambda match: f"{{{{{match['name']}@{match['source']}}}}}", document)


def main() -> None:
    figures = {**run_tests(), "memory_table": memory_table(), "corpus_table": corpus_table()}
    template = TEMPLATE.read_text(encoding="utf-8")
    missing = sorted({m["name"] for m in PLACEHOLDER.finditer(template)} - set(figures))
    if missing:
        sys.exit(f"not written: no figure for {', '.join(missing)}")
    DOC.write_text(render(template, figures), encoding="utf-8")
    print(f"wrote {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
