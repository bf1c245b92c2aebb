"""One money rule: the ledger's arithmetic exists twice (Python, which SQLite runs, and the PL/pgSQL functions
PostgreSQL runs for reserve and settle). The same random sequences of holds, settles (alone and batched),
releases, grants, plan expiries, adjustments, refusals and replayed references, run on a SQLite gateway and
a PostgreSQL gateway side by side, must give the same outcomes, balances, buckets and ledger rows."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from resayil_gateway.billing.ledger import HoldRefused, Ledger, LedgerError
from resayil_gateway.gateway import Gateway
from resayil_gateway.store.tables import accounts, api_keys, balances, holds, ledger, metadata
from resayil_gateway.testing import REDIS_URL, FakeClock, build_gateway

ACCOUNTS = 2  # a third account id that does not exist is refused as "unknown"

amounts = st.integers(0, 60)
account_index = st.integers(0, ACCOUNTS)  # == ACCOUNTS: the account that does not exist
step = st.one_of(
    st.tuples(st.just("grant_plan"), account_index, amounts, st.integers(1, 40)),
    st.tuples(st.just("grant_topup"), account_index, amounts, st.just(0)),
    st.tuples(st.just("reserve"), account_index, st.integers(0, 50), st.booleans()),
    # costs up to 150: above the hold, and often above everything the account has (uncollected)
    st.tuples(st.just("settle"), st.integers(0, 5), st.integers(0, 150), st.booleans()),
    st.tuples(st.just("release"), st.integers(0, 5), st.just(0), st.just(0)),
    st.tuples(st.just("adjust_topup"), account_index, st.integers(-60, 60), st.just(0)),
    st.tuples(st.just("adjust_plan"), account_index, st.integers(-60, 60), st.just(0)),
    st.tuples(st.just("advance_and_expire"), st.just(0), st.integers(1, 45), st.just(0)),
    st.tuples(st.just("replay"), st.integers(0, 30), st.integers(0, 60), st.just(0)),
    st.tuples(st.just("revoke_key"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("disable"), st.integers(0, ACCOUNTS - 1), st.just(0), st.just(0)),
)
sequences = st.lists(step, min_size=1, max_size=14)


@dataclass
class Side:
    """One store's gateway, its clock and what the sequence made there."""

    gateway: Gateway
    clock: FakeClock
    account_ids: list[int]
    key_id: int

    @property
    def ledger(self) -> Ledger:
        return self.gateway.ledger


async def _reset(side: Side) -> None:
    """Empty every table, make the accounts (straight into the tables: no password hashing) and one API key
    of the first account, and bring the clock level with the other side's."""
    now = side.clock.now()
    async with side.gateway.store.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(delete(table))
        side.account_ids = []
        for n in range(ACCOUNTS):
            account_id = (
                await conn.execute(
                    insert(accounts)
                    .values(email=f"d{n}@example.com", phone=f"+9655000000{n}", password_hash="-", created_at=now)
                    .returning(accounts.c.id)
                )
            ).scalar_one()
            await conn.execute(insert(balances).values(account_id=account_id))
            side.account_ids.append(account_id)
        side.key_id = (
            await conn.execute(
                insert(api_keys)
                .values(account_id=side.account_ids[0], label="", prefix="rsk_diff", key_hash="0" * 64, created_at=now)
                .returning(api_keys.c.id)
            )
        ).scalar_one()


def _entry(entry: Any) -> Any:
    if entry is None:
        return None
    return (
        entry.ref,
        entry.reason,
        entry.plan_delta,
        entry.topup_delta,
        entry.uncollected,
        entry.plan_after,
        entry.topup_after,
        entry.replayed,
    )


async def _outcome(side: Side, index: int, op: tuple[str, int, int, Any], refs: list[str]) -> Any:
    """Apply one step on one side; return everything it said (results and refusals alike)."""
    name, who, amount, extra = op
    ledger_ = side.ledger
    account_id = side.account_ids[who] if who < ACCOUNTS else 10_000
    ref = f"op{index}"
    try:
        if name == "grant_plan":
            expires = side.clock.now() + timedelta(days=extra)
            refs.append(ref)
            entry = await ledger_.grant(
                account_id, amount, bucket="plan", ref=ref, reason="plan_grant", expires_at=expires
            )
            return _entry(entry)
        if name == "grant_topup":
            refs.append(ref)
            return _entry(await ledger_.grant(account_id, amount, bucket="topup", ref=ref, reason="topup"))
        if name in ("adjust_topup", "adjust_plan"):
            refs.append(ref)
            bucket = "plan" if name == "adjust_plan" else "topup"
            entry = await ledger_.adjust(account_id, amount, reason="diff", actor="test", ref=ref, bucket=bucket)
            return _entry(entry)
        if name == "reserve":
            refs.append(f"hold:{ref}")
            key_id = side.key_id if extra and who == 0 else None
            hold = await ledger_.reserve(f"hold:{ref}", account_id, amount, key_id=key_id)
            return ("held", hold.account_id == account_id, hold.amount)
        if name in ("settle", "release"):
            hold_refs = [r for r in refs if r.startswith("hold:")]
            if not hold_refs:
                return None
            hold_id = hold_refs[who % len(hold_refs)]
            if name == "release":
                await ledger_.release(hold_id)
                return "released"
            owner = side.account_ids.index(account) if (account := await _hold_account(side, hold_id)) else None
            charge = await ledger_.settle(
                hold_id,
                amount,
                memo="m",
                account_id=(account if extra else None),  # extra: the batched path
            )
            if charge is None:
                return None
            return (owner, charge.cost, charge.charged, charge.uncollected, charge.balance_after, _entry(charge.entry))
        if name == "advance_and_expire":
            side.clock.advance(days=amount)
            return await ledger_.expire_due()
        if name == "replay":
            if not refs:
                return None
            again = refs[who % len(refs)]
            if again.startswith("hold:"):
                hold = await ledger_.reserve(again, side.account_ids[0], amount)
                return ("held", hold.amount)
            # a replayed grant returns the first entry whatever amount it now names
            return _entry(await ledger_.grant(side.account_ids[0], amount, bucket="topup", ref=again, reason="topup"))
        if name == "revoke_key":
            async with side.gateway.store.begin() as conn:
                await conn.execute(update(api_keys).values(revoked_at=side.clock.now()))
            return None
        if name == "disable":
            async with side.gateway.store.begin() as conn:
                await conn.execute(update(accounts).where(accounts.c.id == account_id).values(status="disabled"))
            return None
    except HoldRefused as refused:
        return ("refused", refused.why, refused.available)
    except LedgerError as error:
        return ("ledger-error", str(error))
    raise AssertionError(name)


async def _hold_account(side: Side, hold_id: str) -> int | None:
    async with side.gateway.store.connect() as conn:
        return await conn.scalar(select(holds.c.account_id).where(holds.c.id == hold_id))


def _ref(side: Side, ref: str) -> str:
    """An expiry's reference names the account's id, which differs between the stores: name its index."""
    if ref.startswith("expire:"):
        _, account_id, moment = ref.split(":", 2)
        return f"expire:#{side.account_ids.index(int(account_id))}:{moment}"
    return ref


async def _state(side: Side) -> Any:
    """Buckets, expiry and held per account, open holds, and every ledger row in order."""
    async with side.gateway.store.connect() as conn:
        buckets = [
            (side.account_ids.index(row[0]), *row[1:])
            for row in await conn.execute(
                select(
                    balances.c.account_id,
                    balances.c.plan_credits,
                    balances.c.topup_credits,
                    balances.c.held,
                    balances.c.plan_expires_at,
                    balances.c.last_grant_total,
                ).order_by(balances.c.account_id)
            )
        ]
        open_holds = sorted(
            (row.id, side.account_ids.index(row.account_id), row.amount)
            for row in await conn.execute(select(holds.c.id, holds.c.account_id, holds.c.amount))
        )
        rows = [
            (side.account_ids.index(row.account_id), _ref(side, row.ref), *row[2:])
            for row in await conn.execute(
                select(
                    ledger.c.account_id,
                    ledger.c.ref,
                    ledger.c.reason,
                    ledger.c.plan_delta,
                    ledger.c.topup_delta,
                    ledger.c.uncollected,
                    ledger.c.plan_after,
                    ledger.c.topup_after,
                    ledger.c.created_at,
                ).order_by(ledger.c.id)
            )
        ]
    balances_now = [
        (n, (await side.ledger.balance(account_id)).available) for n, account_id in enumerate(side.account_ids)
    ]
    return buckets, open_holds, rows, balances_now


async def _compare(sqlite: Side, postgres: Side, steps: list[tuple[str, int, int, Any]]) -> None:
    behind, ahead = sorted((sqlite, postgres), key=lambda side: side.clock.now())
    behind.clock.advance((ahead.clock.now() - behind.clock.now()).total_seconds())
    await _reset(sqlite)
    await _reset(postgres)
    refs_sqlite: list[str] = []
    refs_postgres: list[str] = []
    for index, op in enumerate(steps):
        said_sqlite = await _outcome(sqlite, index, op, refs_sqlite)
        said_postgres = await _outcome(postgres, index, op, refs_postgres)
        assert said_sqlite == said_postgres, f"step {index} {op}: SQLite said {said_sqlite}, PostgreSQL {said_postgres}"
    assert await _state(sqlite) == await _state(postgres)
    assert await sqlite.ledger.check() == []
    assert await postgres.ledger.check() == []


@pytest.fixture(scope="module")
def both_stores(
    request: Any, _sqlite_template: Path, tmp_path_factory: Any
) -> Iterator[tuple[asyncio.Runner, Side, Side]]:
    """A gateway on a SQLite file and one on a PostgreSQL database (with Redis), both migrated, built once in
    one event loop and emptied before every example."""
    url, reason = request.getfixturevalue("_postgres_database")
    if url is None:
        pytest.skip(reason)
    target = tmp_path_factory.mktemp("differential") / "resayil.db"
    shutil.copyfile(_sqlite_template, target)
    sides = []
    for database_url, redis_url in ((f"sqlite+aiosqlite:///{target}", ""), (url, REDIS_URL)):
        clock = FakeClock()
        gateway = build_gateway(
            database_url, redis_url=redis_url, redis_prefix=f"diff{uuid.uuid4().hex[:8]}", clock=clock
        )
        sides.append(Side(gateway, clock, [], 0))
    with asyncio.Runner() as runner:
        yield runner, sides[0], sides[1]
        for side in sides:
            runner.run(side.ledger.close())
            runner.run(side.gateway.store.dispose())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=sequences)
# Two plans expiring at one moment, the first account's balance row rewritten last: PostgreSQL's scan then met
# the second account first, and the expiry rows were written in another order than on SQLite.
@example(
    steps=[
        ("grant_plan", 0, 1, 1),
        ("grant_plan", 1, 1, 1),
        ("grant_plan", 0, 0, 1),
        ("advance_and_expire", 0, 1, 0),
        ("grant_topup", 1, 0, 0),
    ]
)
def test_sqlite_and_postgresql_agree_on_every_random_sequence_of_ledger_operations(both_stores, steps):
    runner, sqlite, postgres = both_stores
    runner.run(_compare(sqlite, postgres, steps))
