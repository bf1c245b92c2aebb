"""Closed-loop load generator (asyncio + aiohttp), run as its own process by ``run.py``.

Usage: ``python benchmarks/loadgen.py '<json spec>'`` with the spec
``{"url", "mode": "json"|"stream", "target": "direct"|"gateway", "key", "model", "max_tokens",
"requests", "concurrency", "warmup"}``.

Protocol on stdout/stdin, so the orchestrator can snapshot the other processes' CPU around exactly the
measured window: it sends ``warmup`` requests, prints ``WARM``, waits for a line on stdin, then sends
``requests`` requests from ``concurrency`` workers (each one request at a time, back to back, or with ``"rate"``
set, the workers together sending that many requests per second: an open loop below saturation) and prints one
JSON line: per-request latencies (request start → last byte), time to first byte, error count and kinds,
data chunks received (``data:`` lines for SSE, NDJSON lines direct), wall time and its own CPU time.

A request counts as an error unless it answers 200 and its body is complete: a JSON body carrying
``choices`` (gateway) or ``"done":true`` (direct); a stream ending with ``data: [DONE]`` (gateway) or a
``"done":true`` line (direct).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp


def request_spec(spec: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    messages = [{"role": "user", "content": "hi"}]
    stream = spec["mode"] == "stream"
    if spec["target"] == "direct":
        body = {
            "model": spec["model"],
            "messages": messages,
            "stream": stream,
            "options": {"num_predict": spec["max_tokens"]},
        }
        url = spec["url"].rstrip("/") + "/api/chat"
        headers = {"Content-Type": "application/json"}
    else:
        body = {"model": spec["model"], "messages": messages, "max_tokens": spec["max_tokens"], "stream": stream}
        url = spec["url"].rstrip("/") + "/v1/chat/completions"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {spec['key']}"}
    return url, json.dumps(body).encode(), headers


class Runner:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.url, self.body, self.headers = request_spec(spec)
        self.stream = spec["mode"] == "stream"
        self.gateway = spec["target"] == "gateway"

    async def one(self, session: aiohttp.ClientSession) -> tuple[float, float, int, str | None]:
        """(latency s, ttfb s, chunks, error or None) for one request."""
        started = time.perf_counter()
        try:
            async with session.post(self.url, data=self.body, headers=self.headers) as resp:
                if not self.stream:
                    data = await resp.read()
                    done = time.perf_counter()
                    if resp.status != 200:
                        return done - started, done - started, 0, f"http {resp.status}"
                    ok = b'"choices"' in data if self.gateway else b'"done":true' in data.replace(b" ", b"")
                    return done - started, done - started, 1, None if ok else "incomplete body"
                first = 0.0
                parts = []
                async for piece in resp.content.iter_any():
                    if not first:
                        first = time.perf_counter()
                    parts.append(piece)
                done = time.perf_counter()
                if resp.status != 200:
                    return done - started, (first or done) - started, 0, f"http {resp.status}"
                data = b"".join(parts)
                if self.gateway:
                    chunks = data.count(b"data:")
                    ok = data.rstrip().endswith(b"data: [DONE]") and b'"error"' not in data
                else:
                    chunks = data.count(b"\n")
                    ok = b'"done":true' in data and b'"error"' not in data
                return done - started, first - started, chunks, None if ok else "incomplete stream"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            done = time.perf_counter()
            return done - started, done - started, 0, type(exc).__name__

    async def batch(self, session: aiohttp.ClientSession, count: int) -> list[tuple[float, float, int, str | None]]:
        results: list[tuple[float, float, int, str | None]] = []
        remaining = count

        workers = min(self.spec["concurrency"], count)
        rate = self.spec.get("rate")  # requests per second in all (open loop), or None: back to back
        interval = workers / rate if rate else 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def worker(index: int) -> None:
            nonlocal remaining
            next_at = start + index * interval / workers  # the workers' sends spread evenly over an interval
            while remaining > 0:
                if interval:
                    delay = next_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                remaining -= 1
                results.append(await self.one(session))

        await asyncio.gather(*(worker(index) for index in range(workers)))
        return results

    async def run(self) -> dict[str, Any]:
        spec = self.spec
        connector = aiohttp.TCPConnector(limit=spec["concurrency"], force_close=False)
        timeout = aiohttp.ClientTimeout(total=spec.get("timeout_s", 60))
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            warm = await self.batch(session, spec["warmup"])
            print(json.dumps({"warm": True, "errors": sum(1 for r in warm if r[3])}), flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sys.stdin.readline)
            cpu0 = time.process_time()
            wall0 = time.perf_counter()
            results = await self.batch(session, spec["requests"])
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
        errors = Counter(r[3] for r in results if r[3])
        return {
            "requests": len(results),
            "errors": sum(errors.values()),
            "error_kinds": dict(errors),
            "latency_s": [r[0] for r in results],
            "ttfb_s": [r[1] for r in results],
            "chunks": sum(r[2] for r in results if not r[3]),
            "wall_s": wall,
            "loadgen_cpu_s": cpu,
        }


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = asyncio.run(Runner(spec).run())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
