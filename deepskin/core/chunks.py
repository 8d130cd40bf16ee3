"""The parts of an image file, walked without decoding: a JPEG's marker segments, a PNG's or a WebP's chunks.

`metadata` strips what it finds here and `checks` counts it. A walk is in Python, and so is Pillow's own walk of
a JPEG's or PNG's header, so both stop at `MAX_PARTS`: a 20 MB file of empty comment segments has 5 million
of them and would otherwise take seconds and hundreds of MB before a pixel is decoded. A photo has a few dozen
parts; a large PNG written in 8 KB IDAT chunks a few thousand.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from itertools import islice
from typing import NamedTuple

MAX_PARTS = 20_000

JPEG_SOI, JPEG_EOI, JPEG_SOS, JPEG_COM = 0xD8, 0xD9, 0xDA, 0xFE
JPEG_STANDALONE = {0x01, JPEG_SOI, *range(0xD0, 0xD8)}  # TEM, SOI and RSTn carry no length
# The next marker as libjpeg finds it: past stray bytes (it warns and goes on), stuffed FF 00 and fill FF bytes,
# the first FF followed by anything else. Inside a scan's entropy-coded data FF D0-D7 (a restart marker) belongs
# to the scan too. Regular expressions find them in C: a loop over every FF took seconds on a scan of stuffed bytes.
_MARKER = re.compile(rb"\xff[^\x00\xff]")
_SEGMENT_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Part(NamedTuple):
    kind: bytes | int  # a chunk's four-letter type, or a JPEG segment's marker
    start: int  # data[start:end] is the whole part: a JPEG segment from its FF, a chunk from its length field
    end: int  # after a JPEG start-of-scan segment, the end of the scan's entropy-coded data


def parts(kind: str, data: bytes) -> list[Part]:
    """The parts of `data` (a "jpeg", "png" or "webp"), at most MAX_PARTS + 1: one more than is accepted, so
    that a caller can tell that there were too many. Ends early where the structure stops making sense."""
    walk = {"jpeg": jpeg_segments, "png": png_chunks, "webp": webp_chunks}[kind]
    return list(islice(walk(data), MAX_PARTS + 1))


def jpeg_segments(data: bytes) -> Iterator[Part]:
    """The segments after SOI up to and including EOI, found as the decoder finds them (so that a stray byte
    cannot hide scans from a count); whatever follows EOI (a phone's multi-picture previews, a polyglot's
    archive) is not this image."""
    pos = 2
    while found := _MARKER.search(data, pos):
        start, marker = found.start(), data[found.start() + 1]
        pos = start + 2
        if marker != JPEG_EOI and marker not in JPEG_STANDALONE:
            length = int.from_bytes(data[pos:pos + 2], "big")
            if length < 2 or pos + length > len(data):
                return  # truncated: it would not decode
            pos += length
            if marker == JPEG_SOS:
                scan_end = _SEGMENT_AFTER_SCAN.search(data, pos)
                pos = scan_end.start() if scan_end else len(data)
        yield Part(marker, start, pos)
        if marker == JPEG_EOI:
            return


def png_chunks(data: bytes) -> Iterator[Part]:
    """The chunks after the signature up to and including IEND: length, type, body, CRC."""
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return
        yield Part(kind, pos, end)
        if kind == b"IEND":
            return
        pos = end


def webp_chunks(data: bytes) -> Iterator[Part]:
    """The chunks after the RIFF header: type, size, body (without the padding byte of an odd size)."""
    pos = 12
    while pos + 8 <= len(data):
        kind, size = struct.unpack("<4sI", data[pos:pos + 8])
        end = pos + 8 + size
        if end > len(data):
            return
        yield Part(kind, pos, end)
        pos = end + (size & 1)
