"""Translation between OpenAI's chat dialect (the gateway's :class:`ChatRequest`) and Ollama's native API.

Pure functions and one small stateful class (:class:`StreamTranslator`), no I/O: the backend sends what
:func:`chat_body` builds and feeds what Ollama answers to :func:`chat_result` or a :class:`StreamTranslator`.

Mapping (OpenAI → Ollama ``/api/chat``):

- ``max_tokens`` → ``options.num_predict``; ``temperature``, ``top_p``, ``stop``, ``seed``,
  ``presence_penalty``, ``frequency_penalty`` → ``options.*``; ``num_ctx`` from settings.
- ``response_format``: ``json_object`` → ``format: "json"``, ``json_schema`` → ``format: <schema>``.
- ``tools`` pass through (dropped when ``tool_choice`` is ``"none"``); ``reasoning_effort`` → ``think``.
- role ``developer`` → ``system``; content parts: text joined, base64 ``image_url`` data URLs → ``images``.
- assistant ``tool_calls`` (arguments as a JSON string) → Ollama objects (arguments as an object); a
  ``tool`` message gets ``tool_name`` from the call it answers when that call is in the conversation.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from resayil_gateway.domain import ChatDelta, ChatRequest, ChatResult, DiscoveredModel, Usage
from resayil_gateway.errors import InvalidRequest, UpstreamUnavailable

ROLE_MAP = {"developer": "system"}
THINK_LEVELS = {"low", "medium", "high"}


def chat_body(
    request: ChatRequest,
    model: str,
    *,
    stream: bool,
    keep_alive: str | None = None,
    num_ctx: int | None = None,
) -> dict[str, Any]:
    """The native ``/api/chat`` body for ``request``, addressed to the upstream model name ``model``.

    Raises :class:`InvalidRequest` for content Ollama cannot take (an image by URL, a malformed tool call).
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": ollama_messages(request.messages),
        "stream": stream,
    }
    options = ollama_options(request, num_ctx)
    if options:
        body["options"] = options
    if request.tools and request.tool_choice != "none":
        body["tools"] = [dict(tool) for tool in request.tools]
    response_format = ollama_format(request.response_format)
    if response_format is not None:
        body["format"] = response_format
    think = ollama_think(request.body.get("reasoning_effort"))
    if think is not None:
        body["think"] = think
    if keep_alive is not None:
        body["keep_alive"] = keep_alive_value(keep_alive)
    return body


def keep_alive_value(keep_alive: str) -> str | int:
    """Ollama's ``keep_alive``: a duration such as ``"30m"`` as is, a bare number as seconds (``-1``: forever)."""
    stripped = keep_alive.strip()
    return int(stripped) if stripped.lstrip("-").isdigit() else stripped


def ollama_options(request: ChatRequest, num_ctx: int | None = None) -> dict[str, Any]:
    """The ``options`` object: sampling and length settings, only those the client set."""
    options: dict[str, Any] = {}
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None:
            options[name] = value
    if request.stop:
        options["stop"] = list(request.stop)
    if num_ctx is not None:
        options["num_ctx"] = num_ctx
    return options


def ollama_format(response_format: Mapping[str, Any] | None) -> Any:
    """Ollama's ``format`` for an OpenAI ``response_format``: ``"json"``, a JSON schema, or ``None``."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return dict(schema) if isinstance(schema, Mapping) else "json"
    raise InvalidRequest(f"response_format type {kind!r} is not supported", param="response_format")


def ollama_think(reasoning_effort: Any) -> bool | str | None:
    """Ollama's ``think`` for OpenAI's ``reasoning_effort`` (``None`` leaves the model's default)."""
    if reasoning_effort in THINK_LEVELS:
        return str(reasoning_effort)
    if reasoning_effort in ("none", "minimal"):
        return False
    return None


def ollama_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages → Ollama messages, in order."""
    tool_names: dict[str, str] = {}
    translated = []
    for message in messages:
        translated.append(ollama_message(message, tool_names))
    return translated


def ollama_message(message: Mapping[str, Any], tool_names: dict[str, str] | None = None) -> dict[str, Any]:
    """One OpenAI message → one Ollama message.

    ``tool_names`` maps tool-call ids seen so far to function names; assistant tool calls add to it and a
    ``tool`` message reads it to fill Ollama's ``tool_name``.
    """
    tool_names = {} if tool_names is None else tool_names
    role = str(message.get("role", "user"))
    text, images = split_content(message.get("content"))
    out: dict[str, Any] = {"role": ROLE_MAP.get(role, role), "content": text}
    if images:
        out["images"] = images
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = [_ollama_tool_call(call, tool_names) for call in message["tool_calls"]]
    if role == "tool":
        name = message.get("name") or tool_names.get(str(message.get("tool_call_id", "")))
        if name:
            out["tool_name"] = name
    return out


def split_content(content: Any) -> tuple[str, list[str]]:
    """OpenAI message content → (text, base64 images). Text parts are joined with newlines."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, Sequence):
        raise InvalidRequest("message content must be a string or an array of parts", param="messages")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            images.append(image_base64(part.get("image_url")))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported", param="messages")
    return "\n".join(texts), images


def image_base64(image_url: Any) -> str:
    """The base64 payload of an ``image_url`` part; only ``data:...;base64,`` URLs are accepted."""
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        raise InvalidRequest(
            "image_url must be a base64 data URL (data:image/...;base64,...); image links are not fetched",
            param="messages",
        )
    return url.split(";base64,", 1)[1]


def _ollama_tool_call(call: Any, tool_names: dict[str, str]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not function.get("name"):
        raise InvalidRequest("each tool call needs a function with a name", param="messages")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise InvalidRequest("tool call arguments must be a JSON object", param="messages") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise InvalidRequest("tool call arguments must be a JSON object", param="messages")
    if call.get("id"):
        tool_names[str(call["id"])] = str(function["name"])
    return {"function": {"name": function["name"], "arguments": dict(arguments)}}


def new_tool_call_id() -> str:
    """A fresh OpenAI-style tool-call id, ``call_<hex>``."""
    return "call_" + secrets.token_hex(12)


def openai_tool_calls(calls: Sequence[Any], first_index: int = 0, *, streamed: bool) -> tuple[dict[str, Any], ...]:
    """Ollama tool calls → OpenAI's: generated ids, ``type: "function"``, arguments as a JSON string.

    ``streamed`` adds the ``index`` OpenAI puts on streamed tool-call pieces, counting from ``first_index``.
    """
    out = []
    for offset, call in enumerate(calls):
        function = call.get("function", {}) if isinstance(call, Mapping) else {}
        arguments = function.get("arguments", {})
        item: dict[str, Any] = {
            "id": new_tool_call_id(),
            "type": "function",
            "function": {
                "name": function.get("name", ""),
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False),
            },
        }
        if streamed:
            item = {"index": first_index + offset, **item}
        out.append(item)
    return tuple(out)


def finish_reason(done_reason: Any, has_tool_calls: bool) -> str:
    """OpenAI's ``finish_reason``: ``tool_calls`` if tools were called, ``length`` if cut, else ``stop``."""
    if has_tool_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def estimate_tokens(chars: int) -> int:
    """About four characters a token, at least one for any output."""
    return (chars + 3) // 4


def usage_from(data: Mapping[str, Any], request: ChatRequest, completion_chars: int) -> Usage:
    """Usage from Ollama's ``prompt_eval_count``/``eval_count``; an estimate where a count is missing."""
    prompt = data.get("prompt_eval_count")
    completion = data.get("eval_count")
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else request.estimated_prompt_tokens(),
        completion_tokens=completion if isinstance(completion, int) else estimate_tokens(completion_chars),
    )


def upstream_error(data: Mapping[str, Any]) -> UpstreamUnavailable:
    """The error to raise for an ``{"error": ...}`` object Ollama sent in place of an answer."""
    return UpstreamUnavailable(f"The model server failed: {data.get('error')}")


def chat_result(data: Mapping[str, Any], request: ChatRequest) -> ChatResult:
    """A non-streamed ``/api/chat`` answer → :class:`ChatResult`."""
    if "error" in data:
        raise upstream_error(data)
    message = data.get("message") or {}
    content = message.get("content") or ""
    reasoning = message.get("thinking") or None
    calls = openai_tool_calls(message.get("tool_calls") or (), streamed=False) or None
    chars = len(content) + len(reasoning or "") + sum(len(c["function"]["arguments"]) for c in calls or ())
    return ChatResult(
        content=content if content or not calls else None,
        finish_reason=finish_reason(data.get("done_reason"), bool(calls)),
        usage=usage_from(data, request, chars),
        tool_calls=calls,
        reasoning=reasoning,
    )


class StreamTranslator:
    """Turns Ollama's NDJSON lines, fed one at a time, into :class:`ChatDelta` pieces.

    Keeps what a stream needs across lines: tool-call indexes, whether tools were called, and the output
    length for estimating usage when Ollama omits the counts. ``done`` turns true on the final line.
    """

    __slots__ = ("_chars", "_request", "_tool_calls", "done")

    def __init__(self, request: ChatRequest) -> None:
        self._request = request
        self._chars = 0
        self._tool_calls = 0
        self.done = False

    def feed(self, data: Mapping[str, Any]) -> list[ChatDelta]:
        """The deltas for one parsed line. Raises :class:`UpstreamUnavailable` on an ``error`` line."""
        if "error" in data:
            raise upstream_error(data)
        deltas = []
        message = data.get("message") or {}
        content = message.get("content") or None
        reasoning = message.get("thinking") or None
        calls = message.get("tool_calls")
        tool_calls = None
        if calls:
            tool_calls = openai_tool_calls(calls, self._tool_calls, streamed=True)
            self._tool_calls += len(tool_calls)
            self._chars += sum(len(c["function"]["arguments"]) for c in tool_calls)
        if content or reasoning or tool_calls:
            self._chars += len(content or "") + len(reasoning or "")
            deltas.append(ChatDelta(content=content, reasoning=reasoning, tool_calls=tool_calls))
        if data.get("done"):
            self.done = True
            deltas.append(
                ChatDelta(
                    finish_reason=finish_reason(data.get("done_reason"), self._tool_calls > 0),
                    usage=usage_from(data, self._request, self._chars),
                )
            )
        return deltas


EMBEDDING_FAMILIES = frozenset({"bert", "nomic-bert", "xlm-roberta", "jina-bert", "jina-bert-v2"})
CAPABILITY_MAP = {"completion": "chat"}


def discovered_models(tags: Mapping[str, Any]) -> tuple[DiscoveredModel, ...]:
    """Ollama's ``/api/tags`` answer → the models a backend reports, in Ollama's order."""
    models = []
    for entry in tags.get("models") or ():
        if not isinstance(entry, Mapping) or not (entry.get("name") or entry.get("model")):
            continue
        details = _details(entry)
        models.append(
            DiscoveredModel(
                name=str(entry.get("name") or entry.get("model")),
                capabilities=model_capabilities(entry),
                created=timestamp(entry.get("modified_at")),
                parameter_size=str(details.get("parameter_size") or ""),
                family=str(details.get("family") or ""),
            )
        )
    return tuple(models)


def model_capabilities(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """A model's capabilities: Ollama's ``capabilities`` when listed (``completion`` read as ``chat``),
    else ``embedding`` for names and families that look like embedding models, else ``chat``."""
    listed = entry.get("capabilities")
    if isinstance(listed, Sequence) and not isinstance(listed, str) and listed:
        return tuple(dict.fromkeys(CAPABILITY_MAP.get(str(cap), str(cap)) for cap in listed))
    details = _details(entry)
    families = {str(details.get("family") or "")} | {str(f) for f in details.get("families") or ()}
    name = str(entry.get("name") or entry.get("model") or "").lower()
    if families & EMBEDDING_FAMILIES or "embed" in name or name.startswith("bge-"):
        return ("embedding",)
    return ("chat",)


def _details(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    details = entry.get("details")
    return details if isinstance(details, Mapping) else {}


def timestamp(value: Any) -> int:
    """Unix seconds from an RFC 3339 time as Ollama writes it (nanoseconds allowed); 0 when unreadable."""
    if not isinstance(value, str) or not value:
        return 0
    text = value.replace("Z", "+00:00")
    if "." in text:  # Python reads at most six fractional digits
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}" if digits else head + rest
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return 0
