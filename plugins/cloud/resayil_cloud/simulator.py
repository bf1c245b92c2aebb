"""A cloud look-alike server (Ollama's cloud ``/v1`` API, which is OpenAI's) for tests, demo mode and benchmarks.

Serves ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON, or server-sent events ending in
``data: [DONE]`` with a usage chunk when ``stream_options.include_usage`` is set) and ``POST /v1/embeddings``
with deterministic answers, a settable latency and token rate, an optional in-flight limit answered with
429, and the Bearer key checked on every ``/v1`` call (401 in OpenAI's shape when wrong). Model names are
the cloud's own, without Ollama's ``-cloud`` suffix: a suffixed name is a 404, as on ollama.com.

Failures on demand: :meth:`Simulator.fail_next` (or ``POST /_sim/fail {"status": 503, "count": 2}``) makes
the next ``count`` ``/v1`` POSTs answer ``status``. Hooks written anywhere in the last user message:

- ``__sim_http_NNN__``: answer HTTP NNN before streaming;
- ``__sim_midstream_error__``: stream two tokens, then a ``data: {"error": ...}`` event, then end;
- ``__sim_midstream_cut__``: stream two tokens, then end without ``[DONE]``;
- ``__sim_tool_call__``: call the first tool of the request;
- ``__sim_tokens_N__``: answer with N tokens instead of ``reply_tokens``.

``GET /_sim/stats`` returns counters (``requests``, ``in_flight``, ``completed``, ``cancelled``, ``rejected``,
``unauthorized``, ``errors``); ``POST /_sim/reset`` zeroes them. In-process, :meth:`SimulatorStats.wait_until`
waits for a condition without sleeping, and ``Simulator.last_body`` is the last ``/v1`` body received.

Run it with ``python -m resayil_cloud.simulator --port 11435`` or ``resayil cloud-simulator``; in a test,
``runner, url = await start_simulator(tokens_per_second=50)`` and ``await runner.cleanup()``.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import secrets
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click
import orjson
from aiohttp import web

from resayil_gateway.simulators import (
    RequestCounters,
    counter_routes,
    json_response,
    last_user_text,
    message_text,
    prompt_tokens,
    reply_words,
    requested_tokens,
    run_app,
    start_app,
    unit_vector,
    write_paced,
)

SIMULATOR_API_KEY = "sim-cloud-key"
DEFAULT_MODELS = ("gpt-oss:20b", "gpt-oss:120b", "qwen3-coder:480b", "deepseek-v3.1:671b")
DEFAULT_EMBEDDING_MODELS = ("embeddinggemma:300m",)
EMBEDDING_DIMENSIONS = 768
CREATED = 1767000000
STATUS_HOOK = re.compile(r"__sim_http_(\d{3})__")
MIDSTREAM_ERROR = "an error was encountered while running the model: simulated (__sim_midstream_error__)"
VOCAB = (
    "the", "cloud", "model", "answers", "your", "question", "with", "a", "short", "and", "friendly",
    "reply", "about", "inference", "in", "a", "distant", "data", "centre", "while", "tokens", "flow",
    "through", "gateway", "to", "you",
)  # fmt: skip
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "not_found_error"}


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulator behaves.

    ``latency_ms`` delays the first token (and a whole answer); ``tokens_per_second = 0`` sends every token at
    once. ``api_key = None`` accepts any key or none. ``max_in_flight = 0`` never answers 429.
    """

    latency_ms: float = 0.0
    tokens_per_second: float = 0.0
    api_key: str | None = SIMULATOR_API_KEY
    models: tuple[str, ...] = DEFAULT_MODELS
    embedding_models: tuple[str, ...] = DEFAULT_EMBEDDING_MODELS
    reply_tokens: int = 24
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        if min(self.latency_ms, self.tokens_per_second, self.max_in_flight) < 0 or self.reply_tokens < 1:
            raise ValueError("latency_ms, tokens_per_second and max_in_flight must be ≥ 0, reply_tokens ≥ 1")


@dataclass(slots=True)
class SimulatorStats(RequestCounters):
    """Request counters for ``/v1`` POSTs. ``in_flight`` counts requests being answered right now (and stays
    true on :meth:`reset`); ``unauthorized`` those refused for a wrong key."""

    unauthorized: int = 0


@dataclass(slots=True)
class _Failure:
    status: int
    remaining: int
    message: str


class Simulator:
    """The simulator's state: configuration, counters, failures to inject and the last body received."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = SimulatorStats()
        self.last_body: dict[str, Any] | None = None
        self._failure: _Failure | None = None

    def fail_next(self, status: int, count: int = 1, message: str | None = None) -> None:
        """Answer the next ``count`` ``/v1`` POSTs with HTTP ``status`` (an OpenAI-shaped error body)."""
        if not 400 <= status <= 599 or count < 1:
            raise ValueError("status must be 400-599 and count at least 1")
        self._failure = _Failure(status, count, message or f"simulated failure (HTTP {status})")

    def take_failure(self) -> _Failure | None:
        """The injected failure for this request, if any (each call uses one)."""
        failure = self._failure
        if failure is None:
            return None
        failure.remaining -= 1
        if failure.remaining <= 0:
            self._failure = None
        return failure

    def is_chat_model(self, name: Any) -> bool:
        """True for a chat model the simulator serves."""
        return isinstance(name, str) and name in self.config.models

    def is_embedding_model(self, name: Any) -> bool:
        """True for an embedding model the simulator serves."""
        return isinstance(name, str) and name in self.config.embedding_models


SIMULATOR = web.AppKey("simulator", Simulator)


def make_simulator_app(config: SimulatorConfig | None = None) -> web.Application:
    """The simulator as an aiohttp application; its state is ``app[SIMULATOR]``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIMULATOR] = Simulator(config or SimulatorConfig())
    app.add_routes(
        [
            web.get("/v1/models", _models),
            web.post("/v1/chat/completions", _chat),
            web.post("/v1/embeddings", _embeddings),
            *counter_routes(lambda app: app[SIMULATOR].stats),
            web.post("/_sim/fail", _fail),
        ]
    )
    return app


async def start_simulator(host: str = "127.0.0.1", port: int = 0, **config: Any) -> tuple[web.AppRunner, str]:
    """Start the simulator on a real socket (``port=0`` picks a free one) and return ``(runner, base_url)``.

    ``config`` are :class:`SimulatorConfig` fields. Stop it with ``await runner.cleanup()``; its state is
    ``runner.app[SIMULATOR]``. Point the backend at it with ``[cloud] url = base_url`` and
    ``api_key = SIMULATOR_API_KEY``.
    """
    return await start_app(make_simulator_app(SimulatorConfig(**config)), host, port)


# handlers --------------------------------------------------------------------------------------------------


def _error(
    message: str, status: int, code: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    error = {"message": message, "type": ERROR_TYPES.get(status, "api_error"), "param": None, "code": code}
    return json_response({"error": error}, status, headers)


def _unauthorized(request: web.Request) -> web.Response | None:
    """A 401 when the Bearer key is wrong (OpenAI's message, key masked), else None."""
    sim = request.app[SIMULATOR]
    expected = sim.config.api_key
    if expected is None:
        return None
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if secrets.compare_digest(given.encode(), expected.encode()):
        return None
    sim.stats.unauthorized += 1
    sim.stats.touch()
    masked = f"{given[:3]}***{given[-2:]}" if len(given) > 6 else "***"
    return _error(f"Incorrect API key provided: {masked}.", 401, "invalid_api_key")


async def _models(request: web.Request) -> web.Response:
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    config = request.app[SIMULATOR].config
    names = (*config.models, *config.embedding_models)
    data = [{"id": name, "object": "model", "created": CREATED, "owned_by": "library"} for name in names]
    return json_response({"object": "list", "data": data})


async def _fail(request: web.Request) -> web.Response:
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        request.app[SIMULATOR].fail_next(int(body.get("status", 503)), int(body.get("count", 1)), body.get("message"))
    except (TypeError, ValueError) as exc:
        return _error(str(exc), 400)
    return json_response({"ok": True})


async def _read_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error("invalid JSON body", 400)
    if not isinstance(body, dict):
        return _error("the body must be a JSON object", 400)
    return body


async def _admit(request: web.Request) -> dict[str, Any] | web.Response:
    """Count the request, check the key, read the body and apply injected failures and the in-flight limit."""
    sim = request.app[SIMULATOR]
    sim.stats.requests += 1
    sim.stats.touch()
    refused = _unauthorized(request)
    if refused is not None:
        return refused
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    sim.last_body = body
    failure = sim.take_failure()
    if failure is not None:
        sim.stats.errors += 1
        sim.stats.touch()
        headers = {"Retry-After": "2"} if failure.status in (429, 503) else None
        return _error(failure.message, failure.status, headers=headers)
    if sim.config.max_in_flight and sim.stats.in_flight >= sim.config.max_in_flight:
        sim.stats.rejected += 1
        sim.stats.touch()
        return _error("Too many concurrent requests", 429, "rate_limit_exceeded", {"Retry-After": "1"})
    return body


@dataclass(slots=True)
class _Plan:
    """What one chat request will produce."""

    model: str
    tokens: list[str]
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    prompt_tokens: int
    midstream: str | None


def _plan(sim: Simulator, body: Mapping[str, Any]) -> _Plan:
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    last_user = last_user_text(messages)
    tokens = reply_words(last_user, requested_tokens(last_user, sim.config.reply_tokens), VOCAB)
    tool_calls: list[dict[str, Any]] = []
    tools = body.get("tools") or []
    if "__sim_tool_call__" in last_user and tools:
        name = (tools[0].get("function") or {}).get("name", "tool")
        arguments = orjson.dumps({"query": last_user[:40]}).decode()
        call_id = f"call_{zlib.crc32(last_user.encode()):08x}"
        tool_calls = [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]
        tokens = []
    finish_reason = "tool_calls" if tool_calls else "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < len(tokens):
        tokens = tokens[:limit]
        finish_reason = "length"
    midstream = next((hook for hook in ("error", "cut") if f"__sim_midstream_{hook}__" in last_user), None)
    return _Plan(str(body["model"]), tokens, tool_calls, finish_reason, prompt_tokens(messages), midstream)


async def _chat(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    body = await _admit(request)
    if isinstance(body, web.Response):
        return body
    if not body.get("model") or not isinstance(body.get("messages"), list):
        return _error("model and messages are required", 400)
    if not sim.is_chat_model(body["model"]):
        if sim.is_embedding_model(body["model"]):
            return _error(f'"{body["model"]}" does not support chat', 400)
        return _error(f'model "{body["model"]}" not found', 404)
    messages = body["messages"]
    hooks = (STATUS_HOOK.search(message_text(m.get("content"))) for m in messages if isinstance(m, dict))
    status_hook = next((hook for hook in hooks if hook and 400 <= int(hook.group(1)) <= 599), None)
    if status_hook is not None:
        sim.stats.errors += 1
        sim.stats.touch()
        status = int(status_hook.group(1))
        return _error(f"simulated error (__sim_http_{status}__)", status)
    plan = _plan(sim, body)
    usage = bool((body.get("stream_options") or {}).get("include_usage"))
    stream = body.get("stream") is True
    return await sim.stats.track(lambda: _stream(request, sim, plan, usage) if stream else _whole(sim, plan))


def _usage(plan: _Plan) -> dict[str, int]:
    completion = len(plan.tokens) + len(plan.tool_calls)
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": plan.prompt_tokens + completion,
    }


async def _whole(sim: Simulator, plan: _Plan) -> web.Response:
    config = sim.config
    if config.latency_ms:
        await asyncio.sleep(config.latency_ms / 1000)
    if config.tokens_per_second and plan.tokens:
        await asyncio.sleep(len(plan.tokens) / config.tokens_per_second)
    if plan.midstream:
        sim.stats.errors += 1
        return _error(MIDSTREAM_ERROR, 500)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.tokens)}
    if plan.tool_calls:
        message["tool_calls"] = plan.tool_calls
    return json_response(
        {
            "id": f"chatcmpl-{random.randrange(999)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": message, "finish_reason": plan.finish_reason}],
            "usage": _usage(plan),
        }
    )


def _event(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n\n"


async def _stream(request: web.Request, sim: Simulator, plan: _Plan, include_usage: bool) -> web.StreamResponse:
    config = sim.config
    if config.latency_ms:
        await asyncio.sleep(config.latency_ms / 1000)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    head = {
        "id": f"chatcmpl-{random.randrange(999)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": plan.model,
        "system_fingerprint": "fp_ollama",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return _event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    deltas: list[dict[str, Any]] = [{"content": token} for token in plan.tokens]
    if plan.tool_calls:
        deltas.append({"tool_calls": [{"index": i, **call} for i, call in enumerate(plan.tool_calls)]})
    if plan.midstream:
        deltas = deltas[:2]
    if deltas:
        deltas[0] = {"role": "assistant", **deltas[0]}
    await write_paced(response, (chunk(delta) for delta in deltas), config.tokens_per_second)
    if plan.midstream == "error":
        sim.stats.errors += 1
        await response.write(_event({"error": {"message": MIDSTREAM_ERROR, "type": "api_error", "code": None}}))
    elif plan.midstream is None:
        tail = chunk({}, plan.finish_reason)
        if include_usage:
            tail += _event({**head, "choices": [], "usage": _usage(plan)})
        await response.write(tail + _event(b"[DONE]"))
    await response.write_eof()
    return response


async def _embeddings(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    body = await _admit(request)
    if isinstance(body, web.Response):
        return body
    model = body.get("model")
    if not sim.is_embedding_model(model):
        return _error(f'model "{model}" not found', 404)
    inputs = body.get("input", [])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(text, str) for text in inputs):
        return _error("input must be a string or an array of strings", 400)
    dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
    if not isinstance(dimensions, int) or not 0 < dimensions <= EMBEDDING_DIMENSIONS:
        return _error(f"dimensions must be between 1 and {EMBEDDING_DIMENSIONS}", 400)

    async def work() -> web.Response:
        if sim.config.latency_ms:
            await asyncio.sleep(sim.config.latency_ms / 1000)
        tokens = sum(math.ceil(len(text) / 4) + 2 for text in inputs)
        data = [
            {"object": "embedding", "embedding": unit_vector(f"{model}\0{text}", dimensions), "index": index}
            for index, text in enumerate(inputs)
        ]
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return await sim.stats.track(work)


# command line ----------------------------------------------------------------------------------------------


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


@click.command("cloud-simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=11435, show_default=True, type=int, help="Port to listen on (0: any free port).")
@click.option(
    "--latency", "--latency-ms", "latency_ms", default=0.0, show_default=True, type=float,
    help="Milliseconds before the first token (and before a whole answer).",
)  # fmt: skip
@click.option(
    "--tokens-per-second", default=0.0, show_default=True, type=float, help="Token rate; 0 sends all at once."
)
@click.option("--api-key", default=SIMULATOR_API_KEY, show_default=True, help="Bearer key to require; '' accepts any.")
@click.option("--models", default=",".join(DEFAULT_MODELS), show_default=True, help="Comma-separated chat models.")
@click.option(
    "--embedding-models", default=",".join(DEFAULT_EMBEDDING_MODELS), show_default=True, help="Embedding models."
)
@click.option("--reply-tokens", default=24, show_default=True, type=int, help="Tokens in each answer.")
@click.option("--max-in-flight", default=0, show_default=True, type=int, help="Requests at once before a 429.")
def simulator_command(
    host: str,
    port: int,
    latency_ms: float,
    tokens_per_second: float,
    api_key: str,
    models: str,
    embedding_models: str,
    reply_tokens: int,
    max_in_flight: int,
) -> None:
    """Run a cloud (OpenAI-compatible) simulator in the foreground (for demos, tests and benchmarks)."""
    try:
        config = SimulatorConfig(
            latency_ms=latency_ms,
            tokens_per_second=tokens_per_second,
            api_key=api_key or None,
            models=_names(models),
            embedding_models=_names(embedding_models),
            reply_tokens=reply_tokens,
            max_in_flight=max_in_flight,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Cloud simulator on http://{host}:{port} serving {', '.join(config.models)}")
    run_app(make_simulator_app(config), host, port)


if __name__ == "__main__":
    simulator_command()
