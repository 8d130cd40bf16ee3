#!/usr/bin/env python3
"""Stage the Cloud Functions sources for Terraform, each with only what it needs.

Cloud Functions upload only the function's own folder. pyproject.toml's `[tool.deepskin.functions]` says
what each one deploys; this script builds, for each function::

    build/functions/<name>/            <- functions/<name>/ (main.py, requirements.txt)
    build/functions/<name>/deepskin/   <- the deepskin modules main.py imports, transitively
    build/functions/<name>/<data>/     <- the table's `data` folders (models/ for predict, ...)

and writes functions/<name>/requirements.in from the table's `requires`, pinned as pyproject.toml pins them,
and its lock, functions/<name>/requirements.txt: every distribution pip installs for it (the dependencies'
dependencies too), each pinned with the SHA-256 of every file PyPI has of that version for the Cloud Functions
runtime (CPython 3.11, x86-64 Linux), so the build installs exactly those bytes (pip's hash-checking mode) and
`pip-audit` audits exactly that list. ``infra/functions.tf`` zips each ``build/functions/<name>``. Run from
anywhere::

    python infra/stage_functions.py                 # stage all functions
    python infra/stage_functions.py --check         # also fail if a staged file is missing
    python infra/stage_functions.py --requirements  # rewrite functions/*/requirements.in from pyproject.toml
    python infra/stage_functions.py --lock          # and lock them into requirements.txt (Python 3.11, network)
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRED_FILES = ("main.py", "requirements.in", "requirements.txt")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".pytest_cache", ".ruff_cache", "tests", ".DS_Store")
HEADER = ("# Generated from pyproject.toml ([tool.deepskin.functions]) by `python infra/stage_functions.py "
          "--requirements`: edit there.\n")
LOCK_HEADER = ("# Generated from requirements.in by `python infra/stage_functions.py --lock` (CPython 3.11, x86-64 "
               "Linux: the\n# Cloud Functions runtime python311): every distribution installed, with its files' "
               "SHA-256.\n")
SIMPLE_INDEX = "https://pypi.org/simple"  # PEP 691 JSON: every file of a project with its SHA-256
RUNTIME = (3, 11)  # var.python_runtime = "python311"
# Ubuntu 22.04 under the python311 runtime has glibc 2.35: manylinux wheels up to 2_35 install there.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


class StagingError(RuntimeError):
    """Raised when a source folder or required file is missing."""


class Function(NamedTuple):
    name: str
    requires: tuple[str, ...]  # distribution names, pinned in [project] dependencies or an extra
    data: tuple[str, ...] = ()  # repository folders staged beside main.py


def functions(repo: Path = REPO_ROOT) -> dict[str, Function]:
    table = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["deepskin"]["functions"]
    return {name: Function(name, tuple(spec["requires"]), tuple(spec.get("data", ()))) for name, spec in table.items()}


def pins(repo: Path = REPO_ROOT) -> dict[str, str]:
    """Normalised distribution name -> its one pinned requirement in pyproject.toml (extras included)."""
    project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found: dict[str, str] = {}
    extras = [requirement for group in project["optional-dependencies"].values() for requirement in group]
    for requirement in [*project["dependencies"], *extras]:
        found[normalise(re.split(r"[\[=<>~!; ]", requirement, maxsplit=1)[0])] = requirement
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_text(function: Function, pinned: dict[str, str]) -> str:
    missing = [name for name in function.requires if normalise(name) not in pinned]
    if missing:
        raise StagingError(f"{function.name} requires {', '.join(missing)}, which pyproject.toml does not pin")
    return HEADER + "".join(f"{pinned[normalise(name)]}\n" for name in sorted(function.requires, key=normalise))


def write_requirements(repo: Path = REPO_ROOT) -> list[Path]:
    pinned = pins(repo)
    written = []
    for function in functions(repo).values():
        path = repo / "functions" / function.name / "requirements.in"
        path.write_text(requirements_text(function, pinned), encoding="utf-8")
        written.append(path)
    return written


def resolve(requirements: Path) -> dict[str, str]:
    """{distribution: version} of everything pip installs for `requirements` on this interpreter."""
    if sys.version_info[:2] != RUNTIME:
        raise StagingError(f"lock with Python {RUNTIME[0]}.{RUNTIME[1]}, the functions' runtime, not {sys.version}")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), "-r", str(requirements)], check=True)
        installed = json.loads(report.read_text(encoding="utf-8"))["install"]
    return {normalise(item["metadata"]["name"]): item["metadata"]["version"] for item in installed}


def file_hashes(name: str, version: str) -> list[str]:
    """SHA-256 of each file of `name` `version` on PyPI that the functions' runtime can install."""
    # packaging comes with pip's tools, not with every Python: only the lock needs it.
    from packaging import tags, utils  # pylint: disable=import-outside-toplevel
    from packaging.version import Version  # pylint: disable=import-outside-toplevel

    runtime = {*tags.cpython_tags(RUNTIME, platforms=PLATFORMS), *tags.compatible_tags(RUNTIME, platforms=PLATFORMS)}
    request = urllib.request.Request(f"{SIMPLE_INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # a fixed https URL  # nosec B310
        files = json.load(response)["files"]
    hashes = []
    for file in files:
        try:
            if file["filename"].endswith(".whl"):
                _, found, _, wheel_tags = utils.parse_wheel_filename(file["filename"])
                fits = bool(wheel_tags & runtime)
            else:
                _, found = utils.parse_sdist_filename(file["filename"])
                fits = True
        except (utils.InvalidWheelFilename, utils.InvalidSdistFilename):
            continue
        if fits and found == Version(version) and not file.get("yanked"):
            hashes.append(file["hashes"]["sha256"])
    if not hashes:
        raise StagingError(f"PyPI has no file of {name} {version} for CPython {RUNTIME[0]}.{RUNTIME[1]} on Linux")
    return sorted(hashes)


def lock_text(resolved: dict[str, str]) -> str:
    entries = []
    for name, version in sorted(resolved.items()):
        hashes = " \\\n".join(f"    --hash=sha256:{digest}" for digest in file_hashes(name, version))
        entries.append(f"{name}=={version} \\\n{hashes}\n")
    return LOCK_HEADER + "".join(entries)


def write_locks(repo: Path = REPO_ROOT) -> list[Path]:
    written = []
    for path in write_requirements(repo):
        lock = path.with_suffix(".txt")
        lock.write_text(lock_text(resolve(path)), encoding="utf-8")
        written.append(lock)
    return written


def deepskin_modules(sources: list[Path], repo: Path = REPO_ROOT) -> set[Path]:
    """The files of `sources` plus every deepskin module they import, transitively (lazy imports included), with
    the __init__.py of every package on the way."""
    seen: set[Path] = set()
    todo = list(sources)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != "deepskin":
                    continue
                for i in range(1, len(parts) + 1):
                    base = repo.joinpath(*parts[:i])
                    todo.extend(f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file())
    return seen


def stage_function(repo: Path, out_root: Path, function: Function) -> Path:
    """Copy functions/<name>/, the deepskin modules it imports and its data folders into out_root/<name>/."""
    src = repo / "functions" / function.name
    if not src.is_dir():
        raise StagingError(f"missing function folder: {src}")
    for required in REQUIRED_FILES:
        if not (src / required).is_file():
            raise StagingError(f"missing {required} in {src}")

    dest = out_root / function.name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=IGNORE)
    for module in deepskin_modules([src / "main.py"], repo) - {src / "main.py"}:
        target = dest / module.relative_to(repo)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module, target)
    for folder in function.data:
        if not (repo / folder).is_dir():
            raise StagingError(f"missing folder {repo / folder} needed by function {function.name}")
        if (dest / folder).exists():
            raise StagingError(f"functions/{function.name}/{folder} would shadow the staged {folder}/; remove it")
        shutil.copytree(repo / folder, dest / folder, ignore=IGNORE)
    return dest


def stage_all(repo: Path, out_root: Path, only: list[str] | None = None) -> list[Path]:
    """Stage every function (or only the named ones) and return the staged folders."""
    table = functions(repo)
    names = only or list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise StagingError(f"unknown function(s): {', '.join(unknown)}")
    out_root.mkdir(parents=True, exist_ok=True)
    return [stage_function(repo, out_root, table[name]) for name in names]


def check_staged(staged: Path, function: Function) -> None:
    """Fail when a staged folder lacks main.py, requirements.txt or a data folder."""
    for required in REQUIRED_FILES:
        if not (staged / required).is_file():
            raise StagingError(f"{staged} lacks {required}")
    for folder in function.data:
        if not any((staged / folder).iterdir()):
            raise StagingError(f"{staged / folder} is empty")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo-root", type=Path, default=REPO_ROOT, help="repository root (default: this repo)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <repo>/build/functions)")
    parser.add_argument("--check", action="store_true", help="verify the staged folders after copying")
    parser.add_argument("--requirements", action="store_true",
                        help="write functions/*/requirements.in from pyproject.toml and stop")
    parser.add_argument("--lock", action="store_true",
                        help="write functions/*/requirements.in, lock each into requirements.txt (hashes) and stop")
    parser.add_argument("functions", nargs="*", help="a subset of the functions (default: all)")
    args = parser.parse_args(argv)

    repo = args.repo_root.resolve()
    out_root = (args.out or repo / "build" / "functions").resolve()
    try:
        if args.requirements or args.lock:
            for path in (write_locks if args.lock else write_requirements)(repo):
                print(f"wrote {path.relative_to(repo)}")
            return 0
        staged = stage_all(repo, out_root, args.functions or None)
        if args.check:
            table = functions(repo)
            for path in staged:
                check_staged(path, table[path.name])
    except StagingError as exc:
        print(f"stage_functions: error: {exc}", file=sys.stderr)
        return 1
    for path in staged:
        files = sum(1 for p in path.rglob("*") if p.is_file())
        print(f"staged {path.relative_to(repo) if path.is_relative_to(repo) else path} ({files} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
