"""Layer 2, syntax: request bodies have the shape their route declares.

JSON Schema (draft-07 to 2020-12, inline, from files, or built in for the OpenAI and
Anthropic APIs) or an OpenAPI 3.0/3.1 document per route; form and multipart bodies
decoded strictly; images checked from their headers (type, dimensions, frames,
truncation) without decoding pixels; per-tier limits on LLM bodies. Schema violations
→ 422 with the field's JSON pointer; undecodable bodies → 400; oversized → 413; wrong
types → 415. Every validator is compiled at policy load.
"""

from authz_service.layers.syntax.layer import SyntaxLayer

__all__ = ["SyntaxLayer"]
