"""Fuzzing the decode/validate path (what `pipeline.assess` runs before the model) with hypothesis.

Every input must end as accepted (it would go on to the model) or as a named refusal of deepskin.core.checks; any
other exception is a bug. `strip_metadata`, which sees every HTTP upload before it is stored, must never raise
either. Derandomized, so a run is repeatable; the case counts are printed (docs/reliability.md lists them).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import LESIONS

from deepskin.core import checks
from deepskin.core.bundle import BUNDLED_MODEL, load_card
from deepskin.core.metadata import strip_metadata
from deepskin.core.pipeline import prepare
from deepskin.core.preprocess import Preprocess

NAMED_REFUSALS = {"empty", "too_large", "unsupported_format", "too_many_pixels", "corrupt", "too_small",
                  "too_dark", "overexposed", "blurry", "animated"}
CASES_PER_STRATEGY = 3400  # three strategies: over 10,000 cases
FUZZ = settings(max_examples=CASES_PER_STRATEGY, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# prepare() needs only the preprocessing contract from the model card, not the network.
MODEL_SPEC = SimpleNamespace(spec=Preprocess.from_dict(load_card(BUNDLED_MODEL)["preprocess"]))


def small_seed(fmt: str) -> bytes:
    """A real lesion photo at 96x72 (above MIN_SIDE): small, so that thousands of decodes stay fast."""
    out = io.BytesIO()
    Image.open(LESIONS[0]).convert("RGB").resize((96, 72)).save(out, fmt)
    return out.getvalue()


SEEDS = [small_seed(fmt) for fmt in ("JPEG", "PNG", "WEBP")]
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


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@st.composite
def absurd_header(draw) -> tuple[bytes, int]:
    """(A well-formed header declaring (mostly) absurd dimensions over next to no pixel data, its pixel count)."""
    kind = draw(st.sampled_from(["png", "jpeg", "webp"]))
    bits = {"png": 31, "jpeg": 16, "webp": 24}[kind]
    width, height = draw(st.integers(0, 2**bits - 1)), draw(st.integers(0, 2**bits - 1))
    if kind == "png":
        header = struct.pack(">IIBBBBB", width, height, draw(st.sampled_from([1, 2, 4, 8, 16])),
                             draw(st.sampled_from([0, 2, 3, 4, 6])), 0, 0, draw(st.integers(0, 1)))
        pixels = zlib.compress(draw(st.binary(max_size=256)))
        chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + chunks, width * height
    if kind == "jpeg":
        seed = SEEDS[0]
        sof = seed.index(b"\xff\xc0")  # baseline start-of-frame: precision, height, width (16 bits each)
        return seed[:sof + 5] + struct.pack(">HH", height, width) + seed[sof + 9:], width * height
    # VP8X stores canvas width - 1 and height - 1 in 24 bits each.
    canvas = struct.pack("<I", width)[:3] + struct.pack("<I", height)[:3]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([draw(st.integers(0, 255)), 0, 0, 0]) + canvas
    body = b"WEBP" + vp8x + draw(st.binary(max_size=64))
    return b"RIFF" + struct.pack("<I", len(body)) + body, (width + 1) * (height + 1)


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
def test_declared_dimensions_over_the_limit_are_never_accepted(header):
    data, declared_pixels = header
    outcome = validate(data)
    outcomes[outcome] += 1
    if declared_pixels > checks.MAX_PIXELS:
        assert outcome != "accepted"
