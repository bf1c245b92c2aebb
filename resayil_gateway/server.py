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
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .app import create_app
from .config import ConfigError
from .gateway import Gateway
from .logs import AccessLogger
from .store import upgrade

log = logging.getLogger("resayil.server")


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


def _run_one(
    make_gateway: Callable[[], Gateway], sock: socket.socket, access_log: bool, parent: int | None = None
) -> None:
    gateway = make_gateway()
    app = create_app(gateway)
    if parent is not None:
        app.cleanup_ctx.append(functools.partial(_stop_when_orphaned, parent=parent))
    web.run_app(
        app,
        sock=sock,
        shutdown_timeout=gateway.settings.gateway.shutdown_timeout_s,
        handler_cancellation=True,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("resayil.access") if access_log else None,
        print=None,
    )


def serve(
    make_gateway: Callable[[], Gateway],
    host: str,
    port: int,
    workers: int = 1,
    access_log: bool = True,
) -> None:
    """Migrate the schema, bind ``host:port`` and serve until SIGTERM/SIGINT."""
    gateway = make_gateway()
    check_workers(gateway, workers)
    asyncio.run(_migrate(gateway))
    sock = _bind(host, port)
    bound = sock.getsockname()
    log.info("Resayil Gateway listening on http://%s:%s with %d worker(s)", bound[0], bound[1], workers)
    if workers <= 1:
        _run_one(make_gateway, sock, access_log)
        return
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="resayil-metrics-"))
    _supervise(make_gateway, sock, workers, access_log)


async def _migrate(gateway: Gateway) -> None:
    try:
        await upgrade(gateway.store)
    finally:
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
            _run_one(make_gateway, sock, access_log, parent)
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _supervise(make_gateway: Callable[[], Gateway], sock: socket.socket, workers: int, access_log: bool) -> None:
    children = {_spawn(make_gateway, sock, access_log) for _ in range(workers)}
    stopping = False

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
        children.discard(pid)
        if not stopping:
            log.error("worker %d exited (status %d); starting another", pid, status)
            time.sleep(0.5)
            children.add(_spawn(make_gateway, sock, access_log))
    sock.close()
