"""Payloads for the syntax layer's tests: valid images and a corpus of malformed requests
to the image classifier (situation 1) and the chat endpoint (situation 2)."""

from __future__ import annotations

import base64
import gzip
import io
import json
from dataclasses import dataclass, field

from PIL import Image

from authz_service.devstack.run import png_declaring

JSON = "application/json"


def image_bytes(kind: str, size: tuple[int, int] = (64, 48), frames: int = 1) -> bytes:
    """A real image file made by Pillow (``kind`` is a Pillow format name)."""
    out = io.BytesIO()
    images = [Image.new("RGB", size, (index * 40 % 256, 90, 160)) for index in range(frames)]
    extra = {"save_all": True, "append_images": images[1:]} if frames > 1 else {}
    images[0].save(out, format=kind, **extra)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def multipart(
    fields: list[tuple[str, str | None, str | None, bytes]], boundary: str = "b0undary42"
) -> tuple[str, bytes]:
    """(content-type, body) for parts given as (name, filename, content type, data)."""
    body = b""
    for name, filename, content_type, data in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\ncontent-disposition: {disposition}\r\n".encode()
        if content_type:
            body += f"content-type: {content_type}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def gzip_bomb(decoded_bytes: int) -> bytes:
    """A gzip stream of a JSON document padded with ``decoded_bytes`` spaces."""
    return gzip.compress(b'{"model": "gpt-4o-mini", "messages": []' + b" " * decoded_bytes + b"}")


@dataclass(frozen=True)
class Bad:
    """One malformed request, the status and reason the client must get, and whether the
    fragile classifier, reached directly, answers it with a 500."""

    name: str
    content_type: str
    body: bytes
    status: int
    reason: str
    crashes_classifier: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""


PNG = image_bytes("PNG")
JPEG = image_bytes("JPEG")


def classifier_corpus() -> list[Bad]:
    mime, no_boundary_body = multipart([("image", "x.png", "image/png", PNG)])
    mime_jpeg_as_png, jpeg_as_png = multipart([("image", "x.png", "image/png", JPEG)])
    mime_no_image, no_image = multipart([("top_k", None, None, b"3")])
    deep = b'{"image": ' + b"[" * 40 + b"]" * 40 + b"}"
    return [
        Bad("bad JSON", JSON, b'{"image": "iVBOR', 400, "protocol.invalid_json"),
        Bad("trailing comma", JSON, b'{"image": "x",}', 400, "protocol.invalid_json"),
        Bad("wrong type", JSON, b'{"image": 42}', 422, "syntax.schema_violation"),
        Bad(
            "top_k wrong type",
            JSON,
            json.dumps({"image": b64(PNG), "top_k": "three"}).encode(),
            422,
            "syntax.schema_violation",
        ),
        Bad("missing field", JSON, b'{"top_k": 2}', 422, "syntax.schema_violation"),
        Bad(
            "extra field",
            JSON,
            json.dumps({"image": b64(PNG), "debug": True}).encode(),
            422,
            "syntax.schema_violation",
            crashes_classifier=False,
        ),
        Bad(
            "top_k out of range",
            JSON,
            json.dumps({"image": b64(PNG), "top_k": 11}).encode(),
            422,
            "syntax.schema_violation",
        ),
        Bad("wrong content type", "text/plain", b"hello", 415, "protocol.unsupported_media_type"),
        Bad(
            "image type not in the API",
            "image/bmp",
            image_bytes("BMP"),
            415,
            "syntax.unsupported_media_type",
            crashes_classifier=False,
        ),
        Bad(
            "broken base64",
            JSON,
            b'{"image": "iVBORw0KGgo*not/base64"}',
            422,
            "syntax.invalid_base64",
        ),
        Bad(
            "non-image bytes as image/png",
            "image/png",
            b"hello, world" * 8,
            415,
            "syntax.not_an_image",
        ),
        Bad("PDF as image/png", "image/png", b"%PDF-1.7\n" + b"0" * 64, 415, "syntax.not_an_image"),
        Bad(
            "JPEG declared as PNG",
            "image/png",
            JPEG,
            415,
            "syntax.image_type_mismatch",
            crashes_classifier=False,
        ),
        Bad("truncated PNG", "image/png", PNG[: len(PNG) // 2], 422, "syntax.image_truncated"),
        Bad("truncated JPEG", "image/jpeg", JPEG[:-2], 422, "syntax.image_truncated"),
        Bad(
            "truncated JPEG in base64 JSON",
            JSON,
            json.dumps({"image": b64(JPEG[: len(JPEG) // 2])}).encode(),
            422,
            "syntax.image_truncated",
        ),
        Bad(
            "PNG declaring 50,000 x 50,000 pixels",
            "image/png",
            png_declaring(50_000, 50_000),
            413,
            "syntax.image_too_large",
            crashes_classifier=False,
        ),
        Bad(
            "animated GIF",
            "image/gif",
            image_bytes("GIF", frames=3),
            413,
            "syntax.image_too_many_frames",
            crashes_classifier=False,
        ),
        Bad(
            "multipart without boundary",
            "multipart/form-data",
            no_boundary_body,
            400,
            "syntax.multipart_boundary_missing",
        ),
        Bad(
            "multipart without parts",
            mime,
            b"--b0undary42--\r\n",
            400,
            "syntax.multipart_malformed",
        ),
        Bad(
            "multipart JPEG declared as PNG",
            mime_jpeg_as_png,
            jpeg_as_png,
            415,
            "syntax.part_type_mismatch",
            crashes_classifier=False,
        ),
        Bad("multipart without the image", mime_no_image, no_image, 422, "syntax.schema_violation"),
        Bad("deep nesting", JSON, deep, 400, "protocol.json_too_deep"),
        Bad("invalid UTF-8", JSON, b'{"image": "\xff\xfe"}', 400, "protocol.invalid_utf8"),
        Bad(
            "duplicate key",
            JSON,
            b'{"image": 1, "image": "' + b64(PNG).encode() + b'"}',
            400,
            "protocol.duplicate_json_key",
            crashes_classifier=False,
        ),
        Bad(
            "huge number",
            JSON,
            b'{"image": "x", "top_k": 1e400}',
            400,
            "protocol.json_number_too_large",
        ),
        Bad(
            "gzip bomb",
            JSON,
            gzip.compress(b'{"image": "' + b"A" * 8_000_000 + b'"}'),
            415,
            "protocol.unsupported_content_encoding",
            headers={"content-encoding": "gzip"},
        ),
        Bad(
            "unknown query parameter",
            "image/png",
            PNG,
            400,
            "syntax.unknown_parameter",
            crashes_classifier=False,
            query="?debug=1",
        ),
    ]
