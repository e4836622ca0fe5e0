"""Inspect an image payload cheaply: its format, size and frame count, or why it is refused.

The classifier behind this service crashes on malformed images, so none may reach it. The
checks run in a fixed order and read only headers, never pixels:

1. the magic bytes name the format (``not_an_image``); it must agree with the declared media
   type (``type_mismatch``) and be one the policy allows (``format_not_allowed``);
2. a walk over that format's container structure -- PNG chunks, JPEG marker segments, GIF
   blocks, WebP RIFF chunks, BMP headers, TIFF directories -- in pure Python over headers
   only, finds where the file ends before its structure does (``truncated``) or breaks its
   rules (``corrupt``), and yields the declared dimensions and frame count;
3. those are held against the limits (``too_large``, ``too_many_frames``): a PNG declaring
   50,000 x 50,000 pixels is refused here, before anything image-sized is allocated;
4. Pillow, the decoder the classifier uses, opens the header (lazily: no pixel is decoded) and
   must agree on the format and the size (``corrupt`` otherwise). This catches what the walk
   does not model (pixel modes and compressions the decoder cannot handle, CRCs of PNG
   chunks before the image data) and any disagreement between the two parsers that would let
   the decoder see a larger image than step 3 checked. It runs after step 3 so that Pillow
   never sees a bomb.

Trailing data is refused (``corrupt``): the data must end exactly where the image does (after
PNG's IEND chunk, JPEG's end-of-image marker, GIF's trailer, WebP's RIFF size, BMP's file size),
so no polyglot file (an image with a ZIP or HTML appended) passes as an image. TIFF has no end
to check. A JPEG whose primary image is followed by further JPEG images (MPO, "Ultra HDR" gain
maps) ends with an end-of-image marker and is accepted; its frame count is 1, the primary image.

A file of very many tiny parts (chunks, segments, blocks, directory entries) is refused as
``corrupt`` past a cap no real file reaches: it costs a few milliseconds at most, not the hundreds
that a megabyte of empty parts would cost this module and Pillow.

Not checked: entropy-coded image data (PNG IDAT contents, JPEG scans, GIF LZW, VP8 bitstreams)
-- validating it means decoding it. The CRCs of PNG image data chunks are not verified either
(about 250 us per MB, and a crafted file has valid ones).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from PIL import Image

FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "gif", "bmp", "tiff")

MEDIA_TYPES: Mapping[str, str] = MappingProxyType({fmt: f"image/{fmt}" for fmt in FORMATS})

# Media types clients send for FORMATS, beyond the canonical ones; any other declared type is a
# mismatch. None and application/octet-stream declare nothing.
_DECLARED_FORMATS: Mapping[str, str] = MappingProxyType(
    {media_type: fmt for fmt, media_type in MEDIA_TYPES.items()}
    | {"image/jpg": "jpeg", "image/pjpeg": "jpeg", "image/x-ms-bmp": "bmp", "image/tif": "tiff"}
)
_UNDECLARED = frozenset({"", "application/octet-stream"})


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What the policy accepts; every frame of a multi-frame image is held to the size limits."""

    formats: frozenset[str] = frozenset(FORMATS)
    max_width: int = 16384
    max_height: int = 16384
    max_pixels: int = 40_000_000
    max_frames: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.formats) - set(FORMATS)
        if unknown:
            raise ValueError(f"unknown image formats {sorted(unknown)}; known: {list(FORMATS)}")
        if min(self.max_width, self.max_height, self.max_pixels, self.max_frames) < 1:
            raise ValueError("image limits must be at least 1")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An accepted image: its format (one of FORMATS), the size a decoder opens it at, frames."""

    format: str
    width: int
    height: int
    frames: int


class ImageRejected(Exception):
    """The payload is refused: an HTTP status, a stable reason code and a message for the client.

    Reasons: not_an_image, format_not_allowed, type_mismatch (415); truncated, corrupt (422);
    too_large, too_many_frames (413).
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def sniff_format(data: bytes) -> str | None:
    """The format whose magic bytes start ``data``, or None; nothing beyond the magic is read."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    # "BM" alone starts too much text; a known info-header size makes it a bitmap.
    if data.startswith(b"BM") and data[14:18] in _BMP_INFO_SIZES:
        return "bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def inspect_image(data: bytes, limits: ImageLimits, declared_type: str | None = None) -> ImageInfo:
    """The facts about ``data``, or :class:`ImageRejected` naming what is wrong with it.

    ``declared_type`` is the media type the client declared (a Content-Type, parameters
    allowed); None or application/octet-stream declares nothing.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(
            415, "not_an_image", f"the data is not an image in any of the formats {_names(FORMATS)}"
        )
    _check_declared(fmt, declared_type)
    if fmt not in limits.formats:
        allowed = _names(tuple(f for f in FORMATS if f in limits.formats)) or "none"
        raise ImageRejected(
            415, "format_not_allowed", f"{_name(fmt)} images are not allowed; allowed: {allowed}"
        )
    layout = _WALKS[fmt](data)
    _check_limits(fmt, layout, limits)
    _check_decoder_agrees(data, fmt, layout.sizes[0])
    width, height = layout.sizes[0]
    return ImageInfo(fmt, width, height, layout.frames)


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a structural walk found.

    ``sizes`` are the distinct sizes of the frames a decoder produces, the first frame's first
    (TIFF pages may differ; the other formats draw every frame on one canvas).
    """

    frames: int
    sizes: tuple[tuple[int, int], ...]


def declared_format(declared_type: str) -> str | None:
    """The format a media type names (``image/jpg`` → ``jpeg``), or ``None``."""
    return _DECLARED_FORMATS.get(declared_type.partition(";")[0].strip().lower())


def _check_declared(fmt: str, declared_type: str | None) -> None:
    if declared_type is None:
        return
    media_type = declared_type.partition(";")[0].strip().lower()
    if media_type in _UNDECLARED or declared_format(media_type) == fmt:
        return
    raise ImageRejected(
        415,
        "type_mismatch",
        f"declared content type {media_type[:100]!r} but the data is a {_name(fmt)} image",
    )


def _check_limits(fmt: str, layout: _Layout, limits: ImageLimits) -> None:
    for width, height in layout.sizes:
        if (
            width > limits.max_width
            or height > limits.max_height
            or width * height > limits.max_pixels
        ):
            raise ImageRejected(
                413,
                "too_large",
                f"{_name(fmt)} image is {width} x {height} ({width * height} pixels); the limits"
                f" are {limits.max_width} x {limits.max_height} and {limits.max_pixels} pixels",
            )
    if layout.frames > limits.max_frames:
        raise ImageRejected(
            413,
            "too_many_frames",
            f"{_name(fmt)} image has {layout.frames} frames; the limit is {limits.max_frames}",
        )


# Pillow's name for each format. Pillow opens a JPEG with a multi-picture index as "MPO".
_PILLOW_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {fmt: (fmt.upper(),) for fmt in FORMATS} | {"jpeg": ("JPEG", "MPO")}
)


def _check_decoder_agrees(data: bytes, fmt: str, size: tuple[int, int]) -> None:
    """Pillow opens the header (no pixels) and sees the format and size the walk found.

    Pillow's own decompression-bomb check (its global MAX_IMAGE_PIXELS, left untouched) can only
    fire here when the policy's limits exceed Pillow's; it is then a refusal too.
    """
    try:
        with Image.open(io.BytesIO(data), formats=_PILLOW_NAMES[fmt][:1]) as image:
            opened = image.format, image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(413, "too_large", f"{_name(fmt)} image: {exc}") from exc
    except Exception as exc:  # Pillow raises many types on bad headers; every one is a refusal.
        raise _corrupt(fmt, f"the image decoder cannot open it ({str(exc)[:200]})") from exc
    if opened[0] not in _PILLOW_NAMES[fmt] or opened[1] != size:
        raise _corrupt(fmt, f"the image decoder reads it as {opened[0]} {opened[1]}, not {size}")


def _name(fmt: str) -> str:
    return fmt.upper()


def _names(formats: tuple[str, ...]) -> str:
    return ", ".join(_name(fmt) for fmt in formats)


def _truncated(fmt: str, what: str) -> ImageRejected:
    return ImageRejected(422, "truncated", f"{_name(fmt)} image is truncated: {what}")


def _corrupt(fmt: str, what: str) -> ImageRejected:
    return ImageRejected(422, "corrupt", f"{_name(fmt)} image is corrupt: {what}")


# Caps on the parts of a file, so that one made of many tiny parts cannot cost much Python work,
# this module's or Pillow's (some microseconds per part). A walk visits at most _MAX_PARTS chunks,
# blocks, directories and entries (libpng's 8 KB IDAT chunks reach 4096 at 32 MB; GIF's data
# sub-blocks grow with the file and have their own budget). Pillow reads the header parts when it
# opens a file -- PNG chunks before the image data, JPEG segments before the scan, the entries of
# a TIFF directory -- and real files have a few dozen.
_MAX_PARTS = 4096
_MAX_HEADER_PARTS = 256


def _too_many(fmt: str, limit: int, parts: str) -> ImageRejected:
    return _corrupt(fmt, f"more than {limit} {parts}")


def _need(fmt: str, data: bytes, end: int, what: str, at: int | None = None) -> None:
    """Refuse as truncated unless ``data`` reaches ``end``, where ``what`` (starting ``at``)
    ends. The message is formatted only on failure: walks call this in their loops."""
    if end > len(data):
        where = "" if at is None else f" at byte {at}"
        raise _truncated(fmt, f"{what}{where} ends at byte {end}, the data at byte {len(data)}")


def _ends_at(fmt: str, data: bytes, end: int, what: str) -> None:
    """Refuse as truncated or corrupt unless ``data`` ends exactly at ``end``."""
    _need(fmt, data, end, what)
    if end < len(data):
        raise _corrupt(fmt, f"{len(data) - end} bytes of data after {what}")


# --- PNG: signature, IHDR, then chunks (length, type, data, CRC) up to IEND.

# Bit depths allowed for each colour type (PNG spec 11.2.2); others cannot be decoded.
_PNG_BIT_DEPTHS: Mapping[int, frozenset[int]] = MappingProxyType(
    {
        0: frozenset({1, 2, 4, 8, 16}),
        2: frozenset({8, 16}),
        3: frozenset({1, 2, 4, 8}),
        4: frozenset({8, 16}),
        6: frozenset({8, 16}),
    }
)
_PNG_CRITICAL = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND"})
_PNG_ANIMATION = frozenset({b"acTL", b"fcTL", b"fdAT"})
_PNG_FIRST_CHUNK = 33  # the signature (8) and the IHDR chunk (12 + 13)

_PNG_CHUNK_HEADER = struct.Struct(">I4s")  # data length, type; then the data and a CRC
_PngChunk = tuple[bytes, int, int]  # type, data offset, data length


def _walk_png(data: bytes) -> _Layout:
    width, height, colour_type = _png_header(data)
    chunks = _png_chunks(data)
    types = [ctype for ctype, _, _ in chunks]
    _check_png_chunk_order(types, colour_type)
    animated = not _PNG_ANIMATION.isdisjoint(types)
    frames = _png_frames(data, chunks, width, height) if animated else 1
    return _Layout(frames, ((width, height),))


def _png_header(data: bytes) -> tuple[int, int, int]:
    """Width, height and colour type from an IHDR that must come first, with a valid CRC."""
    _need("png", data, _PNG_FIRST_CHUNK, "the IHDR chunk")
    if data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise _corrupt("png", "the first chunk is not a 13-byte IHDR")
    if zlib.crc32(data[12:29]) != struct.unpack_from(">I", data, 29)[0]:
        raise _corrupt("png", "the IHDR chunk's CRC does not match")
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack_from(
        ">IIBBBBB", data, 16
    )
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise _corrupt("png", f"IHDR declares {width} x {height} pixels")
    if depth not in _PNG_BIT_DEPTHS.get(colour_type, ()):
        raise _corrupt("png", f"bit depth {depth} with colour type {colour_type}")
    if compression or filtering or interlace > 1:
        raise _corrupt("png", "unknown compression, filter or interlace method")
    return width, height, colour_type


def _png_chunks(data: bytes) -> list[_PngChunk]:
    """The chunks after IHDR, IEND last; IEND must end the data."""
    chunks: list[_PngChunk] = []
    pos, size = _PNG_FIRST_CHUNK, len(data)
    while True:  # the hot loop: a libpng-written 1 MB PNG has some 130 chunks
        if pos + 12 > size:
            raise _truncated("png", f"a chunk at byte {pos}, the data ends at byte {size}")
        length, ctype = _PNG_CHUNK_HEADER.unpack_from(data, pos)
        end = pos + 12 + length
        if end > size or length >= 2**31 or not ctype.isalpha():
            raise _png_chunk_error(data, pos)
        chunks.append((ctype, pos + 8, length))
        if ctype == b"IEND":
            _ends_at("png", data, end, "the IEND chunk")
            return chunks
        if len(chunks) == _MAX_PARTS:
            raise _too_many("png", _MAX_PARTS, "chunks")
        pos = end


def _png_chunk_error(data: bytes, pos: int) -> ImageRejected:
    length, ctype = _PNG_CHUNK_HEADER.unpack_from(data, pos)
    if length >= 2**31 or not ctype.isalpha():
        return _corrupt("png", f"invalid chunk header at byte {pos}")
    return _truncated(
        "png",
        f"chunk {ctype.decode()} at byte {pos} needs {length + 12} bytes, has {len(data) - pos}",
    )


def _check_png_chunk_order(types: list[bytes], colour_type: int) -> None:
    if b"IDAT" not in types:
        raise _corrupt("png", "no IDAT chunk")
    first_idat = types.index(b"IDAT")
    if first_idat > _MAX_HEADER_PARTS:
        raise _too_many("png", _MAX_HEADER_PARTS, "chunks before the image data")
    last_idat = len(types) - 1 - types[::-1].index(b"IDAT")
    # Decoders stop reading image data at the first other chunk.
    if types.count(b"IDAT") != last_idat - first_idat + 1:
        raise _corrupt("png", "IDAT chunks are not consecutive")
    # An unknown critical chunk (uppercase first letter) means "do not decode".
    critical = {ctype for ctype in set(types) if ctype[:1].isupper()}
    if critical - _PNG_CRITICAL or types.count(b"IHDR"):
        raise _corrupt("png", f"unexpected critical chunks {sorted(critical)}")
    if colour_type == 3 and b"PLTE" not in types[:first_idat]:
        raise _corrupt("png", "a palette image without a PLTE chunk before its image data")


def _png_frames(data: bytes, chunks: list[_PngChunk], width: int, height: int) -> int:
    """The frame count of an animated PNG (APNG), declared by its acTL chunk.

    Each frame is an fcTL chunk (its region within the canvas) followed by its data (IDAT or
    fdAT chunks); fcTL and fdAT chunks carry one sequence number, counting up from 0.
    """
    actl = [(offset, length) for ctype, offset, length in chunks if ctype == b"acTL"]
    animation = [chunk for chunk in chunks if chunk[0] in (b"fcTL", b"fdAT", b"IDAT")]
    if len(actl) != 1 or actl[0][1] != 8:
        raise _corrupt("png", "animation chunks without exactly one 8-byte acTL")
    declared: int = struct.unpack_from(">I", data, actl[0][0])[0]
    frames, sequence, awaiting_data = 0, 0, False
    for ctype, offset, length in animation:
        if ctype != b"IDAT":
            if length < 4 or struct.unpack_from(">I", data, offset)[0] != sequence:
                raise _corrupt("png", f"{ctype.decode()} chunk out of sequence")
            sequence += 1
        if ctype == b"fcTL":
            if awaiting_data or length != 26:
                raise _corrupt("png", "an fcTL chunk of the wrong size or without frame data")
            w, h, x, y = struct.unpack_from(">IIII", data, offset + 4)
            if not (w and h and x + w <= width and y + h <= height):
                raise _corrupt("png", f"a {w} x {h} frame at ({x}, {y}) outside {width} x {height}")
            frames += 1
            awaiting_data = True
        elif ctype == b"fdAT" and not frames:
            raise _corrupt("png", "an fdAT chunk before the first fcTL")
        else:
            awaiting_data = False
    if awaiting_data or not frames or frames != declared:
        raise _corrupt("png", f"acTL declares {declared} frames, {frames} have data")
    return frames


# --- JPEG: SOI, marker segments (FF, marker, 2-byte length) up to SOS, scan data, EOI.

# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_DQT = 0xDB
_JPEG_SOS = 0xDA
_JPEG_EOI = b"\xff\xd9"


def _walk_jpeg(data: bytes) -> _Layout:
    size: tuple[int, int] | None = None
    has_quantization = False
    pos = 2
    for _ in range(_MAX_HEADER_PARTS):
        _need("jpeg", data, pos + 2, "the marker", pos)
        if data[pos] != 0xFF:
            raise _corrupt("jpeg", f"no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill bytes before a marker: count toward the parts
            pos += 1
            continue
        # Before the first scan only segments with a length may appear: not RSTn, SOI or EOI.
        if not (0xC0 <= marker <= 0xFE) or 0xD0 <= marker <= 0xD9:
            raise _corrupt("jpeg", f"unexpected marker FF{marker:02X} before the first scan")
        _need("jpeg", data, pos + 4, "the segment", pos)
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2:
            raise _corrupt("jpeg", f"segment length {length} at byte {pos}")
        _need("jpeg", data, end, "the segment", pos)
        if marker in _JPEG_SOF:
            if size is not None:
                raise _corrupt("jpeg", "more than one frame header (SOF)")
            size = _jpeg_frame_size(data, pos + 4, length - 2)
        has_quantization |= marker == _JPEG_DQT
        if marker == _JPEG_SOS:
            break
        pos = end
    else:
        raise _too_many("jpeg", _MAX_HEADER_PARTS, "segments before the scan")
    if size is None or not has_quantization:
        raise _corrupt("jpeg", "no frame header (SOF) or quantization table before the scan")
    _jpeg_check_end(data, end)
    return _Layout(1, (size,))


def _jpeg_frame_size(data: bytes, offset: int, length: int) -> tuple[int, int]:
    """Width and height from a SOF segment's data."""
    if length < 6:
        raise _corrupt("jpeg", "frame header too short")
    height, width, components = struct.unpack_from(">HHB", data, offset + 1)
    if length != 6 + 3 * components or not components:
        raise _corrupt("jpeg", f"frame header length {length} for {components} components")
    # A zero height would be defined later by a DNL marker, which decoders do not support.
    if not (width and height):
        raise _corrupt("jpeg", f"frame header declares {width} x {height} pixels")
    return width, height


def _jpeg_check_end(data: bytes, scan: int) -> None:
    """The data must end with EOI. Scan data stuffs every FF with 00, so a cut never ends
    with FF D9; finding one earlier means data was appended after the image instead."""
    if data.endswith(_JPEG_EOI, scan):
        return
    if data.rfind(_JPEG_EOI, scan) >= 0:
        raise _corrupt("jpeg", "data after the end-of-image marker")
    raise _truncated("jpeg", "no end-of-image marker after the scan")


# --- GIF: header, logical screen, blocks (extensions and images, each data in length-prefixed
# sub-blocks) up to the trailer.

_GIF_EXTENSION = 0x21
_GIF_IMAGE = 0x2C
_GIF_TRAILER = 0x3B


def _walk_gif(data: bytes) -> _Layout:
    _need("gif", data, 13, "the logical screen descriptor")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    if not (width and height):
        raise _corrupt("gif", f"logical screen of {width} x {height} pixels")
    pos = 13 + _gif_colour_table_size(flags)
    frames = 0
    # Image data comes in sub-blocks of at most 255 bytes, so their number grows with the file:
    # the parts budget (blocks and sub-blocks) grows by one per 128 bytes.
    parts_left = _MAX_PARTS + len(data) // 128
    while True:
        _need("gif", data, pos + 1, "the block before the trailer")
        block = data[pos]
        if block == _GIF_TRAILER:
            break
        if block == _GIF_EXTENSION:
            pos, sub_blocks = _gif_sub_blocks(data, pos + 2, parts_left)  # introducer, label
        elif block == _GIF_IMAGE:
            pos, sub_blocks = _gif_image(data, pos, (width, height), parts_left)
            frames += 1
        else:
            raise _corrupt("gif", f"unknown block 0x{block:02X} at byte {pos}")
        parts_left -= 1 + sub_blocks
        if parts_left < 0:
            raise _corrupt("gif", "more blocks and sub-blocks than one per 128 bytes")
    _ends_at("gif", data, pos + 1, "the trailer")
    if not frames:
        raise _corrupt("gif", "no image")
    return _Layout(frames, ((width, height),))


def _gif_colour_table_size(flags: int) -> int:
    return 3 << ((flags & 0x07) + 1) if flags & 0x80 else 0


def _gif_image(data: bytes, pos: int, screen: tuple[int, int], max_parts: int) -> tuple[int, int]:
    """The position after the image at ``pos``, which must lie within the logical screen, and
    the number of its data sub-blocks."""
    _need("gif", data, pos + 10, "the image descriptor", pos)
    left, top, width, height, flags = struct.unpack_from("<HHHHB", data, pos + 1)
    # Pillow grows the canvas to fit a frame outside the screen: that would bypass the limits.
    if not (width and height and left + width <= screen[0] and top + height <= screen[1]):
        raise _corrupt(
            "gif", f"a {width} x {height} image at ({left}, {top}) outside the {screen} screen"
        )
    pos += 10 + _gif_colour_table_size(flags)
    _need("gif", data, pos + 1, "the image data")
    if not 2 <= data[pos] <= 8:
        raise _corrupt("gif", f"LZW minimum code size {data[pos]}")
    return _gif_sub_blocks(data, pos + 1, max_parts)


def _gif_sub_blocks(data: bytes, pos: int, max_count: int) -> tuple[int, int]:
    """The position after the sub-blocks at ``pos`` and their zero-length terminator, and how
    many there were (at most ``max_count``, or the file is refused)."""
    end = len(data)
    for count in range(max_count + 1):  # the hottest loop: 4,000 sub-blocks in a 1 MB GIF
        if pos >= end:
            raise _truncated("gif", "the data ends inside a run of data sub-blocks")
        size = data[pos]
        pos += 1 + size
        if not size:
            return pos, count
    raise _corrupt("gif", "more blocks and sub-blocks than one per 128 bytes")


# --- WebP: RIFF header, then chunks (fourcc, little-endian size, data padded to even length):
# one VP8 (lossy) or VP8L (lossless) bitstream, or VP8X with a canvas and, if animated, one
# ANMF chunk per frame holding that frame's bitstream.

_WebpChunk = tuple[bytes, int, int]  # fourcc, data offset, data length
_WEBP_ANIMATED = 0x02  # VP8X flag


def _walk_webp(data: bytes) -> _Layout:
    _ends_at("webp", data, 8 + struct.unpack_from("<I", data, 4)[0], "the RIFF size")
    chunks = _riff_chunks(data, 12, len(data), _MAX_PARTS)
    if not chunks or chunks[0][0] != b"VP8X":
        return _Layout(1, (_webp_bitstream_size(data, chunks),))
    offset, length = chunks[0][1:]
    if length < 10:
        raise _corrupt("webp", "VP8X chunk too short")
    canvas = (1 + _u24(data, offset + 4), 1 + _u24(data, offset + 7))
    frames = [(offset, length) for fourcc, offset, length in chunks if fourcc == b"ANMF"]
    if not data[offset] & _WEBP_ANIMATED:
        if frames or _webp_bitstream_size(data, chunks) != canvas:
            raise _corrupt("webp", f"a still image that does not fill its {canvas} canvas")
        return _Layout(1, (canvas,))
    if not frames:
        raise _corrupt("webp", "animated without frames")
    parts_left = _MAX_PARTS - len(chunks)
    for frame_offset, frame_length in frames:
        parts_left -= _check_webp_frame(data, frame_offset, frame_length, canvas, parts_left)
    return _Layout(len(frames), (canvas,))


def _riff_chunks(data: bytes, pos: int, end: int, max_chunks: int) -> list[_WebpChunk]:
    """The chunks from ``pos`` to ``end``; more than ``max_chunks`` of them are refused."""
    chunks: list[_WebpChunk] = []
    while pos < end:
        _need("webp", data, pos + 8, "the chunk header", pos)
        fourcc, length = struct.unpack_from("<4sI", data, pos)
        chunk_end = pos + 8 + length + (length & 1)
        if chunk_end > end:
            raise _truncated("webp", f"chunk {fourcc!r} at byte {pos} runs past its container")
        chunks.append((fourcc, pos + 8, length))
        if len(chunks) > max_chunks:
            raise _too_many("webp", _MAX_PARTS, "chunks")
        pos = chunk_end
    return chunks


def _check_webp_frame(
    data: bytes, offset: int, length: int, canvas: tuple[int, int], max_chunks: int
) -> int:
    """How many chunks the ANMF frame at ``offset`` holds; it must lie within the canvas and
    hold a bitstream of its declared size."""
    if length < 16:
        raise _corrupt("webp", "ANMF chunk too short")
    x, y = 2 * _u24(data, offset), 2 * _u24(data, offset + 3)
    size = (1 + _u24(data, offset + 6), 1 + _u24(data, offset + 9))
    if x + size[0] > canvas[0] or y + size[1] > canvas[1]:
        raise _corrupt("webp", f"a {size} frame at ({x}, {y}) outside the {canvas} canvas")
    chunks = _riff_chunks(data, offset + 16, offset + length, max_chunks)
    bitstream = _webp_bitstream_size(data, chunks)
    if bitstream != size:
        raise _corrupt("webp", f"a {size} frame holds a {bitstream} bitstream")
    return len(chunks)


def _webp_bitstream_size(data: bytes, chunks: list[_WebpChunk]) -> tuple[int, int]:
    """Width and height from the first VP8 or VP8L chunk's header."""
    for fourcc, offset, length in chunks:
        if fourcc == b"VP8 ":
            # Frame tag (3 bytes, bit 0 clear on a key frame), start code, 14-bit sizes.
            if length < 10 or data[offset] & 1 or data[offset + 3 : offset + 6] != b"\x9d\x01\x2a":
                raise _corrupt("webp", "invalid VP8 key frame header")
            width, height = struct.unpack_from("<HH", data, offset + 6)
            if not (width & 0x3FFF and height & 0x3FFF):
                raise _corrupt("webp", "VP8 bitstream of zero size")
            return width & 0x3FFF, height & 0x3FFF
        if fourcc == b"VP8L":
            # Signature 0x2F, then 14-bit width - 1, 14-bit height - 1, alpha bit, 3-bit version.
            if length < 5 or data[offset] != 0x2F:
                raise _corrupt("webp", "invalid VP8L header")
            (bits,) = struct.unpack_from("<I", data, offset + 1)
            if bits >> 29:
                raise _corrupt("webp", f"VP8L version {bits >> 29}")
            return 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF)
    raise _corrupt("webp", "no VP8 or VP8L bitstream")


def _u24(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 3], "little")


# --- BMP: file header (14 bytes), an info header whose size names its version, pixel data.

_BMP_INFO_SIZES = frozenset(size.to_bytes(4, "little") for size in (12, 40, 52, 56, 64, 108, 124))
_BMP_BIT_COUNTS = frozenset({1, 4, 8, 16, 24, 32})
_BMP_UNCOMPRESSED = frozenset({0, 3, 6})  # RGB, BITFIELDS, ALPHABITFIELDS: rows of pixels


def _walk_bmp(data: bytes) -> _Layout:
    file_size, pixel_offset, info_size = struct.unpack_from("<I4xII", data, 2)
    _ends_at("bmp", data, file_size, "the file size in its header")
    _need("bmp", data, 14 + info_size, "the info header")
    if info_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes, never compressed
        width, height, planes, bit_count = struct.unpack_from("<HHHH", data, 18)
        compression = image_size = colours = 0
    else:
        width, height, planes, bit_count, compression, image_size, colours = struct.unpack_from(
            "<iiHHII8xI", data, 18
        )
    height = abs(height)  # a negative height means rows run top-down
    if not (width > 0 and height > 0 and planes == 1 and bit_count in _BMP_BIT_COUNTS):
        raise _corrupt("bmp", f"{width} x {height} pixels, {planes} planes, {bit_count} bits")
    palette_end = 14 + info_size
    if bit_count <= 8:  # a palette of at most 2**bit_count colours precedes the pixels
        if colours > 1 << bit_count:
            raise _corrupt("bmp", f"{colours} palette colours for {bit_count}-bit pixels")
        palette_end += (colours or 1 << bit_count) * (3 if info_size == 12 else 4)
    if compression in _BMP_UNCOMPRESSED:
        image_size = (width * bit_count + 31) // 32 * 4 * height  # rows padded to 4 bytes
    if pixel_offset < palette_end or not image_size:
        raise _corrupt("bmp", f"pixel data of {image_size} bytes at byte {pixel_offset}")
    _need("bmp", data, pixel_offset + image_size, "the pixel data")
    return _Layout(1, ((width, height),))


# --- TIFF: byte order, magic 42, then a chain of image file directories (IFDs), one per page:
# a 2-byte entry count, 12-byte entries (tag, type, count, value or offset), next IFD offset.

_TIFF_TYPE_SIZES: Mapping[int, int] = MappingProxyType(
    {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
)
_TIFF_INTEGERS: Mapping[int, str] = MappingProxyType({3: "H", 4: "I"})  # SHORT, LONG
# Tags read here.
_WIDTH, _HEIGHT, _ORIENTATION, _SAMPLES, _ROWS_PER_STRIP, _PLANAR = 256, 257, 274, 277, 278, 284
_STRIP_OFFSETS, _STRIP_COUNTS = 273, 279
_TILE_WIDTH, _TILE_HEIGHT, _TILE_OFFSETS, _TILE_COUNTS = 322, 323, 324, 325


def _walk_tiff(data: bytes) -> _Layout:
    order = "<" if data.startswith(b"II") else ">"
    _need("tiff", data, 8, "the header")
    (offset,) = struct.unpack_from(order + "I", data, 4)
    pages: list[tuple[int, int]] = []
    seen: set[int] = set()
    parts = 0
    while offset:
        if offset in seen:
            raise _corrupt("tiff", f"the directory chain loops back to byte {offset}")
        seen.add(offset)
        directory, offset = _TiffDirectory.read(data, order, offset)
        parts += 1 + len(directory.entries)
        if parts > _MAX_PARTS:
            raise _too_many("tiff", _MAX_PARTS, "directories and entries")
        pages.append(directory.page_size())
    if not pages:
        raise _corrupt("tiff", "no image directory")
    return _Layout(len(pages), tuple(dict.fromkeys(pages)))


@dataclass(frozen=True, slots=True)
class _TiffDirectory:
    """One IFD: tag -> (type, count, the 4-byte field holding the values or their offset)."""

    data: bytes
    order: str
    entries: dict[int, tuple[int, int, bytes]]

    @classmethod
    def read(cls, data: bytes, order: str, offset: int) -> tuple[_TiffDirectory, int]:
        """The IFD at ``offset``, whose values all lie within the data, and the next offset."""
        _need("tiff", data, offset + 2, "the directory", offset)
        (count,) = struct.unpack_from(order + "H", data, offset)
        end = offset + 2 + 12 * count
        _need("tiff", data, end + 4, "the directory", offset)
        if not count:
            raise _corrupt("tiff", f"empty directory at byte {offset}")
        if count > _MAX_HEADER_PARTS:
            raise _too_many("tiff", _MAX_HEADER_PARTS, "entries in a directory")
        entries: dict[int, tuple[int, int, bytes]] = {}
        for tag, kind, n, field in struct.iter_unpack(
            order + "HHI4s", memoryview(data)[offset + 2 : end]
        ):
            size = _TIFF_TYPE_SIZES.get(kind, 0) * n  # decoders skip unknown types
            if size > 4:
                value_offset: int = struct.unpack(order + "I", field)[0]
                _need("tiff", data, value_offset + size, "a tag's value", value_offset)
            entries[tag] = (kind, n, field)
        next_offset: int = struct.unpack_from(order + "I", data, end)[0]
        return cls(data, order, entries), next_offset

    def page_size(self) -> tuple[int, int]:
        """Width and height as decoded; the strips or tiles must all be there, within the data."""
        width, height = self.first(_WIDTH), self.first(_HEIGHT)
        if not (width and height):
            raise _corrupt("tiff", f"a page of {width} x {height} pixels")
        if _TILE_OFFSETS in self.entries:
            tile_width, tile_height = self.first(_TILE_WIDTH), self.first(_TILE_HEIGHT)
            if not (tile_width and tile_height):
                raise _corrupt("tiff", "tiles of zero size")
            needed = -(-width // tile_width) * -(-height // tile_height)
            offsets, counts = self.ints(_TILE_OFFSETS), self.ints(_TILE_COUNTS)
        else:
            rows = self.first(_ROWS_PER_STRIP, default=height)
            if not rows:
                raise _corrupt("tiff", "strips of zero rows")
            needed = -(-height // rows)
            offsets, counts = self.ints(_STRIP_OFFSETS), self.ints(_STRIP_COUNTS)
        if self.first(_PLANAR, default=1) == 2:  # one set of strips or tiles per sample
            needed *= self.first(_SAMPLES, default=1)
        if len(offsets) != len(counts) or len(offsets) < needed:
            raise _corrupt(
                "tiff", f"{len(offsets)} offsets and {len(counts)} byte counts, {needed} needed"
            )
        _need("tiff", self.data, max(map(sum, zip(offsets, counts, strict=True))), "image data")
        # Pillow applies an Orientation that transposes (5 to 8) when it opens the page.
        if self.first(_ORIENTATION, default=1) in (5, 6, 7, 8):
            return height, width
        return width, height

    def ints(self, tag: int) -> tuple[int, ...]:
        """The SHORT or LONG values of ``tag``."""
        if tag not in self.entries:
            raise _corrupt("tiff", f"tag {tag} missing")
        kind, count, field = self.entries[tag]
        if kind not in _TIFF_INTEGERS or not count:
            raise _corrupt("tiff", f"tag {tag} has type {kind} and {count} values")
        layout = f"{self.order}{count}{_TIFF_INTEGERS[kind]}"
        if count * _TIFF_TYPE_SIZES[kind] <= 4:  # the values are in the field itself
            return struct.unpack_from(layout, field)
        return struct.unpack_from(layout, self.data, struct.unpack(self.order + "I", field)[0])

    def first(self, tag: int, default: int | None = None) -> int:
        """The single value of ``tag``, or ``default`` if given and the tag is absent."""
        if default is not None and tag not in self.entries:
            return default
        values = self.ints(tag)
        if len(values) != 1:
            raise _corrupt("tiff", f"tag {tag} has {len(values)} values, not 1")
        return values[0]


_WALKS: Mapping[str, Callable[[bytes], _Layout]] = MappingProxyType(
    {
        "png": _walk_png,
        "jpeg": _walk_jpeg,
        "webp": _walk_webp,
        "gif": _walk_gif,
        "bmp": _walk_bmp,
        "tiff": _walk_tiff,
    }
)
