"""Resayil Gateway benchmark: added latency and gateway CPU per request / per relayed chunk, against direct.

    .venv/bin/python benchmarks/run.py            # full run (< 10 min), or `make bench`
    .venv/bin/python benchmarks/run.py --quick    # ~1-minute smoke run
    .venv/bin/python benchmarks/run.py --profile  # also py-spy the gateway under fast JSON c=16
    .venv/bin/python benchmarks/run.py --no-rules-off  # skip the traffic-rules-off comparison

Processes (all on 127.0.0.1): the mock Ollama backend (``mock_backend.py``), the gateway (``resayil serve``,
billing on PostgreSQL + Redis, a throw-away database ``resayil_bench_<random>`` dropped at the end) and, per
scenario, the load generator (``loadgen.py``). Every scenario (json/stream × fast/paced backend × c=1/16/64)
runs direct (load generator → mock) and then through the gateway, back to back, so each ratio compares numbers
taken in the same run under the same noise. CPU is read from /proc/<pid>/stat (utime+stime) around exactly
the measured window; RSS from /proc/<pid>/status (VmRSS sampled every 50 ms, VmHWM at the end).
Two more gateways run beside the main one, on the same database: one with the traffic rules off
(``serve_without_rules.py``: no rate limit, no shared waiting line), measured right after the main one in the
scenarios of ``RULES_OFF_SCENARIOS`` so the rules' cost per request is a difference taken in one run; and one
whose local backend has ``QUEUED_SLOTS`` slots, so the paced c=64 scenarios also run through the shared queue.
See README.md for the method and the floors.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
RESULTS = HERE / "results"
TICK = os.sysconf("SC_CLK_TCK")
PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres", "maintenance_db": "test"}
REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "llama3.2:3b"
MAX_TOKENS = 16  # the mock answers 16 tokens: a stream is 16 token lines + the done line
PACED = {"first_token_ms": 20, "chunk_ms": 5, "tokens": MAX_TOKENS}
FAST = {"first_token_ms": 0, "chunk_ms": 0, "tokens": MAX_TOKENS}

# Measured requests per scenario (backend, mode, concurrency) -> full-run count. --quick divides them.
FULL_COUNTS = {
    ("fast", "json", 1): 2000,
    ("fast", "json", 16): 3000,
    ("fast", "json", 64): 3000,
    ("fast", "stream", 1): 1500,
    ("fast", "stream", 16): 2500,
    ("fast", "stream", 64): 2500,
    ("paced", "json", 1): 200,
    ("paced", "json", 16): 1200,
    ("paced", "json", 64): 2500,
    ("paced", "stream", 1): 200,
    ("paced", "stream", 16): 1200,
    ("paced", "stream", 64): 2500,
}
# The rate limit and the shared queue, on against off, in the same run (issue: at most +0.15 ms CPU and
# +0.3 ms p50 per request at c=16 on the fast backend).
# c=1 too: there the box is not saturated, so the p50 difference is the rules' own latency (at c=16 the closed
# loop saturates both cores and any CPU added shows up in p50 as queueing).
RULES_OFF_SCENARIOS = {("fast", "json", 1), ("fast", "json", 16), ("fast", "stream", 16)}
# The same c=16 at a fixed rate well below saturation (an open loop): there p50 shows the latency the rules add
# rather than the queueing that any CPU added causes on a saturated box. Its p50 is what the rules' p50 floor
# checks; their CPU floor is checked at full load.
PACED_RATE = 300  # requests per second, about a quarter of what the gateway serves at c=16 on this box
RATE_SCENARIOS = [("fast", "json", 16), ("fast", "stream", 16)]
QUEUED_SLOTS = 16  # the "queued" gateway's backend slots: at c=64, three requests in four wait in the line
QUEUED_SCENARIOS = {("paced", "json", 64), ("paced", "stream", 64)}
FLOORS = {
    "rules_cpu_ms_c16": 0.15,
    "rules_p50_ms_c16": 0.3,
    "cpu_ms_per_json_request": 1.0,
    "cpu_ms_per_chunk": 0.05,
    "added_p50_ms_c1": 1.5,
    "errors_c64": 0,
    "rss_mb": 120.0,
}


# ---------------------------------------------------------------------------------------------- /proc helpers


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def box_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / TICK


def pids_named(comm: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == comm:
                    found.append(int(entry))
    return found


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every 50 ms until stopped; ``peak_kb`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
            self._stop_event.wait(0.05)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))
        return self.peak_kb


# --------------------------------------------------------------------------------------------- the processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def psql(sql: str, db: str | None = None) -> str:
    out = subprocess.run(
        [
            *("psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"]),
            *("-d", db or PG["maintenance_db"], "-v", "ON_ERROR_STOP=1", "-qAtc", sql),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return bytes(resp.read())


@dataclass
class Bench:
    args: argparse.Namespace
    db: str = field(default_factory=lambda: f"resayil_bench_{secrets.token_hex(4)}")
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="resayil-bench-")))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mock_url: str = ""
    gateway_url: str = ""
    gateway: subprocess.Popen[bytes] | None = None
    mock: subprocess.Popen[bytes] | None = None
    key: str = ""
    db_created: bool = False
    # one gateway per event loop under comparison (--loops), all on the same database; measure() uses the
    # current one (``gateway``/``gateway_url``), chosen with use()
    gateways: dict[str, tuple[subprocess.Popen[bytes], str]] = field(default_factory=dict)
    # the comparison gateways (traffic rules off, a queued backend), on the first loop, by variant name
    variants: dict[str, tuple[subprocess.Popen[bytes], str]] = field(default_factory=dict)

    # -- setup / teardown

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESAYIL_")}
        env.update(
            RESAYIL_DATABASE_URL=f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{self.db}",
            RESAYIL_REDIS_URL=REDIS_URL,
            RESAYIL_SECRET_KEY="bench-" + "k" * 40,
            RESAYIL_CONFIG=str(self.tmp / "resayil.toml"),
            RESAYIL_OLLAMA__URL=self.mock_url,
            RESAYIL_OLLAMA__MAX_CONCURRENCY="256",
            RESAYIL_OLLAMA__DISCOVER="true",
            RESAYIL_DISABLE_PLUGINS="hello",
            # The benchmark account must never be throttled: it measures the hot path, not the limiter.
            RESAYIL_PLANS__BASIC__REQUESTS_PER_MINUTE="100000000",
            RESAYIL_ROUTING__MAX_QUEUE_WAIT_S="120",
        )
        return env

    def cli(self, *argv: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [str(BIN / "resayil"), *argv], input=stdin, capture_output=True, text=True, env=self.env(), cwd=self.tmp
        )
        if out.returncode != 0:
            raise RuntimeError(f"resayil {' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def start(self) -> None:
        psql(f'CREATE DATABASE "{self.db}"')
        self.db_created = True
        (self.tmp / "resayil.toml").write_text(f'[models.catalog."{MODEL}"]\nbackend = "local"\nsize = "small"\n')
        self.mock = subprocess.Popen(
            [sys.executable, str(HERE / "mock_backend.py"), "--port", "0"], stdout=subprocess.PIPE
        )
        self.procs.append(self.mock)
        assert self.mock.stdout is not None
        line = self.mock.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"mock backend did not start: {line!r}")
        self.mock_url = line.split()[1]
        log(f"mock backend {self.mock_url} (pid {self.mock.pid}); database {self.db}")
        self.cli("db", "upgrade")
        self.cli(
            "users",
            "create",
            "bench@example.com",
            "--phone",
            "+96550000009",
            "--password-stdin",
            stdin="pw-123456789\n",
        )
        self.cli("credits", "grant", "bench@example.com", "100000000", "--reason", "bench")
        self.key = self.cli("keys", "create", "bench@example.com").strip().splitlines()[-1].strip()
        loops = self.args.loops.split(",")
        for loop in loops:
            self.gateways[loop] = self._start_gateway(loop)
        if self.args.rules_off:
            launcher = [sys.executable, str(HERE / "serve_without_rules.py")]
            self.variants["rules off"] = self._start_gateway(loops[0], "rules-off", launcher)
        queued = {"RESAYIL_OLLAMA__MAX_CONCURRENCY": str(QUEUED_SLOTS)}
        self.variants[f"queued, {QUEUED_SLOTS} slots"] = self._start_gateway(loops[0], "queued", env=queued)
        self.use(next(iter(self.gateways)))

    def _start_gateway(
        self, loop: str, label: str = "", launcher: list[str] | None = None, env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        logfile = self.tmp / f"gateway-{label or loop}.log"
        stderr = open(logfile, "wb")  # noqa: SIM115
        argv = ["serve", "--port", str(port), "--no-access-log", "--log-level", "WARNING", "--loop", loop]
        gateway = subprocess.Popen(
            [*(launcher or [str(BIN / "resayil")]), *argv],
            env={**self.env(), **(env or {})},
            cwd=self.tmp,
            stdout=stderr,
            stderr=stderr,
        )
        self.procs.append(gateway)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if gateway.poll() is not None:
                raise RuntimeError(f"gateway exited: {logfile.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                http("GET", url + "/readyz", timeout=2)
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("gateway did not become ready in 60 s")
        log(f"gateway {label or 'main'} {url} (pid {gateway.pid}, --loop {loop}), key {self.key[:10]}…")
        return gateway, url

    def use(self, name: str) -> None:
        """Send the following measurements to the gateway running on loop ``name``, or to variant ``name``."""
        self.gateway, self.gateway_url = self.gateways.get(name) or self.variants[name]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.db_created and not self.args.keep_db:
            with contextlib.suppress(subprocess.CalledProcessError):
                psql(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        shutil.rmtree(self.tmp, ignore_errors=True)

    def gateway_db_pids(self) -> list[int]:
        """PostgreSQL server processes serving the gateway's connections (their CPU is billing's cost)."""
        out = psql(f"SELECT pid FROM pg_stat_activity WHERE datname = '{self.db}' AND pid <> pg_backend_pid()")
        return [int(x) for x in out.split()]

    def db_sessions(self) -> int:
        """Sessions (connections) ever opened to the benchmark database: churn shows up here."""
        out = psql(f"SELECT sessions FROM pg_stat_database WHERE datname = '{self.db}'")
        return int(out.strip() or 0)

    # -- one measurement

    def measure(
        self, target: str, mode: str, concurrency: int, requests: int, warmup: int, rate: float | None = None
    ) -> dict[str, Any]:
        assert self.gateway is not None and self.mock is not None
        spec = {
            "url": self.gateway_url if target == "gateway" else self.mock_url,
            "mode": mode,
            "target": target,
            "key": self.key,
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
            "requests": requests,
            "concurrency": concurrency,
            "warmup": warmup,
            "rate": rate,
        }
        gen = subprocess.Popen(
            [sys.executable, str(HERE / "loadgen.py"), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert gen.stdin is not None and gen.stdout is not None
            warm = json.loads(gen.stdout.readline() or b"{}")
            if not warm.get("warm"):
                raise RuntimeError("load generator failed during warm-up")
            db_pids = self.gateway_db_pids() if target == "gateway" else []
            redis_pids = pids_named("redis-server") if target == "gateway" else []
            watched = {"gateway": [self.gateway.pid], "mock": [self.mock.pid], "db": db_pids, "redis": redis_pids}
            sessions_before = self.db_sessions()
            before = {name: sum(cpu_seconds(p) for p in pids) for name, pids in watched.items()}
            before["box"] = box_busy_seconds()
            sampler = RssSampler(self.gateway.pid)
            sampler.start()
            gen.stdin.write(b"go\n")
            gen.stdin.flush()
            result = json.loads(gen.stdout.readline())
            after = {name: sum(cpu_seconds(p) for p in pids) for name, pids in watched.items()}
            after["box"] = box_busy_seconds()
            result["rss_peak_kb"] = sampler.stop()
            if target == "gateway":
                time.sleep(1.0)  # PostgreSQL flushes its session counters about once a second
            result["db_sessions_opened"] = self.db_sessions() - sessions_before
        finally:
            with contextlib.suppress(Exception):
                gen.wait(10)
            if gen.poll() is None:
                gen.kill()
        result["cpu_s"] = {name: after[name] - before[name] for name in watched}
        result["cpu_s"]["loadgen"] = result.pop("loadgen_cpu_s")
        # Everything else the box did meanwhile: PostgreSQL (incl. short-lived backends), Redis, other tenants.
        result["cpu_s"]["rest_of_box"] = max(
            0.0,
            after["box"]
            - before["box"]
            - result["cpu_s"]["gateway"]
            - result["cpu_s"]["mock"]
            - result["cpu_s"]["loadgen"],
        )
        result["warmup_errors"] = warm.get("errors", 0)
        return result

    def set_backend(self, pacing: dict[str, Any]) -> None:
        http("POST", self.mock_url + "/_mock/config", pacing)


# ----------------------------------------------------------------------------------------------- reporting


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(direct: dict[str, Any], gw: dict[str, Any], backend: str, mode: str, c: int) -> dict[str, Any]:
    ms = 1000.0
    n_d, n_g = direct["requests"], gw["requests"]
    chunks_g, chunks_d = max(gw["chunks"], 1), max(direct["chunks"], 1)
    direct_cpu = direct["cpu_s"]["loadgen"] + direct["cpu_s"]["mock"]
    gw_cpu = gw["cpu_s"]["gateway"]
    box_gw = gw["cpu_s"]["gateway"] + gw["cpu_s"]["mock"] + gw["cpu_s"]["loadgen"] + gw["cpu_s"]["rest_of_box"]
    box_direct = direct_cpu + direct["cpu_s"]["rest_of_box"]
    return {
        "scenario": f"{mode} {backend} c={c}",
        "backend": backend,
        "mode": mode,
        "concurrency": c,
        "requests": n_g,
        "errors_direct": direct["errors"],
        "errors_gateway": gw["errors"],
        "error_kinds": gw["error_kinds"] | {f"direct:{k}": v for k, v in direct["error_kinds"].items()},
        "p50_direct_ms": pct(direct["latency_s"], 50) * ms,
        "p99_direct_ms": pct(direct["latency_s"], 99) * ms,
        "p50_gw_ms": pct(gw["latency_s"], 50) * ms,
        "p99_gw_ms": pct(gw["latency_s"], 99) * ms,
        "ttfb_p50_direct_ms": pct(direct["ttfb_s"], 50) * ms,
        "ttfb_p50_gw_ms": pct(gw["ttfb_s"], 50) * ms,
        "rps_direct": n_d / direct["wall_s"],
        "rps_gw": n_g / gw["wall_s"],
        "gw_cpu_ms_per_req": gw_cpu / n_g * ms,
        "direct_cpu_ms_per_req": direct_cpu / n_d * ms,
        "db_redis_cpu_ms_per_req": (gw["cpu_s"]["db"] + gw["cpu_s"]["redis"]) / n_g * ms,
        "rest_of_box_cpu_ms_per_req_gw": gw["cpu_s"]["rest_of_box"] / n_g * ms,
        "rest_of_box_cpu_ms_per_req_direct": direct["cpu_s"]["rest_of_box"] / n_d * ms,
        "box_cpu_ms_per_req_gw": box_gw / n_g * ms,
        "box_cpu_ms_per_req_direct": box_direct / n_d * ms,
        "system_cpu_ratio": (box_gw / n_g) / max(box_direct / n_d, 1e-9),
        "db_sessions_per_1k_req": gw["db_sessions_opened"] / n_g * 1000,
        "chunks_per_req_gw": gw["chunks"] / n_g,
        "chunks_per_req_direct": direct["chunks"] / n_d,
        "gw_cpu_ms_per_chunk": gw_cpu / chunks_g * ms if mode == "stream" else None,
        "direct_cpu_ms_per_chunk": direct_cpu / chunks_d * ms if mode == "stream" else None,
        "rss_peak_mb": gw["rss_peak_kb"] / 1024,
        "raw_cpu_s": {"direct": direct["cpu_s"], "gateway": gw["cpu_s"]},
    }


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | reqs | errors d/gw | p50 direct | p50 gw | added p50 | p50 × | p99 direct | p99 gw | added p99 "
        "| p99 × | gw CPU ms/req | net of idle | gw CPU ÷ direct CPU | gw CPU ms/chunk (all-in) | marginal ms/chunk "
        "| chunk CPU ÷ direct | rest-of-box CPU ms/req (PG, Redis…) | box CPU ms/req direct → gw | box CPU × "
        "| new PG conns /1k req | rps direct/gw | gw RSS peak MB |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["scenario"],
                    str(r["requests"]),
                    f"{r['errors_direct']}/{r['errors_gateway']}",
                    fmt(r["p50_direct_ms"]),
                    fmt(r["p50_gw_ms"]),
                    fmt(r["p50_gw_ms"] - r["p50_direct_ms"]),
                    fmt(r["p50_gw_ms"] / r["p50_direct_ms"]),
                    fmt(r["p99_direct_ms"]),
                    fmt(r["p99_gw_ms"]),
                    fmt(r["p99_gw_ms"] - r["p99_direct_ms"]),
                    fmt(r["p99_gw_ms"] / r["p99_direct_ms"]),
                    fmt(r["gw_cpu_ms_per_req"], 3),
                    fmt(r.get("gw_cpu_ms_per_req_net_idle"), 3),
                    fmt(r["gw_cpu_ms_per_req"] / max(r["direct_cpu_ms_per_req"], 1e-9)),
                    fmt(r["gw_cpu_ms_per_chunk"], 4),
                    fmt(r.get("marginal_ms_per_chunk"), 4),
                    fmt(
                        r["gw_cpu_ms_per_chunk"] / max(r["direct_cpu_ms_per_chunk"], 1e-9)
                        if r["gw_cpu_ms_per_chunk"] is not None
                        else None
                    ),
                    fmt(r["rest_of_box_cpu_ms_per_req_gw"], 3),
                    f"{r['box_cpu_ms_per_req_direct']:.3f} → {r['box_cpu_ms_per_req_gw']:.3f}",
                    fmt(r["system_cpu_ratio"]),
                    fmt(r["db_sessions_per_1k_req"], 1),
                    f"{r['rps_direct']:.0f}/{r['rps_gw']:.0f}",
                    fmt(r["rss_peak_mb"], 1),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def loop_table(rows: list[dict[str, Any]]) -> str:
    """Per scenario, each event loop's gateway CPU per request, added p50 and marginal CPU per chunk, and the
    ratio of the second loop to the first (measured back to back against the same direct run)."""
    loops = list(dict.fromkeys(r["loop"] for r in rows if "loop" in r))
    if len(loops) < 2:
        return ""
    first, second = loops[0], loops[1]
    by_key = {(r["backend"], r["mode"], r["concurrency"], r["loop"]): r for r in rows if "loop" in r}
    lines = [
        f"\n## Event loops: {second} vs {first}\n",
        f"| scenario | gw CPU ms/req {first} → {second} | × | added p50 ms {first} → {second} "
        f"| marginal ms/chunk {first} → {second} |",
        "|---|---|---|---|---|",
    ]
    for (backend, mode, c, loop), a in by_key.items():
        b = by_key.get((backend, mode, c, second))
        if loop != first or b is None:
            continue
        added_a, added_b = a["p50_gw_ms"] - a["p50_direct_ms"], b["p50_gw_ms"] - b["p50_direct_ms"]
        lines.append(
            f"| {mode} {backend} c={c} | {a['gw_cpu_ms_per_req']:.3f} → {b['gw_cpu_ms_per_req']:.3f} "
            f"| {b['gw_cpu_ms_per_req'] / max(a['gw_cpu_ms_per_req'], 1e-9):.2f} | {added_a:.2f} → {added_b:.2f} "
            f"| {fmt(a.get('marginal_ms_per_chunk'), 4)} → {fmt(b.get('marginal_ms_per_chunk'), 4)} |"
        )
    return "\n".join(lines) + "\n"


def rules_pairs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(rules on, rules off) rows of the same scenario, the "on" row being the first loop's main gateway."""
    pairs = []
    for off in rows:
        if off.get("variant") != "rules off":
            continue
        key = (off["backend"], off["mode"], off["concurrency"], off.get("rate"))
        on = next(
            (
                r
                for r in rows
                if "variant" not in r and (r["backend"], r["mode"], r["concurrency"], r.get("rate")) == key
            ),
            None,
        )
        if on is not None:
            pairs.append((on, off))
    return pairs


def rules_table(rows: list[dict[str, Any]]) -> str:
    """The cost of the traffic rules (per-plan rate limit + shared queue, both through Redis): the same scenario
    through the normal gateway and through one with the rules off, back to back."""
    pairs = rules_pairs(rows)
    if not pairs:
        return ""
    lines = [
        "\n## Traffic rules: on vs off\n",
        "| scenario | gw CPU ms/req off → on | + CPU ms/req | gw p50 ms off → on | + p50 ms "
        "| Redis CPU ms/req off → on |",
        "|---|---|---|---|---|---|",
    ]
    for on, off in pairs:
        redis_on = on["raw_cpu_s"]["gateway"]["redis"] / on["requests"] * 1000
        redis_off = off["raw_cpu_s"]["gateway"]["redis"] / off["requests"] * 1000
        lines.append(
            f"| {on['scenario']} "
            f"| {off['gw_cpu_ms_per_req']:.3f} → {on['gw_cpu_ms_per_req']:.3f} "
            f"| {on['gw_cpu_ms_per_req'] - off['gw_cpu_ms_per_req']:+.3f} "
            f"| {off['p50_gw_ms']:.2f} → {on['p50_gw_ms']:.2f} | {on['p50_gw_ms'] - off['p50_gw_ms']:+.2f} "
            f"| {redis_off:.3f} → {redis_on:.3f} |"
        )
    return "\n".join(lines) + "\n"


def queued_table(rows: list[dict[str, Any]]) -> str:
    """The paced scenarios through the shared queue: with ``QUEUED_SLOTS`` slots for c requests at once, a
    perfect line answers in ``ceil(c / slots)`` backend times; the excess over that is the line's own cost."""
    queued = [r for r in rows if str(r.get("variant", "")).startswith("queued")]
    if not queued:
        return ""
    lines = [
        f"\n## Through the shared queue ({QUEUED_SLOTS} backend slots)\n",
        "| scenario | p50 direct (no queue) | ideal p50 in line | p50 gw | over ideal | rps direct/gw "
        "| ideal rps | gw CPU ms/req | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in queued:
        rounds = -(-r["concurrency"] // QUEUED_SLOTS)
        ideal = r["p50_direct_ms"] * rounds
        ideal_rps = QUEUED_SLOTS / (r["p50_direct_ms"] / 1000)
        lines.append(
            f"| {r['mode']} {r['backend']} c={r['concurrency']} | {r['p50_direct_ms']:.1f} | {ideal:.1f} "
            f"| {r['p50_gw_ms']:.1f} | {r['p50_gw_ms'] / ideal - 1:+.1%} | {r['rps_direct']:.0f}/{r['rps_gw']:.0f} "
            f"| {ideal_rps:.0f} | {r['gw_cpu_ms_per_req']:.3f} | {r['errors_gateway']} |"
        )
    return "\n".join(lines) + "\n"


def add_marginal(rows: list[dict[str, Any]]) -> None:
    """Per-chunk CPU net of the per-request cost: (stream CPU/req − JSON CPU/req) ÷ chunks per stream,
    pairing each stream scenario with the JSON scenario of the same backend and concurrency."""

    def key(r: dict[str, Any], mode: str) -> tuple[Any, ...]:
        return (r["backend"], mode, r["concurrency"], r.get("loop"), r.get("variant"), r.get("rate"))

    by_key = {key(r, r["mode"]): r for r in rows}
    for r in rows:
        json_row = by_key.get(key(r, "json"))
        if r["mode"] == "stream" and json_row and r["chunks_per_req_gw"]:
            extra = r["gw_cpu_ms_per_req"] - json_row["gw_cpu_ms_per_req"]
            r["marginal_ms_per_chunk"] = extra / r["chunks_per_req_gw"]


def floors(rows: list[dict[str, Any]], hwm_mb: float, ledger_ok: bool) -> list[tuple[str, bool, str]]:
    """The issue's floors. CPU and latency floors are checked per backend: against the fast (zero-latency)
    mock they gate the run, as ARCHITECTURE.md measures them; against the paced mock they are reported with a
    ``[paced]`` tag and do not gate, because there the process sleeps ~100 ms between requests at c=1 and
    every request starts cold (see README: the same request costs ~3x the CPU after an idle gap)."""
    checks: list[tuple[str, bool, str]] = []
    main_rows = [r for r in rows if "variant" not in r and "rate" not in r]
    for backend in ("fast", "paced"):
        tag = "" if backend == "fast" else "[paced, not gating] "
        checks += [
            (tag + name, ok, value)
            for name, ok, value in _speed_floors([r for r in main_rows if r["backend"] == backend])
        ]
    pairs = [pair for pair in rules_pairs(rows) if pair[0]["concurrency"] == 16]
    for on, off in (pair for pair in pairs if "rate" not in pair[0]):  # CPU: at full load
        cpu = on["gw_cpu_ms_per_req"] - off["gw_cpu_ms_per_req"]
        checks.append(
            (
                f"traffic rules add ≤ {FLOORS['rules_cpu_ms_c16']} ms CPU per request ({on['scenario']})",
                cpu <= FLOORS["rules_cpu_ms_c16"],
                f"{cpu:+.3f} ms",
            )
        )
    # p50: below saturation (at full load a closed loop turns any CPU added into queueing); at full load only
    # when no open-loop pass ran
    paced = [pair for pair in pairs if "rate" in pair[0]]
    for on, off in paced or pairs:
        p50 = on["p50_gw_ms"] - off["p50_gw_ms"]
        checks.append(
            (
                f"traffic rules add ≤ {FLOORS['rules_p50_ms_c16']} ms p50 ({on['scenario']})",
                p50 <= FLOORS["rules_p50_ms_c16"],
                f"{p50:+.2f} ms",
            )
        )
    c64 = [r for r in rows if r["concurrency"] == 64]
    if c64:
        errors = sum(r["errors_gateway"] + r["errors_direct"] for r in c64)
        checks.append(("zero errors at c=64", errors == 0, f"{errors} errors"))
    all_errors = sum(r["errors_gateway"] + r["errors_direct"] for r in rows)
    checks.append(("zero errors in every scenario", all_errors == 0, f"{all_errors} errors"))
    peak = max([r["rss_peak_mb"] for r in rows] + [hwm_mb])
    checks.append(
        (
            f"gateway resident memory ≤ {FLOORS['rss_mb']:.0f} MB under load (VmHWM)",
            peak <= FLOORS["rss_mb"],
            f"{peak:.1f} MB",
        )
    )
    checks.append(("`resayil ledger check` passes after the run", ledger_ok, "ok" if ledger_ok else "FAILED"))
    return checks


def _speed_floors(rows: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    checks: list[tuple[str, bool, str]] = []
    json_rows = [r for r in rows if r["mode"] == "json"]
    stream_rows = [r for r in rows if r["mode"] == "stream"]
    if json_rows:
        worst = max(json_rows, key=lambda r: r["gw_cpu_ms_per_req"])
        checks.append(
            (
                f"gateway CPU ≤ {FLOORS['cpu_ms_per_json_request']} ms per JSON request (worst: {worst['scenario']})",
                worst["gw_cpu_ms_per_req"] <= FLOORS["cpu_ms_per_json_request"],
                f"{worst['gw_cpu_ms_per_req']:.3f} ms",
            )
        )
    marginal = [r for r in stream_rows if r.get("marginal_ms_per_chunk") is not None]
    if marginal:
        worst = max(marginal, key=lambda r: r["marginal_ms_per_chunk"])
        checks.append(
            (
                f"gateway CPU ≤ {FLOORS['cpu_ms_per_chunk']} ms per relayed chunk, marginal "
                f"(worst: {worst['scenario']})",
                worst["marginal_ms_per_chunk"] <= FLOORS["cpu_ms_per_chunk"],
                f"{worst['marginal_ms_per_chunk']:.4f} ms",
            )
        )
    for r in rows:
        if r["concurrency"] == 1:
            added = r["p50_gw_ms"] - r["p50_direct_ms"]
            checks.append(
                (
                    f"added p50 ≤ {FLOORS['added_p50_ms_c1']} ms at c=1 ({r['scenario']})",
                    added <= FLOORS["added_p50_ms_c1"],
                    f"{added:.2f} ms",
                )
            )
    return checks


# ------------------------------------------------------------------------------------------ open-loop pass


def rate_scenarios(bench: Bench, args: argparse.Namespace, scale: float, idle_ms_per_s: float) -> list[dict[str, Any]]:
    """The RATE_SCENARIOS at PACED_RATE requests per second: direct, through the gateway, through the gateway
    with the traffic rules off."""
    rows = []
    main_loop = next(iter(bench.gateways))
    bench.set_backend(FAST)
    for backend, mode, c in RATE_SCENARIOS:
        if backend not in args.backends.split(",") or mode not in args.modes.split(","):
            continue
        n = max(int(PACED_RATE * 10 * scale), 100)  # ten seconds at full scale
        warmup = max(min(n // 5, 300), 2 * c)
        direct = bench.measure("direct", mode, c, n, warmup, rate=PACED_RATE)
        for variant in (None, "rules off"):
            bench.use(variant or main_loop)
            gw = bench.measure("gateway", mode, c, n, warmup, rate=PACED_RATE)
            row = summarize(direct, gw, backend, mode, c)
            row["rate"] = PACED_RATE
            row["scenario"] += f" @{PACED_RATE}/s"
            if variant is not None:
                row["variant"] = variant
                row["scenario"] += f" [{variant}]"
            row["gw_cpu_ms_per_req_net_idle"] = max(0.0, row["gw_cpu_ms_per_req"] - idle_ms_per_s * gw["wall_s"] / n)
            rows.append(row)
            log(
                f"{row['scenario']:<18} n={n:<5} p50 {row['p50_direct_ms']:.2f}→{row['p50_gw_ms']:.2f} ms  "
                f"gw CPU {row['gw_cpu_ms_per_req']:.3f} ms/req"
            )
    bench.use(main_loop)
    return rows


# ------------------------------------------------------------------------------------------------- profile


def profile(bench: Bench, requests: int, rate: int) -> str:
    """py-spy the gateway during a fast JSON c=16 pass; return the top frames by self and by total time."""
    assert bench.gateway is not None
    pyspy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if not pyspy:
        return "py-spy not found: `.venv/bin/pip install py-spy`"
    bench.set_backend(FAST)
    raw = bench.tmp / "profile.txt"
    spec = {
        "url": bench.gateway_url,
        "mode": "json",
        "target": "gateway",
        "key": bench.key,
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "requests": requests,
        "concurrency": 16,
        "warmup": 200,
    }
    gen = subprocess.Popen(
        [sys.executable, str(HERE / "loadgen.py"), json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert gen.stdin is not None and gen.stdout is not None
    gen.stdout.readline()
    spy = subprocess.Popen(
        [
            pyspy,
            "record",
            "--pid",
            str(bench.gateway.pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.0)
    gen.stdin.write(b"go\n")
    gen.stdin.flush()
    result = json.loads(gen.stdout.readline())
    gen.wait(10)
    spy.send_signal(signal.SIGINT)
    _, err = spy.communicate(timeout=60)
    if not raw.exists():
        return f"py-spy failed: {err.decode(errors='replace')[-500:]}"
    shutil.copy(raw, RESULTS / "profile-fast-json-c16.txt")
    result["pyspy_args"] = f"record --rate {rate} --nonblocking --format raw"
    return top_frames(raw.read_text(), result)


CATEGORIES = (
    # (label, substring of the frame's file path) — a sample's self time goes to the innermost frame that is not
    # the standard library, so socket writes land on whoever wrote (aiohttp server, asyncpg, …).
    ("asyncpg connect (new PostgreSQL connections: TLS probe, auth)", "asyncpg/connect_utils"),
    ("asyncpg (DB protocol)", "asyncpg/"),
    ("SQLAlchemy (core, pool, async adapter, greenlets)", "sqlalchemy/"),
    ("aiohttp server (HTTP to the client)", "aiohttp/web"),
    ("aiohttp client (HTTP to the backend)", "aiohttp/client"),
    ("aiohttp other (streams, helpers, http parser)", "aiohttp/"),
    ("prometheus_client (metrics)", "prometheus_client/"),
    ("pluggy (hook calls)", "pluggy/"),
    ("pydantic", "pydantic"),
    ("redis", "redis/"),
    ("resayil_ollama plugin", "resayil_ollama/"),
    ("resayil_gateway core", "resayil_gateway/"),
)


def category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for label, needle in CATEGORIES:
            if needle in frame:
                return label
    if any("asyncio/" not in f and "selectors.py" not in f for f in frames[-1:]):
        return "stdlib & other (uuid, hmac, contextlib, re, …)"
    return "event loop / stdlib only (epoll, scheduling)"


def top_frames(collapsed: str, result: dict[str, Any], n: int = 15) -> str:
    self_count: collections.Counter[str] = collections.Counter()
    total_count: collections.Counter[str] = collections.Counter()
    categories: collections.Counter[str] = collections.Counter()
    samples = main = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        samples += count
        raw_frames = [f for f in stack.split(";") if f]
        frames = [frame_key(f) for f in raw_frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if frames[0].startswith("<module>"):
            main += count
        self_count[frames[-1]] += count
        categories[category(raw_frames)] += count
        for frame in set(frames):
            total_count[frame] += count
    if not samples:
        return "no samples"
    out = [
        f"py-spy {result.get('pyspy_args', '')}, gateway under fast JSON c=16: {result['requests']} requests, "
        f"{result['errors']} errors, {samples} non-idle samples. SQLAlchemy's async layer runs DB work in greenlets, "
        "which py-spy shows as separate stacks (not under the event loop), so inclusive % of request-handler frames "
        "do not include their DB greenlet time.",
        "",
        "Self time by component (each sample charged to the innermost non-stdlib frame):",
        "",
        "| % samples | component |",
        "|---:|---|",
    ]
    out += [f"| {100 * c / samples:.1f} | {label} |" for label, c in categories.most_common()]
    out += ["", f"Top {n} frames by self time:", "", "| % self | % total | frame |", "|---:|---:|---|"]
    for frame, count in self_count.most_common(n):
        out.append(f"| {100 * count / samples:.1f} | {100 * total_count[frame] / samples:.1f} | `{frame}` |")
    out += [
        "",
        f"Top {n} frames by total (inclusive) time, without the roots every sample passes through:",
        "",
        "| % total | % self | frame |",
        "|---:|---:|---|",
    ]
    shown = 0
    for frame, count in total_count.most_common():
        if main and count >= 0.9 * main:  # <module>, run_forever, _run_once, Handle._run: not informative
            continue
        out.append(f"| {100 * count / samples:.1f} | {100 * self_count[frame] / samples:.1f} | `{frame}` |")
        shown += 1
        if shown == n:
            break
    out += [
        "",
        f"Top {n} gateway/plugin frames (resayil_*) by total time:",
        "",
        "| % total | % self | frame |",
        "|---:|---:|---|",
    ]
    project = [
        (f, c) for f, c in total_count.most_common() if "resayil_" in f and "cli.py" not in f and "server.py" not in f
    ]
    for frame, count in project[:n]:
        out.append(f"| {100 * count / samples:.1f} | {100 * self_count[frame] / samples:.1f} | `{frame}` |")
    return "\n".join(out)


def frame_key(frame: str) -> str:
    """``func (path/to/file.py:123)`` → ``func (path/to/file.py)``, with site-packages/stdlib prefixes cut."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


# ---------------------------------------------------------------------------------------------------- main


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Resayil Gateway benchmark (see benchmarks/README.md).")
    parser.add_argument("--quick", action="store_true", help="~1-minute smoke run (fewer requests).")
    parser.add_argument("--profile", action="store_true", help="Also py-spy the gateway under fast JSON c=16.")
    parser.add_argument("--profile-only", action="store_true", help="Only the py-spy pass, no scenarios.")
    parser.add_argument("--profile-requests", type=int, default=6000)
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second.")
    parser.add_argument("--concurrency", default="1,16,64", help="Comma-separated concurrencies.")
    parser.add_argument("--backends", default="fast,paced")
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--scale", type=float, default=None, help="Multiply the request counts.")
    parser.add_argument("--keep-db", action="store_true", help="Do not drop the benchmark database.")
    parser.add_argument(
        "--no-rules-off",
        dest="rules_off",
        action="store_false",
        help="Skip the comparison with the traffic rules (rate limit, shared queue) switched off.",
    )
    parser.add_argument(
        "--loops",
        default="auto",
        help="Event loops to compare, e.g. asyncio,uvloop: one gateway each, measured back to back per scenario.",
    )
    args = parser.parse_args()
    scale = args.scale if args.scale is not None else (0.08 if args.quick else 1.0)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    RESULTS.mkdir(exist_ok=True)

    bench = Bench(args)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    profile_text = ""
    try:
        bench.start()
        idle_s = 3.0 if args.quick else 6.0
        time.sleep(1.0)
        idle0 = cpu_seconds(bench.gateway.pid)  # type: ignore[union-attr]
        time.sleep(idle_s)
        idle_ms_per_s = (cpu_seconds(bench.gateway.pid) - idle0) / idle_s * 1000  # type: ignore[union-attr]
        log(f"gateway idle CPU: {idle_ms_per_s:.1f} ms per second (no traffic, {idle_s:.0f} s)")
        if not args.profile_only:
            for backend in args.backends.split(","):
                bench.set_backend(FAST if backend == "fast" else PACED)
                for mode in args.modes.split(","):
                    for c in concurrencies:
                        n = max(int(FULL_COUNTS.get((backend, mode, c), 1000) * scale), 2 * c, 40)
                        warmup = max(min(n // 5, 300), 2 * c)
                        direct = bench.measure("direct", mode, c, n, warmup)
                        runs = [(loop, None) for loop in bench.gateways]
                        if (backend, mode, c) in RULES_OFF_SCENARIOS and "rules off" in bench.variants:
                            runs.append((next(iter(bench.gateways)), "rules off"))
                        if (backend, mode, c) in QUEUED_SCENARIOS:
                            runs += [(next(iter(bench.gateways)), v) for v in bench.variants if v.startswith("queued")]
                        for loop, variant in runs:
                            bench.use(variant or loop)
                            gw = bench.measure("gateway", mode, c, n, warmup)
                            row = summarize(direct, gw, backend, mode, c)
                            if variant is not None:
                                row["variant"] = variant
                                row["scenario"] += f" [{variant}]"
                            elif len(bench.gateways) > 1:
                                row["loop"] = loop
                                row["scenario"] += f" [{loop}]"
                            idle_ms = idle_ms_per_s * gw["wall_s"]
                            row["gw_cpu_ms_per_req_net_idle"] = max(0.0, row["gw_cpu_ms_per_req"] - idle_ms / n)
                            rows.append(row)
                            log(
                                f"{row['scenario']:<18} n={n:<5} err={row['errors_direct']}/{row['errors_gateway']} "
                                f"p50 {row['p50_direct_ms']:.2f}→{row['p50_gw_ms']:.2f} ms  "
                                f"p99 {row['p99_direct_ms']:.2f}→{row['p99_gw_ms']:.2f} ms  "
                                f"gw CPU {row['gw_cpu_ms_per_req']:.3f} ms/req  "
                                f"rps {row['rps_direct']:.0f}/{row['rps_gw']:.0f}  RSS {row['rss_peak_mb']:.0f} MB"
                            )
            if args.rules_off and "rules off" in bench.variants:
                rows += rate_scenarios(bench, args, scale, idle_ms_per_s)
        if args.profile or args.profile_only:
            log("profiling the gateway (py-spy) under fast JSON c=16 …")
            profile_text = profile(bench, args.profile_requests, args.profile_rate)
        assert bench.gateway is not None
        hwm_mb = max(status_kb(proc.pid, "VmHWM") for proc, _ in bench.gateways.values()) / 1024
        rss_mb = max(status_kb(proc.pid, "VmRSS") for proc, _ in bench.gateways.values()) / 1024
        ledger = subprocess.run(
            [str(BIN / "resayil"), "ledger", "check"], capture_output=True, text=True, env=bench.env(), cwd=bench.tmp
        )
        ledger_ok = ledger.returncode == 0
        ledger_text = (ledger.stdout + ledger.stderr).strip()
        gateway_log = "".join(path.read_text(errors="replace") for path in sorted(bench.tmp.glob("gateway-*.log")))
    finally:
        bench.stop()

    add_marginal(rows)
    elapsed = time.monotonic() - started
    checks = floors(rows, hwm_mb, ledger_ok) if rows else []
    meta = (
        f"Run {datetime.datetime.now().isoformat(timespec='seconds')} · mode {'quick' if args.quick else 'full'} "
        f"(scale {scale}) · {os.cpu_count()} CPUs · {elapsed:.0f} s · backend: 16 tokens/answer "
        f"(fast: all at once; paced: 20 ms first byte + 5 ms per chunk) · gateway VmHWM {hwm_mb:.1f} MB, "
        f"VmRSS at end {rss_mb:.1f} MB · gateway idle CPU {idle_ms_per_s:.1f} ms/s"
    )
    parts = [f"# Resayil Gateway benchmark\n\n{meta}\n"]
    if rows:
        parts.append(table(rows))
        parts.append(
            "\nLatency in ms (request start → last byte, measured by the load generator). `×` = through gateway ÷ "
            "direct. gw CPU = the gateway process's utime+stime over the measured window ÷ requests (or ÷ SSE "
            "`data:` chunks received); net of idle = minus the gateway's idle CPU rate (measured with no traffic "
            "before the scenarios) × the window; direct CPU = load generator + mock CPU per request in the direct run. "
            "Marginal ms/chunk = (stream − JSON gw CPU/req) ÷ chunks per stream. Box CPU = the whole machine's busy "
            "CPU (/proc/stat) per request over the window: load generator + mock (+ gateway, PostgreSQL, Redis) and "
            "any noise from other tenants; box CPU × = through gateway ÷ direct. Rest-of-box = box − gateway − "
            "mock − load generator (mostly PostgreSQL incl. short-lived backends, Redis). New PG conns /1k req = "
            "sessions opened on the benchmark database during the window (pool churn).\n"
        )
        if any("loop" in r for r in rows):
            parts.append(loop_table(rows))
        parts.append(rules_table(rows))
        parts.append(queued_table(rows))
        parts.append("## Floors\n")
        parts += [f"- **{'PASS' if ok else 'FAIL'}** {name}: {value}" for name, ok, value in checks]
        parts.append(f"\nLedger check: `{ledger_text.splitlines()[-1] if ledger_text else ''}`")
        kinds = {r["scenario"]: r["error_kinds"] for r in rows if r["error_kinds"]}
        if kinds:
            parts.append(f"\nError kinds: `{json.dumps(kinds)}`")
    if profile_text:
        parts.append("\n## Profile\n\n" + profile_text)
    warnings = [line for line in gateway_log.splitlines() if line.strip()][-15:]
    if warnings:
        parts.append("\n## Gateway log (last lines)\n\n```\n" + "\n".join(warnings) + "\n```")
    report = "\n".join(parts) + "\n"
    print(report)
    name = "profile.md" if args.profile_only else "latest.md"
    (RESULTS / name).write_text(report)
    (RESULTS / (Path(name).stem + ".json")).write_text(
        json.dumps({"meta": meta, "rows": rows, "floors": checks}, indent=1, default=str)
    )
    log(f"wrote {RESULTS / name}")
    return 0 if all(ok for name, ok, _ in checks if not name.startswith("[paced")) else 1


if __name__ == "__main__":
    sys.exit(main())
