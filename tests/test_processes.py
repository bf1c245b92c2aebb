"""Light processes: ``resayil --version`` answers at once, an idle worker stays small, and a serving worker
never loads what only some commands or pages need (Alembic, the PostgreSQL driver and Redis client on SQLite,
the cookie encryption and password hashing before a browser asks for a page)."""

from __future__ import annotations

import http.client
import os
import signal
import statistics
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from resayil_gateway import __version__
from resayil_gateway.testing import TEST_SECRET, free_port

BIN = Path(sys.executable).parent
VERSION_BUDGET_S = 0.3  # the goal, on an idle machine
VERSION_FAILS_ABOVE_S = 1.0  # the shared test box is noisy: fail only on a real regression
IDLE_RSS_GOAL_KB = 80 * 1024  # the core's idle worker measures ~75.5 MiB on uvloop, ~74 MiB on asyncio


def _ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def test_resayil_version_answers_within_a_third_of_a_second():
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        out = subprocess.run([str(BIN / "resayil"), "--version"], capture_output=True, text=True, check=True)
        timings.append(time.perf_counter() - started)
        assert out.stdout.strip() == f"resayil, version {__version__}"
    median = statistics.median(timings)
    assert median < VERSION_FAILS_ABOVE_S, f"resayil --version took {median:.2f} s (median of 5)"
    if median > VERSION_BUDGET_S:
        print(f"resayil --version: {median:.2f} s median, over the {VERSION_BUDGET_S} s goal (a busy machine?)")


def test_importing_the_command_line_loads_no_database_driver_migrations_or_phone_rules():
    probe = (
        "import sys, resayil_gateway.cli, resayil_gateway.server, resayil_gateway.app, resayil_gateway.bootstrap\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert not {"alembic", "asyncpg", "redis", "phonenumbers", "uvloop"} & set(loaded)


@pytest.fixture(scope="module")
def idle_worker(tmp_path_factory):
    """``resayil serve`` on a fresh SQLite file, once /readyz answers (no request served yet)."""
    tmp_path = tmp_path_factory.mktemp("idle-worker")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESAYIL_")}
    # the core alone: every installed plugin distribution is disabled (each plugin's weight is its own)
    installed = {entry.name for entry in entry_points(group="resayil_gateway")}
    env.update(
        RESAYIL_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'resayil.db'}",
        RESAYIL_SECRET_KEY=TEST_SECRET,
        RESAYIL_DISABLE_PLUGINS=",".join(sorted(installed)),
    )
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "resayil"), "serve", "--port", str(port), "--no-access-log", "--log-level", "WARNING"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while not _ready(port):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "resayil serve did not become ready in 120 s"
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_an_idle_core_serve_worker_on_sqlite_stays_under_80_mib(idle_worker):
    rss = _status_kb(idle_worker.pid, "VmRSS")
    assert rss < IDLE_RSS_GOAL_KB, f"idle worker VmRSS {rss / 1024:.1f} MiB"


def test_a_serving_worker_maps_no_postgresql_driver_on_sqlite(idle_worker):
    assert "asyncpg" not in Path(f"/proc/{idle_worker.pid}/maps").read_text()


def test_health_probes_load_neither_the_cookie_encryption_nor_password_hashing(idle_worker):
    # The fixture polled /readyz until ready: probes get no web session, so nothing loaded cryptography.
    maps = Path(f"/proc/{idle_worker.pid}/maps").read_text()
    assert "cryptography" not in maps
    assert "argon2" not in maps


PREPARE = """
import sys
from resayil_gateway.outages import describe_outage
from resayil_gateway.server import _prepare_in_child
from resayil_gateway.testing import build_gateway
try:
    _prepare_in_child(build_gateway(sys.argv[1]))
except Exception as exc:
    print("failed:", describe_outage(exc))
else:
    print("alembic loaded" if "alembic" in sys.modules else "alembic not loaded")
"""


def test_migrations_run_in_a_child_so_the_serving_process_never_loads_alembic(tmp_path):
    database = tmp_path / "resayil.db"
    out = subprocess.run(
        [sys.executable, "-c", PREPARE, f"sqlite+aiosqlite:///{database}"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "alembic not loaded"
    assert b"alembic_version" in database.read_bytes()


def test_a_failure_while_migrating_is_raised_in_the_serving_process_as_itself(tmp_path):
    nothing_listens = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/resayil"
    out = subprocess.run([sys.executable, "-c", PREPARE, nothing_listens], capture_output=True, text=True)
    assert out.stdout.strip() == "failed: the connection was refused", out.stderr
