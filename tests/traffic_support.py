"""A deployment for the traffic-rule tests: two ``serve --workers 2`` processes (``traffic_serve.py``) on one
fresh PostgreSQL database and one Redis key prefix, the Ollama simulator behind a gate (requests wait at it
until the test opens it: as slow as the test needs, with no timing to guess) and the cloud simulator, both
in a background event loop of the test process that also drives the raw HTTP calls.

What the tests observe: each simulator's arrivals (the last user message of each request, in the order the
requests reached it) and the most requests the local one ever held at once; the shared line's depth in
Redis; the cloud-budget events every worker raised (``traffic_serve.EventLog``) and the outbox rows; which
worker process holds a client's connection (``/proc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import redis
from aiohttp import web
from resayil_cloud.simulator import SIMULATOR_API_KEY
from resayil_cloud.simulator import SimulatorConfig as CloudConfig
from resayil_cloud.simulator import make_simulator_app as make_cloud_app
from resayil_ollama.simulator import SimulatorConfig as OllamaConfig
from resayil_ollama.simulator import make_simulator_app as make_ollama_app
from traffic_serve import FileClock

from resayil_gateway.testing import (
    REDIS_URL,
    TEST_SECRET,
    SeededAccount,
    build_gateway,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    seed_account,
)

T = TypeVar("T")
HERE = Path(__file__).parent
KUWAIT = ZoneInfo("Asia/Kuwait")
LOCAL_MODEL = "llama3.2:3b"  # local, with a cloud equivalent
CLOUD_EQUIVALENT = "gpt-oss:20b"
CLOUD_MODEL = "gpt-oss:120b"  # cloud only
DAILY_BUDGET = 5
FAILOVER_DEPTH = 3
QUEUE_LEASE_S = 2.0
DEPTH_CACHE_S = 0.05  # a worker reuses a queue depth it read this recently (RedisAdmission.depth_max_age_s)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 15.0, every: float = 0.02) -> Any:
    """Poll ``predicate`` (other processes' state: nothing to await) until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


# -- raw HTTP: one request per connection, so the kernel spreads them over the workers ---------------------


@dataclass
class Answer:
    """A response, or ``status`` 0 when the connection broke before one arrived (its worker was killed)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)

    @property
    def backend(self) -> str | None:
        """Where the request ran (``x-resayil-backend``)."""
        return self.headers.get("x-resayil-backend")


@dataclass
class Call:
    """One request in flight on its own connection: ``local_port`` names the connection, ``answer`` is the
    future response."""

    port: int
    local_port: int
    answer: Future[Answer]
    marker: str = ""

    def result(self, timeout: float = 30) -> Answer:
        """Wait for the response."""
        return self.answer.result(timeout)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> Answer:
    try:
        writer.write(request)
        await writer.drain()
        raw = await reader.read(-1)  # Connection: close: the server ends the connection after its answer
    except ConnectionError:
        return Answer(0)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head:
        return Answer(0)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)


# -- the simulators' observation points ------------------------------------------------------------------


class Observer:
    """Records, at a simulator, the last user message of each chat request in arrival order, and (behind its
    gate, when it has one) how many it holds at once."""

    def __init__(self, gated: bool) -> None:
        self.gate: asyncio.Event | None = asyncio.Event() if gated else None
        self.arrivals: list[str] = []
        self.holding = 0
        self.most_held = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Note the request, hold it at the gate while the gate is closed, then let the simulator answer."""
        if request.method != "POST" or not request.path.endswith(("/api/chat", "/chat/completions")):
            return await handler(request)
        body = await request.json()  # aiohttp keeps the body: the handler reads it again
        self.arrivals.append(str(body["messages"][-1]["content"]))
        self.holding += 1
        self.most_held = max(self.most_held, self.holding)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return await handler(request)
        finally:
            self.holding -= 1


async def _start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


# -- the deployment ---------------------------------------------------------------------------------------


@dataclass
class Server:
    """One ``serve --workers 2`` process group."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        """The supervisor's forked worker processes."""
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if int(fields[1]) == self.process.pid and fields[0] != "Z":
                    children.append(int(entry.name))
        return sorted(children)

    def tail(self) -> str:
        """The end of its log, for failure messages."""
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def connection_owner(server: Server, client_port: int) -> int | None:
    """The worker of ``server`` that holds the server side of the connection from ``client_port``."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if int(local.rsplit(":", 1)[1], 16) == server.port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                    inode = fields[9]
    if inode is None:
        return None
    for pid in server.workers():
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
    return None


class TrafficDeployment:
    """The simulators, two gateway processes and the means to drive and observe them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.prefix = "t" + uuid.uuid4().hex[:12]
        self.clock = FileClock(tmp / "clock")
        self.events_file = tmp / "events.jsonl"
        self.config_file = tmp / "resayil.toml"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="traffic", daemon=True)
        self.local = Observer(gated=True)
        self.cloud = Observer(gated=False)
        self.servers: list[Server] = []
        self.database_url = ""
        self.redis = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        self._runners: list[web.AppRunner] = []
        self._seeder: Any = None
        self._phones = iter(range(50_000_001, 59_999_999))
        self._day: datetime | None = None
        self._exchanges: set[asyncio.Task[Answer]] = set()  # the loop keeps only weak references to tasks

    # -- lifecycle ----------------------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coro`` on the deployment's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> TrafficDeployment:
        """Start everything; the gateways answer ``/readyz`` when this returns."""
        self.thread.start()
        self.database_url = asyncio.run(create_postgres_database())
        self.next_day()
        ollama_port, cloud_port = self.run(self._start_simulators())
        self.config_file.write_text(self._config(ollama_port, cloud_port))
        self.servers = [self._launch(free_port(), name) for name in ("a", "b")]
        self._seeder = self.run(self._make_seeder())
        self.admin_phone = "+96559999999"
        self.seed(role="admin", phone=self.admin_phone)  # the cloud-budget alerts go to the admins
        for server in self.servers:
            self._wait_ready(server)
        return self

    async def _start_simulators(self) -> tuple[int, int]:
        ollama = make_ollama_app(OllamaConfig(parallel=8, reply_tokens=3))
        ollama.middlewares.append(self.local.middleware)
        cloud = make_cloud_app(CloudConfig(reply_tokens=3))
        cloud.middlewares.append(self.cloud.middleware)
        ports = []
        for app in (ollama, cloud):
            runner, port = await _start_app(app)
            self._runners.append(runner)
            ports.append(port)
        return ports[0], ports[1]

    def _config(self, ollama_port: int, cloud_port: int) -> str:
        return f"""
[gateway]
database_url = "{self.database_url}"
redis_url = "{REDIS_URL}"
redis_prefix = "{self.prefix}"
secret_key = "{TEST_SECRET}"
db_pool_size = 3
db_hot_pool_size = 3

[routing]
failover_queue_depth = {FAILOVER_DEPTH}
max_queue_wait_s = 20
queue_lease_s = {QUEUE_LEASE_S}

[ollama]
url = "http://127.0.0.1:{ollama_port}"
max_concurrency = 1

[cloud]
enabled = true
url = "http://127.0.0.1:{cloud_port}"
api_key = "{SIMULATOR_API_KEY}"
daily_request_budget = {DAILY_BUDGET}

[models.catalog."{LOCAL_MODEL}"]
backend = "local"
size = "small"
cloud_equivalent = "{CLOUD_EQUIVALENT}"

[models.catalog."{CLOUD_MODEL}"]
backend = "cloud"
size = "large"
"""

    def _launch(self, port: int, name: str) -> Server:
        log = self.tmp / f"serve-{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESAYIL_")}
        env["RESAYIL_LOAD_PLUGINS"] = "ollama,cloud"
        command = [
            sys.executable,
            str(HERE / "traffic_serve.py"),
            *("--config", str(self.config_file), "--clock-file", str(self.clock.path)),
            *("--events-file", str(self.events_file), "--port", str(port), "--workers", "2"),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)
        return Server(port, process, log)

    def _wait_ready(self, server: Server) -> None:
        def ready() -> bool:
            assert server.process.poll() is None, f"serve on {server.port} exited:\n{server.tail()}"
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
                    sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    return sock.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

        wait_until(ready, f"serve on port {server.port} to be ready", timeout=60, every=0.1)
        wait_until(lambda: len(server.workers()) == 2, "two workers", timeout=30)

    async def _make_seeder(self) -> Any:
        return build_gateway(self.database_url, redis_url=REDIS_URL, redis_prefix=self.prefix, clock=self.clock)

    def stop(self) -> None:
        """Stop the servers (SIGTERM, then SIGKILL for what is left), the simulators and the database."""
        for server in self.servers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGTERM)
        for server in self.servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(5)
        if self._seeder is not None:
            with contextlib.suppress(Exception):
                self.run(self._seeder.store.dispose())
        self.run(self._stop_simulators())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        keys = list(self.redis.scan_iter(f"{self.prefix}:*"))
        if keys:
            self.redis.delete(*keys)
        self.redis.close()
        if self.database_url:
            asyncio.run(drop_postgres_database(self.database_url))

    async def _stop_simulators(self) -> None:
        if self.local.gate is not None:
            self.local.gate.set()
        for runner in reversed(self._runners):
            await runner.cleanup()

    # -- time -----------------------------------------------------------------------------------------------

    def next_day(self) -> datetime:
        """Move the gateways' clock to 23:55 (Asia/Kuwait) of a day after the one it shows: a day of its own
        for each test (a fresh cloud budget and rate-limit windows), five minutes before the Kuwaiti midnight.
        Returns that day's Kuwaiti midnight."""
        today = (self._day or datetime.now(KUWAIT)).date() + timedelta(days=1)
        self._day = datetime(today.year, today.month, today.day, tzinfo=KUWAIT)
        self.clock.set_now(self._day + timedelta(hours=23, minutes=55))
        return self._day

    def past_midnight(self) -> None:
        """Move the clock to 00:00:30 (Asia/Kuwait) of the next day: still the same day in UTC."""
        assert self._day is not None
        self.clock.set_now(self._day + timedelta(days=1, seconds=30))

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.clock.set_offset(self.clock.offset() + seconds)

    def kuwait_day(self) -> str:
        """The day the gateways' clock shows in Asia/Kuwait."""
        return self.clock.local_date().date().isoformat()

    # -- accounts -------------------------------------------------------------------------------------------

    def seed(
        self, plan: str | None = None, credits: int = 5000, role: str = "user", phone: str | None = None
    ) -> SeededAccount:
        """A new account with ``plan`` (Basic rules when None), ``credits`` top-up credits and a key."""
        phone = phone or f"+965{next(self._phones)}"
        return self.run(
            seed_account(
                self._seeder, credits=credits, plan=plan, role=role, email=f"u{phone[1:]}@example.com", phone=phone
            )
        )

    # -- requests -------------------------------------------------------------------------------------------

    def send(
        self,
        server: Server,
        account: SeededAccount,
        marker: str,
        model: str = LOCAL_MODEL,
        headers: Mapping[str, str] | None = None,
    ) -> Call:
        """Send a chat completion whose last user message is ``marker`` on a new connection; returns at once."""
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": marker}], "max_tokens": 3}).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {account.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
        ).encode()

        async def connect() -> tuple[int, Future[Answer]]:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            local_port = int(writer.get_extra_info("sockname")[1])
            task = asyncio.ensure_future(_exchange(reader, writer, head + body))
            self._exchanges.add(task)
            answer: Future[Answer] = Future()
            task.add_done_callback(self._exchanges.discard)
            task.add_done_callback(lambda done: _settle(answer, done))
            return local_port, answer

        local_port, answer = self.run(connect())
        return Call(server.port, local_port, answer, marker)

    def open_gate(self) -> None:
        """Let the local simulator answer (every held request, and every later one at once)."""
        assert self.local.gate is not None
        self.loop.call_soon_threadsafe(self.local.gate.set)

    def close_gate(self) -> None:
        """Hold every request that reaches the local simulator from now on."""
        assert self.local.gate is not None
        self.loop.call_soon_threadsafe(self.local.gate.clear)

    def reset_observers(self) -> None:
        """Forget what the simulators saw so far."""

        async def reset() -> None:
            for observer in (self.local, self.cloud):
                observer.arrivals.clear()
                observer.most_held = observer.holding

        self.run(reset())

    # -- shared state ----------------------------------------------------------------------------------------

    def _queue_key(self, part: str) -> str:
        return f"{self.prefix}:queue:{{ollama}}:{part}"

    def depth(self) -> int:
        """The local line's depth in Redis: running slots plus waiting tickets, as stored (expired leases are
        purged by the workers' scripts, so a phantom shows here until one purges it)."""
        return int(self.redis.zcard(self._queue_key("running")) + self.redis.zcard(self._queue_key("waiting")))

    def running(self) -> int:
        """Running slots stored for the local line."""
        return int(self.redis.zcard(self._queue_key("running")))

    def budget_used(self, day: str) -> int:
        """Cloud requests counted for the Kuwaiti ``day``."""
        return int(self.redis.get(f"{self.prefix}:cloud_budget:{day}") or 0)

    def budget_events(self) -> list[dict[str, Any]]:
        """Every cloud-budget event any worker raised, in order."""
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines()]

    def outbox_rows(self, event: str) -> list[dict[str, Any]]:
        """The outbox rows of ``event``."""

        async def rows() -> list[dict[str, Any]]:
            from sqlalchemy import select

            from resayil_gateway.store.tables import outbox

            async with self._seeder.store.begin() as conn:
                found = await conn.execute(
                    select(outbox.c.dedupe_key, outbox.c.recipient, outbox.c.payload).where(outbox.c.event == event)
                )
                return [dict(row._mapping) for row in found]

        return self.run(rows())


def _settle(answer: Future[Answer], done: asyncio.Future[Answer]) -> None:
    if done.cancelled():
        answer.cancel()
    elif done.exception() is not None:
        answer.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        answer.set_result(done.result())
