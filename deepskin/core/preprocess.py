"""The one place where an image becomes model input: used by training, export checks and serving.

Contract (it travels in the model card as `preprocess`):
  1. EXIF orientation applied, converted to 8-bit RGB (alpha composited on white).
  2. Canonical scale: downscaled so the shorter side is `canonical_short_side` (150 px), the scale of the
     HAM10000 copies the model was trained on; smaller images are left as they are.
  3. Centre square crop, resized to `image_size` (bilinear).
  4. (x - mean) / std per channel, channels first, float32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps


@dataclass(frozen=True)
class Preprocess:
    image_size: int = 192
    canonical_short_side: int = 150
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)  # EfficientNet-Lite's ImageNet contract
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            image_size=int(d["image_size"]),
            canonical_short_side=int(d["canonical_short_side"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB, whatever the mode (L, P, CMYK, RGBA, I;16, ...)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float32)  # in place below: one float copy, never float64
        peak = float(arr.max()) or 1.0
        arr *= 255.0  # before dividing: exact for 16-bit values, so the brightest pixel stays 255
        arr /= peak
        image = Image.fromarray(arr.astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def canonical(image: Image.Image, spec: Preprocess) -> Image.Image:
    """Bring an upload to the training scale (shorter side 150): a model trained on small copies has
    never seen the fine texture of a 12 MP photo, and this also makes everything after it cheap."""
    short = min(image.size)
    if short <= spec.canonical_short_side:
        return image
    scale = spec.canonical_short_side / short
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap makes JPEG draft-like box reduction first: fast on multi-megapixel uploads.
    return image.resize(size, Image.BILINEAR, reducing_gap=3.0)


def centre_square(image: Image.Image) -> Image.Image:
    short = min(image.size)
    left, top = (image.width - short) // 2, (image.height - short) // 2
    return image.crop((left, top, left + short, top + short))


def normalise(image: Image.Image, spec: Preprocess) -> np.ndarray:
    """A square RGB image -> (3, S, S) float32 model input."""
    if image.size != (spec.image_size, spec.image_size):
        image = image.resize((spec.image_size, spec.image_size), Image.BILINEAR)
    arr = np.array(image, dtype=np.float32)  # a writable copy, normalised in place
    arr -= np.asarray(spec.mean, np.float32)
    arr /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def model_input(image: Image.Image, spec: Preprocess) -> np.ndarray:
    """Any decoded image -> (3, S, S) float32: the evaluation and serving path."""
    return normalise(centre_square(canonical(to_rgb(image), spec)), spec)
