"""Slow clients (slow-loris): a request's headers, then its body, must arrive within the configured read
timeouts, or the connection is closed. Real sockets on 127.0.0.1, one byte every 0.2 s."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from resayil_gateway.app import create_app
from resayil_gateway.client_timeouts import ReadTimeouts, TimedAppRunner
from resayil_gateway.config import ConfigError, load_settings
from resayil_gateway.testing import (
    TEST_SECRET,
    FakeBackend,
    FakeBackendPlugin,
    build_gateway,
    create_sqlite_template,
    free_port,
    seed_account,
)

TIMEOUT_S = 0.6
TRICKLE_S = 0.2
GIVE_UP_S = 3.0  # a connection still open by then was never going to be closed
RESAYIL = Path(sys.executable).with_name("resayil")
CATALOG = {"models": {"catalog": {"fake-small": {"backend": "local", "size": "small"}}}}


@pytest.fixture
async def served(tmp_path):
    """The gateway's app behind the timed runner, with short read timeouts, a key that works and a backend
    that answers when its gate opens."""
    database = await create_sqlite_template(tmp_path / "resayil.db")
    backend = FakeBackend(model_names=("fake-small",), gate=asyncio.Event())
    gateway = build_gateway(f"sqlite+aiosqlite:///{database}", plugins=[FakeBackendPlugin(backend)], overrides=CATALOG)
    runner = TimedAppRunner(
        create_app(gateway), timeouts=ReadTimeouts(TIMEOUT_S, TIMEOUT_S), handler_cancellation=True, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    account = await seed_account(gateway, credits=100)
    yield runner.addresses[0][1], account.key, backend.gate
    await runner.cleanup()
    await gateway.store.dispose()


async def seconds_until_closed(port: int, head: bytes, trickle: bytes) -> float:
    """Send ``head`` at once, then ``trickle`` one byte every 0.2 s; how long until the server hangs up
    (``inf`` if it still had not after a few seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def send() -> None:
        writer.write(head)
        for byte in trickle:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(TRICKLE_S)

    sender = asyncio.create_task(send())
    try:
        answer = await asyncio.wait_for(reader.read(), GIVE_UP_S)
        assert answer == b"", answer  # closed without a response to a request never completed
        return time.monotonic() - started
    except TimeoutError:
        return float("inf")
    except ConnectionResetError:
        return time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()


def chat_head(key: str, length: int) -> bytes:
    return (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_client_sending_its_headers_one_byte_at_a_time_is_disconnected(served):
    port, key, _ = served
    elapsed = await seconds_until_closed(port, b"", chat_head(key, 2)[:-4] + b"X-Slow: " + b"a" * 40)
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.0


async def test_a_client_sending_its_body_one_byte_at_a_time_is_disconnected(served):
    port, key, _ = served
    body = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * 100 + b'"}]}'
    elapsed = await seconds_until_closed(port, chat_head(key, len(body)), body)
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.0


async def test_a_kept_alive_connection_may_idle_between_prompt_requests(served):
    port, key, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /v1/models HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    for _ in range(2):
        writer.write(request)
        status = await asyncio.wait_for(reader.readline(), 2)
        assert status.startswith(b"HTTP/1.1 200"), status
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        await asyncio.sleep(TIMEOUT_S + 0.2)  # idle longer than the header timeout: still served
    writer.close()


async def test_an_answer_slower_than_the_read_timeouts_is_not_cut(served):
    port, key, gate = served
    body = b'{"model": "fake-small", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}'
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(chat_head(key, len(body)) + body)
    await asyncio.sleep(TIMEOUT_S * 2)  # the backend thinks for longer than both deadlines
    gate.set()
    answer = await asyncio.wait_for(reader.readuntil(b"data: [DONE]"), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and b"Hello" in answer


def test_read_timeouts_are_settings_with_sensible_defaults():
    gateway = load_settings().gateway
    assert (gateway.header_read_timeout_s, gateway.body_read_timeout_s, gateway.keepalive_timeout_s) == (10, 60, 75)
    with pytest.raises(ConfigError, match=r"gateway\.header_read_timeout_s"):
        load_settings(overrides={"gateway": {"header_read_timeout_s": 0}})


async def test_resayil_serve_enforces_the_configured_header_timeout(tmp_path):
    database = await create_sqlite_template(tmp_path / "resayil.db")
    port = free_port()
    env = {
        **os.environ,
        "RESAYIL_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "RESAYIL_SECRET_KEY": TEST_SECRET,
        "RESAYIL_GATEWAY__HEADER_READ_TIMEOUT_S": str(TIMEOUT_S),
        "RESAYIL_DISABLE_PLUGINS": "hello,ollama",
    }
    server = await asyncio.create_subprocess_exec(
        str(RESAYIL),
        "serve",
        "--port",
        str(port),
        "--no-access-log",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait_for_port(port)
        slow_head = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: aaaaaaaaaaaa"
        elapsed = await seconds_until_closed(port, b"", slow_head)
        assert TIMEOUT_S <= elapsed < TIMEOUT_S + 1.0
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(server.communicate(), 15)
    assert server.returncode == 0, stderr.decode()
    assert b"closed a slow connection" in stderr


async def _wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listened on port {port}")
