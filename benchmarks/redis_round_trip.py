"""CPU per Redis script call on an idle worker: the gateway's script batch against redis-py's own ``evalsha``.

An idle worker (c=1) sends each request's rate-limit script alone, so this is the round trip the traffic rules
add to every request there. Both are measured in one process, alternately, and reported as a ratio (this
machine is shared and noisy: absolute numbers drift)::

    .venv/bin/python benchmarks/redis_round_trip.py [--calls 3000] [--rounds 5]

Needs the Redis at 127.0.0.1:6379 (the suite's).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from resayil_gateway.state import RedisState

SCRIPT = "return redis.call('INCR', KEYS[1])"


async def cpu_per_call(calls: int, call: Callable[[], Awaitable[Any]]) -> float:
    """Microseconds of this process's CPU per awaited ``call()``."""
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) / calls * 1e6


async def main(calls: int, rounds: int) -> None:
    """Alternate the two ways ``rounds`` times and print the medians and their ratio."""
    state = RedisState("redis://127.0.0.1:6379/0", uuid.uuid4().hex, "bench" + uuid.uuid4().hex[:8])
    await state.start()
    try:
        script = state.redis.register_script(SCRIPT)
        key = state.key("counter")
        await script(keys=[key])  # loaded on the server
        batch: list[float] = []
        plain: list[float] = []
        for _ in range(rounds):
            batch.append(await cpu_per_call(calls, lambda: state.scripts.run(script, [key], [])))
            plain.append(await cpu_per_call(calls, lambda: state.redis.evalsha(script.sha, 1, key)))
        await state.redis.delete(key)
    finally:
        await state.close()
    b, p = statistics.median(batch), statistics.median(plain)
    print(f"script batch     {b:7.1f} µs CPU per call (median of {rounds} rounds of {calls})")
    print(f"redis-py evalsha {p:7.1f} µs CPU per call")
    print(f"ratio batch / evalsha: {b / p:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
