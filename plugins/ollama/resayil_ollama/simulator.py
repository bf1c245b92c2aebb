"""An Ollama look-alike server for tests, demo mode and benchmarks.

Speaks Ollama's native API as the real server does (``/``, ``/api/version``, ``/api/tags``, ``/api/show``,
``/api/chat`` as JSON or NDJSON, ``/api/embed``) with deterministic answers, a settable first-token delay and
token rate, parallel slots per model and a pending-queue limit that answers Ollama's exact 503.

Test hooks, written anywhere in the last user message:

- ``__sim_midstream_error__``: stream two tokens, then an ``{"error": ...}`` line, then end;
- ``__sim_http_500__``: answer HTTP 500 before streaming;
- ``__sim_tool_call__``: call the first tool of the request;
- ``__sim_tokens_N__``: answer with N tokens instead of ``reply_tokens``.

``GET /_sim/stats`` returns counters (``requests``, ``in_flight``, ``waiting``, ``completed``, ``cancelled``,
``rejected``, ``errors``); ``POST /_sim/reset`` zeroes them. In-process, :meth:`SimulatorStats.wait_until`
waits for a condition without sleeping.

Run it with ``python -m resayil_ollama.simulator --port 11434`` or ``resayil ollama-simulator``; in a test,
``runner, url = await start_simulator(tokens_per_second=50)`` and ``await runner.cleanup()``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

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

BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"
MIDSTREAM_ERROR = "an error was encountered while running the model: simulated (__sim_midstream_error__)"
VOCAB = (
    "the", "local", "model", "answers", "your", "question", "with", "a", "short", "and", "friendly",
    "reply", "about", "inference", "on", "this", "machine", "while", "tokens", "flow", "steadily",
    "through", "gateway", "to", "you", "in", "order",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SimModel:
    """A model the simulator serves, with the details ``/api/tags`` reports."""

    name: str
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    size: int = 2_019_393_189
    capabilities: tuple[str, ...] = ("completion", "tools")
    embedding_length: int = 0
    modified_at: str = "2026-01-15T09:30:00.123456789+03:00"

    @property
    def is_embedding(self) -> bool:
        """True for embedding-only models (they cannot chat)."""
        return "embedding" in self.capabilities

    def tag(self) -> dict[str, Any]:
        """This model as an entry of ``/api/tags``."""
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": hashlib.sha256(self.name.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": self.family,
                "families": [self.family],
                "parameter_size": self.parameter_size,
                "quantization_level": self.quantization_level,
            },
        }


KNOWN_MODELS = {
    model.name: model
    for model in (
        SimModel("llama3.2:3b"),
        SimModel("qwen2.5-coder:14b", "qwen2", "14.8B", "Q4_K_M", 8_988_124_069, ("completion", "tools", "insert")),
        SimModel("smollm2:135m", "llama", "134.52M", "F16", 270_898_672),
        SimModel("bge-m3:latest", "bert", "566.70M", "F16", 1_157_672_605, ("embedding",), 1024),
        SimModel("nomic-embed-text:latest", "nomic-bert", "137M", "F16", 274_302_450, ("embedding",), 768),
        SimModel(
            "glm-4.7-flash:latest",
            "glm4moelite",
            "29.9B",
            "Q4_K_M",
            19_008_035_400,
            ("completion", "tools", "thinking"),
        ),
    )
}
DEFAULT_MODELS = tuple(KNOWN_MODELS)


def sim_model(name: str) -> SimModel:
    """The model for ``name``: a known one with realistic details, else a generic chat or embedding model."""
    if ":" not in name:
        name += ":latest"
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    if "embed" in name:
        return SimModel(name, "bert", "335M", "F16", 669_615_493, ("embedding",), 384)
    return SimModel(name)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulator behaves. ``tokens_per_second = 0`` sends every token at once (benchmarks)."""

    first_token_ms: float = 0.0
    tokens_per_second: float = 0.0
    parallel: int = 1
    max_queue: int = 512
    models: tuple[str, ...] = DEFAULT_MODELS
    reply_tokens: int = 24
    version: str = "0.14.3"

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise ValueError("parallel must be at least 1")
        if min(self.max_queue, self.first_token_ms, self.tokens_per_second) < 0 or self.reply_tokens < 1:
            raise ValueError("max_queue, first_token_ms and tokens_per_second must be ≥ 0, reply_tokens ≥ 1")


@dataclass(slots=True)
class SimulatorStats(RequestCounters):
    """Request counters. ``in_flight`` counts requests holding a slot, ``waiting`` those queued for one;
    :meth:`reset` leaves both as they are."""

    gauges: ClassVar[tuple[str, ...]] = ("in_flight", "waiting")
    waiting: int = 0


class Busy(Exception):
    """The pending queue is full."""


class Simulator:
    """The simulator's state: configuration, models, per-model slots and counters."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.models = {model.name: model for model in map(sim_model, config.models)}
        self.stats = SimulatorStats()
        self._slots: dict[str, asyncio.Semaphore] = {}

    def find(self, name: Any) -> SimModel | None:
        """The served model called ``name`` (``:latest`` implied), or None."""
        if not isinstance(name, str) or not name:
            return None
        return self.models.get(name) or self.models.get(name + ":latest")

    async def acquire(self, model: SimModel) -> asyncio.Semaphore:
        """Take one of the model's slots, queueing if none is free; :class:`Busy` when the queue is full."""
        slots = self._slots.get(model.name)
        if slots is None:
            slots = self._slots[model.name] = asyncio.Semaphore(self.config.parallel)
        if slots.locked():
            if self.stats.waiting >= self.config.max_queue:
                raise Busy
            self.stats.waiting += 1
            try:
                await slots.acquire()
            finally:
                self.stats.waiting -= 1
        else:
            await slots.acquire()
        return slots


SIMULATOR = web.AppKey("simulator", Simulator)


def make_simulator_app(config: SimulatorConfig | None = None) -> web.Application:
    """The simulator as an aiohttp application; its state is ``app[SIMULATOR]``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[SIMULATOR] = Simulator(config or SimulatorConfig())
    app.add_routes(
        [
            web.get("/", _root),
            web.get("/api/version", _version),
            web.get("/api/tags", _tags),
            web.post("/api/show", _show),
            web.post("/api/chat", _chat),
            web.post("/api/embed", _embed),
            *counter_routes(lambda app: app[SIMULATOR].stats),
        ]
    )
    return app


async def start_simulator(host: str = "127.0.0.1", port: int = 0, **config: Any) -> tuple[web.AppRunner, str]:
    """Start the simulator on a real socket (``port=0`` picks a free one) and return ``(runner, base_url)``.

    ``config`` are :class:`SimulatorConfig` fields. Stop it with ``await runner.cleanup()``; its state is
    ``runner.app[SIMULATOR]``.
    """
    return await start_app(make_simulator_app(SimulatorConfig(**config)), host, port)


# handlers --------------------------------------------------------------------------------------------------


def _error(message: str, status: int) -> web.Response:
    return json_response({"error": message}, status)


async def _root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def _version(request: web.Request) -> web.Response:
    return json_response({"version": request.app[SIMULATOR].config.version})


async def _tags(request: web.Request) -> web.Response:
    return json_response({"models": [model.tag() for model in request.app[SIMULATOR].models.values()]})


async def _show(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    model = sim.find(body.get("model") or body.get("name"))
    if model is None:
        return _error(f'model "{body.get("model")}" not found, try pulling it first', 404)
    info: dict[str, Any] = {"general.architecture": model.family}
    info[f"{model.family}.context_length"] = 8192 if model.is_embedding else 131072
    if model.embedding_length:
        info[f"{model.family}.embedding_length"] = model.embedding_length
    return json_response(
        {
            "modelfile": f"FROM {model.name}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": model.tag()["details"],
            "model_info": info,
            "capabilities": list(model.capabilities),
            "modified_at": model.modified_at,
        }
    )


async def _read_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error("invalid character in request body", 400)
    if not isinstance(body, dict):
        return _error("json: cannot unmarshal into Go value of type api.ChatRequest", 400)
    return body


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class _Plan:
    """What one chat request will produce."""

    model: SimModel
    tokens: list[str]
    thinking: list[str]
    tool_calls: list[dict[str, Any]]
    done_reason: str
    prompt_eval_count: int
    midstream_error: bool


def _plan(sim: Simulator, model: SimModel, body: Mapping[str, Any]) -> _Plan:
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    last_user = last_user_text(messages)
    tokens = reply_words(last_user, requested_tokens(last_user, sim.config.reply_tokens), VOCAB)
    thinking = ["Let", " me", " think."] if body.get("think") and "thinking" in model.capabilities else []
    tool_calls: list[dict[str, Any]] = []
    tools = body.get("tools") or []
    if "__sim_tool_call__" in last_user and tools:
        name = (tools[0].get("function") or {}).get("name", "tool")
        tool_calls = [{"function": {"name": name, "arguments": {"query": last_user[:40]}}}]
        tokens = []
    done_reason = "stop"
    options = body.get("options") or {}
    num_predict = options.get("num_predict") if isinstance(options, dict) else None
    if isinstance(num_predict, int) and 0 <= num_predict < len(thinking) + len(tokens):
        thinking = thinking[:num_predict]
        tokens = tokens[: num_predict - len(thinking)]
        done_reason = "length"
    return _Plan(
        model=model,
        tokens=tokens,
        thinking=thinking,
        tool_calls=tool_calls,
        done_reason=done_reason,
        prompt_eval_count=prompt_tokens(messages),
        midstream_error="__sim_midstream_error__" in last_user,
    )


async def _chat(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    sim.stats.requests += 1
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    if not body.get("model"):
        return _error("model is required", 400)
    model = sim.find(body.get("model"))
    if model is None:
        return _error(f'model "{body["model"]}" not found, try pulling it first', 404)
    if model.is_embedding:
        return _error(f'"{model.name}" does not support chat', 400)
    plan = _plan(sim, model, body)
    messages = body.get("messages") or []
    if any("__sim_http_500__" in message_text(m.get("content")) for m in messages if isinstance(m, dict)):
        sim.stats.errors += 1
        return _error("simulated internal server error (__sim_http_500__)", 500)
    stream = body.get("stream", True) is not False
    return await _serve(request, sim, model, lambda: _stream(request, sim, plan) if stream else _whole(sim, plan))


async def _serve(request: web.Request, sim: Simulator, model: SimModel, work: Callable[[], Any]) -> web.StreamResponse:
    """Run ``work`` holding one of the model's slots, keeping the counters true whatever happens."""
    try:
        slots = await sim.acquire(model)
    except Busy:
        sim.stats.rejected += 1
        sim.stats.touch()
        return _error(BUSY_ERROR, 503)
    except asyncio.CancelledError:
        sim.stats.cancelled += 1
        sim.stats.touch()
        raise
    try:
        response: web.StreamResponse = await sim.stats.track(work)
    finally:
        slots.release()
    return response


def _final(plan: _Plan, started: int, first: int, message: dict[str, Any]) -> dict[str, Any]:
    end = time.perf_counter_ns()
    return {
        "model": plan.model.name,
        "created_at": _now(),
        "message": message,
        "done": True,
        "done_reason": plan.done_reason,
        "total_duration": end - started,
        "load_duration": 1_200_000,
        "prompt_eval_count": plan.prompt_eval_count,
        "prompt_eval_duration": max(first - started, 1),
        "eval_count": len(plan.tokens) + len(plan.thinking) + len(plan.tool_calls),
        "eval_duration": max(end - first, 1),
    }


async def _whole(sim: Simulator, plan: _Plan) -> web.Response:
    started = time.perf_counter_ns()
    config = sim.config
    if config.first_token_ms:
        await asyncio.sleep(config.first_token_ms / 1000)
    first = time.perf_counter_ns()
    produced = len(plan.tokens) + len(plan.thinking)
    if config.tokens_per_second and produced:
        await asyncio.sleep(produced / config.tokens_per_second)
    if plan.midstream_error:
        sim.stats.errors += 1
        return _error(MIDSTREAM_ERROR, 500)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.tokens)}
    if plan.thinking:
        message["thinking"] = "".join(plan.thinking)
    if plan.tool_calls:
        message["tool_calls"] = plan.tool_calls
    return json_response(_final(plan, started, first, message))


def _pieces(plan: _Plan) -> list[dict[str, Any]]:
    pieces: list[dict[str, Any]] = [{"role": "assistant", "content": "", "thinking": t} for t in plan.thinking]
    pieces += [{"role": "assistant", "content": t} for t in plan.tokens]
    if plan.tool_calls:
        pieces.append({"role": "assistant", "content": "", "tool_calls": plan.tool_calls})
    return pieces


async def _stream(request: web.Request, sim: Simulator, plan: _Plan) -> web.StreamResponse:
    started = time.perf_counter_ns()
    config = sim.config
    if config.first_token_ms:  # Ollama sends its headers with the first line
        await asyncio.sleep(config.first_token_ms / 1000)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    first = time.perf_counter_ns()
    name = plan.model.name
    pieces = _pieces(plan)
    if plan.midstream_error:
        pieces = pieces[:2]
    await write_paced(response, _lines(name, pieces), config.tokens_per_second)
    if plan.midstream_error:
        sim.stats.errors += 1
        await response.write(orjson.dumps({"error": MIDSTREAM_ERROR}) + b"\n")
    else:
        final = _final(plan, started, first, {"role": "assistant", "content": ""})
        await response.write(orjson.dumps(final) + b"\n")
    await response.write_eof()
    return response


def _lines(name: str, pieces: list[dict[str, Any]]) -> Iterator[bytes]:
    """One NDJSON line a piece, stamped as it is sent."""
    for message in pieces:
        yield orjson.dumps({"model": name, "created_at": _now(), "message": message, "done": False}) + b"\n"


async def _embed(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    sim.stats.requests += 1
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    model = sim.find(body.get("model"))
    if model is None:
        return _error(f'model "{body.get("model")}" not found, try pulling it first', 404)
    inputs = body.get("input", [])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(text, str) for text in inputs):
        return _error("invalid input type", 400)
    size = model.embedding_length or 384
    dimensions = body.get("dimensions") or size
    if not isinstance(dimensions, int) or not 0 < dimensions <= size:
        return _error(f"dimensions must be between 1 and {size}", 400)

    async def work() -> web.Response:
        started = time.perf_counter_ns()
        if sim.config.first_token_ms:
            await asyncio.sleep(sim.config.first_token_ms / 1000)
        vectors = [unit_vector(f"{model.name}\0{text}", dimensions) for text in inputs]
        return json_response(
            {
                "model": model.name,
                "embeddings": vectors,
                "total_duration": time.perf_counter_ns() - started,
                "load_duration": 1_200_000,
                "prompt_eval_count": sum(math.ceil(len(text) / 4) + 2 for text in inputs),
            }
        )

    return await _serve(request, sim, model, work)


# command line ----------------------------------------------------------------------------------------------


@click.command("ollama-simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=11434, show_default=True, type=int, help="Port to listen on (0: any free port).")
@click.option("--first-token-ms", default=0.0, show_default=True, type=float, help="Delay before the first token.")
@click.option(
    "--tokens-per-second", default=0.0, show_default=True, type=float, help="Token rate; 0 sends all at once."
)
@click.option("--parallel", default=1, show_default=True, type=int, help="Parallel slots per model.")
@click.option("--max-queue", default=512, show_default=True, type=int, help="Pending requests before a 503.")
@click.option("--models", default=",".join(DEFAULT_MODELS), show_default=True, help="Comma-separated model names.")
@click.option("--reply-tokens", default=24, show_default=True, type=int, help="Tokens in each answer.")
def simulator_command(
    host: str,
    port: int,
    first_token_ms: float,
    tokens_per_second: float,
    parallel: int,
    max_queue: int,
    models: str,
    reply_tokens: int,
) -> None:
    """Run an Ollama simulator in the foreground (for demos, tests and benchmarks)."""
    try:
        config = SimulatorConfig(
            first_token_ms=first_token_ms,
            tokens_per_second=tokens_per_second,
            parallel=parallel,
            max_queue=max_queue,
            models=tuple(name.strip() for name in models.split(",") if name.strip()),
            reply_tokens=reply_tokens,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Ollama simulator on http://{host}:{port} serving {', '.join(config.models)}")
    run_app(make_simulator_app(config), host, port)


if __name__ == "__main__":
    simulator_command()
