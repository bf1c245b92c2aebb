"""After commit (issue 7): what another party can observe (``on_event`` hooks, broadcasts to other workers,
queued messages) happens only once the change is committed; a rolled-back change tells no one. An audit row
commits with the change it records."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from test_notifications_channel import EventRecorder

from resayil_gateway.domain import Event
from resayil_gateway.store.tables import audit, outbox, subscriptions


class Boom(Exception):
    pass


async def count(gateway, table) -> int:
    async with gateway.store.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
def recorder():
    return EventRecorder()


@pytest.fixture
def observed(make_gateway, clock, recorder):
    gateway = make_gateway(clock=clock, plugins=[recorder])
    broadcasts: list[tuple[str, str]] = []
    original = gateway.state.broadcast

    async def spy(topic: str, value: str) -> None:
        broadcasts.append((topic, value))
        await original(topic, value)

    gateway.state.broadcast = spy  # type: ignore[method-assign]
    gateway.broadcasts = broadcasts
    return gateway


async def test_a_rolled_back_change_sends_nothing_and_tells_no_one(observed, recorder):
    account = await observed.accounts.create("amal@example.com", "+96550000001", "test-password-123")
    recorder.events.clear()
    messages = await count(observed, outbox)
    called = []

    async def mark() -> None:
        called.append(1)

    with pytest.raises(Boom):
        async with observed.events.transaction() as tx:
            activation = await observed.plans.activate(account.id, "pro", ref="order-1", actor="test", conn=tx.conn)
            tx.after_commit(lambda: observed.plans.announce(activation))
            await tx.record(Event("key.created", {"prefix": "rsk-x"}, account.id))
            tx.after_commit(mark)
            raise Boom
    assert recorder.events == []
    assert observed.broadcasts == []
    assert called == []
    assert await count(observed, outbox) == messages
    assert await count(observed, subscriptions) == 0
    assert not [row for row in await audit_rows(observed) if row.action == "plan.activated"]


async def audit_rows(gateway):
    async with gateway.store.connect() as conn:
        return (await conn.execute(select(audit))).all()


async def test_a_plan_activation_is_observed_and_broadcast_after_its_commit_with_its_messages(observed, recorder):
    account = await observed.accounts.create("amal@example.com", "+96550000001", "test-password-123")
    seen_inside: list[list[str]] = []
    async with observed.events.transaction() as tx:
        activation = await observed.plans.activate(account.id, "pro", ref="order-1", actor="test", conn=tx.conn)
        tx.after_commit(lambda: observed.plans.announce(activation))
        seen_inside.append(recorder.names())
        assert observed.broadcasts == []
    assert seen_inside == [["account.created"]]
    assert recorder.names() == ["account.created", "plan.activated"]
    assert ("account", str(account.id)) in observed.broadcasts
    assert [(row.event, row.dedupe_key) for row in await observed.events.outbox.list()] == [
        ("plan.activated", "plan:order-1>+96550000001"),
        ("account.created", f"account.created:{account.id}>+96550000001"),
    ]


async def test_registration_its_welcome_credits_and_its_message_commit_together(make_gateway, clock, recorder):
    gateway = make_gateway(clock=clock, plugins=[recorder], overrides={"billing": {"signup_credits": 25}})
    account = await gateway.accounts.create("amal@example.com", "+96550000001", "test-password-123")
    assert (await gateway.ledger.balance(account.id)).total == 25
    assert recorder.names() == ["account.created"]
    (row,) = await gateway.events.outbox.list()
    assert (row.event, row.recipient, row.payload["credits"]) == ("account.created", "+96550000001", 25)


async def test_an_event_no_transaction_caused_is_observed_at_once(observed, recorder):
    await observed.emit(Event("request.charged", {"credits": 1}, None))
    assert recorder.names() == ["request.charged"]
