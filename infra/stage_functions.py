#!/usr/bin/env python3
"""Stage the Cloud Functions sources for Terraform.

Cloud Functions upload only the function's own folder, so every function needs
its own copy of the ``deepskin`` package (and predict needs ``models/``).  This
script builds, for each function::

    build/functions/<name>/          <- functions/<name>/  (main.py, requirements.txt, ...)
    build/functions/<name>/deepskin/ <- deepskin/
    build/functions/predict/models/  <- models/           (predict only)
    build/functions/ops/training/reports/ <- training/reports/ (ops only: the evaluation plots)

``infra/functions.tf`` zips each ``build/functions/<name>`` with the
``archive_file`` data source.  Run from anywhere::

    python infra/stage_functions.py            # stage all functions
    python infra/stage_functions.py --check    # also fail if a staged file is missing
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# function folder -> extra top-level folders copied next to main.py
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "predict": ("deepskin", "models"),
    "feedback": ("deepskin",),
    "retrain_trigger": ("deepskin",),
    "ops": ("deepskin", "training/reports"),  # the operator page's evaluation plots
    "sweeper": ("deepskin",),
}

REQUIRED_FILES = ("main.py", "requirements.txt")

IGNORE = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    "*.pyo",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "tests",
    "*.egg-info",
    ".DS_Store",
)


class StagingError(RuntimeError):
    """Raised when a source folder or required file is missing."""


def stage_function(repo: Path, out_root: Path, name: str, extras: tuple[str, ...]) -> Path:
    """Copy functions/<name>/ plus ``extras`` into out_root/<name>/ and return that path."""
    src = repo / "functions" / name
    if not src.is_dir():
        raise StagingError(f"missing function folder: {src}")
    for required in REQUIRED_FILES:
        if not (src / required).is_file():
            raise StagingError(f"missing {required} in {src}")

    dest = out_root / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=IGNORE)

    for extra in extras:
        extra_src = repo / extra
        if not extra_src.is_dir():
            raise StagingError(f"missing folder {extra_src} needed by function {name}")
        if (dest / extra).exists():
            raise StagingError(f"functions/{name}/{extra} would shadow the staged {extra}/; remove it")
        shutil.copytree(extra_src, dest / extra, ignore=IGNORE)
    return dest


def stage_all(repo: Path, out_root: Path, only: list[str] | None = None) -> list[Path]:
    """Stage every function (or only the named ones) and return the staged folders."""
    names = only or list(FUNCTIONS)
    unknown = sorted(set(names) - set(FUNCTIONS))
    if unknown:
        raise StagingError(f"unknown function(s): {', '.join(unknown)}")
    out_root.mkdir(parents=True, exist_ok=True)
    return [stage_function(repo, out_root, name, FUNCTIONS[name]) for name in names]


def check_staged(staged: Path, extras: tuple[str, ...]) -> None:
    """Fail when a staged folder lacks main.py, requirements.txt or an extra package."""
    for required in REQUIRED_FILES:
        if not (staged / required).is_file():
            raise StagingError(f"{staged} lacks {required}")
    for extra in extras:
        if not any((staged / extra).iterdir()):
            raise StagingError(f"{staged / extra} is empty")
    if "deepskin" in extras and not (staged / "deepskin" / "__init__.py").is_file():
        raise StagingError(f"{staged}/deepskin is not a package")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo-root", type=Path, default=REPO_ROOT, help="repository root (default: this repo)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <repo>/build/functions)")
    parser.add_argument("--check", action="store_true", help="verify the staged folders after copying")
    parser.add_argument("functions", nargs="*", help=f"subset of {', '.join(FUNCTIONS)}")
    args = parser.parse_args(argv)

    repo = args.repo_root.resolve()
    out_root = (args.out or repo / "build" / "functions").resolve()
    try:
        staged = stage_all(repo, out_root, args.functions or None)
        if args.check:
            for path in staged:
                check_staged(path, FUNCTIONS[path.name])
    except StagingError as exc:
        print(f"stage_functions: error: {exc}", file=sys.stderr)
        return 1
    for path in staged:
        files = sum(1 for p in path.rglob("*") if p.is_file())
        print(f"staged {path.relative_to(repo) if path.is_relative_to(repo) else path} ({files} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
