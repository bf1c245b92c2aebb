"""The outbox's delivery guarantees (issue 7) with the real WhatsApp plugin and the sink on a real socket: a
failing provider is retried with backoff (never sooner than its Retry-After) and finally marked failed with its
error kept; two workers on PostgreSQL never send a message twice; a restart in the middle of a delivery loses
nothing and repeats nothing acknowledged; a rolled-back change sends nothing.

Messages come from their real source, ``gateway.events.bans.report`` (what ``resayil bans report`` calls): one
admin alert each, to ``whatsapp.admin_phones``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy import func, select
from whatsapp_helpers import EXTRA_ADMIN, SINK_TOKEN

from resayil_gateway.events.delivery import DeliveryWorker
from resayil_gateway.store.tables import outbox

RETRIES = {"notifications": {"max_attempts": 3, "backoff_base_s": 10, "backoff_max_s": 3600, "lease_s": 60}}
WAIT_S = 10.0
AMAL = "+96550000001"


class Boom(Exception):
    """The failure that rolls a change back."""


def worker_for(gateway: Any) -> DeliveryWorker:
    """The delivery worker the application runs, for ``gateway`` (tests call its one-pass methods)."""
    return DeliveryWorker(
        gateway.events, gateway.channels, gateway.settings.notifications, gateway.clock, gateway.metrics
    )


async def report_bans(gateway: Any, count: int, prefix: str = "192.0.2.") -> None:
    """``count`` bans, as fail2ban reports them: one alert each to the extra admin phone."""
    for n in range(1, count + 1):
        await gateway.events.bans.report(f"{prefix}{n}", "resayil-auth", f"ban {n}")


def banned_ip(text: str) -> str:
    """The address an ``ip.banned`` message names (from its English part)."""
    return text.split("\n\n")[1].split("IP ")[1].split(" ")[0]


async def rows(gateway: Any) -> list[Any]:
    async with gateway.store.connect() as conn:
        return list((await conn.execute(select(outbox).order_by(outbox.c.id))).all())


async def test_a_failing_provider_is_retried_with_backoff_then_marked_failed_with_its_error_kept(
    gateway_to_sink, sink, clock
):
    running = await sink(token=SINK_TOKEN, hang_s=5)
    gateway = gateway_to_sink(running.url, overrides=RETRIES, timeout_s=0.3)
    worker = worker_for(gateway)
    await report_bans(gateway, 1)
    running.state.fail_next(1, 503, retry_after=120)
    running.state.fail_next(1, timeout=True)
    running.state.fail_next(1, 502)

    assert await worker.deliver_due() == 1
    (row,) = await rows(gateway)
    assert (row.status, row.attempts, row.channel) == ("pending", 1, "whatsapp")
    assert row.last_error == "resayil: HTTP 503: Simulated failure (whatsapp sink) (retry after 120s)"
    assert (row.next_attempt_at - clock.now()).total_seconds() == 120  # the provider's word, not 5–10 s
    clock.advance(seconds=119)
    assert await worker.deliver_due() == 0

    clock.advance(seconds=1)
    assert await worker.deliver_due() == 1  # the sink holds the request until the channel gives up
    (row,) = await rows(gateway)
    assert (row.status, row.attempts, row.last_error) == ("pending", 2, "resayil: no answer within 0.3s")
    assert 10 <= (row.next_attempt_at - clock.now()).total_seconds() <= 20  # doubled, with jitter

    clock.advance(seconds=20)
    assert await worker.deliver_due() == 1
    (row,) = await rows(gateway)
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.last_error == "resayil: HTTP 502: Simulated failure (whatsapp sink)"
    clock.advance(days=1)
    assert await worker.deliver_due() == 0  # given up for good
    state = running.state
    assert (state.messages, state.requests, state.failed, state.held) == ([], 3, 3, 1)

    assert await gateway.events.outbox.retry_failed() == 1  # ``resayil notify retry``, once the provider is back
    assert await worker.deliver_due() == 1
    (row,) = await rows(gateway)
    (message,) = state.messages
    assert (row.status, row.provider_id, row.last_error) == ("sent", message.id, None)
    assert (message.phone, banned_ip(message.text)) == (EXTRA_ADMIN, "192.0.2.1")


async def test_a_refused_token_fails_at_once_with_the_providers_answer_kept_and_no_token(gateway_to_sink, sink):
    running = await sink(token="the-provider-expects-another-token")
    gateway = gateway_to_sink(running.url, overrides=RETRIES)
    await report_bans(gateway, 1)
    assert await worker_for(gateway).deliver_all() == 1
    (row,) = await rows(gateway)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == "resayil: HTTP 401: Invalid or missing API token"
    assert SINK_TOKEN not in row.last_error
    assert (running.state.messages, running.state.requests) == ([], 1)


async def test_two_workers_on_postgresql_never_send_a_message_twice(gateway_to_sink, sink, stack):
    if stack != "postgres":
        pytest.skip("several workers share an outbox only on PostgreSQL")
    running = await sink(token=SINK_TOKEN)
    small_batches = {"notifications": {"batch_size": 2}}
    gateways = [gateway_to_sink(running.url, overrides=small_batches) for _ in range(2)]
    await report_bans(gateways[0], 60, prefix="198.51.100.")
    tried = await asyncio.gather(*(worker_for(gateway).deliver_all() for gateway in gateways))
    assert sum(tried) == 60
    assert all(count > 0 for count in tried), tried  # both took part
    sent = running.state.messages
    assert sorted(banned_ip(message.text) for message in sent) == sorted(f"198.51.100.{n}" for n in range(1, 61))
    assert len(sent) == running.state.requests == 60
    outcome = await rows(gateways[1])
    assert {row.status for row in outcome} == {"sent"}
    assert sorted(row.provider_id for row in outcome) == sorted(message.id for message in sent)


async def test_a_restart_in_the_middle_of_delivery_loses_nothing_and_repeats_nothing_acknowledged(
    gateway_to_sink, sink, clock
):
    running = await sink(token=SINK_TOKEN, hang_s=30)
    first = gateway_to_sink(running.url, overrides=RETRIES)
    await report_bans(first, 4)
    running.state.fail_next(1, timeout=True, after=2)  # the provider is slow to answer the third
    delivering = asyncio.ensure_future(worker_for(first).deliver_due())
    async with asyncio.timeout(WAIT_S):
        await running.state.wait_for(lambda _: running.state.held == 1)
    delivering.cancel()  # the process dies while the provider has the third message
    with contextlib.suppress(asyncio.CancelledError):
        await delivering
    assert [row.status for row in await rows(first)] == ["sent", "sent", "sending", "sending"]

    second = gateway_to_sink(running.url, overrides=RETRIES)  # the restarted process
    worker = worker_for(second)
    assert await worker.deliver_all() == 0  # the dead worker's lease still holds
    clock.advance(seconds=60)
    assert await worker.deliver_all() == 2
    sent = running.state.messages
    assert [banned_ip(message.text) for message in sent] == ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
    assert running.state.requests == 5  # two acknowledged, one cut off, the last two: none repeated
    outcome = await rows(second)
    assert [(row.status, row.attempts) for row in outcome] == [("sent", 1), ("sent", 1), ("sent", 2), ("sent", 2)]
    assert [row.provider_id for row in outcome] == [message.id for message in sent]


async def test_a_rolled_back_change_sends_nothing(gateway_to_sink, sink):
    running = await sink(token=SINK_TOKEN)
    gateway = gateway_to_sink(running.url)
    worker = worker_for(gateway)
    account = await gateway.accounts.create("amal@example.com", AMAL, "test-password-123", name="Amal")
    assert await worker.deliver_all() == 1  # the welcome
    gateway.events.queued.clear()  # what wakes the application's worker

    with pytest.raises(Boom):
        async with gateway.events.transaction() as tx:  # as an order's fulfilment activates a plan
            activation = await gateway.plans.activate(account.id, "enterprise", ref="ord-1", actor="test", conn=tx.conn)
            assert [event.name for event in activation.events] == ["plan.activated", "enterprise.customer"]
            assert await tx.conn.scalar(select(func.count()).select_from(outbox)) == 1 + 2  # written in it...
            tx.after_commit(lambda: gateway.plans.announce(activation))
            raise Boom
    assert not gateway.events.queued.is_set()  # ...and rolled back with it: no one is woken
    assert await worker.deliver_all() == 0
    assert [(row.event, row.status) for row in await rows(gateway)] == [("account.created", "sent")]

    await gateway.events.bans.report("192.0.2.1", "resayil-auth", "after the rollback")  # a committed change
    assert gateway.events.queued.is_set()
    assert await worker.deliver_all() == 1
    assert [(message.phone, message.text.split("\n\n")[1]) for message in running.state.messages] == [
        (AMAL, "Welcome to Resayil, Amal! Your account (amal@example.com) is active with 0 credits."),
        (EXTRA_ADMIN, "Security alert: IP 192.0.2.1 banned by resayil-auth. Reason: after the rollback."),
    ]
    assert running.state.requests == 2
