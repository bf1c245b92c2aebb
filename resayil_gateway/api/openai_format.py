"""OpenAI's wire format for answers: chat completions, streamed chunks (SSE), embeddings and model objects.

Chunks are framed from a template made once per stream, so relaying a delta costs one small ``orjson.dumps``.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ..domain import ChatDelta, ChatResult, EmbeddingResult, ModelInfo, Usage

SYSTEM_FINGERPRINT = "fp_resayil"
DONE = b"data: [DONE]\n\n"


def usage_object(usage: Usage) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_body(completion_id: str, created: int, model: str, result: ChatResult) -> dict[str, Any]:
    """A ``chat.completion`` object for a whole answer."""
    message: dict[str, Any] = {"role": "assistant", "content": result.content, "refusal": None}
    if result.tool_calls:
        message["tool_calls"] = list(result.tool_calls)
    if result.reasoning:
        message["reasoning"] = result.reasoning
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": usage_object(result.usage),
    }


class ChunkEncoder:
    """Frames a stream's deltas as ``data: {chat.completion.chunk}\\n\\n`` events."""

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        head = orjson.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        )
        self._head = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        self._tail_open = (
            b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"
        )
        self._usage_head = b"data: " + head[:-1] + b',"choices":[],"usage":'

    def role(self) -> bytes:
        """The first event: the assistant role with empty content."""
        return self._head + b'{"role":"assistant","content":""}' + self._tail_open

    def delta(self, delta: ChatDelta) -> bytes:
        """An event for a content, reasoning or tool-call piece ("" when the delta carries none)."""
        body: dict[str, Any] = {}
        if delta.content:
            body["content"] = delta.content
        if delta.reasoning:
            body["reasoning"] = delta.reasoning
        if delta.tool_calls:
            body["tool_calls"] = list(delta.tool_calls)
        if not body:
            return b""
        return self._head + orjson.dumps(body) + self._tail_open

    def finish(self, finish_reason: str) -> bytes:
        """The event that closes the choice with its ``finish_reason``."""
        tail = orjson.dumps(finish_reason)
        usage = b',"usage":null' if self.include_usage else b""
        return self._head + b'{},"logprobs":null,"finish_reason":' + tail + b"}]" + usage + b"}\n\n"

    def usage(self, usage: Usage) -> bytes:
        """The extra event with ``choices: []`` and the usage, sent before ``[DONE]`` when asked for."""
        return self._usage_head + orjson.dumps(usage_object(usage)) + b"}\n\n"


def error_event(body: Mapping[str, Any]) -> bytes:
    """A mid-stream error as the SDKs recognise it: a ``data:`` object with a top-level ``error``."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


def embeddings_body(model: str, result: EmbeddingResult, encoding_format: str) -> dict[str, Any]:
    """An OpenAI embeddings ``list`` object, vectors as floats or base64 little-endian float32."""
    data = []
    for index, vector in enumerate(result.vectors):
        embedding: Any = list(vector)
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": embedding, "index": index})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens},
    }


def model_object(model: ModelInfo) -> dict[str, Any]:
    """A ``model`` object as ``GET /v1/models`` lists it (size class as an extra field)."""
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "size": model.size,
    }


def model_list(models: Sequence[ModelInfo]) -> dict[str, Any]:
    """The ``list`` object of ``GET /v1/models``."""
    return {"object": "list", "data": [model_object(model) for model in models]}
