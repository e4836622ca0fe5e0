"""Image inspection from headers only: format, structure, dimensions, frames, and refusals."""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

import pytest
from PIL import Image

from authz_service.layers.syntax.images import (
    FORMATS,
    MEDIA_TYPES,
    ImageInfo,
    ImageLimits,
    ImageRejected,
    inspect_image,
    sniff_format,
)

DEFAULT = ImageLimits()
MANY_FRAMES = ImageLimits(max_frames=100)
STATUSES = {
    "not_an_image": 415,
    "format_not_allowed": 415,
    "type_mismatch": 415,
    "truncated": 422,
    "corrupt": 422,
    "too_large": 413,
    "too_many_frames": 413,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _noise(width: int, height: int) -> Image.Image:
    """Random pixels: no encoder can shrink them, so the files have real image data."""
    return Image.frombytes("RGB", (width, height), random.Random(1).randbytes(width * height * 3))


def _frames(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (60 * i, 255 - 60 * i, 0)) for i in range(count)]


def _animated(fmt: str, count: int) -> bytes:
    first, *rest = _frames(count)
    return _encode(first, fmt, save_all=True, append_images=rest)


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(ctype + payload)
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", crc)


def _png(width: int, height: int, before_idat: bytes = b"") -> bytes:
    """A PNG declaring any size, with correct CRCs and a tiny IDAT (never decoded here)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + before_idat
        + _chunk(b"IDAT", zlib.compress(b"\0" * 4))
        + _chunk(b"IEND", b"")
    )


def _tiff(
    *pages: tuple[int, int], bits: int = 8, loop: bool = False, big_endian: bool = False
) -> bytes:
    """A greyscale TIFF, one deflated strip per page, declaring any sizes."""
    order = ">" if big_endian else "<"
    out = bytearray((b"MM\x00*" if big_endian else b"II*\x00") + b"\x00\x00\x00\x00")
    directories: list[int] = []
    for width, height in pages:
        strip = zlib.compress(b"\0" * 16)
        strip_offset = len(out)
        out += strip + b"\0" * (len(strip) % 2)
        entries = [
            (256, 4, width),
            (257, 4, height),
            (258, 3, bits),
            (259, 3, 8),  # Adobe deflate
            (262, 3, 1),  # black is zero
            (273, 4, strip_offset),
            (277, 3, 1),
            (278, 4, height),  # one strip holds every row
            (279, 4, len(strip)),
        ]
        directories.append(len(out))
        out += struct.pack(order + "H", len(entries))
        for tag, kind, value in entries:
            out += struct.pack(order + "HHI", tag, kind, 1)
            if kind == 3:  # a SHORT value fills the field's first two bytes
                out += struct.pack(order + "HH", value, 0)
            else:
                out += struct.pack(order + "I", value)
        out += b"\0\0\0\0"  # the next directory's offset, linked below
    struct.pack_into(order + "I", out, 4, directories[0])
    links = [*directories[1:], directories[0] if loop else 0]
    for directory, following in zip(directories, links, strict=True):
        struct.pack_into(order + "I", out, directory + 2 + 12 * 9, following)
    return bytes(out)


def _bmp_rle(width: int, height: int) -> bytes:
    """An 8-bit run-length-encoded BMP declaring any size: its pixels are one end-of-bitmap."""
    palette, pixels = bytes(4 * 256), b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 0, 0, 0, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def _samples() -> dict[str, tuple[bytes, ImageInfo]]:
    image = _noise(64, 48)
    single = {
        "png": _encode(image, "PNG"),
        "png-palette": _encode(image.convert("P"), "PNG"),
        "png-grey-alpha": _encode(image.convert("LA"), "PNG"),
        "png-16-bit": _encode(image.convert("I;16"), "PNG"),
        "png-interlaced": _encode(image, "PNG", interlace=True),
        "jpeg": _encode(image, "JPEG", quality=90),
        "jpeg-progressive": _encode(image, "JPEG", progressive=True),
        "jpeg-grey": _encode(image.convert("L"), "JPEG"),
        "jpeg-cmyk": _encode(image.convert("CMYK"), "JPEG"),
        "webp-lossy": _encode(image, "WEBP"),
        "webp-lossless": _encode(image, "WEBP", lossless=True),
        "webp-alpha": _encode(image.convert("RGBA"), "WEBP"),
        "gif": _encode(image, "GIF"),
        "bmp": _encode(image, "BMP"),
        "bmp-palette": _encode(image.convert("P"), "BMP"),
        "bmp-1-bit": _encode(image.convert("1"), "BMP"),
        "tiff": _encode(image, "TIFF"),
        "tiff-lzw": _encode(image, "TIFF", compression="tiff_lzw"),
    }
    samples = {
        name: (data, ImageInfo(name.partition("-")[0], 64, 48, 1)) for name, data in single.items()
    }
    for fmt in ("png", "webp", "gif", "tiff"):
        samples[f"{fmt}-animated"] = (_animated(fmt, 3), ImageInfo(fmt, 40, 30, 3))
    samples["bmp-rle"] = (_bmp_rle(5, 7), ImageInfo("bmp", 5, 7, 1))
    samples["tiff-crafted"] = (_tiff((5, 7), (3, 2)), ImageInfo("tiff", 5, 7, 2))
    samples["tiff-big-endian"] = (_tiff((5, 7), big_endian=True), ImageInfo("tiff", 5, 7, 1))
    rotated = Image.Exif()
    rotated[0x0112] = 6  # Orientation: the decoder transposes the page
    samples["tiff-rotated"] = (_encode(image, "TIFF", exif=rotated), ImageInfo("tiff", 48, 64, 1))
    return samples


SAMPLES = _samples()


def _rejected(data: bytes, limits: ImageLimits = DEFAULT, declared: str | None = None) -> str:
    """The reason ``data`` is refused for (failing the test if it is not)."""
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, limits, declared)
    assert caught.value.status == STATUSES[caught.value.reason]
    assert str(caught.value) == caught.value.message
    return caught.value.reason


def _message(data: bytes, limits: ImageLimits = DEFAULT, declared: str | None = None) -> str:
    with pytest.raises(ImageRejected) as caught:
        inspect_image(data, limits, declared)
    return caught.value.message


# --- what passes


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_valid_images_pass_with_their_facts(name: str) -> None:
    data, expected = SAMPLES[name]
    assert sniff_format(data) == expected.format
    assert inspect_image(data, MANY_FRAMES) == expected
    assert inspect_image(data, MANY_FRAMES, MEDIA_TYPES[expected.format]) == expected


def test_media_types_name_every_format() -> None:
    assert set(MEDIA_TYPES) == set(FORMATS)
    assert MEDIA_TYPES["jpeg"] == "image/jpeg"
    assert MEDIA_TYPES["tiff"] == "image/tiff"


@pytest.mark.parametrize(
    ("name", "declared"),
    [
        ("png", None),
        ("png", "application/octet-stream"),
        ("png", "Image/PNG; name=x.png"),
        ("jpeg", "image/jpg"),
        ("jpeg", "image/pjpeg"),
        ("bmp", "image/x-ms-bmp"),
        ("tiff", "image/tif"),
    ],
)
def test_declared_type_aliases(name: str, declared: str | None) -> None:
    data, expected = SAMPLES[name]
    assert inspect_image(data, DEFAULT, declared) == expected


def test_frames_up_to_the_limit_pass() -> None:
    data, expected = SAMPLES["gif-animated"]
    assert inspect_image(data, ImageLimits(max_frames=3)) == expected


# --- not an image, wrong type, format not allowed


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        random.Random(5).randbytes(4096),
        b"BMW drivers rarely indicate; this is text, not a bitmap",
        PNG_SIGNATURE[:7],
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b'{"image": "iVBORw0KGgo="}',
    ],
)
def test_non_images_are_not_an_image(data: bytes) -> None:
    assert sniff_format(data) is None
    assert _rejected(data) == "not_an_image"
    assert _rejected(data, declared="image/png") == "not_an_image"


@pytest.mark.parametrize(
    ("name", "declared"),
    [("png", "image/jpeg"), ("jpeg", "image/png"), ("gif", "image/webp"), ("png", "text/plain")],
)
def test_declared_type_must_match_the_magic_bytes(name: str, declared: str) -> None:
    data, _ = SAMPLES[name]
    assert _rejected(data, declared=declared) == "type_mismatch"
    assert _rejected(data, ImageLimits(formats=frozenset({"bmp"})), declared) == "type_mismatch"


def test_format_not_allowed_names_the_format_and_the_allowed_ones() -> None:
    limits = ImageLimits(formats=frozenset({"jpeg", "png"}))
    data, _ = SAMPLES["gif"]
    assert _rejected(data, limits) == "format_not_allowed"
    assert _message(data, limits) == "GIF images are not allowed; allowed: PNG, JPEG"
    assert inspect_image(SAMPLES["png"][0], limits).format == "png"


# --- truncated


def _segment_end(jpeg: bytes, marker: bytes) -> int:
    start = jpeg.index(marker)
    return start + 2 + int.from_bytes(jpeg[start + 2 : start + 4], "big")


@pytest.mark.parametrize("name", ["png", "jpeg", "jpeg-progressive"])
def test_truncated_png_and_jpeg_at_telling_points(name: str) -> None:
    data, _ = SAMPLES[name]
    if name == "png":
        headers = [8, 33]  # the signature; the IHDR chunk
    else:
        headers = [3, _segment_end(data, b"\xff\xe0"), _segment_end(data, b"\xff\xda")]
    for cut in [len(data) // 2, len(data) - 1, len(data) - 2, *headers]:
        assert _rejected(data[:cut]) == "truncated", cut


@pytest.mark.parametrize(
    "name",
    ["png", "png-palette", "jpeg", "jpeg-grey", "gif", "gif-animated", "webp-lossy", "bmp-1-bit"],
)
def test_every_cut_is_truncated(name: str) -> None:
    data, _ = SAMPLES[name]
    magic = {"png": 8, "jpeg": 3, "gif": 6, "webp": 12, "bmp": 18}[name.partition("-")[0]]
    for cut in range(magic, len(data)):
        assert _rejected(data[:cut]) == "truncated", cut


@pytest.mark.parametrize("name", ["tiff", "tiff-lzw", "webp-animated", "png-animated"])
def test_other_formats_cut_in_half_are_truncated(name: str) -> None:
    data, _ = SAMPLES[name]
    assert _rejected(data[: len(data) // 2], MANY_FRAMES) == "truncated"


# --- corrupt


def test_png_ihdr_crc_must_match() -> None:
    data = bytearray(SAMPLES["png"][0])
    data[29] ^= 0x01  # the IHDR CRC
    assert _rejected(bytes(data)) == "corrupt"
    data = bytearray(SAMPLES["png"][0])
    data[19] ^= 0x01  # the width, under an unchanged CRC
    assert _rejected(bytes(data)) == "corrupt"
    assert "CRC" in _message(bytes(data))


@pytest.mark.parametrize(
    ("name", "suffix"), [("png", b"\0"), ("jpeg", b"<html>"), ("gif", b"PK\x03\x04"), ("bmp", b"x")]
)
def test_data_after_the_end_of_the_image_is_corrupt(name: str, suffix: bytes) -> None:
    assert _rejected(SAMPLES[name][0] + suffix) == "corrupt"


def test_png_structure_rules() -> None:
    assert inspect_image(_png(1, 1), DEFAULT) == ImageInfo("png", 1, 1, 1)
    assert _rejected(_png(0, 1)) == "corrupt"  # zero width, correct CRC
    assert _rejected(_png(1, 1).replace(b"IDAT", b"IDAX")) == "corrupt"  # no image data
    assert _rejected(_png(1, 1, before_idat=_chunk(b"QUUX", b""))) == "corrupt"  # unknown critical
    assert inspect_image(_png(1, 1, before_idat=_chunk(b"quUX", b"")), DEFAULT).width == 1


def test_png_chunk_crc_before_the_image_data_is_checked_by_the_decoder() -> None:
    bad_text = bytearray(_chunk(b"tEXt", b"Comment\0hi"))
    bad_text[-1] ^= 0x01
    message = _message(_png(1, 1, before_idat=bytes(bad_text)))
    assert message.startswith("PNG image is corrupt: the image decoder cannot open it")


def test_jpeg_needs_one_frame_header() -> None:
    data = SAMPLES["jpeg"][0]
    sof = data.index(b"\xff\xc0")
    sof_end = sof + 2 + struct.unpack_from(">H", data, sof + 2)[0]
    assert _rejected(data[:sof] + data[sof_end:]) == "corrupt"
    assert _rejected(data[:sof_end] + data[sof:]) == "corrupt"  # two of them


def test_gif_frame_outside_the_logical_screen_is_corrupt() -> None:
    data = bytearray(SAMPLES["gif"][0])
    struct.pack_into("<HH", data, 6, 32, 24)  # the screen shrinks; the 64 x 48 frame does not
    assert _rejected(bytes(data)) == "corrupt"


def test_tiff_structure_rules() -> None:
    assert _rejected(_tiff((5, 7), (3, 2), loop=True), MANY_FRAMES) == "corrupt"
    assert _rejected(_tiff((5, 0))) == "corrupt"
    assert _rejected(_tiff((5, 7), bits=3)) == "corrupt"  # a pixel format the decoder refuses


def test_files_of_many_tiny_parts_are_refused() -> None:
    png = _png(1, 1, before_idat=_chunk(b"teXt", b"") * 300)
    jpeg = SAMPLES["jpeg"][0]
    gif = SAMPLES["gif"][0]
    comment = b"\x21\xfe" + b"\x01x" * 8000 + b"\0"  # a comment in 1-byte sub-blocks
    for data, parts in [
        (png, "more than 256 chunks before the image data"),
        (jpeg[:2] + b"\xff\xfe\x00\x02" * 300 + jpeg[2:], "more than 256 segments"),
        (gif[:-1] + comment + gif[-1:], "more blocks and sub-blocks than one per 128 bytes"),
    ]:
        assert _rejected(data) == "corrupt"
        assert parts in _message(data)


# --- too large, too many frames


@pytest.fixture
def no_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow may not open anything: what is refused must be refused before it."""

    def refuse(*args: object, **kwargs: object) -> Image.Image:
        raise AssertionError("the decoder must not be asked")

    monkeypatch.setattr(Image, "open", refuse)


@pytest.mark.usefixtures("no_decoder")
def test_png_declaring_50000_by_50000_is_too_large_before_the_decoder_sees_it() -> None:
    bomb = _png(50_000, 50_000)
    assert len(bomb) < 100
    assert _rejected(bomb) == "too_large"
    assert _message(bomb) == (
        "PNG image is 50000 x 50000 (2500000000 pixels); the limits are 16384 x 16384"
        " and 40000000 pixels"
    )


@pytest.mark.usefixtures("no_decoder")
def test_bombs_in_every_format_are_too_large() -> None:
    jpeg = bytearray(SAMPLES["jpeg"][0])
    struct.pack_into(">HH", jpeg, jpeg.index(b"\xff\xc0") + 5, 50_000, 50_000)
    gif = bytearray(SAMPLES["gif"][0])
    struct.pack_into("<HH", gif, 6, 50_000, 50_000)  # the screen; its one frame stays small
    webp = bytearray(SAMPLES["webp-lossless"][0])
    vp8l = webp.index(b"VP8L") + 9
    bits = struct.unpack_from("<I", webp, vp8l)[0]
    struct.pack_into("<I", webp, vp8l, bits | 0x0FFFFFFF)  # 16384 x 16384
    huge = 50_000
    for bomb in (bytes(jpeg), bytes(gif), bytes(webp), _bmp_rle(huge, huge), _tiff((huge, huge))):
        assert _rejected(bomb) == "too_large"


def test_every_frame_is_held_to_the_size_limits() -> None:
    data = _tiff((5, 7), (30_000, 2))
    assert _rejected(data, MANY_FRAMES) == "too_large"


def test_the_decoders_own_bomb_limit_is_a_refusal_and_is_left_alone() -> None:
    generous = ImageLimits(max_width=20_000, max_height=20_000, max_pixels=400_000_000)
    ceiling = Image.MAX_IMAGE_PIXELS
    assert ceiling is not None and 2 * ceiling < 19_000 * 19_000
    assert _rejected(_png(19_000, 19_000), generous) == "too_large"
    assert ceiling == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("name", ["gif-animated", "webp-animated", "png-animated", "tiff-animated"])
def test_too_many_frames(name: str) -> None:
    data, _ = SAMPLES[name]
    assert _rejected(data) == "too_many_frames"
    assert _rejected(data, ImageLimits(max_frames=2)) == "too_many_frames"


# --- the contract: ImageInfo or ImageRejected, whatever the bytes


def _mutants(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    mutants: list[bytes] = []
    for _ in range(count):
        mutant = bytearray(data)
        at = rng.randrange(len(data))
        kind = rng.randrange(6)
        if kind == 0:
            del mutant[at:]
        elif kind == 1:
            mutant[at] = rng.randrange(256)
        elif kind == 2:  # headers are where walks go wrong: hit the first 300 bytes more often
            mutant[at % 300 if len(data) > 300 else at] ^= 1 << rng.randrange(8)
        elif kind == 3:
            del mutant[at : at + rng.randint(1, 16)]
        elif kind == 4:
            mutant[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            extreme = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff"])
            mutant[at : at + 4] = extreme
        mutants.append(bytes(mutant))
    return mutants


# Pillow warns about odd metadata in some mutants that it still opens.
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_fuzzed_images_give_info_or_a_refusal_never_another_exception(name: str) -> None:
    data, _ = SAMPLES[name]
    rng = random.Random(f"images-{name}")
    outcomes: set[str] = set()
    for mutant in _mutants(data, rng, 400):
        try:
            info = inspect_image(mutant, MANY_FRAMES)
        except ImageRejected as refused:
            assert refused.status == STATUSES[refused.reason]
            outcomes.add(refused.reason)
        else:
            assert info.format in FORMATS and info.width > 0 and info.height > 0
            assert 1 <= info.frames <= MANY_FRAMES.max_frames
            outcomes.add("accepted")
    assert {"accepted", "truncated"} <= outcomes


# --- the API's own rules


def test_limits_refuse_unknown_formats_and_non_positive_values() -> None:
    with pytest.raises(ValueError, match="unknown image formats"):
        ImageLimits(formats=frozenset({"png", "heic"}))
    with pytest.raises(ValueError, match="at least 1"):
        ImageLimits(max_frames=0)


def test_rejection_carries_status_reason_and_message() -> None:
    refused = ImageRejected(413, "too_large", "too big")
    assert (refused.status, refused.reason, refused.message, str(refused)) == (
        413,
        "too_large",
        "too big",
        "too big",
    )
