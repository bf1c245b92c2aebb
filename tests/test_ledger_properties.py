"""Property-based tests of the ledger: random grant/reserve/settle/adjust/expire sequences keep every balance
equal to its ledger sum, never below zero, and equal to a simple model of the rules."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from resayil_gateway.billing.ledger import HoldRefused, LedgerError
from resayil_gateway.testing import FakeClock, build_gateway

ops = st.lists(
    st.one_of(
        st.tuples(st.just("grant_plan"), st.integers(0, 60)),
        st.tuples(st.just("grant_topup"), st.integers(0, 60)),
        st.tuples(st.just("reserve"), st.integers(0, 40)),
        st.tuples(st.just("settle"), st.integers(0, 80)),
        st.tuples(st.just("release"), st.just(0)),
        st.tuples(st.just("adjust"), st.integers(-30, 30)),
        st.tuples(st.just("advance_days"), st.integers(1, 20)),
        st.tuples(st.just("expire"), st.just(0)),
    ),
    max_size=30,
)
# One phone number per example (a random 6-digit tail could repeat across examples in one database).
PHONES = itertools.count(random.randrange(100_000, 500_000))


class Model:
    """The ledger's rules in plain Python."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.plan = 0
        self.topup = 0
        self.expires = None
        self.holds: dict[str, int] = {}

    def plan_usable(self) -> int:
        return self.plan if self.expires is not None and self.expires > self.clock.now() else 0

    def headroom(self) -> int:
        """Usable credits minus holds: below 0 when plan credits expired under a hold that used them."""
        return self.plan_usable() + self.topup - sum(self.holds.values())


async def run(url: str, redis_url: str, steps: list[tuple[str, int]]) -> None:
    clock = FakeClock()
    gateway = build_gateway(url, redis_url=redis_url, clock=clock)
    model = Model(clock)
    try:
        tag = uuid.uuid4().hex[:10]
        account = await gateway.accounts.create(f"{tag}@example.com", f"+96550{next(PHONES):06d}", "pw-12345678")
        ledger = gateway.ledger
        for index, (op, value) in enumerate(steps):
            ref = f"{tag}:{index}"
            if op == "grant_plan":
                expires = clock.now() + timedelta(days=30)
                await ledger.grant(account.id, value, bucket="plan", ref=ref, reason="plan_grant", expires_at=expires)
                model.plan += value
                model.expires = expires
            elif op == "grant_topup":
                await ledger.grant(account.id, value, bucket="topup", ref=ref, reason="topup")
                model.topup += value
            elif op == "reserve":
                fits = model.headroom() >= value  # a hold of 0 too is refused when the headroom is below 0
                try:
                    await ledger.reserve(ref, account.id, value)
                    assert fits, "a hold beyond the available balance was granted"
                    model.holds[ref] = value
                except HoldRefused:
                    assert not fits, "a hold that fits was refused"
            elif op in ("settle", "release") and model.holds:
                hold_id, amount = next(iter(model.holds.items()))
                cost = value if op == "settle" else 0
                others = sum(model.holds.values()) - amount
                collectable = max(0, model.plan_usable() + model.topup - others)
                charged = min(cost, collectable)
                from_plan = min(charged, model.plan_usable())
                charge = await ledger.settle(hold_id, cost)
                assert charge is not None and charge.charged == charged and charge.uncollected == cost - charged
                model.plan -= from_plan
                model.topup -= charged - from_plan
                del model.holds[hold_id]
            elif op == "adjust" and value:
                try:
                    await ledger.adjust(account.id, value, reason="property", actor="test", ref=ref)
                    model.topup += value
                except LedgerError:
                    assert model.topup + value < 0 or (
                        model.plan_usable() + model.topup + value < sum(model.holds.values())
                    )
            elif op == "advance_days":
                clock.advance(days=value)
            elif op == "expire":
                entry = await ledger.expire(account.id)
                if model.expires is not None and model.expires <= clock.now() and model.plan > 0:
                    assert entry is not None and entry.plan_delta == -model.plan
                    model.plan = 0
                else:
                    assert entry is None
            balance = await ledger.balance(account.id)
            assert (balance.plan_credits, balance.topup_credits) == (model.plan, model.topup)
            assert balance.held == sum(model.holds.values())
            assert balance.plan_credits >= 0 and balance.topup_credits >= 0
        assert [p for p in await ledger.check() if p.account_id == account.id] == []
    finally:
        await gateway.store.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops)
# Plan credits expire under a hold that used them: nothing is usable beyond the hold, so a hold of 0 is refused.
@example(steps=[("grant_plan", 10), ("reserve", 10), ("advance_days", 20), ("advance_days", 20), ("reserve", 0)])
def test_random_ledger_sequences_keep_balance_equal_to_ledger_sum_and_never_negative(stack_info, steps):
    asyncio.run(run(stack_info.database_url, stack_info.redis_url, steps))
