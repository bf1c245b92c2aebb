"""The gateway's own waiting line per backend: a concurrency cap for all workers together, priority, FIFO
within a priority, a bounded wait, places given up at once, and leases that free a dead worker's slots.

Each test runs on the in-process line (one worker) and on the Redis line shared by two workers (two
admissions, two connections, one key prefix), where the cap must hold for both together.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from resayil_gateway.errors import ServiceUnavailable
from resayil_gateway.routing.admission import Admission, LocalAdmission, QueueWaitExceeded
from resayil_gateway.routing.admission_redis import SPARE_S, RedisAdmission
from resayil_gateway.state import RedisState
from resayil_gateway.testing import REDIS_URL

BACKEND = "ollama"


@dataclass
class Workers:
    """Admissions that share one line: ``first`` and ``second`` are two workers (the same object in-process)."""

    first: Admission
    second: Admission
    make: Callable[..., Any]

    def __iter__(self) -> Any:
        return iter((self.first, self.second))


async def _redis_reachable() -> bool:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await asyncio.wait_for(client.ping(), 2)
        return True
    except Exception:
        return False
    finally:
        await client.aclose()


@pytest.fixture(params=["local", "redis"])
async def workers(request: Any) -> AsyncIterator[Workers]:
    """Two workers sharing one line with ``max_concurrency`` 1 unless a test reconfigures it."""
    if request.param == "local":
        admission = LocalAdmission()
        admission.configure(BACKEND, 1)
        yield Workers(admission, admission, lambda **_: admission)
        return
    if not await _redis_reachable():
        pytest.skip(f"Redis at {REDIS_URL} is not reachable")
    prefix = "t" + uuid.uuid4().hex[:12]
    made: list[tuple[RedisState, RedisAdmission]] = []

    async def make(lease_s: float = 10.0, poll_s: float = 30.0, renew: bool = True) -> RedisAdmission:
        # poll_s is long: waiters must be woken by the release's message, not by polling
        state = RedisState(REDIS_URL, uuid.uuid4().hex, prefix)
        await state.start()
        admission = RedisAdmission(state, lease_s=lease_s, poll_s=poll_s, depth_max_age_s=0)  # exact depths
        admission.configure(BACKEND, 1)
        if renew:
            await admission.start()
        made.append((state, admission))
        return admission

    yield Workers(await make(), await make(), make)
    for state, admission in made:
        await admission.close()
        await state.close()


async def drain(workers: Workers) -> None:
    """Wait for the slots given back to be released (Redis releases run in the background)."""
    for admission in workers:
        await admission.drain()


def configure(workers: Workers, limit: int) -> None:
    for admission in workers:
        admission.configure(BACKEND, limit)


async def until_depth(admission: Admission, depth: int) -> None:
    while await admission.depth(BACKEND) != depth:
        await asyncio.sleep(0.001)


def occupy(admission: Admission, gate: asyncio.Event) -> asyncio.Task[None]:
    """A request that holds a slot until ``gate`` is set."""

    async def holder() -> None:
        async with admission.slot(BACKEND):
            await gate.wait()

    return asyncio.create_task(holder())


async def test_max_concurrency_holds_for_all_workers_together_and_depth_counts_both(workers: Workers) -> None:
    configure(workers, 2)
    release = asyncio.Event()
    running = 0
    most = 0

    async def job(admission: Admission) -> None:
        nonlocal running, most
        async with admission.slot(BACKEND, timeout=10):
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(job(workers.first if i % 2 else workers.second)) for i in range(6)]
    await until_depth(workers.first, 6)
    assert await workers.second.depth(BACKEND) == 6
    assert running == 2
    assert (
        workers.first.running(BACKEND) + (workers.second.running(BACKEND) if workers.first is not workers.second else 0)
        == 2
    )
    release.set()
    await asyncio.gather(*tasks)
    await drain(workers)
    assert most == 2
    assert await workers.first.depth(BACKEND) == 0


async def test_enterprise_overtakes_waiting_basic_and_fifo_holds_within_a_priority(workers: Workers) -> None:
    order: list[str] = []
    gate = asyncio.Event()

    async def job(admission: Admission, name: str, priority: int) -> None:
        async with admission.slot(BACKEND, priority=priority, timeout=10):
            order.append(name)

    first = occupy(workers.first, gate)
    await until_depth(workers.first, 1)
    waiting = []
    for depth, (admission, name, priority) in enumerate(
        [
            (workers.first, "basic-1", 0),
            (workers.second, "basic-2", 0),
            (workers.second, "enterprise-1", 10),
            (workers.first, "enterprise-2", 10),
        ],
        start=2,
    ):
        waiting.append(asyncio.create_task(job(admission, name, priority)))
        await until_depth(workers.first, depth)
    gate.set()
    await asyncio.gather(first, *waiting)
    assert order == ["enterprise-1", "enterprise-2", "basic-1", "basic-2"]


async def test_waiting_longer_than_max_queue_wait_gets_503_with_retry_after(workers: Workers) -> None:
    gate = asyncio.Event()
    task = occupy(workers.first, gate)
    await until_depth(workers.first, 1)
    with pytest.raises(QueueWaitExceeded) as refused:
        async with workers.second.slot(BACKEND, timeout=0.05):
            pass
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
    assert await workers.second.depth(BACKEND) == 1
    gate.set()
    await task
    await drain(workers)
    assert await workers.first.depth(BACKEND) == 0


async def test_a_client_that_leaves_gives_its_place_up_at_once(workers: Workers) -> None:
    gate = asyncio.Event()
    first = occupy(workers.first, gate)
    await until_depth(workers.first, 1)
    entered: list[str] = []

    async def waiter(name: str) -> None:
        async with workers.second.slot(BACKEND, timeout=10):
            entered.append(name)

    leaving = asyncio.create_task(waiter("leaving"))
    await until_depth(workers.first, 2)
    staying = asyncio.create_task(waiter("staying"))
    await until_depth(workers.first, 3)
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    assert await workers.first.depth(BACKEND) == 2  # gone as soon as the cancellation completed
    gate.set()
    await asyncio.gather(first, staying)
    await drain(workers)
    assert entered == ["staying"]
    assert await workers.first.depth(BACKEND) == 0


async def test_a_dead_workers_slot_expires_after_its_lease(workers: Workers) -> None:
    if isinstance(workers.first, LocalAdmission):
        pytest.skip("one process: a dead worker takes its line with it")
    dead = await workers.make(lease_s=0.3, renew=False)  # a worker killed with -9 renews nothing
    held = dead.slot(BACKEND)
    await held.__aenter__()  # and never releases
    survivor = await workers.make(lease_s=10.0, poll_s=0.05)
    assert await survivor.depth(BACKEND) == 1
    async with survivor.slot(BACKEND, timeout=5):
        assert await survivor.depth(BACKEND) == 1  # the dead slot was purged, ours runs
    assert held is not None  # kept referenced: collecting it would release the slot


async def test_a_live_workers_renewed_slot_outlasts_its_lease(workers: Workers) -> None:
    if isinstance(workers.first, LocalAdmission):
        pytest.skip("in-process slots have no lease")
    holder = await workers.make(lease_s=0.15)  # renewed every 0.05 s
    gate = asyncio.Event()
    task = occupy(holder, gate)
    await until_depth(holder, 1)
    with pytest.raises(QueueWaitExceeded):
        async with (await workers.make(poll_s=0.05)).slot(BACKEND, timeout=0.5):
            pass
    gate.set()
    await task


def round_trips(admission: RedisAdmission, monkeypatch: Any) -> list[list[str]]:
    """Record each round trip to Redis the admission's scripts make, as the list of commands it carried."""
    trips: list[list[str]] = []
    batch = admission.state.scripts
    original = batch._pipeline

    async def counting(calls: Any) -> Any:
        trips.append(["EVALSHA" for _ in calls])
        return await original(calls)

    monkeypatch.setattr(batch, "_pipeline", counting)
    return trips


async def test_uncontended_acquire_and_release_are_one_redis_round_trip_each(
    workers: Workers, monkeypatch: Any
) -> None:
    if isinstance(workers.first, LocalAdmission):
        pytest.skip("no Redis in-process")
    admission = workers.first
    assert isinstance(admission, RedisAdmission)
    async with admission.slot(BACKEND):  # loads the scripts once
        pass
    await admission.drain()
    trips = round_trips(admission, monkeypatch)
    async with admission.slot(BACKEND):
        assert trips == [["EVALSHA"]]
    await admission.drain()
    assert trips == [["EVALSHA"], ["EVALSHA"]]


async def test_an_unreachable_redis_is_a_503_to_retry_not_a_backend_failure() -> None:
    state = RedisState("redis://127.0.0.1:1/0", uuid.uuid4().hex, "unreachable")
    admission = RedisAdmission(state)
    admission.configure(BACKEND, 1)
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            async with admission.slot(BACKEND):
                pass
        assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "2"
    finally:
        await state.close()


async def test_a_busy_worker_reads_the_depth_from_its_latest_script_reply(workers: Workers, monkeypatch: Any) -> None:
    if isinstance(workers.first, LocalAdmission):
        pytest.skip("no Redis in-process")
    admission = workers.first
    assert isinstance(admission, RedisAdmission)
    admission.depth_max_age_s = 60
    async with admission.slot(BACKEND):  # loads the scripts once
        pass
    await admission.drain()
    trips = round_trips(admission, monkeypatch)
    async with admission.slot(BACKEND):
        assert await admission.depth(BACKEND) == 1
    await admission.drain()
    assert await admission.depth(BACKEND) == 0
    assert trips == [["EVALSHA"], ["EVALSHA"]]  # acquire and release; both depths came with their replies


async def test_with_room_in_the_line_a_workers_next_request_takes_its_spare_slot_without_a_round_trip(
    workers: Workers, monkeypatch: Any
) -> None:
    if isinstance(workers.first, LocalAdmission):
        pytest.skip("no Redis in-process")
    admission = workers.first
    assert isinstance(admission, RedisAdmission)
    admission.depth_max_age_s = 60  # the depth of the latest reply stays fresh for the whole test
    configure(workers, 8)
    async with admission.slot(BACKEND):  # loads the scripts
        pass
    await admission.drain()
    trips = round_trips(admission, monkeypatch)
    async with admission.slot(BACKEND):
        pass
    assert len(trips) == 1  # the acquire; the slot stays as a spare
    assert await admission.depth(BACKEND) == 0  # an idle spare is not a request: failover does not count it
    for _ in range(5):
        async with admission.slot(BACKEND):
            assert await workers.second.depth(BACKEND) == 1  # still one slot, counted by every worker
    assert len(trips) == 1
    await asyncio.sleep(SPARE_S * 4)  # unused, the spare goes back by itself
    await admission.drain()
    assert len(trips) == 2
    assert await workers.second.depth(BACKEND) == 0


async def test_a_full_line_gets_the_slot_back_at_once_and_a_stale_depth_never_lends_a_spare(
    workers: Workers, monkeypatch: Any
) -> None:
    if isinstance(workers.first, LocalAdmission):
        pytest.skip("no Redis in-process")
    admission = workers.first
    assert isinstance(admission, RedisAdmission)
    configure(workers, 1)  # one slot: the line is full while it runs
    admission.depth_max_age_s = 60
    async with admission.slot(BACKEND):
        pass
    assert not admission._spares.get(BACKEND)  # given back at once: someone elsewhere may be waiting for it
    await admission.drain()
    assert await workers.second.depth(BACKEND) == 0
    configure(workers, 8)
    admission.depth_max_age_s = 0  # every reply is already stale: no spare is kept
    async with admission.slot(BACKEND):
        pass
    assert not admission._spares.get(BACKEND)
    await admission.drain()
    assert await workers.second.depth(BACKEND) == 0


async def test_a_request_waiting_on_another_worker_makes_every_worker_give_back_its_spares_at_once(
    workers: Workers, monkeypatch: Any
) -> None:
    if isinstance(workers.first, LocalAdmission):
        pytest.skip("no Redis in-process")
    from resayil_gateway.routing import admission_redis

    monkeypatch.setattr(admission_redis, "SPARE_S", 30.0)  # spares would otherwise stay half a minute
    first, second = workers.first, workers.second
    assert isinstance(first, RedisAdmission)
    configure(workers, 8)
    first.depth_max_age_s = 60
    gate = asyncio.Event()
    held = [occupy(first, gate) for _ in range(7)]
    await until_depth(second, 7)
    gate.set()
    await asyncio.gather(*held)
    assert len(first._spares[BACKEND]) == 7 and await second.depth(BACKEND) == 7
    async with second.slot(BACKEND):  # the eighth slot: the line is full now
        async with asyncio.timeout(5):
            async with second.slot(BACKEND, timeout=5):  # waits: its queue.wait frees the spares
                pass
    assert not first._spares[BACKEND]
