"""deepskin.core.metadata.strip_metadata: personal metadata out, the image (as preprocessing sees it) unchanged."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps
from support import LESIONS, contains_personal_data, photo_with_personal_metadata

from deepskin.core.metadata import strip_metadata

ORIENTATION = 0x0112


def seen(data: bytes) -> np.ndarray:
    """The pixels as deepskin.core.preprocess sees them: EXIF orientation applied."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_personal_metadata_is_stripped_and_the_image_kept(fmt):
    original = photo_with_personal_metadata(fmt)
    assert contains_personal_data(original)  # the fixture really carries it
    stripped = strip_metadata(original)
    assert contains_personal_data(stripped) == []
    image = Image.open(io.BytesIO(stripped))
    assert dict(image.getexif()) == {ORIENTATION: 6}  # only the tag that changes how the photo is seen
    assert not {"comment", "xmp", "Author", "Comment"} & set(image.info)
    assert np.array_equal(seen(stripped), seen(original))
    assert strip_metadata(stripped) == stripped


def test_a_jpeg_keeps_its_colour_profile_and_loses_what_follows_its_end():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.open(LESIONS[0]).save(out, "JPEG", icc_profile=profile)
    stripped = strip_metadata(out.getvalue() + b"PK\x03\x04 a zip or a second picture")
    assert Image.open(io.BytesIO(stripped)).info["icc_profile"] == profile
    assert stripped == out.getvalue()  # nothing else to strip: byte-identical


def test_a_photo_without_metadata_is_unchanged_and_unknown_bytes_pass_through():
    plain = LESIONS[1].read_bytes()
    assert np.array_equal(seen(strip_metadata(plain)), seen(plain))
    for data in (b"", b"GIF89a...", b"not an image", b"\xff\xd8\xff\xe1\xff"):
        strip_metadata(data)  # never raises
    assert strip_metadata(b"not an image") == b"not an image"
