"""The credit ledger: atomic holds, exactly-once grants, settling with shortfall, expiry, the ledger check."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from resayil_gateway.billing.ledger import HoldRefused, LedgerError


async def new_account(gateway, email="a@example.com", phone="+96550000001"):
    return await gateway.accounts.create(email, phone, "correct horse battery")


async def test_300_concurrent_reserves_of_one_credit_against_100_exactly_100_succeed(gateway):
    account = await new_account(gateway)
    await gateway.ledger.grant(account.id, 100, bucket="topup", ref="seed", reason="topup")

    async def reserve(i):
        try:
            await gateway.ledger.reserve(f"h{i}", account.id, 1)
            return True
        except HoldRefused as refused:
            assert refused.why == "insufficient"
            return False

    results = await asyncio.gather(*(reserve(i) for i in range(300)))
    assert sum(results) == 100
    # settle every successful hold at its full amount: the balance ends at exactly 0
    await asyncio.gather(*(gateway.ledger.settle(f"h{i}", 1) for i, ok in enumerate(results) if ok))
    balance = await gateway.ledger.balance(account.id)
    assert (balance.total, balance.held) == (0, 0)
    assert await gateway.ledger.check() == []


async def test_grant_replayed_10_times_concurrently_is_credited_once(gateway):
    account = await new_account(gateway)
    entries = await asyncio.gather(
        *(gateway.ledger.grant(account.id, 500, bucket="topup", ref="order:42", reason="topup") for _ in range(10))
    )
    assert len({entry.id for entry in entries}) == 1
    assert sum(not entry.replayed for entry in entries) == 1
    assert (await gateway.ledger.balance(account.id)).total == 500
    assert await gateway.ledger.check() == []


async def test_plan_credits_are_spent_before_topup_credits(gateway, clock):
    account = await new_account(gateway)
    await gateway.ledger.grant(
        account.id, 10, bucket="plan", ref="p", reason="plan_grant", expires_at=clock.now() + timedelta(days=30)
    )
    await gateway.ledger.grant(account.id, 10, bucket="topup", ref="t", reason="topup")
    await gateway.ledger.reserve("r1", account.id, 15)
    charge = await gateway.ledger.settle("r1", 15)
    assert (charge.entry.plan_delta, charge.entry.topup_delta) == (-10, -5)
    balance = await gateway.ledger.balance(account.id)
    assert (balance.plan_credits, balance.topup_credits, balance.held) == (0, 5, 0)


async def test_settle_charges_real_cost_and_releases_the_rest(gateway):
    account = await new_account(gateway)
    await gateway.ledger.grant(account.id, 50, bucket="topup", ref="t", reason="topup")
    await gateway.ledger.reserve("r1", account.id, 20)
    assert (await gateway.ledger.balance(account.id)).available == 30
    charge = await gateway.ledger.settle("r1", 3)
    assert (charge.charged, charge.uncollected) == (3, 0)
    balance = await gateway.ledger.balance(account.id)
    assert (balance.total, balance.held, balance.available) == (47, 0, 47)


async def test_cost_beyond_hold_and_balance_is_recorded_as_uncollected_never_negative(gateway):
    account = await new_account(gateway)
    await gateway.ledger.grant(account.id, 5, bucket="topup", ref="t", reason="topup")
    await gateway.ledger.reserve("r1", account.id, 2)
    await gateway.ledger.reserve("r2", account.id, 2)  # another request's promise must be kept
    charge = await gateway.ledger.settle("r1", 10)
    assert (charge.charged, charge.uncollected) == (3, 7)
    assert charge.entry.uncollected == 7
    balance = await gateway.ledger.balance(account.id)
    assert (balance.topup_credits, balance.held) == (2, 2)
    assert (await gateway.ledger.settle("r2", 2)).charged == 2
    assert (await gateway.ledger.balance(account.id)).total == 0
    assert await gateway.ledger.check() == []


async def test_settling_twice_charges_once(gateway):
    account = await new_account(gateway)
    await gateway.ledger.grant(account.id, 10, bucket="topup", ref="t", reason="topup")
    await gateway.ledger.reserve("r1", account.id, 5)
    results = await asyncio.gather(*(gateway.ledger.settle("r1", 4) for _ in range(5)))
    assert sum(result is not None for result in results) == 1
    assert (await gateway.ledger.balance(account.id)).total == 6


async def test_failed_request_release_charges_nothing_and_writes_no_ledger_row(gateway):
    account = await new_account(gateway)
    await gateway.ledger.grant(account.id, 10, bucket="topup", ref="t", reason="topup")
    await gateway.ledger.reserve("r1", account.id, 5)
    await gateway.ledger.release("r1")
    assert (await gateway.ledger.balance(account.id)).available == 10
    assert [entry.ref for entry in await gateway.ledger.entries(account.id)] == ["t"]


async def test_adjust_is_a_signed_delta_with_reason_and_actor_never_an_overwrite(gateway):
    account = await new_account(gateway)
    await gateway.ledger.grant(account.id, 10, bucket="topup", ref="t", reason="topup")
    entry = await gateway.ledger.adjust(account.id, -4, reason="refund of test credits", actor="admin@x", ref="adj1")
    assert (entry.reason, entry.actor, entry.topup_delta, entry.topup_after) == ("adjustment", "admin@x", -4, 6)
    with pytest.raises(LedgerError):
        await gateway.ledger.adjust(account.id, -7, reason="too much", actor="admin@x", ref="adj2")
    with pytest.raises(LedgerError):
        await gateway.ledger.adjust(account.id, 5, reason=" ", actor="admin@x", ref="adj3")
    assert (await gateway.ledger.balance(account.id)).total == 6


async def test_plan_credits_expire_with_a_ledger_row_at_period_end(gateway, clock):
    account = await new_account(gateway)
    await gateway.ledger.grant(
        account.id, 100, bucket="plan", ref="p", reason="plan_grant", expires_at=clock.now() + timedelta(days=30)
    )
    await gateway.ledger.grant(account.id, 7, bucket="topup", ref="t", reason="topup")
    assert await gateway.ledger.expire(account.id) is None
    clock.advance(days=30, seconds=1)
    assert (await gateway.ledger.balance(account.id)).total == 7  # expired credits are unusable at once
    with pytest.raises(HoldRefused):
        await gateway.ledger.reserve("r", account.id, 8)
    assert await gateway.ledger.expire_due() == 1
    assert await gateway.ledger.expire_due() == 0
    rows = await gateway.ledger.entries(account.id)
    assert (rows[0].reason, rows[0].plan_delta, rows[0].plan_after) == ("expiry", -100, 0)
    assert await gateway.ledger.check() == []


async def test_hold_for_revoked_key_or_disabled_account_is_refused_by_the_store(gateway):
    account = await new_account(gateway)
    await gateway.ledger.grant(account.id, 10, bucket="topup", ref="t", reason="topup")
    new = await gateway.keys.create(account.id, "k")
    await gateway.keys.revoke(new.key.prefix)
    with pytest.raises(HoldRefused) as refused:
        await gateway.ledger.reserve("r1", account.id, 1, key_id=new.key.id)
    assert refused.value.why == "revoked"
    await gateway.accounts.set_status(account.id, "disabled", actor="admin")
    with pytest.raises(HoldRefused) as refused:
        await gateway.ledger.reserve("r2", account.id, 1)
    assert refused.value.why == "disabled"


async def test_hold_left_by_a_crashed_process_is_released_at_start(make_gateway, clock):
    crashed = make_gateway(clock=clock)
    account = await crashed.accounts.create("c@example.com", "+96550000002", "correct horse battery")
    await crashed.ledger.grant(account.id, 10, bucket="topup", ref="t", reason="topup")
    await crashed.ledger.reserve("orphan", account.id, 6)
    restarted = make_gateway(clock=clock)
    assert await restarted.ledger.release_stale_holds() == 0  # its lease still runs
    clock.advance(minutes=3)
    assert await restarted.ledger.release_stale_holds() == 1
    assert (await restarted.ledger.balance(account.id)).available == 10
    assert await restarted.ledger.check() == []


async def test_ledger_check_reports_a_balance_that_differs_from_its_ledger(gateway):
    from sqlalchemy import update

    from resayil_gateway.store.tables import balances

    account = await new_account(gateway)
    await gateway.ledger.grant(account.id, 10, bucket="topup", ref="t", reason="topup")
    async with gateway.store.begin() as conn:
        await conn.execute(update(balances).values(topup_credits=99))
    problems = await gateway.ledger.check()
    assert [(p.field, p.stored, p.expected) for p in problems] == [("topup_credits", 99, 10)]


async def test_settles_gathered_into_batches_charge_each_hold_exactly_once(make_gateway, clock):
    gateway = make_gateway(clock=clock, overrides={"gateway": {"settle_batch_ms": 20}})
    accounts = [
        await gateway.accounts.create(f"b{i}@example.com", f"+9655001{i:04d}", "correct horse battery")
        for i in range(20)
    ]
    for account in accounts:
        await gateway.ledger.grant(account.id, 10, bucket="topup", ref=f"g{account.id}", reason="topup")
    holds = [(account.id, f"h{account.id}-{n}") for account in accounts for n in range(4)]
    for account_id, hold_id in holds:
        await gateway.ledger.reserve(hold_id, account_id, 2)
    # reversed order, twice each: batches must lock in a stable order and a repeat must charge nothing
    work = [gateway.ledger.settle(h, 2, account_id=a) for a, h in reversed(holds)]
    work += [gateway.ledger.settle(h, 2, account_id=a) for a, h in holds]
    charges = await asyncio.gather(*work)
    assert sum(charge.charged for charge in charges if charge is not None) == 2 * len(holds)
    for account in accounts:
        assert (await gateway.ledger.balance(account.id)).total == 2
    assert await gateway.ledger.check() == []
    await gateway.ledger.close()
