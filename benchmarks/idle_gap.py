"""Why sparse traffic costs more CPU per request: the same request against the fast mock, back to back and
then with a 100 ms pause between requests (as the paced backend's c=1 scenarios have).

    .venv/bin/python benchmarks/idle_gap.py

Prints the gateway's CPU per request and p50 latency for each. Only the pause differs, so the difference is
the cost of waking a process whose caches other work has evicted (the box is shared): it is not work the
gateway does between requests (its idle CPU is ~0 ms/s, measured by run.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
import urllib.parse

import run


def measure(bench: run.Bench, requests: int, gap_s: float) -> tuple[float, float]:
    """(gateway CPU ms per request, p50 ms) over ``requests`` sequential requests with ``gap_s`` between."""
    url = urllib.parse.urlparse(bench.gateway_url)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    body = json.dumps({"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16})
    headers = {"Authorization": f"Bearer {bench.key}", "Content-Type": "application/json"}
    cpu0 = run.cpu_seconds(bench.gateway.pid)  # type: ignore[union-attr]
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        latencies.append((time.perf_counter() - started) * 1000)
        if gap_s:
            time.sleep(gap_s)
    cpu = run.cpu_seconds(bench.gateway.pid) - cpu0  # type: ignore[union-attr]
    latencies.sort()
    return cpu / requests * 1000, latencies[len(latencies) // 2]


def main() -> None:
    """Start the benchmark's gateway and mock, measure both ways twice, stop."""
    args = argparse.Namespace(
        quick=True,
        profile=False,
        profile_only=False,
        concurrency="1",
        backends="fast",
        modes="json",
        scale=0.1,
        keep_db=False,
        profile_requests=0,
        profile_rate=100,
    )
    bench = run.Bench(args)
    bench.start()
    try:
        bench.set_backend({"first_token_ms": 0, "chunk_ms": 0})
        measure(bench, 200, 0)  # warm up
        print("| traffic | gateway CPU ms/request | p50 ms |\n|---|---|---|")
        for gap in (0.0, 0.1, 0.0, 0.1):
            cpu, p50 = measure(bench, 100 if gap else 300, gap)
            print(f"| {'100 ms pause between requests' if gap else 'back to back'} | {cpu:.2f} | {p50:.2f} |")
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
