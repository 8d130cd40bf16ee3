"""The architecture as pyproject.toml states it: import-linter's contracts hold, and deptry finds every import
declared and every declared package used."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACKAGES = ("deepskin", "training", "local", "benchmarks")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first, so that the packages under `root` are the ones analysed, not the installed ones.
    return subprocess.run([BIN / "lint-imports", "--no-cache"], cwd=root, capture_output=True, text=True, check=False,
                          timeout=300, env={"PATH": str(BIN), "PYTHONPATH": str(root)})


def test_import_contracts_hold():
    run = lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(("module", "imported"), [
    # The circle this layout removed: the model asking the registry.
    ("core/model.py", "deepskin.services.registry"),
    # The services under the loop: the registry reaching up to the gate's side of it.
    ("services/registry.py", "deepskin.loop.promotion"),
])
def test_import_contracts_catch_a_module_that_reaches_up(tmp_path, module, imported):
    """The contracts can fail: an import from a floor above breaks them."""
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "deepskin" / module
    package, name = imported.rsplit(".", 1)
    path.write_text(path.read_text() + f"\nfrom {package} import {name}  # noqa\n")
    run = lint_imports(tmp_path)
    assert run.returncode != 0
    assert "deepskin's floors" in run.stdout and "BROKEN" in run.stdout
    assert f"deepskin.{module.removesuffix('.py').replace('/', '.')} -> {imported}" in run.stdout


def test_every_import_is_declared_and_every_dependency_used():
    run = subprocess.run([BIN / "deptry", "."], cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_architecture_md_names_every_module():
    """ARCHITECTURE.md is drawn from the packages as they stand: a module added or renamed must appear there."""
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for module in sorted((REPO / "deepskin").glob("*/*.py")):
        if module.name != "__init__.py":
            assert f"| `{module.stem}` |" in text, f"ARCHITECTURE.md does not describe deepskin.{module.parent.name}.{module.stem}"
