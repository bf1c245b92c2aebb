"""What a plugin author needs to test a plugin on its own: a fake clock, a scripted backend, a migrated
gateway on SQLite or PostgreSQL, and pytest fixtures that run a test on both stores.

The pytest fixtures built on these live in :mod:`resayil_gateway.pytest_plugin`, which the core registers
(entry point ``pytest11``) so they are available in any test suite once ``resayil-gateway`` is installed;
that module only adds named fixtures and changes nothing else in anyone's test session.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, ParamSpec, Protocol, TypeVar

import aiohttp
from aiohttp import web
from sqlalchemy.exc import DBAPIError

from .bootstrap import gateway_from_config
from .clock import Clock
from .domain import (
    BackendKind,
    ChatDelta,
    ChatRequest,
    ChatResult,
    DiscoveredModel,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
)
from .gateway import Gateway
from .plugins import hookimpl
from .store import Store, upgrade
from .store.tables import metadata

POSTGRES_ADMIN_URL = os.environ.get("RESAYIL_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
ADMIN_DSN = POSTGRES_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")  # asyncpg's own form
REDIS_URL = os.environ.get("RESAYIL_TEST_REDIS", "redis://127.0.0.1:6379/0")
TEST_SECRET = "test-secret-key-for-hashing-api-keys-0123456789"


class FakeClock(Clock):
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None, timezone: str = "Asia/Kuwait") -> None:
        super().__init__(timezone)
        self._now = start or datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        """The fake current time."""
        return self._now

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self._mono

    def advance(self, seconds: float = 0, **delta: float) -> None:
        """Move time forward by ``seconds`` (and/or ``days=``, ``hours=``, ...)."""
        step = timedelta(seconds=seconds, **delta)
        self._now += step
        self._mono += step.total_seconds()


@dataclass
class FakeBackend:
    """A scripted backend: answers ``reply`` word by word, or raises ``error`` (before output, or after
    ``error_after`` words when streaming). ``started``/``closed`` count calls, to prove cancellation."""

    name: str = "fake"
    kind: BackendKind = "local"
    max_concurrency: int = 8
    reply: str = "Hello from the fake backend"
    prompt_tokens: int = 10
    model_names: Sequence[str] = ("fake-small", "fake-medium")
    error: Exception | None = None
    error_after: int | None = None
    delay: float = 0.0
    gate: asyncio.Event | None = None
    started: int = 0
    finished: int = 0
    cancelled: int = 0
    requests: list[ChatRequest] = field(default_factory=list)
    _models: tuple[DiscoveredModel, ...] = ()

    def __post_init__(self) -> None:
        self._models = tuple(DiscoveredModel(name) for name in self.model_names)

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    def models(self) -> Sequence[DiscoveredModel]:
        """The scripted model list."""
        return self._models

    def set_models(self, names: Iterable[str]) -> None:
        """Replace the model list (as a discovery refresh would)."""
        self._models = tuple(DiscoveredModel(name) for name in names)

    async def ready(self) -> bool:
        """Always ready."""
        return True

    def _words(self, request: ChatRequest) -> list[str]:
        words = self.reply.split(" ")
        pieces = [word if i == 0 else " " + word for i, word in enumerate(words)]
        if request.max_tokens is not None:
            pieces = pieces[: request.max_tokens]
        return pieces

    async def _wait(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()

    async def chat(self, request: ChatRequest, model: str) -> ChatResult:
        """The whole reply, or the scripted error."""
        self.requests.append(request)
        self.started += 1
        try:
            await self._wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None and self.error_after is None:
            raise self.error
        pieces = self._words(request)
        self.finished += 1
        reason = "length" if request.max_tokens is not None and len(pieces) >= request.max_tokens else "stop"
        return ChatResult("".join(pieces), reason, Usage(self.prompt_tokens, len(pieces)))

    async def stream_chat(self, request: ChatRequest, model: str) -> AsyncIterator[ChatDelta]:
        """The reply one word per delta; the scripted error before or after ``error_after`` words."""
        self.requests.append(request)
        self.started += 1
        try:
            await self._wait()
            if self.error is not None and not self.error_after:
                raise self.error
            pieces = self._words(request)
            for index, piece in enumerate(pieces):
                if self.error is not None and self.error_after is not None and index == self.error_after:
                    raise self.error
                yield ChatDelta(content=piece)
                await asyncio.sleep(0)
            reason = "length" if request.max_tokens is not None and len(pieces) >= request.max_tokens else "stop"
            self.finished += 1
            yield ChatDelta(finish_reason=reason, usage=Usage(self.prompt_tokens, len(pieces)))
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        """One short deterministic vector per input."""
        if self.error is not None:
            raise self.error
        vectors = tuple(tuple(float((len(text) + i) % 7) for i in range(4)) for text in request.inputs)
        return EmbeddingResult(vectors, Usage(sum(len(text.split()) for text in request.inputs), 0))


class FakeBackendPlugin:
    """A plugin object registering the given backends (pass it in ``plugins=``)."""

    def __init__(self, *backends: Any) -> None:
        self.backends = backends

    @hookimpl
    def register_backends(self, register: Any, gateway: Gateway) -> None:
        """Register the scripted backends."""
        for backend in self.backends:
            register(backend)


def build_gateway(
    database_url: str,
    *,
    redis_url: str = "",
    redis_prefix: str = "resayil",
    plugins: Iterable[Any] = (),
    overrides: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    load_entrypoints: bool = False,
    env: Mapping[str, str] | None = None,
) -> Gateway:
    """A gateway for tests: the given store and state, a fixed secret, only ``plugins`` unless
    ``load_entrypoints``. ``overrides`` is a nested mapping of settings."""
    merged: dict[str, Any] = {
        "gateway": {
            "database_url": database_url,
            "redis_url": redis_url,
            "secret_key": TEST_SECRET,
            "redis_prefix": redis_prefix,
        }
    }
    for section, values in (overrides or {}).items():
        if isinstance(values, Mapping) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return gateway_from_config(
        None,
        env=env if env is not None else {},
        overrides=merged,
        plugins=plugins,
        load_entrypoints=load_entrypoints,
        clock=clock,
    )


@dataclass(frozen=True)
class SeededAccount:
    """An account made for a test, with its API key (the secret) and id."""

    id: int
    email: str
    key: str


async def seed_account(
    gateway: Gateway,
    *,
    credits: int = 0,
    email: str = "dev@example.com",
    phone: str = "+96550000000",
    plan: str | None = None,
    role: str = "user",
) -> SeededAccount:
    """Create an account with ``credits`` top-up credits, an optional plan, and one API key."""
    account = await gateway.accounts.create(email, phone, "test-password-123", role=role)
    if plan is not None:
        await gateway.plans.activate(account.id, plan, ref=f"seed-plan:{account.id}", actor="test")
    if credits:
        await gateway.ledger.grant(account.id, credits, bucket="topup", ref=f"seed:{account.id}", reason="topup")
    key = await gateway.keys.create(account.id, "test", enforce_limit=False)
    return SeededAccount(account.id, account.email, key.secret)


# -- stores for the suite ---------------------------------------------------------------------------------


async def _postgres_reachable() -> str | None:
    try:
        import asyncpg

        conn = await asyncio.wait_for(asyncpg.connect(ADMIN_DSN), 3)
        await conn.close()
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({type(exc).__name__})"
    try:
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        await asyncio.wait_for(client.ping(), 3)
        await client.aclose()
    except Exception as exc:
        return f"Redis at {REDIS_URL} is not reachable ({type(exc).__name__})"
    return None


async def create_postgres_database() -> str:
    """A fresh, migrated PostgreSQL database for this test run; returns its URL."""
    name = f"resayil_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _as_admin(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    await _on_store(url, upgrade)
    return url


async def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`create_postgres_database`."""
    name = url.rsplit("/", 1)[1]
    await _as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _as_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_sqlite_template(path: Path) -> Path:
    """A migrated SQLite file to copy for each test."""
    await _on_store(f"sqlite+aiosqlite:///{path}", upgrade)
    return path


async def truncate_all(store: Store) -> None:
    """Empty every table (PostgreSQL), so each test starts from a clean, migrated schema.

    A connection an earlier test left open inside a transaction would make the TRUNCATE wait for ever (and
    the whole run with it): after a few seconds the leftovers are named on stderr and ended, and it runs again.
    """
    names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    for attempt in (1, 2):
        try:
            async with store.begin() as conn:
                await conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
                await conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            return
        except DBAPIError as exc:
            if attempt == 2 or "lock timeout" not in str(exc):
                raise
        async with store.begin() as conn:
            others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            left = (await conn.exec_driver_sql(f"SELECT pid, state, left(query, 200) {others}")).all()
            print(f"\ntruncate_all: ending connections an earlier test left open: {left}", file=sys.stderr)
            await conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) {others}")


async def _on_store(url: str, action: Callable[[Store], Awaitable[None]]) -> None:
    store = Store(url)
    try:
        await action(store)
    finally:
        await store.dispose()


# look-alike servers and started objects -------------------------------------------------------------------------

StateT = TypeVar("StateT")
P = ParamSpec("P")


class Startable(Protocol):
    """Something with an async ``start`` and ``close`` (a backend, a payment provider, a channel)."""

    async def start(self) -> None:
        """Open connections."""

    async def close(self) -> None:
        """Close them."""


StartableT = TypeVar("StartableT", bound=Startable)


class RunningServer(Generic[StateT]):
    """A look-alike server (simulator, sink) on a real socket: its runner, base URL and state."""

    def __init__(self, runner: web.AppRunner, url: str, key: web.AppKey[StateT]) -> None:
        self.runner = runner
        self.url = url
        self.state: StateT = runner.app[key]


@asynccontextmanager
async def running_servers(
    start: Callable[..., Awaitable[tuple[web.AppRunner, str]]], key: web.AppKey[StateT]
) -> AsyncIterator[Callable[..., Awaitable[RunningServer[StateT]]]]:
    """A factory of servers for a fixture: ``await factory(**config)`` calls ``start(**config)`` (a plugin's
    ``start_simulator``, returning ``(runner, url)``) and gives a :class:`RunningServer` with ``state``
    ``runner.app[key]``; every one is stopped on exit."""
    runners: list[web.AppRunner] = []

    async def start_one(**config: Any) -> RunningServer[StateT]:
        runner, url = await start(**config)
        runners.append(runner)
        return RunningServer(runner, url, key)

    try:
        yield start_one
    finally:
        for runner in runners:
            await runner.cleanup()


@asynccontextmanager
async def started_each(make: Callable[P, StartableT]) -> AsyncIterator[Callable[P, Awaitable[StartableT]]]:
    """A factory for a fixture: ``await factory(*args)`` builds ``make(*args)`` and starts it; every one is
    closed on exit."""
    made: list[StartableT] = []

    async def start(*args: P.args, **kwargs: P.kwargs) -> StartableT:
        instance = make(*args, **kwargs)
        await instance.start()
        made.append(instance)
        return instance

    try:
        yield start
    finally:
        for instance in made:
            await instance.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def module_server(module: str, *args: str, timeout_s: float = 10.0) -> AsyncIterator[str]:
    """Run ``python -m module --port <a free port> *args`` (a plugin's simulator command) and yield its base URL
    once it accepts connections; it is terminated on exit."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--port", str(port), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout_s):
            while not await _accepts(port):
                if process.returncode is not None:
                    raise RuntimeError(f"python -m {module} exited with status {process.returncode}")
                await asyncio.sleep(0.05)  # another process: there is no event to wait on
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
        async with asyncio.timeout(5):
            await process.wait()


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def pooled_connections(session: aiohttp.ClientSession) -> set[int]:
    """Identities of the idle connections ``session`` keeps for reuse (to check a stream released its own)."""
    connector = session.connector
    pool = getattr(connector, "_conns", {})  # aiohttp keeps no public view of its pool
    return {id(protocol) for connections in pool.values() for protocol, _ in connections}


def describe_stacks() -> str:
    """One line saying which stacks the suite will run on (printed by ``make test``)."""
    reason = asyncio.run(_postgres_reachable())
    if reason:
        return f"test stacks: SQLite + in-process only; PostgreSQL + Redis tests are SKIPPED: {reason}"
    return "test stacks: SQLite + in-process, and PostgreSQL + Redis (both reachable)"


if __name__ == "__main__":
    print(describe_stacks())
