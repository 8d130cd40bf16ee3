"""Fuzzing the decode/validate path (what `pipeline.assess` runs before the model) with hypothesis.

Every input must end as accepted (it would go on to the model) or as a named refusal of deepskin.core.checks; any
other exception is a bug. `strip_metadata`, which sees every HTTP upload before it is stored, must never raise
either. Large inputs too: files of up to 19 MB made of many empty parts or repeated scans, and the heaviest inputs
the checks accept, whose peak memory is measured in a process of their own. Derandomized, so a run is
repeatable; the case counts are printed (docs/reliability.md lists them).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import LESIONS, REPO

from benchmarks.decode_memory import (
    BUDGET_MB,
    KINDS,
    flooded_jpeg,
    flooded_png,
    flooded_webp,
    png_chunk,
    with_extra_scans,
)
from deepskin.core import checks, chunks
from deepskin.core.bundle import BUNDLED_MODEL, load_card
from deepskin.core.metadata import strip_metadata
from deepskin.core.pipeline import prepare
from deepskin.core.preprocess import Preprocess

NAMED_REFUSALS = {"empty", "too_large", "unsupported_format", "too_many_pixels", "corrupt", "too_small",
                  "too_dark", "overexposed", "blurry", "animated", "side_too_long", "extreme_aspect_ratio",
                  "too_many_scans", "too_many_chunks"}
CASES_PER_STRATEGY = 3400  # three strategies: over 10,000 cases
FUZZ = settings(max_examples=CASES_PER_STRATEGY, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LARGE = settings(FUZZ, max_examples=200)  # inputs of up to 19 MB
# prepare() needs only the preprocessing contract from the model card, not the network.
MODEL_SPEC = SimpleNamespace(spec=Preprocess.from_dict(load_card(BUNDLED_MODEL)["preprocess"]))


def small_seed(fmt: str, mode: str = "RGB", **options) -> bytes:
    """A real lesion photo at 96x72 (above MIN_SIDE): small, so that thousands of decodes stay fast."""
    out = io.BytesIO()
    Image.open(LESIONS[0]).convert(mode).resize((96, 72)).save(out, fmt, **options)
    return out.getvalue()


SEEDS = [small_seed(fmt) for fmt in ("JPEG", "PNG", "WEBP")]
PROGRESSIVE_SEEDS = [small_seed("JPEG", progressive=True, mode=mode) for mode in ("RGB", "CMYK")]
outcomes: Counter = Counter()


def validate(data: bytes) -> str:
    """'accepted' or the refusal's reason; anything else raised fails the test."""
    strip_metadata(data)
    try:
        image = checks.decode(data)
        square, _ = prepare(image, MODEL_SPEC)
        checks.photo_quality(square)
    except checks.Refusal as refusal:
        assert refusal.status in ("rejected", "unusable") and refusal.reason in NAMED_REFUSALS, refusal
        return refusal.reason
    return "accepted"


@st.composite
def mutated(draw) -> bytes:
    """A real JPEG, PNG or WebP with bit flips, overwrites, a truncation or a splice with another seed."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        # Half the edits land in the first 512 bytes, where the headers and segment lengths are.
        position = draw(st.integers(0, min(511, len(data) - 1)) | st.integers(0, len(data) - 1))
        edit = draw(st.sampled_from(["flip", "overwrite", "truncate", "splice"]))
        if edit == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif edit == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[position:position + len(chunk)] = chunk
        elif edit == "truncate":
            del data[position:]
        else:
            other = draw(st.sampled_from(SEEDS))
            data = data[:position] + other[draw(st.integers(0, len(other) - 1)):]
        if not data:
            break
    return bytes(data)


@st.composite
def absurd_header(draw) -> tuple[bytes, tuple[int, int]]:
    """A well-formed header declaring (mostly) absurd dimensions over next to no pixel data, and those dimensions."""
    kind = draw(st.sampled_from(["png", "jpeg", "progressive jpeg", "webp"]))
    bits = {"png": 31, "webp": 24}.get(kind, 16)
    width, height = draw(st.integers(0, 2**bits - 1)), draw(st.integers(0, 2**bits - 1))
    if kind == "png":
        header = struct.pack(">IIBBBBB", width, height, draw(st.sampled_from([1, 2, 4, 8, 16])),
                             draw(st.sampled_from([0, 2, 3, 4, 6])), 0, 0, draw(st.integers(0, 1)))
        pixels = zlib.compress(draw(st.binary(max_size=256)))
        stream = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + stream, (width, height)
    if kind.endswith("jpeg"):
        # A start-of-frame (baseline C0, progressive C2): precision, then height and width in 16 bits each.
        seed = draw(st.sampled_from(PROGRESSIVE_SEEDS)) if kind == "progressive jpeg" else SEEDS[0]
        sof = seed.index(b"\xff\xc2" if kind == "progressive jpeg" else b"\xff\xc0")
        return seed[:sof + 5] + struct.pack(">HH", height, width) + seed[sof + 9:], (width, height)
    # VP8X stores canvas width - 1 and height - 1 in 24 bits each.
    canvas = struct.pack("<I", width)[:3] + struct.pack("<I", height)[:3]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([draw(st.integers(0, 255)), 0, 0, 0]) + canvas
    body = b"WEBP" + vp8x + draw(st.binary(max_size=64))
    return b"RIFF" + struct.pack("<I", len(body)) + body, (width + 1, height + 1)


@st.composite
def many_parts(draw) -> tuple[bytes, int, int]:
    """A real photo with up to 19 MB of empty parts inserted (JPEG comments, PNG private or IDAT chunks, WebP
    chunks), or a progressive JPEG with its smallest scan repeated; how many parts were inserted (at least), and
    the scans."""
    kind = draw(st.sampled_from(["jpeg comments", "png chunks", "png idat", "webp chunks", "jpeg scans"]))
    count = draw(st.integers(1, 50) | st.integers(chunks.MAX_PARTS - 50, chunks.MAX_PARTS + 50)
                 | st.integers(1, 300_000 if kind == "jpeg scans" else 1_500_000))
    if kind == "jpeg scans":
        seed = draw(st.sampled_from(PROGRESSIVE_SEEDS))
        own = sum(part.kind == chunks.JPEG_SOS for part in chunks.jpeg_segments(seed))
        if draw(st.booleans()):  # a comment and a stray byte before the copies (the decoder skips it, and goes on)
            seed = seed[:-2] + b"\xff\xfe\x00\x02\x00" + seed[-2:]
        return with_extra_scans(seed, count=count), count, own + count
    flood = {"jpeg comments": lambda: flooded_jpeg(SEEDS[0], count),
             "png chunks": lambda: flooded_png(SEEDS[1], b"prVt", count),
             "png idat": lambda: flooded_png(SEEDS[1], b"IDAT", count),
             "webp chunks": lambda: flooded_webp(SEEDS[2], count)}[kind]
    return flood(), count, 1 if kind == "jpeg comments" else 0


@pytest.fixture(scope="module", autouse=True)
def report_outcomes(figure):
    yield
    print(f"\nfuzz outcomes over {sum(outcomes.values())} cases: {dict(outcomes.most_common())}")
    figure("fuzz_cases", sum(outcomes.values()))
    figure("fuzz_outcomes", "\n".join(["| outcome | cases |", "| --- | --- |",
                                       *(f"| {outcome} | {count:,} |" for outcome, count in outcomes.most_common())]))


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_end_as_a_named_refusal(data):
    outcomes[validate(data)] += 1


@FUZZ
@given(mutated())
def test_mutated_real_images_end_as_accepted_or_a_named_refusal(data):
    outcomes[validate(data)] += 1


@FUZZ
@given(absurd_header())
def test_declared_dimensions_over_the_limits_are_never_accepted(header):
    data, (width, height) = header
    outcome = validate(data)
    outcomes[outcome] += 1
    if (width * height > checks.MAX_PIXELS or max(width, height) > checks.MAX_SIDE
            or max(width, height) > checks.MAX_ASPECT * min(width, height)):
        assert outcome != "accepted"


@LARGE
@given(many_parts())
def test_files_of_more_parts_or_scans_than_a_photo_has_are_refused_by_name(case):
    data, parts, scans = case
    outcome = validate(data)
    outcomes[outcome] += 1
    if parts > chunks.MAX_PARTS:
        assert outcome == "too_many_chunks"
    elif scans > checks.MAX_SCANS:  # (unless the photo's own parts take it over MAX_PARTS)
        assert outcome in ("too_many_scans", "too_many_chunks")


@pytest.mark.parametrize("kind", ["49 MP progressive JPEG, 20 scans (10 extra)", "24 MP progressive CMYK JPEG",
                                  "1199x9592 (1:8) RGBA PNG"])
def test_the_heaviest_accepted_inputs_peak_within_the_memory_budget(kind, tmp_path):
    """The benchmark's own measurement (a fresh process with the model loaded), for the accepted inputs that
    decode the most: a progressive JPEG's coefficients, an image too thin to be shrunk. Its CPU time is left to
    the benchmark: on a shared machine it is not a stable figure."""
    path = tmp_path / "input"
    path.write_bytes(KINDS[kind]())
    child = subprocess.run([sys.executable, "-m", "benchmarks.decode_memory", "--measure", str(path)],
                           cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(child.stdout.splitlines()[-1])
    assert result["status"] in ("done", "unusable/not_a_lesion", "unusable/unclear"), result
    assert result["peak_mb"] < 0.9 * BUDGET_MB, result
