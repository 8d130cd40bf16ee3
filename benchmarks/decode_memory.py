"""Peak memory of one upload through the serving path, per input kind, with the model loaded.

    .venv/bin/python -m benchmarks.decode_memory            # prints a Markdown table (docs/reliability.md)

Each input is assessed by `deepskin.core.pipeline.assess` in a fresh process that has already loaded the
bundled model, so a row's peak RSS is that of a function instance serving that one upload. The inputs are
made here: the largest sizes the checks accept for their kind, with smooth content so that each file stays
under the 20 MB upload limit. The predict functions have 1 GiB; the budget asserted here is 450 MB.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

BUDGET_MB = 450
REPO = Path(__file__).resolve().parent.parent
LESION = REPO / "tests" / "fixtures" / "lesions" / "ISIC_0024306.jpg"


def lesion_like(size: tuple[int, int]) -> Image.Image:
    """A fixture lesion photo scaled to `size` (smooth, so that even 49 MP compresses to a few MB)."""
    return Image.open(LESION).convert("RGB").resize(size, Image.BILINEAR)


def grey16(size: tuple[int, int]) -> Image.Image:
    grey = np.asarray(lesion_like(size).convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(grey)  # uint16: mode I;16


def rgba(size: tuple[int, int]) -> Image.Image:
    image = lesion_like(size)
    image.putalpha(255)
    return image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


PHOTO = (4000, 3000)  # a 12 MP phone photo
HUGE = (7000, 7000)  # 49 MP: just under the 50 MP limit
KINDS = {
    "12 MP JPEG": lambda: encoded(lesion_like(PHOTO), "JPEG", quality=90),
    "12 MP progressive JPEG": lambda: encoded(lesion_like(PHOTO), "JPEG", quality=90, progressive=True),
    "12 MP CMYK JPEG": lambda: encoded(lesion_like(PHOTO).convert("CMYK"), "JPEG", quality=90),
    "49 MP JPEG": lambda: encoded(lesion_like(HUGE), "JPEG", quality=90),
    "49 MP 16-bit greyscale PNG": lambda: encoded(grey16(HUGE), "PNG", compress_level=9),
    "49 MP RGBA PNG": lambda: encoded(rgba(HUGE), "PNG", compress_level=9),
    "49 MP RGB PNG": lambda: encoded(lesion_like(HUGE), "PNG", compress_level=9),
    "12 MP WebP": lambda: encoded(lesion_like(PHOTO), "WEBP", quality=90),
    "12 MP RGBA WebP": lambda: encoded(rgba(PHOTO), "WEBP", quality=90),
    "25 MP WebP (refused from its header)": lambda: encoded(lesion_like((5000, 5000)), "WEBP", quality=90),
}


def peak_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: Linux carries that over from the parent at exec,
    and the parent has just held a 49 MP image."""
    status = Path("/proc/self/status").read_text(encoding="utf-8")
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)[1]) / 1024


def measure(path: Path) -> dict:
    """In this process: load the model, then assess the file; peak RSS before and after."""
    from deepskin.core.bundle import BUNDLED_MODEL  # pylint: disable=import-outside-toplevel
    from deepskin.core.model import Model
    from deepskin.core.pipeline import assess  # pylint: disable=import-outside-toplevel

    model = Model(BUNDLED_MODEL, threads=1)
    data = path.read_bytes()
    assess(Path(LESION).read_bytes(), model)  # the first inference allocates the runtime's buffers
    baseline = peak_mb()
    outcome = assess(data, model)
    return {"status": "/".join(filter(None, (outcome.status, outcome.reason))), "baseline_mb": baseline,
            "peak_mb": peak_mb()}


def table(folder: Path) -> list[str]:
    rows = ["| input | file | status | peak RSS, model loaded | of which before the upload |",
            "| --- | --- | --- | --- | --- |"]
    worst = 0.0
    for kind, make in KINDS.items():
        path = folder / "input"
        path.write_bytes(make())
        child = subprocess.run([sys.executable, "-m", "benchmarks.decode_memory", "--measure", str(path)],
                               cwd=REPO, capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.splitlines()[-1])
        worst = max(worst, result["peak_mb"])
        rows.append(f"| {kind} | {path.stat().st_size / 1e6:.2f} MB | {result['status']} | "
                    f"{result['peak_mb']:.0f} MB | {result['baseline_mb']:.0f} MB |")
    rows.append(f"\nWorst peak {worst:.0f} MB; budget {BUDGET_MB} MB: {'within' if worst < BUDGET_MB else 'OVER'}.")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the per-input child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory(prefix="deepskin-decode-memory-") as folder:
        print("\n".join(table(Path(folder))))


if __name__ == "__main__":
    main()
