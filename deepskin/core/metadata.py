"""Strip personal metadata (EXIF with GPS, XMP, IPTC, comments, text chunks) from an image without re-encoding.

An upload is health data; its camera metadata can add a location, a device owner's name or a caption. What
we store must be the pixels and what decoding them needs (colour profile, JPEG tables), nothing else. The
one EXIF tag kept is Orientation, rewritten alone, because preprocessing applies it: the stripped copy is
seen exactly as the upload was.

JPEG: APPn segments other than JFIF (APP0), ICC_PROFILE (APP2) and Adobe (APP14, needed to decode CMYK) are
dropped, and so are COM segments and anything after the end-of-image marker (a multi-picture trailer with its
own EXIF, a polyglot's ZIP). PNG: only critical and colour chunks are kept, nothing after IEND. WebP: EXIF,
XMP and unknown chunks are dropped and the VP8X flags follow. Unknown formats come back unchanged; a
container that cannot be walked to its end is cut where it stops making sense (it would not decode anyway).
"""

from __future__ import annotations

import logging
import struct
import zlib

from PIL import Image

# Pillow logs every EXIF tag with its value at DEBUG whenever EXIF is read (orientation, here and in
# deepskin.core.preprocess): GPS positions and owners' names would reach the logs of whoever turns DEBUG on.
logging.getLogger("PIL").setLevel(logging.INFO)

ORIENTATION_TAG = 0x0112
EXIF_HEADER = b"Exif\x00\x00"

JPEG_SOI, JPEG_EOI, JPEG_SOS = 0xD8, 0xD9, 0xDA
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that change how the pixels decode or look; text, eXIf, tIME and private chunks are not among them.
PNG_KEPT = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"bKGD"}
WEBP_KEPT = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ICCP", b"ANIM", b"ANMF"}
VP8X_EXIF, VP8X_XMP = 0x08, 0x04


def strip_metadata(data: bytes) -> bytes:
    """The same image without its metadata (see the module docstring); never raises."""
    if data.startswith(b"\xff\xd8"):
        return strip_jpeg(data)
    if data.startswith(PNG_SIGNATURE):
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

def keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if 0xE0 <= marker <= 0xEF:
        return (marker == 0xE0 and payload.startswith((b"JFIF\x00", b"JFXX\x00"))) or \
               (marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00")) or \
               (marker == 0xEE and payload.startswith(b"Adobe"))
    return marker != 0xFE  # COM


def strip_jpeg(data: bytes) -> bytes:
    parts, exif, pos, end = [], None, 2, len(data)
    while pos < end:
        if data[pos] != 0xFF:
            break  # not a marker where one must be: the rest cannot be decoded
        while pos < end and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker == JPEG_EOI:
            parts.append(b"\xff\xd9")
            break  # whatever follows (MPF images, a ZIP) is not this image
        if marker in JPEG_STANDALONE or marker == JPEG_SOI:
            parts.append(bytes((0xFF, marker)))
            continue
        if pos + 2 > end:
            break
        length = struct.unpack(">H", data[pos:pos + 2])[0]
        if length < 2 or pos + length > end:
            break
        payload = data[pos + 2:pos + length]
        segment = bytes((0xFF, marker)) + data[pos:pos + length]
        pos += length
        if marker == 0xE1 and exif is None and payload.startswith(EXIF_HEADER):
            exif = payload[len(EXIF_HEADER):]
        if keep_jpeg_segment(marker, payload):
            parts.append(segment)
        if marker == JPEG_SOS:
            scan_end = entropy_end(data, pos)
            parts.append(data[pos:scan_end])
            pos = scan_end
    orientation = orientation_of(exif)
    head = [b"\xff\xd8"]
    if orientation != 1:
        body = EXIF_HEADER + orientation_only_tiff(orientation)
        head.append(b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body)
    return b"".join(head + parts)


def entropy_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data after SOS ends: the next marker that is not stuffing (FF00) or RSTn."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


# --- PNG --------------------------------------------------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def strip_png(data: bytes) -> bytes:
    kept, exif, pos = [], None, len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        if pos + 12 + length > len(data):
            break
        if kind == b"eXIf" and exif is None:
            exif = data[pos + 8:pos + 8 + length]
        if kind in PNG_KEPT:
            kept.append((kind, data[pos:pos + 12 + length]))
        pos += 12 + length
        if kind == b"IEND":
            break
    orientation = orientation_of(exif)
    chunks = [chunk for _, chunk in kept]
    if orientation != 1 and kept and kept[0][0] == b"IHDR":
        chunks.insert(1, png_chunk(b"eXIf", orientation_only_tiff(orientation)))  # must come before IDAT
    return PNG_SIGNATURE + b"".join(chunks)


# --- WebP -------------------------------------------------------------------------------------------------

def strip_webp(data: bytes) -> bytes:
    chunks, exif, pos = [], None, 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        padded = size + (size & 1)
        if pos + 8 + size > len(data):
            break
        body = data[pos + 8:pos + 8 + size]
        if kind == b"EXIF" and exif is None:
            exif = body
        if kind in WEBP_KEPT:
            chunks.append([kind, body])
        pos += 8 + padded
    orientation = orientation_of(exif)
    for chunk in chunks:
        if chunk[0] == b"VP8X" and chunk[1]:
            flags = chunk[1][0] & ~(VP8X_EXIF | VP8X_XMP)
            if orientation != 1:
                flags |= VP8X_EXIF
            chunk[1] = bytes((flags,)) + chunk[1][1:]
    if orientation != 1 and any(kind == b"VP8X" for kind, _ in chunks):
        chunks.append([b"EXIF", orientation_only_tiff(orientation)])  # EXIF comes after the image data
    payload = b"WEBP" + b"".join(kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)
                                 for kind, body in chunks)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload
