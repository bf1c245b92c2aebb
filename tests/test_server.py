"""``resayil serve`` as an operator runs it: several workers on one port sharing PostgreSQL and Redis, a
revocation seen by every worker, and SIGTERM letting in-flight requests finish."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resayil_gateway.testing import TEST_SECRET, build_gateway, free_port, seed_account

BIN = Path(sys.executable).parent


def wait_for(port: int, path: str = "/healthz", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered on port {port}")


def call(port: int, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, response.read(), dict(response.getheaders())


@pytest.fixture
def deployment(stack_info, tmp_path):
    if stack_info.name != "postgres":
        pytest.skip("several workers need PostgreSQL and Redis")
    sim_port, port = free_port(), free_port()
    simulator = subprocess.Popen(
        [
            str(BIN / "python"),
            "-m",
            "resayil_ollama.simulator",
            "--port",
            str(sim_port),
            "--parallel",
            "8",
            "--tokens-per-second",
            "20",
            "--reply-tokens",
            "12",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "RESAYIL_DATABASE_URL": stack_info.database_url,
        "RESAYIL_REDIS_URL": stack_info.redis_url,
        "RESAYIL_SECRET_KEY": TEST_SECRET,
        "RESAYIL_OLLAMA__URL": f"http://127.0.0.1:{sim_port}",
        "RESAYIL_OLLAMA__MAX_CONCURRENCY": "8",
        "RESAYIL_DISABLE_PLUGINS": "hello",
        "RESAYIL_PLANS__BASIC__REQUESTS_PER_MINUTE": "1000000",  # rate limits have their own tests
    }
    wait_for(sim_port, "/api/version")

    async def seed():
        gateway = build_gateway(stack_info.database_url, redis_url=stack_info.redis_url)
        try:
            return await seed_account(gateway, credits=1000)
        finally:
            await gateway.store.dispose()

    account = asyncio.run(seed())
    server = subprocess.Popen(
        [str(BIN / "resayil"), "serve", "--port", str(port), "--workers", "2", "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(port)
        yield server, port, account, stack_info
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        simulator.kill()
        for process in (server, simulator):
            process.wait(10)


def test_two_workers_serve_one_port_and_a_revocation_holds_on_every_worker(deployment):
    server, port, account, info = deployment
    workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    body = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for _ in range(6):
        assert call(port, "GET", "/v1/models", account.key)[0] == 200
        assert call(port, "POST", "/v1/chat/completions", account.key, body)[0] == 200

    async def revoke():
        gateway = build_gateway(info.database_url, redis_url=info.redis_url)
        try:
            await gateway.state.start()
            await gateway.keys.revoke(account.key[:12], actor="test")
        finally:
            await gateway.state.close()
            await gateway.store.dispose()

    metrics = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    # both workers' counts, added up whichever worker answers the scrape
    assert 'resayil_requests_total{model="llama3.2:3b",route="/v1/chat/completions",status="200"} 6.0' in text

    asyncio.run(revoke())
    for _ in range(6):  # connections are spread over both workers
        assert call(port, "POST", "/v1/chat/completions", account.key, body)[0] == 401
        assert call(port, "GET", "/v1/models", account.key)[0] == 401


def test_sigterm_lets_an_in_flight_stream_finish(deployment):
    server, port, account, _ = deployment
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {account.key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.read(6) == b"data: "  # the stream has started
    server.send_signal(signal.SIGTERM)
    rest = response.read()
    assert rest.count(b"data: ") >= 12
    assert rest.rstrip().endswith(b"data: [DONE]")
    assert server.wait(30) == 0


def test_workers_stop_when_their_supervisor_is_killed(deployment):
    server = deployment[0]
    workers = [
        int(pid)
        for pid in subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    ]
    assert len(workers) == 2
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(
        Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in workers
    ):
        time.sleep(0.2)
    alive = [
        pid
        for pid in workers
        if Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    ]
    assert alive == []


def test_supervisor_gives_up_when_workers_keep_failing_at_start():
    from resayil_gateway import server

    def broken_gateway():
        raise RuntimeError("cannot start")

    sock = server._bind("127.0.0.1", 0)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert server._supervise(broken_gateway, sock, 2, access_log=False) == 1
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])


def test_serve_with_redis_unreachable_stops_with_one_line_before_listening(tmp_path):
    env = {
        **os.environ,
        "RESAYIL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
        "RESAYIL_REDIS_URL": "redis://127.0.0.1:1/0",
        "RESAYIL_SECRET_KEY": TEST_SECRET,
    }
    done = subprocess.run(
        [str(BIN / "resayil"), "serve", "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip().splitlines()[-1]]
    assert done.stderr.startswith("error: cannot reach the database or Redis")
