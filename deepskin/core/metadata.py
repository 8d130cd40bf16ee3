"""Strip personal metadata (EXIF with GPS, XMP, IPTC, comments, text chunks) from an image without re-encoding.

An upload is health data; its camera metadata can add a location, a device owner's name or a caption. What
we store must be the pixels and what decoding them needs (colour profile, JPEG tables), nothing else. The
one EXIF tag kept is Orientation, rewritten alone, because preprocessing applies it: the stripped copy is
seen exactly as the upload was.

JPEG: APPn segments other than JFIF (APP0), ICC_PROFILE (APP2) and Adobe (APP14, needed to decode CMYK) are
dropped, and so are COM segments and anything after the end-of-image marker (a multi-picture trailer with its
own EXIF, a polyglot's ZIP). PNG: only critical and colour chunks are kept, nothing after IEND. WebP: EXIF,
XMP and unknown chunks are dropped and the VP8X flags follow. Unknown formats come back unchanged; a
container that cannot be walked to its end is cut where it stops making sense (it would not decode anyway),
and one of more than `chunks.MAX_PARTS` parts after that many (the checks refuse it).
"""

from __future__ import annotations

import logging
import struct
import zlib

from PIL import Image

from deepskin.core import chunks

# Pillow logs every EXIF tag with its value at DEBUG whenever EXIF is read (orientation, here and in
# deepskin.core.preprocess): GPS positions and owners' names would reach the logs of whoever turns DEBUG on.
logging.getLogger("PIL").setLevel(logging.INFO)

ORIENTATION_TAG = 0x0112
EXIF_HEADER = b"Exif\x00\x00"

# Chunks that change how the pixels decode or look; text, eXIf, tIME and private chunks are not among them.
PNG_KEPT = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"bKGD"}
WEBP_KEPT = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ICCP", b"ANIM", b"ANMF"}
VP8X_EXIF, VP8X_XMP = 0x08, 0x04


def strip_metadata(data: bytes) -> bytes:
    """The same image without its metadata (see the module docstring); never raises."""
    if data.startswith(b"\xff\xd8"):
        return strip_jpeg(data)
    if data.startswith(chunks.PNG_SIGNATURE):
        return strip_png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return strip_webp(data)
    return data


def orientation_of(exif: bytes | None) -> int:
    """The EXIF Orientation (1-8) in a TIFF blob, 1 when absent or unreadable."""
    if not exif:
        return 1
    try:
        value = Image.Exif()
        value.load(exif)
        orientation = int(value.get(ORIENTATION_TAG, 1))
    # Pillow raises many types on malformed EXIF (struct, value, key, index, OS errors): all mean "no rotation".
    except Exception:  # noqa: BLE001  # pylint: disable=broad-except
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def orientation_only_tiff(orientation: int) -> bytes:
    """A minimal big-endian TIFF/EXIF block with one entry: Orientation."""
    entry = struct.pack(">HHIHH", ORIENTATION_TAG, 3, 1, orientation, 0)  # SHORT, count 1, value left-aligned
    return b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)


# --- JPEG -------------------------------------------------------------------------------------------------

def keep_application_segment(marker: int, payload: bytes) -> bool:
    """Of the APPn segments, those that decoding needs; comments (COM) never."""
    return (marker == 0xE0 and payload.startswith((b"JFIF\x00", b"JFXX\x00"))) or \
           (marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00")) or \
           (marker == 0xEE and payload.startswith(b"Adobe"))


def strip_jpeg(data: bytes) -> bytes:
    kept, exif = [], None
    for marker, start, end in chunks.parts("jpeg", data):
        if 0xE0 <= marker <= 0xEF or marker == chunks.JPEG_COM:
            payload = data[start + 4:end]
            if marker == 0xE1 and exif is None and payload.startswith(EXIF_HEADER):
                exif = payload[len(EXIF_HEADER):]
            if not keep_application_segment(marker, payload):
                continue
        kept.append(data[start:end])
    orientation = orientation_of(exif)
    head = [b"\xff\xd8"]
    if orientation != 1:
        body = EXIF_HEADER + orientation_only_tiff(orientation)
        head.append(b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body)
    return b"".join(head + kept)


# --- PNG --------------------------------------------------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def strip_png(data: bytes) -> bytes:
    kept, exif = [], None
    for kind, start, end in chunks.parts("png", data):
        if kind == b"eXIf" and exif is None:
            exif = data[start + 8:end - 4]
        if kind in PNG_KEPT:
            kept.append((kind, data[start:end]))
    orientation = orientation_of(exif)
    pieces = [chunk for _, chunk in kept]
    if orientation != 1 and kept and kept[0][0] == b"IHDR":
        pieces.insert(1, png_chunk(b"eXIf", orientation_only_tiff(orientation)))  # must come before IDAT
    return chunks.PNG_SIGNATURE + b"".join(pieces)


# --- WebP -------------------------------------------------------------------------------------------------

def strip_webp(data: bytes) -> bytes:
    kept, exif = [], None
    for kind, start, end in chunks.parts("webp", data):
        body = data[start + 8:end]
        if kind == b"EXIF" and exif is None:
            exif = body
        if kind in WEBP_KEPT:
            kept.append([kind, body])
    orientation = orientation_of(exif)
    for chunk in kept:
        if chunk[0] == b"VP8X" and chunk[1]:
            flags = chunk[1][0] & ~(VP8X_EXIF | VP8X_XMP)
            if orientation != 1:
                flags |= VP8X_EXIF
            chunk[1] = bytes((flags,)) + chunk[1][1:]
    if orientation != 1 and any(kind == b"VP8X" for kind, _ in kept):
        kept.append([b"EXIF", orientation_only_tiff(orientation)])  # EXIF comes after the image data
    payload = b"WEBP" + b"".join(kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)
                                 for kind, body in kept)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload
