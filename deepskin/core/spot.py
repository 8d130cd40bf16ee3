"""Whether two photos look like the same spot: a hint, never a proof.

A photo's fingerprint is taken from the square the model assesses (`preprocess`: upright RGB, training scale,
centre square): a 64-bit difference hash of its brightness pattern (dHash) and a coarse colour histogram.
Two fingerprints are compared by one distance in [0, 1]: the mean of the hashes' Hamming distance (as a
fraction of 64 bits) and of the histograms' L1 distance (halved, so also in [0, 1]).

Limits, stated where the hint is shown: it compares framing, brightness pattern and colour, not the lesion's
anatomy. A different spot photographed alike (same skin, same light) can look "the same", and the same spot
photographed at another distance, angle or light can look "different". The threshold was chosen on phone
photos of the same and of different lesions (PAD-UFES-20, `python -m benchmarks.same_spot`): below it fall 20%
of pairs of photos of one lesion, 11% of pairs of two lesions of one patient and 3% of pairs of lesions of different
patients. So "the photos look alike" is a weak yes, and above the threshold DeepSkin says only that it cannot
confirm, never that it is another spot. Dermoscopic photos look more alike still: 1 of the 15 pairs of the six
different lesions in tests/fixtures/lesions falls below it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from deepskin.core.preprocess import Preprocess, canonical, centre_square, to_rgb

HASH_SIDE = 8
COLOUR_BINS = 4  # per channel: 64 bins in all; coarse, so that light and white balance move it little
# Below this distance two photos "look alike" (the numbers above).
SAME_SPOT_BELOW = 0.30


def fingerprint(data: bytes) -> dict:
    """Image bytes (already accepted by deepskin.core.checks) -> {"dhash": 16 hex digits, "colour": 64 floats}."""
    with Image.open(io.BytesIO(data)) as image:
        square = centre_square(canonical(to_rgb(image), Preprocess()))
    grey = np.asarray(square.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.BILINEAR), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    dhash = int("".join("1" if bit else "0" for bit in bits), 2)
    rgb = np.asarray(square.resize((64, 64), Image.BILINEAR)) // (256 // COLOUR_BINS)
    index = (rgb[..., 0].astype(int) * COLOUR_BINS + rgb[..., 1]) * COLOUR_BINS + rgb[..., 2]
    counts = np.bincount(index.ravel(), minlength=COLOUR_BINS ** 3)
    return {"dhash": f"{dhash:016x}", "colour": [round(float(c), 4) for c in counts / counts.sum()]}


def distance(a: dict, b: dict) -> float:
    """0 for identical fingerprints, 1 for opposite hashes and disjoint colours."""
    hamming = (int(a["dhash"], 16) ^ int(b["dhash"], 16)).bit_count() / HASH_SIDE ** 2
    colour = float(np.abs(np.asarray(a["colour"]) - np.asarray(b["colour"])).sum()) / 2
    return (hamming + colour) / 2


def looks_same(a: dict, b: dict) -> bool:
    return distance(a, b) < SAME_SPOT_BELOW
