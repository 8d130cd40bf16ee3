"""Every setting is read in one place: deepskin.services.config. No other module of the services or the loop, nor
the gate and the retraining job, reads the environment for a DEEPSKIN_* setting or to tell Google Cloud from the
emulators (config.runs_on); training.retrain reads only its data folders' variables (training.data.FOLDER_ENV)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "deepskin" / "services" / "config.py"
SCANNED = sorted({*(REPO / "deepskin" / "services").glob("*.py"), *(REPO / "deepskin" / "loop").glob("*.py"),
                  REPO / "training" / "promote.py", REPO / "training" / "retrain.py"} - {CONFIG})
ALLOWED_KEY = "FOLDER_ENV["  # a data source's folder (training's own flags, training.data)


def environment_reads(source: str) -> list[str]:
    """Each use of os.environ or os.getenv that is not a lookup of a data folder's variable, as source text."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os" and {"environ", "getenv"} & {
                alias.name for alias in node.names}:
            found.append(ast.unparse(node))  # a bare `environ` would escape the scan below
        if not (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")):
            continue
        use = parents.get(node)
        if isinstance(use, ast.Attribute):  # os.environ.get(...): the call around it
            use = parents.get(use)
        keys = use.args[:1] if isinstance(use, ast.Call) else [use.slice] if isinstance(use, ast.Subscript) else []
        if not (keys and ast.unparse(keys[0]).startswith(ALLOWED_KEY)):
            found.append(ast.unparse(use or node))
    return found


@pytest.mark.parametrize("path", SCANNED, ids=lambda path: str(path.relative_to(REPO)))
def test_no_module_but_config_reads_a_setting(path):
    assert environment_reads(path.read_text(encoding="utf-8")) == []


def test_the_scan_finds_a_setting_read_elsewhere():
    found = environment_reads("import os\nfrom os import environ\nA = os.environ.get('DEEPSKIN_X', '1')\n"
                              "B = os.environ['K_SERVICE']\nC = os.getenv('DEEPSKIN_Y')\nenv = os.environ\n"
                              "D = os.environ.get(FOLDER_ENV[source])\n")
    assert sorted(found) == sorted(["from os import environ", "os.environ.get('DEEPSKIN_X', '1')",
                                    "os.environ['K_SERVICE']", "os.getenv('DEEPSKIN_Y')", "env = os.environ"])
