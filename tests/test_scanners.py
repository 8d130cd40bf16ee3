"""The field's scanners on this repository: checkov on the Terraform (with this project's policies in
infra/policies/), bandit on the Python, pip-audit on the pinned dependencies.

Each finding is fixed or justified where it is: `#checkov:skip=<id>:<why>` inside the Terraform resource,
`# <why>  # nosec <id>` on the Python line, and the few bandit tests skipped everywhere are in pyproject.toml
with their reason. Each scanner is also shown a broken example, so a scanner that silently checks nothing fails.
checkov runs from .venv-checkov (`make test` builds it: its pins clash with the dev tools'); pip-audit asks
PyPI's vulnerability service and is skipped, with the reason, where PyPI cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "infra" / "policies"
BANDIT_TARGETS = ("deepskin", "functions", "training", "local")


def tool(name: str) -> str | None:
    """`name` next to this interpreter, in .venv-checkov, or on PATH."""
    for folder in (Path(sys.executable).parent, REPO / ".venv-checkov" / "bin"):
        if os.access(folder / name, os.X_OK):
            return str(folder / name)
    return shutil.which(name)


def run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


# --- checkov ------------------------------------------------------------------------------------------
def checkov_failures(folder: Path) -> list[tuple[str, str]]:
    """(check id, resource) of every failed check on `folder`, built-in and infra/policies/ checks alike."""
    checkov = tool("checkov")
    if checkov is None:
        pytest.skip("checkov not installed: `make test` builds .venv-checkov (infra/policies/requirements.txt)")
    result = run([checkov, "--directory", str(folder), "--framework", "terraform", "--external-checks-dir",
                  str(POLICIES), "--output", "json", "--compact", "--quiet", "--skip-download"])
    assert result.stdout.strip(), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert all(report.get("summary", {}).get("parsing_errors", 0) == 0 for report in reports), result.stdout[-2000:]
    return sorted((check["check_id"], check["resource"]) for report in reports if "results" in report
                  for check in report["results"]["failed_checks"])


def test_checkov_finds_nothing_unjustified_in_the_terraform():
    assert checkov_failures(REPO / "infra") == []


BAD_TERRAFORM = '''
resource "google_project_iam_member" "build_writes_every_repository" {
  project = "p"
  role    = "roles/artifactregistry.writer"
  member  = "serviceAccount:build@p.iam.gserviceaccount.com"
}
resource "google_project_iam_member" "reads_every_bucket" {
  project = "p"
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:x@p.iam.gserviceaccount.com"
}
resource "google_project_iam_member" "reads_the_sources_only" {
  project = "p"
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:x@p.iam.gserviceaccount.com"
  condition {
    title      = "sources"
    expression = "resource.name.startsWith(\\"projects/_/buckets/sources\\")"
  }
}
resource "google_project_iam_binding" "wipes_the_others" {
  project = "p"
  role    = "roles/logging.logWriter"
  members = ["serviceAccount:x@p.iam.gserviceaccount.com"]
}
resource "google_storage_bucket" "open" {
  name                        = "b"
  location                    = "EU"
  uniform_bucket_level_access = false
  public_access_prevention    = "inherited"
}
'''


def test_checkov_and_the_project_policies_flag_a_broken_stack(tmp_path):
    (tmp_path / "main.tf").write_text(BAD_TERRAFORM, encoding="utf-8")
    failures = set(checkov_failures(tmp_path))
    for expected in (("CKV2_DEEPSKIN_1", "google_project_iam_member.build_writes_every_repository"),
                     ("CKV2_DEEPSKIN_2", "google_project_iam_member.reads_every_bucket"),
                     ("CKV2_DEEPSKIN_3", "google_project_iam_binding.wipes_the_others"),
                     ("CKV_GCP_29", "google_storage_bucket.open"),  # uniform bucket-level access
                     ("CKV_GCP_114", "google_storage_bucket.open")):  # public access prevention enforced
        assert expected in failures, (expected, failures)
    assert not any(resource.endswith("reads_the_sources_only") for _, resource in failures)


# --- bandit ---------------------------------------------------------------------------------------------
def bandit_findings(*targets: str) -> list[str]:
    bandit = tool("bandit")
    if bandit is None:
        pytest.fail("bandit is pinned in the dev extra: `make setup` installs it")
    result = run([bandit, "-c", str(REPO / "pyproject.toml"), "-r", *targets, "-f", "json", "-q"])
    return [f"{r['test_id']} {r['filename']}:{r['line_number']} {r['issue_text']}"
            for r in json.loads(result.stdout)["results"]]


def test_bandit_finds_nothing_unjustified_in_the_python():
    assert bandit_findings(*BANDIT_TARGETS) == []


def test_bandit_flags_unsafe_python(tmp_path):
    (tmp_path / "unsafe.py").write_text(
        "import pickle\nimport subprocess\n\n\ndef run(command, blob):\n"
        "    subprocess.run(command, shell=True)\n    return pickle.loads(blob)\n", encoding="utf-8")
    found = " ".join(bandit_findings(str(tmp_path)))
    assert "B602" in found and "B301" in found, found


# --- pip-audit --------------------------------------------------------------------------------------------
def pinned_requirements() -> list[str]:
    """Every distribution pyproject.toml pins (the package, its cloud, train and dev extras), and every one the
    functions' locks install (functions/*/requirements.txt: their dependencies' dependencies too)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [*project["dependencies"], *(p for extra in project["optional-dependencies"].values() for p in extra)]
    for lock in sorted((REPO / "functions").glob("*/requirements.txt")):
        pins += re.findall(r"^([\w.-]+==\S+)", lock.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return sorted({pin.split("#")[0].strip() for pin in pins})


def audit(pins: list[str], folder: Path) -> list[dict]:
    """pip-audit's verdict on exact pins, one entry per distribution ({name, version, vulns} or a skip_reason)."""
    requirements = folder / "requirements.txt"
    requirements.write_text("\n".join(pins) + "\n", encoding="utf-8")
    result = run([tool("pip-audit") or "pip-audit", "--requirement", str(requirements), "--no-deps", "--disable-pip",
                  "--progress-spinner", "off", "--format", "json"])
    assert result.stdout.strip(), result.stderr[-2000:]
    return json.loads(result.stdout)["dependencies"]


# requests 2.19.0 has published advisories (e.g. CVE-2018-18074): an audit that finds none is not auditing.
KNOWN_VULNERABLE = "requests==2.19.0"


def test_no_pinned_dependency_has_a_known_vulnerability(tmp_path):
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        pytest.skip("pypi.org unreachable: pip-audit asks PyPI's vulnerability service (CI runs it)")
    probe = audit([KNOWN_VULNERABLE], tmp_path)
    if not probe[0].get("vulns"):
        pytest.skip(f"PyPI's vulnerability service does not answer from here ({probe[0].get('skip_reason')}); "
                    "CI runs this audit")
    verdicts = audit(pinned_requirements(), tmp_path)
    assert [d["name"] for d in verdicts if "skip_reason" in d] == [], "every pin must be audited"
    vulnerable = {d["name"]: [v["id"] for v in d["vulns"]] for d in verdicts if d.get("vulns")}
    assert vulnerable == {}, vulnerable


def test_every_pin_is_exact():
    """pip-audit audits what is pinned: a range would let pip install a version it never looked at."""
    loose = [pin for pin in pinned_requirements() if "==" not in pin]
    assert loose == [], loose
