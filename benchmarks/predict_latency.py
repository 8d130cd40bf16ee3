"""Predict-path benchmark on realistic uploads: prints a table, asserts nothing.

    python -m benchmarks.predict_latency [--model models/deepskin.onnx] [--runs 50]

Uploads are phone-sized JPEGs (3, 8 and 12 MP, EXIF-rotated) made from real HAM10000 images at 341x256
upscaled (the pixels are smooth, but decode and resize cost depend on size, not content), plus the
341x256 originals. Measured: cold start (a new process to its first answer), warm per-image latency of
decode + checks + preprocess + inference (+ heatmap), batch throughput, peak RSS; and the same network
in torch (eval, no_grad) for the ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepskin.core.bundle import BUNDLED_MODEL
from deepskin.core.model import Model
from deepskin.core.pipeline import assess

SAMPLES = Path(__file__).resolve().parents[2] / "shared/data/ham10000_fullres_sample/images"
FIXTURES = Path(__file__).resolve().parents[1] / "tests/fixtures/lesions"
SIZES = {"12 MP (4000x3000)": (4000, 3000), "8 MP (3264x2448)": (3264, 2448), "3 MP (2048x1536)": (2048, 1536)}


def source_images(n: int = 8) -> list[Image.Image]:
    folder = SAMPLES if SAMPLES.exists() else FIXTURES
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.jpg"))[:n]]


def phone_jpeg(image: Image.Image, size: tuple[int, int]) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # portrait phone photo: rotate on display
    buffer = io.BytesIO()
    image.resize(size, Image.BICUBIC).save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def percentiles(ms: list[float]) -> str:
    return f"{statistics.median(ms):7.1f} {np.percentile(ms, 95):7.1f}"


def cold_start(model_path: str, image: bytes) -> float:
    """Seconds from a new Python process to its first answer (imports + model load + one assessment)."""
    code = (
        "import sys, time; t = time.perf_counter();"
        "from deepskin.core.model import Model; from deepskin.core.pipeline import assess;"
        f"m = Model({model_path!r}); r = assess(sys.stdin.buffer.read(), m);"
        "print(time.perf_counter() - t, r.status)"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], input=image, capture_output=True, check=True).stdout.split()
    assert out[1] == b"done", out
    return time.perf_counter() - started


def torch_latency(model: Model, x: np.ndarray, runs: int) -> float | None:
    """Median ms of the same architecture in torch (eval, no_grad). The ONNX graph has BatchNorm folded into
    the convolutions, so the torch twin is built with ImageNet weights: latency does not depend on the values."""
    try:
        import torch

        from training.net import LiteConfig, pretrained
    except ImportError:
        return None
    variant = model.card.get("training", {}).get("config", {}).get("net", {}).get("variant", "lite0")
    net = pretrained(LiteConfig(variant=variant)).eval()
    torch.set_num_threads(model.session.get_session_options().intra_op_num_threads)
    tensor = torch.from_numpy(x[None])
    times = []
    with torch.no_grad():
        for i in range(runs + 3):
            started = time.perf_counter()
            net(tensor)
            if i >= 3:
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    model = Model(args.model)
    images = source_images()
    print(f"model {model.version}, input {model.spec.image_size}px, "
          f"{model.session.get_session_options().intra_op_num_threads} onnxruntime threads\n")
    print(f"{'upload':<22} {'bytes':>9}  {'p50 ms':>7} {'p95 ms':>7}   (decode + checks + preprocess + inference + heatmap)")
    uploads = {name: [phone_jpeg(img, size) for img in images] for name, size in SIZES.items()}
    uploads["341x256 JPEG"] = [phone_jpeg(img, img.size) for img in images]
    stage_times: dict[str, list[float]] = {}
    for name, batch in uploads.items():
        assess(batch[0], model)  # warm
        totals = []
        for i in range(args.runs):
            result = assess(batch[i % len(batch)], model)
            totals.append(sum(result.timings_ms.values()))
            for stage, ms in result.timings_ms.items():
                stage_times.setdefault(f"{name}: {stage}", []).append(ms)
        print(f"{name:<22} {np.mean([len(b) for b in batch]):9.0f}  {percentiles(totals)}")
    print("\nper stage, 12 MP (p50 / p95 ms): " + ", ".join(
        f"{k.split(': ')[1]} {statistics.median(v):.1f}/{np.percentile(v, 95):.1f}"
        for k, v in stage_times.items() if k.startswith("12 MP")))

    x = np.stack([np.zeros((3, model.spec.image_size, model.spec.image_size), np.float32)] * 32)
    model.score(x)
    started = time.perf_counter()
    for _ in range(3):
        model.score(x)
    throughput = 3 * len(x) / (time.perf_counter() - started)
    single = []
    for _ in range(args.runs):
        started = time.perf_counter()
        model.score(x[:1])
        single.append((time.perf_counter() - started) * 1000)
    onnx_ms = statistics.median(single)
    torch_ms = torch_latency(model, x[0], args.runs)
    print(f"\ninference only, batch 1: onnxruntime p50 {onnx_ms:.1f} ms"
          + (f", torch p50 {torch_ms:.1f} ms (torch / onnxruntime = {torch_ms / onnx_ms:.2f}x)" if torch_ms else ""))
    print(f"batch throughput (batch 32, inference only): {throughput:.0f} images/s")
    colds = [cold_start(str(model.path), uploads["12 MP (4000x3000)"][0]) for _ in range(3)]
    print(f"cold start (new process -> first answer on a 12 MP upload): median {statistics.median(colds):.2f} s "
          f"of {json.dumps([round(c, 2) for c in colds])}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
