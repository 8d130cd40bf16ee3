"""`make containers`: build the serving and training images from docker/*.Dockerfile with Podman, locally.

In the cloud the same Dockerfiles build from their default base image (python:3.11.11-slim-bookworm; the
training image's PyPI torch brings CUDA for the GPU machines): .github/workflows/train.yml builds the training one. Here no container registry can be reached, so:
- the base is Debian bookworm made with mmdebstrap and `podman import` (built once, then reused);
- the host's local wheel folders (pip's find-links, where `make setup` takes the CPU torch from) are
  mounted read-only into the build and handed to pip, so the training image takes the same CPU torch,
  never a multi-gigabyte CUDA download; everything else comes from PyPI;
- the host's CA bundle is mounted, so that pip and apt inside the build trust the same certificates.
Podman caches layers: a rebuild with nothing changed takes seconds.

    python -m local.containers [serving|training ...]     # default: both
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("podman", "runc", "mmdebstrap")
BASE_IMAGE = "localhost/deepskin-base:bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")  # passwd: the images' useradd
IMAGES = {"serving": "localhost/deepskin-serving:local", "training": "localhost/deepskin-training:local"}
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINERS_CONF = Path("/etc/containers/containers.conf")
# runc, since crun is not installed; the default ulimits are higher than this machine allows a container.
CONF_TEXT = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""


class ContainerError(RuntimeError):
    pass


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, **kwargs)


def unavailable() -> str | None:
    """Why images cannot be built or run here, or None when Podman is ready."""
    if shutil.which("podman") is None:
        return "podman is not installed (`make containers` installs it on Debian, as root)"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"podman is installed but `podman info` fails: {info.stderr.strip()[-300:]}"
    return None


def install() -> None:
    """The Debian packages and the engine settings this machine needs (idempotent; apt only when missing)."""
    missing = [package for package in PACKAGES if shutil.which(package) is None]
    if missing:
        if os.geteuid() != 0:
            raise ContainerError(f"missing {', '.join(missing)}: run as root, or apt-get install {' '.join(PACKAGES)}")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", *PACKAGES], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not CONTAINERS_CONF.exists():
        if os.geteuid() == 0:
            CONTAINERS_CONF.parent.mkdir(parents=True, exist_ok=True)
            CONTAINERS_CONF.write_text(CONF_TEXT, encoding="utf-8")
    elif 'runtime = "runc"' not in CONTAINERS_CONF.read_text(encoding="utf-8"):
        # Someone's own settings are never overwritten: say what they need instead.
        raise ContainerError(f"{CONTAINERS_CONF} exists without runtime = \"runc\": merge in\n{CONF_TEXT}")


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def build_base() -> None:
    """Debian bookworm with Python, straight from the Debian mirror: once, then reused."""
    if image_exists(BASE_IMAGE):
        return
    include = f"--include={','.join(BASE_PACKAGES)}"
    clean = "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*"
    bootstrap = subprocess.Popen(  # pylint: disable=consider-using-with  # piped into the import, waited below
        ["mmdebstrap", "--quiet", "--variant=minbase", include, clean, "bookworm", "-"], stdout=subprocess.PIPE)
    run(["podman", "import", "--quiet", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE], stdin=bootstrap.stdout,
        stdout=subprocess.DEVNULL)
    if bootstrap.wait() != 0:
        subprocess.run(["podman", "rmi", BASE_IMAGE], check=False, capture_output=True)
        raise ContainerError(f"mmdebstrap failed ({bootstrap.returncode})")


def pip_config(key: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True,
                          check=False)
    return done.stdout.split() if done.returncode == 0 else []


def local_wheels() -> list[Path]:
    """The host's local wheel folders (pip's find-links): where `make setup` took the CPU torch from."""
    folders = [Path(p) for p in os.environ.get("PIP_FIND_LINKS", "").split() + pip_config("global.find-links")]
    return list(dict.fromkeys(folder for folder in folders if folder.is_dir()))


def build(name: str) -> str:
    """Build one image from docker/<name>.Dockerfile on the local base (made first if missing); returns its tag."""
    build_base()
    wheels = local_wheels()
    args = ["podman", "build", "--quiet", "--layers", "-f", f"docker/{name}.Dockerfile", "-t", IMAGES[name],
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"PIP_FIND_LINKS={' '.join(map(str, wheels))}"]
    args += [item for folder in (*wheels, CA_BUNDLE) for item in ("-v", f"{folder}:{folder}:ro")]
    run([*args, "."], cwd=REPO, stdout=subprocess.DEVNULL)
    return IMAGES[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.containers",
                                     description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=f"{' or '.join(IMAGES)} (default: both)")
    names = parser.parse_args(argv).images or list(IMAGES)
    if set(names) - set(IMAGES):
        parser.error(f"unknown image: {', '.join(sorted(set(names) - set(IMAGES)))}")
    try:
        install()
        for name in names:
            started = time.monotonic()
            print(f"{build(name)}: built in {time.monotonic() - started:.0f} s", flush=True)
    except (ContainerError, subprocess.CalledProcessError) as exc:
        print(f"containers: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
