"""Running the gateway: one process, or N forked worker processes sharing one listening socket.

Workers share PostgreSQL and Redis, so limits, revocations and payments behave as one gateway. SIGTERM (or
Ctrl-C) stops accepting connections and lets in-flight requests finish within ``shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client import values as prometheus_values

from .app import create_app
from .client_timeouts import ReadTimeouts, TimedAppRunner
from .config import ConfigError
from .gateway import Gateway
from .logs import AccessLogger
from .store import upgrade
from .store.connection_budget import connection_budget

log = logging.getLogger("resayil.server")

WORKER_MIN_LIFE_S = 5.0  # a worker that dies sooner than this failed to start
WORKER_QUICK_FAILURES = 3  # that many in a row stop the supervisor instead of restarting forever


def check_workers(gateway: Gateway, workers: int) -> None:
    """Refuse several workers where state would silently be per worker."""
    if workers <= 1:
        return
    if gateway.store.is_sqlite or not gateway.settings.gateway.redis_url:
        raise ConfigError(
            "--workers: several workers need PostgreSQL (gateway.database_url) and Redis (gateway.redis_url); "
            "with SQLite or in-process state run one worker"
        )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


def _run_one(gateway: Gateway, sock: socket.socket, access_log: bool, parent: int | None = None) -> None:
    app = create_app(gateway)
    if parent is not None:
        app.cleanup_ctx.append(functools.partial(_stop_when_orphaned, parent=parent))
    settings = gateway.settings.gateway
    runner = TimedAppRunner(
        app,
        timeouts=ReadTimeouts(settings.header_read_timeout_s, settings.body_read_timeout_s),
        handle_signals=True,
        shutdown_timeout=settings.shutdown_timeout_s,
        keepalive_timeout=settings.keepalive_timeout_s,
        handler_cancellation=True,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("resayil.access") if access_log else None,
    )
    _run_until_signalled(runner, sock)


def _run_until_signalled(runner: web.AppRunner, sock: socket.socket) -> None:
    """What ``web.run_app`` does, with our runner: serve until SIGTERM/SIGINT, then shut down gracefully
    (in-flight requests finish within the shutdown timeout) before cancelling what is left."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve_on(runner, sock))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve_on(runner: web.AppRunner, sock: socket.socket) -> None:
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()


def serve(
    gateway: Gateway,
    make_gateway: Callable[[], Gateway],
    host: str,
    port: int,
    workers: int = 1,
    access_log: bool = True,
) -> int:
    """Migrate the schema, bind ``host:port`` and serve until SIGTERM/SIGINT; returns the exit status.

    One gateway per process: ``gateway`` serves when there is one worker (and only prepares otherwise); each
    forked worker builds its own with ``make_gateway`` (connections never cross a fork)."""
    check_workers(gateway, workers)
    asyncio.run(_prepare(gateway, workers))
    sock = _bind(host, port)
    bound = sock.getsockname()
    log.info("Resayil Gateway listening on http://%s:%s with %d worker(s)", bound[0], bound[1], workers)
    if workers <= 1:
        _run_one(gateway, sock, access_log)
        return 0
    own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if own_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="resayil-metrics-")
    try:
        return _supervise(make_gateway, sock, workers, access_log)
    finally:
        if own_dir:
            shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)


async def _prepare(gateway: Gateway, workers: int = 1) -> None:
    """Before listening: the shared state answers and the schema is current (a clear one-line error otherwise),
    and the PostgreSQL connection budget is said when it does not fit."""
    try:
        await gateway.state.ping()
        await upgrade(gateway.store)
        budget = await connection_budget(gateway.store, workers)
        if budget is not None and not budget.fits:
            log.warning(budget.describe(workers))
    finally:
        await gateway.state.close()
        await gateway.store.dispose()


async def _stop_when_orphaned(_app: web.Application, parent: int) -> AsyncIterator[None]:
    """A worker whose supervisor died (killed, out of memory) stops gracefully instead of serving on alone."""

    async def watch() -> None:
        while os.getppid() == parent:  # noqa: ASYNC110 - nothing to wait on: the kernel re-parents us silently
            await asyncio.sleep(1)
        log.warning("worker %d lost its supervisor; shutting down", os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)

    task = asyncio.create_task(watch())
    yield
    task.cancel()


def _spawn(make_gateway: Callable[[], Gateway], sock: socket.socket, access_log: bool) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # prometheus_client picks its value store when first imported (before the fork, single-process):
            # pick again so this worker's metrics go to the shared directory /metrics aggregates.
            prometheus_values.ValueClass = prometheus_values.get_value_class()
            _run_one(make_gateway(), sock, access_log, parent)
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _supervise(make_gateway: Callable[[], Gateway], sock: socket.socket, workers: int, access_log: bool) -> int:
    children = {_spawn(make_gateway, sock, access_log): time.monotonic() for _ in range(workers)}
    stopping = False
    quick_failures = 0
    exit_code = 0

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started = children.pop(pid, time.monotonic())
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            prometheus_multiprocess.mark_process_dead(pid)  # its live gauges no longer count
        if stopping:
            continue
        quick_failures = quick_failures + 1 if time.monotonic() - started < WORKER_MIN_LIFE_S else 0
        if quick_failures >= WORKER_QUICK_FAILURES:
            log.error("workers keep failing at start (see above); stopping")
            stop(signal.SIGTERM, None)
            exit_code = 1
            continue
        log.error("worker %d exited (status %d); starting another", pid, status)
        time.sleep(0.5)
        children[_spawn(make_gateway, sock, access_log)] = time.monotonic()
    sock.close()
    return exit_code
