"""Token estimates of an LLM request: the prompt it sends and the output it may ask for.

The cost layer reserves ``prompt_tokens + output_tokens`` before forwarding. Bodies arrive
parsed (orjson) and already valid against the built-in schema of their API (``LlmApi``), so
their shape is trusted here. Everything is pure and does no I/O: a 2 KB chat body costs tens
of microseconds plus the tokenizer's own time (tiktoken: ~45 us per KB).

Prompt tokens, ``prompt_tokens(api, body, tokenizer)``
=======================================================

Text is counted with the route's tokenizer (``tokenizers.load_tokenizer``). Where a rule
below is a guess, it leans towards counting more: an underestimate lets a budget be overspent.

``openai.chat_completions`` -- OpenAI's documented counting (cookbook "How to count tokens
with tiktoken", ``num_tokens_from_messages`` for gpt-4 / gpt-4o and later):

- 3 tokens per message, plus the tokens of each of its string fields: ``role``, ``content``,
  ``name`` (+1 more), ``refusal``, ``tool_call_id``; 3 more for priming the reply;
- ``content`` as a list of parts: ``text`` and ``refusal`` parts count their text;
- ``image_url`` parts follow OpenAI's image rule (gpt-4o, gpt-4.1, o-series): ``detail: low``
  costs 85; ``high`` or ``auto`` (taken as high) scales the image to fit in 2048 x 2048, then
  its short side down to 768, and costs 85 + 170 per 512 px tile. The size is read from the
  header of a ``data:`` URL's image (PNG, JPEG, GIF, WebP; only the bytes of the header are
  base64-decoded, never the pixels); a remote URL or an unreadable header counts the rule's
  worst case, 1,445 (8 tiles: 2048 x 768). Models with another image rule (gpt-4o-mini bills
  2,833 + 5,667 per tile; gpt-4.1-mini and o4-mini count 32 px patches) are not modelled;
- ``input_audio`` parts: 10 tokens per second (OpenAI's 1 token per 100 ms of user audio),
  the duration bounded by assuming at least 16 kbit/s: 1 token per 200 bytes of audio;
- ``file`` parts (PDFs): 1 token per 4 base64 characters of ``file_data`` (3 bytes a token:
  coarse, a PDF's text and page images cost what its bytes cannot tell); a ``file_id``
  reference costs a fixed 4,096;
- assistant ``tool_calls`` (and the legacy ``function_call``): the function's name and its
  ``arguments`` string (a custom tool's ``input``), plus 3 per call; an assistant ``audio``
  reference (the id of an earlier spoken reply) is not counted;
- ``tools`` (and the legacy ``functions``): each tool's JSON text plus 7, and 12 once -- the
  cookbook's gpt-4o constants for function definitions (its ``func_init`` and ``func_end``);
  the JSON text is longer than the TypeScript-like rendering the model sees, so it errs high;
- ``response_format`` of type ``json_schema``: the JSON text of its ``json_schema``.

``openai.completions``: ``prompt`` as a string or list of strings counts each string;
token-id prompts (a list of ints, or a list of such lists) count their length; ``suffix`` is
counted. No framing tokens.

``anthropic.messages`` (Anthropic documents no framing; the OpenAI one is borrowed):

- ``system`` (string or text blocks) counted; 3 tokens per message plus its content;
- blocks: ``text`` counts its text, ``thinking`` its thinking, ``tool_use`` its name and the
  JSON text of its ``input``, ``tool_result`` its content (string or blocks, recursively);
- ``image`` blocks: Anthropic's rule, width x height / 750, after scaling the long edge down
  to 1568 px, at most 1,600 (the ~1.15 megapixel cap); the size is read from a ``base64``
  source's header; a ``url`` or ``file`` source or an unreadable header counts 1,600;
- ``document`` blocks: a ``base64`` source counts like an OpenAI ``file`` part, a ``text``
  source its text, a ``content`` source its blocks, a ``url`` or ``file`` source 4,096;
- any other block (search or server tool results, redacted thinking): its JSON text;
- ``tools``: each tool's JSON text, plus 346 once -- Anthropic's documented tool-use system
  prompt (the largest of its ``tool_choice`` variants for current models).

Output tokens, ``output_tokens(api, body, default, cap)``
========================================================

The requested maximum -- ``max_completion_tokens``, else ``max_tokens`` (OpenAI chat),
``max_tokens`` (completions, Anthropic) -- or ``default`` when absent or null, capped at
``cap``, times the number of generations the request asks for: OpenAI chat ``n``; completions
``max(n, best_of)`` (``best_of`` candidates are all generated and billed) times the number of
prompts in a list ``prompt`` (each prompt gets its own completions). Anthropic generates one;
its ``thinking.budget_tokens`` is part of ``max_tokens``.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson
import pybase64

from authz_service.layers.cost.tokenizers import Tokenizer
from authz_service.layers.syntax.llm import LlmApi

PER_MESSAGE_TOKENS: Final = 3
PER_NAME_TOKENS: Final = 1
REPLY_PRIMING_TOKENS: Final = 3
PER_TOOL_CALL_TOKENS: Final = 3
PER_TOOL_TOKENS: Final = 7
TOOLS_END_TOKENS: Final = 12
ANTHROPIC_TOOLS_SYSTEM_TOKENS: Final = 346

OPENAI_IMAGE_LOW_TOKENS: Final = 85
OPENAI_IMAGE_TILE_TOKENS: Final = 170
OPENAI_IMAGE_WORST_TOKENS: Final = OPENAI_IMAGE_LOW_TOKENS + 8 * OPENAI_IMAGE_TILE_TOKENS
ANTHROPIC_IMAGE_MAX_TOKENS: Final = 1600
AUDIO_BYTES_PER_TOKEN: Final = 200
FILE_BASE64_CHARS_PER_TOKEN: Final = 4
FILE_REFERENCE_TOKENS: Final = 4096


def prompt_tokens(api: LlmApi, body: Mapping[str, Any], tokenizer: Tokenizer) -> int:
    """The tokens the model reads for ``body`` (already valid for ``api``); see the module."""
    if api == "openai.chat_completions":
        return _openai_chat(body, tokenizer)
    if api == "openai.completions":
        return _openai_completions(body, tokenizer)
    return _anthropic(body, tokenizer)


def output_tokens(api: LlmApi, body: Mapping[str, Any], default: int, cap: int) -> int:
    """The most tokens ``body`` may generate: per generation ``min(requested or default,
    cap)``, times the generations it asks for (see the module docstring)."""
    requested = body.get("max_completion_tokens") if api == "openai.chat_completions" else None
    if requested is None:
        requested = body.get("max_tokens")
    per_generation = min(default if requested is None else requested, cap)
    if api == "anthropic.messages":
        return per_generation
    generations = body.get("n") or 1
    if api == "openai.completions":
        generations = max(generations, body.get("best_of") or 1)
        prompt = body["prompt"]
        if isinstance(prompt, list) and not isinstance(prompt[0], int):
            generations *= len(prompt)
    return per_generation * generations


def openai_image_tokens(size: tuple[int, int] | None, detail: str = "auto") -> int:
    """OpenAI's image rule for gpt-4o and kin; ``size`` ``None`` means unknown."""
    if detail == "low":
        return OPENAI_IMAGE_LOW_TOKENS
    if size is None:
        return OPENAI_IMAGE_WORST_TOKENS
    width, height = _shrunk(_shrunk(size, 2048, max), 768, min)
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return OPENAI_IMAGE_LOW_TOKENS + OPENAI_IMAGE_TILE_TOKENS * tiles


def _shrunk(
    size: tuple[int, int], limit: int, side: Callable[[tuple[int, int]], int]
) -> tuple[int, int]:
    """``size`` scaled down until its ``side`` (``max``: long, ``min``: short) is ``limit``
    (truncated, as the providers' rules do); never scaled up."""
    if side(size) <= limit:
        return size
    scale = limit / side(size)
    return int(size[0] * scale), int(size[1] * scale)


def anthropic_image_tokens(size: tuple[int, int] | None) -> int:
    """Anthropic's image rule; ``size`` ``None`` means unknown (the cap)."""
    if size is None:
        return ANTHROPIC_IMAGE_MAX_TOKENS
    width, height = _shrunk(size, 1568, max)
    return min(math.ceil(width * height / 750), ANTHROPIC_IMAGE_MAX_TOKENS)


def data_url_image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a ``data:...;base64,`` URL's PNG, JPEG, GIF or WebP image, read
    from its header alone; ``None`` for any other URL or an unreadable header."""
    if not url.startswith("data:"):
        return None
    comma = url.find(",", 5, 300)  # media type and parameters are short
    if comma < 0 or not url[5:comma].endswith(";base64"):
        return None
    return base64_image_size(url, comma + 1)


def base64_image_size(data: str, start: int = 0) -> tuple[int, int] | None:
    """Width and height of the base64 image in ``data[start:]``, decoding only its header."""
    reader = _Base64Reader(data, start)
    size: tuple[int, int] | None
    try:
        head = reader.read(0, 30)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        elif head[:6] in (b"GIF87a", b"GIF89a"):
            size = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
        elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            size = _webp_size(head)
        elif head[:2] == b"\xff\xd8":
            size = _jpeg_size(reader)
        else:
            return None
    except (binascii.Error, ValueError, IndexError):
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


class _Base64Reader:
    """Reads decoded bytes at any offset of a base64 text by decoding only the 4-character
    groups that hold them (no whitespace is expected inside, as in data URLs)."""

    __slots__ = ("_data", "_start")

    def __init__(self, data: str, start: int) -> None:
        self._data = data
        self._start = start

    def read(self, offset: int, length: int) -> bytes:
        first = offset // 3
        last = (offset + length + 2) // 3
        end = min(len(self._data), self._start + last * 4)
        chunk = self._data[self._start + first * 4 : end]
        decoded = pybase64.b64decode(chunk, validate=True)
        return decoded[offset - first * 3 : offset - first * 3 + length]


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 ":  # lossy: the key frame header after a 3-byte start code
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        height = int.from_bytes(head[28:30], "little") & 0x3FFF
        return width, height
    if chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 after the 0x2F signature
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width-1 and height-1
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height
    return None


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_MAX_SEGMENTS: Final = 64  # a real file reaches its frame header long before


def _jpeg_size(reader: _Base64Reader) -> tuple[int, int] | None:
    """Walks the marker segments before the frame header, skipping their contents (EXIF,
    ICC profiles) undecoded."""
    pos = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        marker = reader.read(pos, 4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return None
        if marker[1] == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker[1] in _JPEG_SOF:
            frame = reader.read(pos + 5, 4)
            return int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[0:2], "big")
        if marker[1] == 0xDA:  # start of scan without a frame header: malformed
            return None
        pos += 2 + int.from_bytes(marker[2:4], "big")
    return None


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _openai_chat(body: Mapping[str, Any], tokenizer: Tokenizer) -> int:
    count = tokenizer.count
    total = REPLY_PRIMING_TOKENS
    for message in body["messages"]:
        total += PER_MESSAGE_TOKENS
        for key in ("role", "name", "refusal", "tool_call_id"):
            value = message.get(key)
            if isinstance(value, str):
                total += count(value)
        if "name" in message:
            total += PER_NAME_TOKENS
        content = message.get("content")
        if isinstance(content, str):
            total += count(content)
        elif isinstance(content, list):
            total += sum(_openai_part(part, tokenizer) for part in content)
        calls = [
            call.get("function") or call.get("custom") for call in message.get("tool_calls") or ()
        ]
        calls.append(message.get("function_call"))
        for call in calls:
            if isinstance(call, Mapping):
                total += PER_TOOL_CALL_TOKENS + _strings(call, _CALL_FIELDS, tokenizer)
    tools = [tool.get("function", tool) for tool in body.get("tools") or ()]
    tools.extend(body.get("functions") or ())
    if tools:
        total += TOOLS_END_TOKENS
        total += sum(PER_TOOL_TOKENS + count(_json_text(tool)) for tool in tools)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format["type"] == "json_schema":
        total += count(_json_text(response_format.get("json_schema")))
    return total


# a function call's name and JSON arguments; a custom tool call's name and free-form input
_CALL_FIELDS: Final = ("name", "arguments", "input")


def _openai_part(part: Mapping[str, Any], tokenizer: Tokenizer) -> int:
    kind = part["type"]
    if kind == "text":
        return tokenizer.count(part["text"])
    if kind == "refusal":
        return tokenizer.count(part["refusal"])
    if kind == "image_url":
        image = part["image_url"]
        return openai_image_tokens(data_url_image_size(image["url"]), image.get("detail", "auto"))
    if kind == "input_audio":
        # base64: 3 bytes per 4 characters
        return math.ceil(len(part["input_audio"]["data"]) * 3 / 4 / AUDIO_BYTES_PER_TOKEN)
    # "file", the one remaining part type
    file = part.get("file") or {}
    data = file.get("file_data")
    if isinstance(data, str):
        return _base64_file_tokens(data)
    return FILE_REFERENCE_TOKENS


def _base64_file_tokens(data: str) -> int:
    return math.ceil(len(data) / FILE_BASE64_CHARS_PER_TOKEN)


def _strings(mapping: Mapping[str, Any], keys: tuple[str, ...], tokenizer: Tokenizer) -> int:
    total = 0
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str):
            total += tokenizer.count(value)
    return total


def _openai_completions(body: Mapping[str, Any], tokenizer: Tokenizer) -> int:
    prompt = body["prompt"]
    suffix = body.get("suffix")
    total = tokenizer.count(suffix) if isinstance(suffix, str) else 0
    if isinstance(prompt, str):
        return total + tokenizer.count(prompt)
    for item in prompt:
        if isinstance(item, str):
            total += tokenizer.count(item)
        elif isinstance(item, list):
            total += len(item)
        else:  # one token id of a flat id list
            total += 1
    return total


def _anthropic(body: Mapping[str, Any], tokenizer: Tokenizer) -> int:
    total = 0
    system = body.get("system")
    if isinstance(system, str):
        total += tokenizer.count(system)
    elif isinstance(system, list):
        total += sum(tokenizer.count(block["text"]) for block in system)
    for message in body["messages"]:
        total += PER_MESSAGE_TOKENS + _anthropic_content(message["content"], tokenizer)
    tools = body.get("tools")
    if tools:
        total += ANTHROPIC_TOOLS_SYSTEM_TOKENS
        total += sum(tokenizer.count(_json_text(tool)) for tool in tools)
    return total


def _anthropic_content(content: Any, tokenizer: Tokenizer) -> int:
    if isinstance(content, str):
        return tokenizer.count(content)
    if not isinstance(content, list):
        return 0
    return sum(_anthropic_block(block, tokenizer) for block in content)


def _anthropic_block(block: Mapping[str, Any], tokenizer: Tokenizer) -> int:
    kind = block.get("type")
    if kind == "text":
        return tokenizer.count(block["text"])
    if kind == "thinking":
        return _strings(block, ("thinking",), tokenizer)
    if kind == "tool_use":
        return _strings(block, ("name",), tokenizer) + tokenizer.count(_json_text(block["input"]))
    if kind == "tool_result":
        return _anthropic_content(block.get("content"), tokenizer)
    if kind == "image":
        source = block["source"]
        data = source.get("data")
        size = base64_image_size(data) if source["type"] == "base64" and data else None
        return anthropic_image_tokens(size)
    if kind == "document":
        return _anthropic_document(block.get("source") or {}, tokenizer)
    return tokenizer.count(_json_text(block))


def _anthropic_document(source: Mapping[str, Any], tokenizer: Tokenizer) -> int:
    kind = source.get("type")
    data = source.get("data")
    if kind == "base64" and isinstance(data, str):
        return _base64_file_tokens(data)
    if kind == "text" and isinstance(data, str):
        return tokenizer.count(data)
    if kind == "content":
        return _anthropic_content(source.get("content"), tokenizer)
    return FILE_REFERENCE_TOKENS
