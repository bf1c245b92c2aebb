"""The gateway's requests in OpenAI's wire format, as an Ollama Cloud or OpenAI-compatible host takes them.

Pure functions and one small stateful class (:class:`StreamTranslator`), no I/O: the backend sends what
:func:`chat_body` and :func:`embedding_body` build and feeds what the host answers to :func:`chat_result`,
a :class:`StreamTranslator`, :func:`embedding_result` or :func:`discovered_models`.

What is sent is an allow-list, not the client's body as is: fields that change what an answer costs or
where it is stored (``n``, ``service_tier``, ``store``, ``metadata``, ``user``, audio output, ``logprobs``)
never reach the host, because the gateway bills from what it relays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from resayil_gateway.domain import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    DiscoveredModel,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
)
from resayil_gateway.errors import UpstreamUnavailable

Dialect = Literal["ollama", "openai"]
PASSED_THROUGH = ("parallel_tool_calls", "reasoning_effort", "reasoning", "logit_bias")
EMBEDDING_HINTS = ("embed", "bge-", "e5-", "gte-")


def upstream_model(model: str, dialect: Dialect) -> str:
    """The name the host knows ``model`` by. Ollama's cloud is addressed without the suffix a signed-in local
    server uses: ``gpt-oss:120b-cloud`` → ``gpt-oss:120b``, ``qwen3.5:cloud`` → ``qwen3.5``."""
    if dialect != "ollama" or ":" not in model:
        return model
    base, tag = model.split(":", 1)
    if tag == "cloud":
        return base
    if tag.endswith("-cloud"):
        return f"{base}:{tag.removesuffix('-cloud')}"
    return model


def chat_body(request: ChatRequest, model: str, dialect: Dialect, *, stream: bool) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body for ``request``, addressed to the upstream name ``model``.

    A stream always asks for usage (``stream_options.include_usage``): the gateway bills from it.
    """
    body: dict[str, Any] = {"model": model, "messages": [_message(message, dialect) for message in request.messages]}
    if request.max_tokens is not None:
        # Ollama ignores max_completion_tokens; OpenAI's newer models refuse max_tokens.
        body["max_tokens" if dialect == "ollama" else "max_completion_tokens"] = request.max_tokens
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = [dict(tool) for tool in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
    if request.response_format:
        body["response_format"] = dict(request.response_format)
    for name in PASSED_THROUGH:
        if request.body.get(name) is not None:
            body[name] = request.body[name]
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _message(message: Mapping[str, Any], dialect: Dialect) -> dict[str, Any]:
    """One message as sent; Ollama knows no ``developer`` role, which OpenAI treats as ``system``."""
    out = dict(message)
    if dialect == "ollama" and out.get("role") == "developer":
        out["role"] = "system"
    return out


def estimate_tokens(chars: int) -> int:
    """About four characters a token, at least one for any output."""
    return (chars + 3) // 4


def usage_from(data: Any, request: ChatRequest, completion_chars: int) -> Usage:
    """Usage from an OpenAI ``usage`` object; an estimate where a count is missing."""
    usage = data if isinstance(data, Mapping) else {}
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else request.estimated_prompt_tokens(),
        completion_tokens=completion if isinstance(completion, int) else estimate_tokens(completion_chars),
    )


def _reasoning(message: Mapping[str, Any]) -> str | None:
    """Thinking text: Ollama calls it ``reasoning``, several OpenAI-compatible hosts ``reasoning_content``."""
    value = message.get("reasoning") or message.get("reasoning_content")
    return value if isinstance(value, str) and value else None


def _tool_calls(value: Any) -> tuple[dict[str, Any], ...] | None:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return None
    calls = tuple(dict(call) for call in value if isinstance(call, Mapping))
    return calls or None


def _first_choice(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    choices = data.get("choices")
    if isinstance(choices, Sequence) and choices and isinstance(choices[0], Mapping):
        return choices[0]
    return None


def _arguments_chars(calls: Sequence[Mapping[str, Any]] | None) -> int:
    total = 0
    for call in calls or ():
        function = call.get("function")
        if isinstance(function, Mapping):
            total += len(str(function.get("arguments") or ""))
    return total


def chat_result(data: Mapping[str, Any], request: ChatRequest) -> ChatResult:
    """A ``chat.completion`` object → :class:`ChatResult` (tool calls passed through as the host sent them)."""
    choice = _first_choice(data)
    message = choice.get("message") if choice is not None else None
    if not isinstance(message, Mapping):
        raise UpstreamUnavailable("The cloud model server returned a malformed answer")
    content = message.get("content")
    content = content if isinstance(content, str) else None
    reasoning = _reasoning(message)
    calls = _tool_calls(message.get("tool_calls"))
    finish = choice.get("finish_reason") if choice is not None else None
    chars = len(content or "") + len(reasoning or "") + _arguments_chars(calls)
    return ChatResult(
        content=content if content or not calls else None,
        finish_reason=str(finish) if finish else ("tool_calls" if calls else "stop"),
        usage=usage_from(data.get("usage"), request, chars),
        tool_calls=calls,
        reasoning=reasoning,
    )


class StreamTranslator:
    """Turns ``chat.completion.chunk`` objects, fed one at a time, into :class:`ChatDelta` pieces.

    The finish reason and the usage arrive in separate chunks (the usage one has ``"choices": []``), so both
    are kept until :meth:`finish`, called on ``[DONE]``, which returns the last delta.
    """

    __slots__ = ("_chars", "_finish_reason", "_request", "_tool_calls", "_usage")

    def __init__(self, request: ChatRequest) -> None:
        self._request = request
        self._chars = 0
        self._tool_calls = False
        self._finish_reason: str | None = None
        self._usage: Any = None

    def feed(self, data: Mapping[str, Any]) -> ChatDelta | None:
        """The delta for one chunk, or None when it carries no output (a role-only, finish or usage chunk)."""
        if isinstance(data.get("usage"), Mapping):
            self._usage = data["usage"]
        choice = _first_choice(data)
        if choice is None:
            return None
        if choice.get("finish_reason"):
            self._finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            return None
        content = delta.get("content")
        content = content if isinstance(content, str) and content else None
        reasoning = _reasoning(delta)
        calls = _tool_calls(delta.get("tool_calls"))
        if not (content or reasoning or calls):
            return None
        self._tool_calls = self._tool_calls or calls is not None
        self._chars += len(content or "") + len(reasoning or "") + _arguments_chars(calls)
        return ChatDelta(content=content, reasoning=reasoning, tool_calls=calls)

    def finish(self) -> ChatDelta:
        """The last delta: the finish reason and the usage (estimated when the host sent none)."""
        reason = self._finish_reason or ("tool_calls" if self._tool_calls else "stop")
        return ChatDelta(finish_reason=reason, usage=usage_from(self._usage, self._request, self._chars))


def embedding_body(request: EmbeddingRequest, model: str) -> dict[str, Any]:
    """The ``/v1/embeddings`` body: every input, as floats (the gateway encodes base64 itself)."""
    body: dict[str, Any] = {"model": model, "input": list(request.inputs), "encoding_format": "float"}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def embedding_result(data: Mapping[str, Any], request: EmbeddingRequest) -> EmbeddingResult:
    """An embeddings ``list`` object → vectors in input order, with the host's token count (or an estimate)."""
    items = data.get("data")
    if not isinstance(items, Sequence) or len(items) != len(request.inputs):
        raise UpstreamUnavailable("The cloud model server returned a malformed embedding answer")
    vectors: list[tuple[float, ...] | None] = [None] * len(items)
    for position, item in enumerate(items):
        index = item.get("index", position) if isinstance(item, Mapping) else None
        vector = item.get("embedding") if isinstance(item, Mapping) else None
        if not isinstance(index, int) or not 0 <= index < len(items) or not isinstance(vector, Sequence):
            raise UpstreamUnavailable("The cloud model server returned a malformed embedding answer")
        vectors[index] = tuple(float(value) for value in vector)
    if any(vector is None for vector in vectors):
        raise UpstreamUnavailable("The cloud model server returned a malformed embedding answer")
    usage = data.get("usage")
    prompt = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    return EmbeddingResult(
        vectors=tuple(vector for vector in vectors if vector is not None),
        usage=Usage(prompt_tokens=prompt if isinstance(prompt, int) else request.estimated_prompt_tokens()),
    )


def discovered_models(listing: Mapping[str, Any], dialect: Dialect) -> tuple[DiscoveredModel, ...]:
    """A ``/v1/models`` answer → the models the backend reports, in the host's order (suffixes removed)."""
    models: dict[str, DiscoveredModel] = {}
    for entry in listing.get("data") or ():
        model_id = entry.get("id") if isinstance(entry, Mapping) else None
        if not isinstance(model_id, str) or not model_id:
            continue
        name = upstream_model(model_id, dialect)
        created = entry.get("created")
        embedding = any(hint in name.lower() for hint in EMBEDDING_HINTS)
        models.setdefault(
            name,
            DiscoveredModel(
                name=name,
                capabilities=("embedding",) if embedding else ("chat",),
                created=created if isinstance(created, int) else 0,
            ),
        )
    return tuple(models.values())
