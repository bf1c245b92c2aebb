"""The gateway's own waiting line per backend: a concurrency cap, priority, and a bounded wait."""

from __future__ import annotations

import asyncio

import pytest

from resayil_gateway.errors import NoCapacity
from resayil_gateway.routing.admission import Admission


def occupy(admission: Admission, gate: asyncio.Event) -> asyncio.Task[None]:
    """A request that holds the backend's only slot until ``gate`` is set."""

    async def holder():
        async with admission.slot("ollama"):
            await gate.wait()

    return asyncio.create_task(holder())


async def test_at_most_max_concurrency_run_and_depth_counts_waiting_plus_running():
    admission = Admission()
    admission.configure("ollama", 2)
    release = asyncio.Event()
    entered = []

    async def job(i):
        async with admission.slot("ollama", timeout=5):
            entered.append(i)
            await release.wait()

    tasks = [asyncio.create_task(job(i)) for i in range(5)]
    while admission.depth("ollama") < 5:
        await asyncio.sleep(0)
    assert admission.running("ollama") == 2
    assert len(entered) == 2
    release.set()
    await asyncio.gather(*tasks)
    assert (admission.depth("ollama"), admission.running("ollama")) == (0, 0)


async def test_enterprise_priority_is_served_before_earlier_basic_requests():
    admission = Admission()
    admission.configure("ollama", 1)
    order = []
    gate = asyncio.Event()

    async def job(name, priority):
        async with admission.slot("ollama", priority=priority, timeout=5):
            order.append(name)

    first = occupy(admission, gate)
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(job("basic-1", 0)), asyncio.create_task(job("basic-2", 0))]
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(job("enterprise", 10)))
    while admission.depth("ollama") < 4:
        await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *waiting)
    assert order == ["enterprise", "basic-1", "basic-2"]


async def test_waiting_longer_than_max_queue_wait_gets_503_with_retry_after():
    admission = Admission()
    admission.configure("ollama", 1)
    gate = asyncio.Event()
    task = occupy(admission, gate)
    await asyncio.sleep(0)
    with pytest.raises(NoCapacity) as refused:
        async with admission.slot("ollama", timeout=0.01):
            pass
    assert refused.value.status == 503 and "Retry-After" in refused.value.headers
    assert admission.depth("ollama") == 1
    gate.set()
    await task
    assert admission.depth("ollama") == 0


async def test_a_cancelled_waiter_gives_its_place_up():
    admission = Admission()
    admission.configure("ollama", 1)
    gate = asyncio.Event()
    first = occupy(admission, gate)
    await asyncio.sleep(0)

    async def waiter():
        async with admission.slot("ollama", timeout=5):
            pass

    cancelled = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    gate.set()
    await first
    async with admission.slot("ollama", timeout=1):
        assert admission.running("ollama") == 1
    assert admission.depth("ollama") == 0
