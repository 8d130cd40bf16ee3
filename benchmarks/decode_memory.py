"""Peak memory and CPU time of one upload through the serving path, per input kind, with the model loaded.

    .venv/bin/python -m benchmarks.decode_memory            # prints a Markdown table (docs/reliability.md)

Each input goes through what `predict_http` does with an upload (`strip_metadata`, then
`deepskin.core.pipeline.assess`) in a fresh process that has already loaded the bundled model, so a row's peak
RSS is that of a function instance serving that one upload. The inputs are made here: the largest sizes the
checks accept for their kind, with smooth content so that each file stays under the 20 MB upload limit, and
hostile files (thin strips, progressive JPEGs with many scans or a large coefficient buffer, files of millions
of empty parts). The predict functions have 1 GiB: the budget is 450 MB and 3 s of CPU per upload, and the
benchmark exits non-zero when any row is over it.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from deepskin.core import chunks

BUDGET_MB = 450
BUDGET_CPU_S = 3.0
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


def noisy(size: tuple[int, int]) -> Image.Image:
    """A lesion photo with strong noise: as much for the decoder to do as fits in 20 MB."""
    noise = np.random.default_rng(0).integers(-60, 61, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(lesion_like(size), dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def rgba16_png(size: tuple[int, int]) -> bytes:
    """A 16-bit RGBA PNG (which Pillow cannot write), in blocky colours so that it compresses under 20 MB: 8 bytes
    a pixel to inflate and convert."""
    block = np.asarray(rgba((size[0] // 10, size[1] // 10)), dtype=">u2") * 257
    rows = np.repeat(np.repeat(block, 10, axis=0), 10, axis=1).reshape(size[1], -1).view(np.uint8)
    scanlines = np.hstack([np.zeros((size[1], 1), np.uint8), rows])  # filter type 0 before each row
    header = struct.pack(">IIBBBBB", *size, 16, 6, 0, 0, 0)
    return (chunks.PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(scanlines, 9))
            + png_chunk(b"IEND", b""))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def progressive(size: tuple[int, int], mode: str = "RGB") -> bytes:
    return encoded(lesion_like(size).convert(mode), "JPEG", quality=90, progressive=True)


def with_extra_scans(jpeg: bytes, count: int = 0, size: int = 0) -> bytes:
    """A progressive JPEG with its smallest scan repeated `count` more times (or as often as fits in `size`
    bytes) before the end marker: each copy is a few dozen bytes that its decoder spends a pass over every
    block on."""
    segments = list(chunks.jpeg_segments(jpeg))
    scan = min((part for part in segments if part.kind == chunks.JPEG_SOS), key=lambda part: part.end - part.start)
    end = segments[-1].start  # the end-of-image marker
    return jpeg[:end] + jpeg[scan.start:scan.end] * (count or size // (scan.end - scan.start)) + jpeg[end:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def flooded(data: bytes, at: int, part: bytes, count: int | None = None) -> bytes:
    """`data` with `count` copies of an empty `part` inserted at `at`, by default as many as make 19 MB:
    millions of parts that a parser walks one by one."""
    count = (FLOODED_SIZE - len(data)) // len(part) if count is None else count
    return data[:at] + part * count + data[at:]


def flooded_jpeg(jpeg: bytes, count: int | None = None) -> bytes:
    return flooded(jpeg, 2, b"\xff\xfe\x00\x02", count)  # empty comments after the start-of-image marker


def flooded_png(png: bytes, kind: bytes, count: int | None = None) -> bytes:
    return flooded(png, png.index(b"IDAT") - 4, png_chunk(kind, b""), count)  # empty chunks before the pixels


def flooded_webp(webp: bytes, count: int | None = None) -> bytes:
    data = flooded(webp, len(webp), b"XTRA" + struct.pack("<I", 0), count)  # empty unknown chunks at the end
    return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]  # the RIFF size covers them


def stuffed_scan(size: int = 18_000_000) -> bytes:
    """A JPEG whose one scan is nothing but stuffed FF bytes (FF 00), each of which a scan's parser must skip."""
    jpeg = encoded(lesion_like(SMALL), "JPEG")
    scan = next(part for part in chunks.jpeg_segments(jpeg) if part.kind == chunks.JPEG_SOS)
    header_end = scan.start + 2 + int.from_bytes(jpeg[scan.start + 2:scan.start + 4], "big")
    return jpeg[:header_end] + b"\xff\x00" * (size // 2) + b"\xff\xd9"


PHOTO = (4000, 3000)  # a 12 MP phone photo
HUGE = (7000, 7000)  # 49 MP: just under the 50 MP limit
THIN = (1199, 41700)  # 50 MP, but shrinking goes by the short side: never shrunk
THINNEST = (1199, 1199 * 8)  # the thinnest shape accepted, and not shrunk either
PROGRESSIVE_CMYK = (4900, 4900)  # the largest progressive CMYK JPEG whose coefficients fit the decoding budget
SMALL = (400, 300)
FLOODED_SIZE = 19_000_000
KINDS = {
    "12 MP JPEG": lambda: encoded(lesion_like(PHOTO), "JPEG", quality=90),
    "12 MP progressive JPEG": lambda: progressive(PHOTO),
    "12 MP CMYK JPEG": lambda: encoded(lesion_like(PHOTO).convert("CMYK"), "JPEG", quality=90),
    "49 MP JPEG": lambda: encoded(lesion_like(HUGE), "JPEG", quality=90),
    "49 MP progressive JPEG, 20 scans (10 extra)": lambda: with_extra_scans(progressive(HUGE), count=10),
    "49 MP noisy progressive JPEG, 20 scans": lambda: with_extra_scans(
        encoded(noisy(HUGE), "JPEG", quality=70, progressive=True), count=10),
    "24 MP progressive CMYK JPEG": lambda: progressive(PROGRESSIVE_CMYK, "CMYK"),
    "49 MP 16-bit greyscale PNG": lambda: encoded(grey16(HUGE), "PNG", compress_level=9),
    "49 MP RGBA PNG": lambda: encoded(rgba(HUGE), "PNG", compress_level=9),
    "49 MP 16-bit RGBA PNG": lambda: rgba16_png(HUGE),
    "49 MP RGB PNG": lambda: encoded(lesion_like(HUGE), "PNG", compress_level=9),
    "1199x9592 (1:8) RGBA PNG": lambda: encoded(rgba(THINNEST), "PNG", compress_level=9),
    "12 MP WebP": lambda: encoded(lesion_like(PHOTO), "WEBP", quality=90),
    "12 MP RGBA WebP": lambda: encoded(rgba(PHOTO), "WEBP", quality=90),
    "JPEG scan of 9 million stuffed bytes": stuffed_scan,
    # Refused from the header or the file's layout, before any pixel is decoded:
    "25 MP WebP": lambda: encoded(lesion_like((5000, 5000)), "WEBP", quality=90),
    "1199x41700 RGBA PNG": lambda: encoded(rgba(THIN), "PNG", compress_level=9),
    "1199x41700 RGB PNG": lambda: encoded(lesion_like(THIN), "PNG", compress_level=9),
    "1199x41700 16-bit greyscale PNG": lambda: encoded(grey16(THIN), "PNG", compress_level=9),
    "49 MP progressive CMYK JPEG": lambda: progressive(HUGE, "CMYK"),
    "49 MP progressive JPEG + 800 scans": lambda: with_extra_scans(progressive(HUGE), count=800),
    "49 MP progressive JPEG + 1 MB of scans": lambda: with_extra_scans(progressive(HUGE), size=1_000_000),
    "JPEG + 4.7 million empty comments": lambda: flooded_jpeg(encoded(lesion_like(SMALL), "JPEG")),
    "PNG + 1.6 million empty private chunks": lambda: flooded_png(encoded(lesion_like(SMALL), "PNG"), b"prVt"),
    "PNG + 1.6 million empty IDAT chunks": lambda: flooded_png(encoded(lesion_like(SMALL), "PNG"), b"IDAT"),
    "WebP + 2.4 million empty chunks": lambda: flooded_webp(encoded(lesion_like(SMALL), "WEBP")),
}


def peak_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: Linux carries that over from the parent at exec,
    and the parent has just held a 49 MP image."""
    status = Path("/proc/self/status").read_text(encoding="utf-8")
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)[1]) / 1024


def measure(path: Path) -> dict:
    """In this process: load the model, then serve the file as predict_http does; peak RSS before and after,
    and the CPU time that the upload took."""
    from deepskin.core.bundle import BUNDLED_MODEL  # pylint: disable=import-outside-toplevel
    from deepskin.core.metadata import strip_metadata  # pylint: disable=import-outside-toplevel
    from deepskin.core.model import Model  # pylint: disable=import-outside-toplevel
    from deepskin.core.pipeline import assess  # pylint: disable=import-outside-toplevel

    model = Model(BUNDLED_MODEL, threads=1)
    data = path.read_bytes()
    assess(Path(LESION).read_bytes(), model)  # the first inference allocates the runtime's buffers
    baseline = peak_mb()
    started = time.process_time()
    strip_metadata(data)
    outcome = assess(data, model)
    return {"status": "/".join(filter(None, (outcome.status, outcome.reason))), "baseline_mb": baseline,
            "peak_mb": peak_mb(), "cpu_s": time.process_time() - started}


def table(folder: Path) -> tuple[list[str], bool]:
    """The Markdown table, and whether every row kept within the budget."""
    rows = ["| input | file | status | peak RSS, model loaded | of which before the upload | CPU |",
            "| --- | --- | --- | --- | --- | --- |"]
    worst_mb = worst_cpu = 0.0
    for kind, make in KINDS.items():
        path = folder / "input"
        path.write_bytes(make())
        child = subprocess.run([sys.executable, "-m", "benchmarks.decode_memory", "--measure", str(path)],
                               cwd=REPO, capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.splitlines()[-1])
        worst_mb, worst_cpu = max(worst_mb, result["peak_mb"]), max(worst_cpu, result["cpu_s"])
        rows.append(f"| {kind} | {path.stat().st_size / 1e6:.2f} MB | {result['status']} | "
                    f"{result['peak_mb']:.0f} MB | {result['baseline_mb']:.0f} MB | {result['cpu_s']:.2f} s |")
    within = worst_mb < BUDGET_MB and worst_cpu <= BUDGET_CPU_S
    rows.append(f"\nWorst peak {worst_mb:.0f} MB and worst CPU {worst_cpu:.2f} s; budget {BUDGET_MB} MB and "
                f"{BUDGET_CPU_S:.0f} s: {'within' if within else 'OVER'}.")
    return rows, within


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the per-input child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory(prefix="deepskin-decode-memory-") as folder:
        rows, within = table(Path(folder))
    print("\n".join(rows))
    if not within:
        sys.exit(f"over the budget of {BUDGET_MB} MB and {BUDGET_CPU_S:.0f} s of CPU per upload")


if __name__ == "__main__":
    main()
