"""Building blocks for the look-alike servers plugins ship for tests, demos and benchmarks (simulators, sinks).

Such a server is an aiohttp application whose state sits under an ``AppKey``. What they all do the same way:

- :class:`Changes` and :class:`Counters`: state a test waits on without sleeping
  (``await sim.stats.wait_until(lambda s: s.completed == 2)``); :class:`RequestCounters` adds the usual request
  counters and keeps ``in_flight``, ``completed`` and ``cancelled`` true around a handler's work;
- :func:`start_app` starts the application on a real socket and returns ``(runner, base_url)``; :func:`run_app`
  runs it in the foreground (a ``resayil …-simulator`` command); :func:`counter_routes` adds ``/_sim/stats``
  and ``/_sim/reset``; :func:`json_response` answers JSON;
- deterministic fake model output for model-server simulators: :func:`message_text`, :func:`last_user_text`,
  :func:`prompt_tokens`, :func:`requested_tokens` (the ``__sim_tokens_N__`` hook), :func:`reply_words`,
  :func:`unit_vector`, and :func:`write_paced` to stream pieces at a token rate.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Self, TypeVar

import orjson
from aiohttp import web

T = TypeVar("T")
TOKENS_HOOK = re.compile(r"__sim_tokens_(\d+)__")


class Changes:
    """Something that changes, to wait on without polling: call :meth:`touch` after each change."""

    __slots__ = ("_changed",)

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def touch(self) -> None:
        """Wake whoever waits in :meth:`wait_until` (they check their condition again)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checked now and after every change; bound it with ``asyncio.timeout``."""
        while not predicate():
            await self._changed.wait()


@dataclass(slots=True)
class Counters:
    """Base of a server's counters: subclass it as a ``@dataclass(slots=True)`` of ``int`` fields.

    ``gauges`` names the fields that are levels (requests being answered now) rather than counts: :meth:`reset`
    leaves them as they are.
    """

    gauges: ClassVar[tuple[str, ...]] = ()
    _changes: Changes = field(default_factory=Changes, repr=False, compare=False, kw_only=True)

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict (what a ``GET /_sim/stats`` returns)."""
        return {item.name: getattr(self, item.name) for item in fields(self) if not item.name.startswith("_")}

    def touch(self) -> None:
        """Wake whoever waits in :meth:`wait_until`; call after changing a counter."""
        self._changes.touch()

    async def wait_until(self, predicate: Callable[[Self], bool]) -> None:
        """Wait until ``predicate(counters)`` holds (checked on change); bound it with ``asyncio.timeout``."""
        await self._changes.wait_until(lambda: predicate(self))

    def reset(self) -> None:
        """Zero every counter but the ``gauges``."""
        for name in self.snapshot():
            if name not in self.gauges:
                setattr(self, name, 0)
        self.touch()


@dataclass(slots=True)
class RequestCounters(Counters):
    """Request counters: ``requests`` received, ``in_flight`` being answered now, ``completed``, ``cancelled``
    (the client went away), ``rejected`` (too busy) and ``errors`` (failures answered on purpose)."""

    gauges: ClassVar[tuple[str, ...]] = ("in_flight",)
    requests: int = 0
    in_flight: int = 0
    completed: int = 0
    cancelled: int = 0
    rejected: int = 0
    errors: int = 0

    async def track(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` counted in ``in_flight``; then ``completed``, or ``cancelled`` when the client went away."""
        self.in_flight += 1
        self.touch()
        try:
            result = await work()
        except (asyncio.CancelledError, ConnectionError):
            self.cancelled += 1
            raise
        else:
            self.completed += 1
            return result
        finally:
            self.in_flight -= 1
            self.touch()


# serving -------------------------------------------------------------------------------------------------------


async def start_app(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a real socket (``port=0`` picks a free one) and return ``(runner, base_url)``.

    Stop it with ``await runner.cleanup()``. A handler is cancelled when its client disconnects.
    """
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, f"http://{host}:{runner.addresses[0][1]}"


def run_app(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` in the foreground until interrupted (no access log, no banner of aiohttp's own)."""
    web.run_app(app, host=host, port=port, handler_cancellation=True, access_log=None, print=None)


def counter_routes(counters_of: Callable[[web.Application], Counters]) -> list[web.RouteDef]:
    """The control routes ``GET /_sim/stats`` (the counters) and ``POST /_sim/reset`` (zero them, then the
    counters), for the counters ``counters_of(app)`` returns."""

    async def stats(request: web.Request) -> web.Response:
        return json_response(counters_of(request.app).snapshot())

    async def reset(request: web.Request) -> web.Response:
        counters = counters_of(request.app)
        counters.reset()
        return json_response(counters.snapshot())

    return [web.get("/_sim/stats", stats), web.post("/_sim/reset", reset)]


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """``data`` as a JSON answer."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json", charset="utf-8"
    )


# fake model output ---------------------------------------------------------------------------------------------


def message_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, or the ``text`` of OpenAI-style parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last ``user`` message (where simulators look for their test hooks)."""
    return next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def prompt_tokens(messages: Sequence[Any]) -> int:
    """A deterministic prompt token count: a token per four characters, four per message, one to start."""
    chars = sum(len(message_text(m.get("content"))) for m in messages if isinstance(m, dict))
    return math.ceil(chars / 4) + 4 * len(messages) + 1


def requested_tokens(text: str, default: int) -> int:
    """The N of a ``__sim_tokens_N__`` hook in ``text`` (at least 1), else ``default``."""
    hook = TOKENS_HOOK.search(text)
    return max(1, int(hook.group(1))) if hook else default


def reply_words(prompt: str, count: int, vocab: Sequence[str]) -> list[str]:
    """``count`` tokens of a reply that depends only on ``prompt``: "Hello", words of ``vocab``, a full stop."""
    seed = zlib.crc32(prompt.encode())
    words = ["Hello"] + [" " + vocab[(seed + i * 7919) % len(vocab)] for i in range(1, count)]
    words[-1] += "."
    return words


def unit_vector(seed: str, dimensions: int) -> list[float]:
    """A vector of length 1 that depends only on ``seed`` (say, the model name and the text)."""
    rng = random.Random(zlib.crc32(seed.encode()))
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


async def write_paced(response: web.StreamResponse, pieces: Iterable[bytes], tokens_per_second: float) -> None:
    """Write ``pieces`` one every ``1 / tokens_per_second`` seconds (the first at once), or all in one write
    when the rate is 0. A lazy iterable renders each piece as it goes out."""
    if not tokens_per_second:
        await response.write(b"".join(pieces))
        return
    for index, piece in enumerate(pieces):
        if index:
            await asyncio.sleep(1 / tokens_per_second)
        await response.write(piece)
