"""The durable outbox: retries with backoff until a final failure that keeps the error, nothing lost or repeated
across a crash in the middle of a delivery, and several workers sharing it on PostgreSQL without a duplicate."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import select
from test_notifications_channel import ChannelPlugin, FakeChannel, worker_for

from resayil_gateway.domain import Event
from resayil_gateway.events.channels import PermanentDeliveryError, TransientDeliveryError
from resayil_gateway.events.delivery import backoff
from resayil_gateway.store.tables import outbox

RETRIES = {"notifications": {"max_attempts": 3, "backoff_base_s": 10, "backoff_max_s": 3600, "lease_s": 60}}


async def queue_bans(gateway, count: int) -> None:
    """``count`` admin alerts (one message each to the channel's extra admin)."""
    for n in range(count):
        await gateway.events.bans.report(f"192.0.2.{n + 1}", "jail", "test")


async def rows(gateway):
    async with gateway.store.connect() as conn:
        return (await conn.execute(select(outbox).order_by(outbox.c.id))).all()


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter():
    assert [backoff(n, 10, 100, jitter=1.0) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 80, 100]
    assert all(5 <= backoff(1, 10, 100) < 10 for _ in range(50))


async def test_a_failing_provider_is_retried_with_backoff_then_marked_failed_with_the_error_kept(make_gateway, clock):
    channel = FakeChannel()
    gateway = make_gateway(clock=clock, plugins=[ChannelPlugin(channel)], overrides=RETRIES)
    worker = worker_for(gateway)
    await queue_bans(gateway, 1)
    channel.failures = [TransientDeliveryError(f"HTTP 503 try {n}") for n in (1, 2, 3)]
    assert await worker.deliver_due() == 1
    (row,) = await rows(gateway)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 503 try 1")
    assert 5 <= (row.next_attempt_at - clock.now()).total_seconds() <= 10
    assert await worker.deliver_due() == 0  # not due yet
    clock.advance(seconds=10)
    assert await worker.deliver_due() == 1
    (row,) = await rows(gateway)
    assert (row.status, row.attempts) == ("pending", 2)
    assert 10 <= (row.next_attempt_at - clock.now()).total_seconds() <= 20
    clock.advance(seconds=20)
    assert await worker.deliver_due() == 1
    (row,) = await rows(gateway)
    assert (row.status, row.attempts, row.last_error, row.channel) == ("failed", 3, "HTTP 503 try 3", "fake")
    clock.advance(days=1)
    assert await worker.deliver_due() == 0
    assert channel.sent == []
    assert gateway.metrics.child(gateway.metrics.notifications, "fake", "ip.banned", "failed")._value.get() == 1
    assert await gateway.events.outbox.retry_failed() == 1  # ``resayil notify retry``
    assert await worker.deliver_due() == 1
    (row,) = await rows(gateway)
    assert (row.status, row.provider_id, row.last_error) == ("sent", "wamid-1", None)


async def test_a_permanent_failure_is_not_retried(make_gateway, clock):
    channel = FakeChannel()
    gateway = make_gateway(clock=clock, plugins=[ChannelPlugin(channel)], overrides=RETRIES)
    await queue_bans(gateway, 1)
    channel.failures = [PermanentDeliveryError("invalid recipient")]
    await worker_for(gateway).deliver_all()
    (row,) = await rows(gateway)
    assert (row.status, row.attempts, row.last_error) == ("failed", 1, "invalid recipient")


async def test_a_restart_in_the_middle_of_delivery_loses_nothing_and_repeats_nothing_acknowledged(make_gateway, clock):
    crashing = FakeChannel()
    crashing.hold_after = 2
    first = make_gateway(clock=clock, plugins=[ChannelPlugin(crashing)], overrides=RETRIES)
    await queue_bans(first, 4)
    delivering = asyncio.ensure_future(worker_for(first).deliver_due())
    await crashing.holding.wait()
    delivering.cancel()  # the process dies while the provider has the third message
    with contextlib.suppress(asyncio.CancelledError):
        await delivering
    assert [row.status for row in await rows(first)] == ["sent", "sent", "sending", "sending"]

    channel = FakeChannel()
    second = make_gateway(clock=clock, plugins=[ChannelPlugin(channel)], overrides=RETRIES)
    worker = worker_for(second)
    assert await worker.deliver_all() == 0  # the dead worker's lease still holds
    clock.advance(seconds=60)
    assert await worker.deliver_all() == 2
    assert [m.text.split("IP ")[1].split(" ")[0] for m in crashing.sent + channel.sent] == [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "192.0.2.4",
    ]
    assert [row.status for row in await rows(second)] == ["sent"] * 4


async def test_two_workers_on_postgresql_share_the_outbox_without_sending_anything_twice(make_gateway, stack, clock):
    if stack != "postgres":
        pytest.skip("several workers share an outbox only on PostgreSQL")
    settings = {"notifications": {"batch_size": 3}}
    channels = [FakeChannel(), FakeChannel()]
    gateways = [make_gateway(clock=clock, plugins=[ChannelPlugin(c)], overrides=settings) for c in channels]
    for n in range(30):
        await gateways[0].emit(Event("ip.banned", {"ip": f"10.0.0.{n}", "jail": "j", "reason": "r"}, key=f"t{n}"))
    workers = [worker_for(gateway) for gateway in gateways]
    tried = await asyncio.gather(*(worker.deliver_all() for worker in workers))
    assert sum(tried) == 30
    assert all(count > 0 for count in tried), tried
    texts = [m.text for c in channels for m in c.sent]
    assert len(texts) == len(set(texts)) == 30
    assert {row.status for row in await rows(gateways[0])} == {"sent"}


async def test_a_committed_message_wakes_the_worker_and_the_depth_is_on_metrics(make_gateway, clock):
    channel = FakeChannel()
    gateway = make_gateway(clock=clock, plugins=[ChannelPlugin(channel)])
    assert not gateway.events.queued.is_set()
    await queue_bans(gateway, 2)
    assert gateway.events.queued.is_set()  # the worker waits on this between polls
    worker = worker_for(gateway)
    await worker.update_depth()
    assert 'resayil_outbox_messages{status="pending"} 2.0' in gateway.metrics.render().decode()
    channel.failures = [TransientDeliveryError("timeout")]
    await worker.deliver_all()
    await worker.update_depth()
    metrics = gateway.metrics.render().decode()
    assert 'resayil_outbox_messages{status="sent"} 1.0' in metrics
    assert 'resayil_outbox_messages{status="pending"} 1.0' in metrics
    assert 'resayil_notifications_total{channel="fake",event="ip.banned",outcome="sent"} 1.0' in metrics
    assert 'resayil_notifications_total{channel="fake",event="ip.banned",outcome="retried"} 1.0' in metrics


async def test_without_a_channel_messages_wait_in_the_outbox(make_gateway, clock):
    gateway = make_gateway(clock=clock)
    await queue_bans(gateway, 1)
    assert [(row.status, row.recipient) for row in await rows(gateway)] == []  # no admin, no extra recipient
    await gateway.accounts.create("boss@example.com", "+96550000009", "test-password-123", role="admin")
    await queue_bans(gateway, 1)
    assert [row.status for row in await rows(gateway)] == ["pending", "pending"]
