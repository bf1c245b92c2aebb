"""Reading and validating API request bodies. Every problem is an ``InvalidRequest`` naming the parameter;
nothing here can raise anything else. Unknown fields are accepted and ignored, as SDKs add new ones often."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from ..domain import ChatRequest, EmbeddingRequest
from ..errors import GatewayError, InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PART_TYPES = frozenset({"text", "image_url"})
MAX_STOP_SEQUENCES = 4
# Integer ranges: what the store and the backends can hold, so an out-of-range value is a 400 naming the
# parameter instead of an overflow in the database (holds are BIGINT, token counts INTEGER) or an error
# blamed on the model server (llama.cpp's n_predict and sizes are 32-bit; Ollama's seed is a 64-bit int).
INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TOKENS_RANGE = (1, INT32_MAX)
SEED_RANGE = (INT64_MIN, INT64_MAX)
DIMENSIONS_RANGE = (1, INT32_MAX)
TOP_LOGPROBS_RANGE = (0, 20)
LOGIT_BIAS_RANGE = (-100, 100)
TOKEN_ID_PATTERN = "^[0-9]{1,9}$"  # a vocabulary's token id, well inside 32 bits
_TOKEN_ID = re.compile(TOKEN_ID_PATTERN)


async def read_json(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object; 413 when larger than ``max_bytes``, 400 when not UTF-8 JSON."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(max_bytes) from None
    if len(raw) > max_bytes:
        raise _too_large(max_bytes)
    if not raw:
        raise InvalidRequest("The request body is empty: send a JSON object.", code="invalid_json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8.", code="invalid_encoding") from None
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def _too_large(max_bytes: int) -> GatewayError:
    return GatewayError(
        f"The request body is larger than the limit of {max_bytes} bytes.",
        status=413,
        type_="invalid_request_error",
        code="request_too_large",
    )


def _is_int(value: Any) -> bool:
    """JSON's notion of an integer: ``3`` and ``3.0`` are both integers; ``true`` is not."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number between {low:g} and {high:g}.", param=name)
    return float(value)


def _bounded_int(body: Mapping[str, Any], name: str, bounds: tuple[int, int]) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    low, high = bounds
    if not _is_int(value) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be an integer of at least {low} and at most {high}.", param=name)
    return int(value)


def _check_logprobs(body: Mapping[str, Any]) -> None:
    """OpenAI's ``logprobs`` options: not used by every backend, but forwarded by some, so range-checked."""
    _flag(body, "logprobs")
    _bounded_int(body, "top_logprobs", TOP_LOGPROBS_RANGE)
    bias = body.get("logit_bias")
    if bias is None:
        return
    low, high = LOGIT_BIAS_RANGE
    if not isinstance(bias, dict) or not all(
        _TOKEN_ID.match(token) and _is_number(value) and low <= value <= high for token, value in bias.items()
    ):
        raise InvalidRequest(
            f"'logit_bias' must map token ids to numbers between {low} and {high}.", param="logit_bias"
        )


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    return model


def _messages(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("'messages' is required.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of message objects.", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.", param=f"{where}.role")
        content = message.get("content")
        if content is None:
            if role not in ("assistant", "tool", "function"):
                raise InvalidRequest(f"'{where}.content' is required.", param=f"{where}.content")
        elif isinstance(content, list):
            _check_parts(content, f"{where}.content")
        elif not isinstance(content, str):
            raise InvalidRequest(
                f"'{where}.content' must be a string or an array of content parts.", param=f"{where}.content"
            )
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and not isinstance(tool_calls, list):
            raise InvalidRequest(f"'{where}.tool_calls' must be an array.", param=f"{where}.tool_calls")
    return tuple(messages)


def _check_parts(parts: list[Any], where: str) -> None:
    for index, part in enumerate(parts):
        here = f"{where}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str) or part["type"] not in PART_TYPES:
            raise InvalidRequest(f"'{here}' must be an object with type 'text' or 'image_url'.", param=here)
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InvalidRequest(f"'{here}.text' must be a string.", param=f"{here}.text")
        if part["type"] == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise InvalidRequest(f"'{here}.image_url.url' must be a string.", param=f"{here}.image_url")


def _stop(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and len(stop) <= MAX_STOP_SEQUENCES and all(isinstance(item, str) for item in stop):
        return tuple(stop)
    raise InvalidRequest(f"'stop' must be a string or an array of at most {MAX_STOP_SEQUENCES} strings.", param="stop")


def _tools(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest(
                f"'tools[{index}]' must be {{'type': 'function', 'function': {{...}}}}.",
                param=f"tools[{index}]",
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest(f"'tools[{index}].function.name' is required.", param=f"tools[{index}].function.name")
    return tuple(tools) if tools else None


def _response_format(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise InvalidRequest(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.", param="response_format"
        )
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), dict):
        raise InvalidRequest("'response_format.json_schema' must be an object.", param="response_format")
    return value


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be a boolean.", param=name)
    return value


def parse_chat_request(body: Mapping[str, Any]) -> ChatRequest:
    """Validate an OpenAI chat-completions body into a :class:`ChatRequest`."""
    model = _model(body)
    messages = _messages(body)
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
        include_usage = _flag(options, "include_usage")
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise InvalidRequest("Only n=1 is supported.", param="n")
    max_tokens = _bounded_int(body, "max_tokens", MAX_TOKENS_RANGE)
    max_tokens = _bounded_int(body, "max_completion_tokens", MAX_TOKENS_RANGE) or max_tokens
    seed = _bounded_int(body, "seed", SEED_RANGE)
    _check_logprobs(body)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", param="user")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage and stream,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=_stop(body),
        seed=seed,
        presence_penalty=_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_number(body, "frequency_penalty", -2, 2),
        tools=_tools(body),
        tool_choice=body.get("tool_choice"),
        response_format=_response_format(body),
        user=user,
        body=body,
    )


def parse_embedding_request(body: Mapping[str, Any]) -> EmbeddingRequest:
    """Validate an OpenAI embeddings body into an :class:`EmbeddingRequest` (text inputs only)."""
    model = _model(body)
    raw = body.get("input")
    if isinstance(raw, str):
        inputs: tuple[str, ...] = (raw,)
    elif isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        inputs = tuple(raw)
    elif isinstance(raw, list) and raw and all(_is_int(item) or isinstance(item, list) for item in raw):
        raise InvalidRequest("Token-array inputs are not supported: send text.", param="input")
    else:
        raise InvalidRequest("'input' must be a non-empty string or array of strings.", param="input")
    if any(not text for text in inputs):
        raise InvalidRequest("'input' must not contain empty strings.", param="input")
    encoding = body.get("encoding_format", "float") or "float"
    if encoding != "float" and encoding != "base64":
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    return EmbeddingRequest(
        model=model,
        inputs=inputs,
        dimensions=_bounded_int(body, "dimensions", DIMENSIONS_RANGE),
        encoding_format="base64" if encoding == "base64" else "float",
        body=body,
    )
