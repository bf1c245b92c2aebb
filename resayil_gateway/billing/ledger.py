"""The credit ledger: every balance change is a row with a reason, an actor and a unique reference.

Two buckets per account: plan credits (expire at the end of the plan period) and top-up credits (never
expire); requests spend plan credits first. A request first *reserves* a hold (one atomic statement that is
refused when the available balance cannot cover it), then *settles*: the real cost is charged, the rest of
the hold released, and any cost beyond hold plus balance recorded as ``uncollected``, never taken below zero.

Invariants, checked by ``resayil ledger check``: per account, ``plan_credits`` and ``topup_credits`` equal the
sums of the ledger's ``plan_delta`` and ``topup_delta``; ``held`` equals the sum of open holds; no bucket is
ever negative. Replaying an operation with the same reference is a no-op that returns the first result.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import and_, case, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..store.audit import record_audit
from ..store.tables import accounts, api_keys, balances, holds, ledger
from .settle_batch import SettleBatcher, SettleItem

if TYPE_CHECKING:
    from ..clock import Clock
    from ..store import Store

log = logging.getLogger("resayil.ledger")

Bucket = Literal["plan", "topup"]
REASONS = ("request", "topup", "plan_grant", "expiry", "adjustment", "refund", "signup")


class LedgerError(Exception):
    """An operation the ledger refuses (unknown account, a change that would go below zero)."""


class HoldRefused(LedgerError):
    """A hold was refused; ``why`` is ``insufficient``, ``revoked``, ``disabled`` or ``unknown``."""

    def __init__(self, why: str, available: int = 0) -> None:
        super().__init__(why)
        self.why = why
        self.available = available


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's buckets at one moment; ``available`` is what a new hold can still take."""

    plan_credits: int
    topup_credits: int
    held: int
    plan_expires_at: datetime | None
    last_grant_total: int
    now: datetime

    @property
    def plan_usable(self) -> int:
        """Plan credits that have not expired."""
        if self.plan_expires_at is None or self.plan_expires_at <= self.now:
            return 0
        return self.plan_credits

    @property
    def total(self) -> int:
        """Usable credits, holds included."""
        return self.plan_usable + self.topup_credits

    @property
    def available(self) -> int:
        """Usable credits not held by requests in flight."""
        return max(0, self.total - self.held)


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger row. ``replayed`` is True when the reference had been used and nothing changed now."""

    id: int
    account_id: int
    ref: str
    reason: str
    actor: str
    plan_delta: int
    topup_delta: int
    uncollected: int
    plan_after: int
    topup_after: int
    created_at: datetime
    replayed: bool = False

    @property
    def delta(self) -> int:
        """The change to the total balance."""
        return self.plan_delta + self.topup_delta


@dataclass(frozen=True, slots=True)
class Hold:
    """Credits set aside for a request in flight."""

    id: str
    account_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class Charge:
    """What settling a hold did: credits charged, credits that could not be collected, the ledger row."""

    hold_id: str
    account_id: int
    cost: int
    charged: int
    uncollected: int
    entry: Entry | None
    balance_after: int


@dataclass(frozen=True, slots=True)
class _Change:
    """A grant, adjustment or expiry to apply to one bucket."""

    account_id: int
    delta: int
    bucket: Bucket
    ref: str
    reason: str
    actor: str
    memo: str = ""
    expires_at: datetime | None = None
    is_grant: bool = False


@dataclass(frozen=True, slots=True)
class Mismatch:
    """An account whose stored balance differs from its ledger (or holds)."""

    account_id: int
    field: str
    stored: int
    expected: int


@dataclass(frozen=True, slots=True)
class OverdueHold:
    """A hold past its lease: the process that took it died or gave up on it."""

    hold_id: str
    account_id: int
    amount: int
    lease_until: datetime


_ENTRY_COLUMNS = (
    ledger.c.id,
    ledger.c.account_id,
    ledger.c.ref,
    ledger.c.reason,
    ledger.c.actor,
    ledger.c.plan_delta,
    ledger.c.topup_delta,
    ledger.c.uncollected,
    ledger.c.plan_after,
    ledger.c.topup_after,
    ledger.c.created_at,
)


def _entry(row: Any, replayed: bool = False) -> Entry:
    entry = Entry(*row)
    return replace(entry, replayed=True) if replayed else entry


# The request path on PostgreSQL: one stored-function call each (migration 0002), same rules as below.
_PG_RESERVE = "SELECT resayil_reserve($1, $2, $3, $4, $5, $6, $7)"
_PG_SETTLE = "SELECT * FROM resayil_settle($1, $2, $3, $4)"
_PG_SETTLE_MANY = "SELECT * FROM resayil_settle_many($1::text[], $2::bigint[], $3, $4::text[])"


def _usable_plan(now: Any) -> Any:
    return case((balances.c.plan_expires_at > now, balances.c.plan_credits), else_=0)


class Ledger:
    """Grants, holds, charges, adjustments and expiry, each atomic and idempotent on its reference."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        owner: str,
        lease: timedelta = timedelta(minutes=2),
        settle_window: float = 0.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.owner = owner
        self.lease = lease
        self.open_holds: set[str] = set()  # reserved here and not settled yet: the leases this process renews
        self._batcher = (
            SettleBatcher(self._settle_batch, settle_window) if settle_window > 0 and not store.is_sqlite else None
        )

    # -- reads -------------------------------------------------------------------------------------------

    async def balance(self, account_id: int, conn: AsyncConnection | None = None) -> Balance:
        """The account's buckets now; raises :class:`LedgerError` for an unknown account."""
        query = select(
            balances.c.plan_credits,
            balances.c.topup_credits,
            balances.c.held,
            balances.c.plan_expires_at,
            balances.c.last_grant_total,
        ).where(balances.c.account_id == account_id)
        if conn is None:
            async with self.store.connect() as own:
                row = (await own.execute(query)).first()
        else:
            row = (await conn.execute(query)).first()
        if row is None:
            raise LedgerError(f"no balance for account {account_id}")
        return Balance(*row, now=self.clock.now())

    async def entries(self, account_id: int, limit: int = 50) -> Sequence[Entry]:
        """The account's latest ledger rows, newest first."""
        query = (
            select(*_ENTRY_COLUMNS).where(ledger.c.account_id == account_id).order_by(ledger.c.id.desc()).limit(limit)
        )
        async with self.store.connect() as conn:
            return [_entry(row) for row in await conn.execute(query)]

    async def by_ref(self, ref: str, conn: AsyncConnection | None = None) -> Entry | None:
        """The ledger row with this reference, or None."""
        query = select(*_ENTRY_COLUMNS).where(ledger.c.ref == ref)
        if conn is None:
            async with self.store.connect() as own:
                row = (await own.execute(query)).first()
        else:
            row = (await conn.execute(query)).first()
        return _entry(row, replayed=True) if row else None

    # -- money in and admin changes ----------------------------------------------------------------------

    async def grant(
        self,
        account_id: int,
        credits: int,
        *,
        bucket: Bucket,
        ref: str,
        reason: str,
        actor: str = "system",
        expires_at: datetime | None = None,
        memo: str = "",
        conn: AsyncConnection | None = None,
    ) -> Entry:
        """Add ``credits`` to a bucket (plan credits take ``expires_at`` as the bucket's new expiry).

        Idempotent on ``ref``: a replay returns the first entry with ``replayed=True``. Pass ``conn`` to make
        the grant part of a larger transaction (an order's fulfilment).
        """
        if credits < 0:
            raise LedgerError("a grant cannot be negative; use adjust")
        if bucket == "plan" and expires_at is None:
            raise LedgerError("plan credits need an expiry")
        return await self._apply(
            _Change(account_id, credits, bucket, ref, reason, actor, memo, expires_at, is_grant=True), conn
        )

    async def adjust(
        self,
        account_id: int,
        delta: int,
        *,
        reason: str,
        actor: str,
        ref: str,
        bucket: Bucket = "topup",
    ) -> Entry:
        """An admin's signed change to a bucket, with a reason; refused if it would go below zero. The audit
        row (``credits.adjusted``) commits in the same transaction as the ledger row."""
        if not reason.strip():
            raise LedgerError("an adjustment needs a reason")

        async def audited(conn: AsyncConnection, entry: Entry) -> None:
            if not entry.replayed:
                detail = {"delta": delta, "reason": reason, "bucket": bucket, "ref": ref}
                await record_audit(conn, self.clock.now(), actor, "credits.adjusted", f"account:{account_id}", detail)

        change = _Change(account_id, delta, bucket, ref, "adjustment", actor, memo=reason)
        return await self._apply(change, also=audited)

    async def _apply(
        self,
        change: _Change,
        conn: AsyncConnection | None = None,
        also: Callable[[AsyncConnection, Entry], Awaitable[None]] | None = None,
    ) -> Entry:
        """Apply ``change`` in ``conn``'s transaction, or in a new one (with ``also`` in the same transaction);
        a replayed reference returns the first entry (also when two replays race: the loser's unique-key
        error turns into a read)."""
        if conn is not None:
            return await self._apply_in(conn, change)
        try:
            async with self.store.begin() as own:
                entry = await self._apply_in(own, change)
                if also is not None:
                    await also(own, entry)
                return entry
        except IntegrityError:
            existing = await self.by_ref(change.ref)
            if existing is None:
                raise
            return existing

    async def _apply_in(self, conn: AsyncConnection, change: _Change) -> Entry:
        account_id, delta, bucket, ref = change.account_id, change.delta, change.bucket, change.ref
        row = (
            await conn.execute(
                select(
                    balances.c.plan_credits,
                    balances.c.topup_credits,
                    balances.c.held,
                    balances.c.plan_expires_at,
                    balances.c.last_grant_total,
                )
                .where(balances.c.account_id == account_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise LedgerError(f"no account with id {account_id}")
        existing = await self.by_ref(ref, conn)
        if existing is not None:
            return existing
        now = self.clock.now()
        before = Balance(*row, now=now)
        plan, topup = before.plan_credits, before.topup_credits
        values: dict[str, Any] = {}
        if bucket == "plan":
            plan += delta
            values["plan_credits"] = plan
            if change.expires_at is not None:
                values["plan_expires_at"] = change.expires_at
        else:
            topup += delta
            values["topup_credits"] = topup
        if plan < 0 or topup < 0:
            raise LedgerError(f"the {bucket} bucket would go below zero")
        after = replace(
            before,
            plan_credits=plan,
            topup_credits=topup,
            plan_expires_at=values.get("plan_expires_at", before.plan_expires_at),
        )
        if delta < 0 and after.total < before.held:
            raise LedgerError(f"only {before.available} credits are available (the rest is held by requests)")
        if change.is_grant:
            values["last_grant_total"] = after.total
        await conn.execute(update(balances).where(balances.c.account_id == account_id).values(**values))
        inserted = await conn.execute(
            insert(ledger)
            .values(
                account_id=account_id,
                ref=ref,
                reason=change.reason,
                actor=change.actor,
                plan_delta=delta if bucket == "plan" else 0,
                topup_delta=delta if bucket == "topup" else 0,
                uncollected=0,
                plan_after=plan,
                topup_after=topup,
                memo=change.memo,
                created_at=now,
            )
            .returning(*_ENTRY_COLUMNS)
        )
        return _entry(inserted.one())

    async def expire(self, account_id: int, conn: AsyncConnection | None = None) -> Entry | None:
        """Expire the account's plan credits if its plan period has ended (a ledger row, never a silent edit).

        Idempotent: the reference names the expiry moment, so the same period expires once.
        """
        if conn is None:
            async with self.store.begin() as own:
                return await self.expire(account_id, own)
        row = (
            await conn.execute(
                select(balances.c.plan_credits, balances.c.plan_expires_at)
                .where(balances.c.account_id == account_id)
                .with_for_update()
            )
        ).first()
        now = self.clock.now()
        if row is None or row.plan_credits <= 0 or row.plan_expires_at is None or row.plan_expires_at > now:
            return None
        ref = f"expire:{account_id}:{row.plan_expires_at.isoformat()}"
        existing = await self.by_ref(ref, conn)
        if existing is not None:
            return existing
        return await self._apply_in(
            conn, _Change(account_id, -row.plan_credits, "plan", ref, "expiry", "system", "plan period ended")
        )

    async def expire_due(self, limit: int = 500) -> int:
        """Expire plan credits of every account whose period has ended; returns how many were expired."""
        now = self.clock.now()
        query = (
            select(balances.c.account_id)
            .where(balances.c.plan_credits > 0, balances.c.plan_expires_at <= now)
            # The oldest periods first, then by account: the same order (and the same ledger rows) on every
            # store, and no account starved when more than ``limit`` are due.
            .order_by(balances.c.plan_expires_at, balances.c.account_id)
            .limit(limit)
        )
        async with self.store.connect() as conn:
            due = [row.account_id for row in await conn.execute(query)]
        count = 0
        for account_id in due:
            if await self.expire(account_id) is not None:
                count += 1
        return count

    # -- the request path --------------------------------------------------------------------------------

    async def reserve(self, hold_id: str, account_id: int, amount: int, key_id: int | None = None) -> Hold:
        """Set ``amount`` credits aside for a request, atomically, or raise :class:`HoldRefused`. This process
        then owns the hold: it renews the hold's lease until it has settled it (see :meth:`renew_leases`)."""
        hold = await self._reserve(hold_id, account_id, amount, key_id)
        self.open_holds.add(hold_id)
        return hold

    async def _reserve(self, hold_id: str, account_id: int, amount: int, key_id: int | None = None) -> Hold:
        """Set ``amount`` credits aside for a request, atomically, or raise :class:`HoldRefused`.

        In the same statement the key must not be revoked and the account must be active, so the store
        refuses a revoked key even when a worker's cache has not heard of the revocation yet.
        """
        if amount < 0:
            raise LedgerError("a hold cannot be negative")
        now = self.clock.now()
        if not self.store.is_sqlite:
            return await self._reserve_in_postgres(hold_id, account_id, amount, key_id, now)
        conditions = [
            balances.c.account_id == account_id,
            _usable_plan(now) + balances.c.topup_credits - balances.c.held >= amount,
            select(accounts.c.id).where(accounts.c.id == account_id, accounts.c.status == "active").exists(),
        ]
        if key_id is not None:
            conditions.append(
                select(api_keys.c.id).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).exists()
            )
        try:
            async with self.store.begin_fast() as conn:
                updated = await conn.execute(
                    update(balances)
                    .where(and_(*conditions))
                    .values(held=balances.c.held + amount)
                    .returning(balances.c.account_id)
                )
                if updated.first() is None:
                    raise await self._refusal(conn, account_id, key_id)
                await conn.execute(
                    insert(holds).values(
                        id=hold_id,
                        account_id=account_id,
                        key_id=key_id,
                        amount=amount,
                        owner=self.owner,
                        created_at=now,
                        lease_until=now + self.lease,
                    )
                )
        except IntegrityError:
            existing = await self._hold(hold_id)
            if existing is None:
                raise
            return existing
        return Hold(hold_id, account_id, amount)

    async def _reserve_in_postgres(
        self, hold_id: str, account_id: int, amount: int, key_id: int | None, now: datetime
    ) -> Hold:
        import asyncpg  # PostgreSQL only: a SQLite gateway never loads the driver

        pool = await self.store.hot()
        try:
            outcome = await pool.fetchval(
                _PG_RESERVE, hold_id, account_id, key_id, amount, self.owner, now, now + self.lease
            )
        except asyncpg.UniqueViolationError:
            existing = await self._hold(hold_id)
            if existing is None:
                raise
            return existing
        if outcome != "ok":
            available = (await self.balance(account_id)).available if outcome == "insufficient" else 0
            raise HoldRefused(str(outcome), available)
        return Hold(hold_id, account_id, amount)

    async def _hold(self, hold_id: str) -> Hold | None:
        async with self.store.connect() as conn:
            row = (
                await conn.execute(select(holds.c.id, holds.c.account_id, holds.c.amount).where(holds.c.id == hold_id))
            ).first()
        return Hold(*row) if row else None

    async def _refusal(self, conn: AsyncConnection, account_id: int, key_id: int | None) -> HoldRefused:
        status = await conn.scalar(select(accounts.c.status).where(accounts.c.id == account_id))
        if status is None:
            return HoldRefused("unknown")
        if status != "active":
            return HoldRefused("disabled")
        if key_id is not None:
            revoked = await conn.scalar(select(api_keys.c.revoked_at).where(api_keys.c.id == key_id))
            if revoked is not None:
                return HoldRefused("revoked")
        return HoldRefused("insufficient", (await self.balance(account_id, conn)).available)

    async def settle(self, hold_id: str, cost: int, *, memo: str = "", account_id: int | None = None) -> Charge | None:
        """Charge ``cost`` against a hold and release the rest, atomically; None if the hold is gone (see
        :meth:`_settle`). Once settled, this process stops renewing the hold's lease."""
        charge = await self._settle(hold_id, cost, memo=memo, account_id=account_id)
        self.open_holds.discard(hold_id)
        return charge

    def abandon(self, hold_id: str) -> None:
        """Stop renewing a hold this process will never settle: its lease runs out and any process releases it."""
        self.open_holds.discard(hold_id)

    async def _settle(self, hold_id: str, cost: int, *, memo: str = "", account_id: int | None = None) -> Charge | None:
        """Charge ``cost`` against a hold and release the rest, atomically; None if the hold is gone.

        The charge may use the hold plus any available balance; what it cannot collect is recorded as
        ``uncollected`` on the ledger row, and no bucket goes below zero. A zero cost only releases.
        Idempotent: the hold is deleted in the same transaction, so a second settle finds nothing.
        """
        if cost < 0:
            raise LedgerError("a cost cannot be negative")
        ref = f"req:{hold_id}"
        if not self.store.is_sqlite:
            return await self._settle_in_postgres(hold_id, cost, memo, account_id)
        async with self.store.begin_fast() as conn:
            hold = (
                await conn.execute(
                    delete(holds).where(holds.c.id == hold_id).returning(holds.c.account_id, holds.c.amount)
                )
            ).first()
            if hold is None:
                return None
            row = (
                await conn.execute(
                    select(
                        balances.c.plan_credits,
                        balances.c.topup_credits,
                        balances.c.held,
                        balances.c.plan_expires_at,
                        balances.c.last_grant_total,
                    )
                    .where(balances.c.account_id == hold.account_id)
                    .with_for_update()
                )
            ).one()
            now = self.clock.now()
            before = Balance(*row, now=now)
            collectable = max(0, before.total - (before.held - hold.amount))
            charged = min(cost, collectable)
            from_plan = min(charged, before.plan_usable)
            from_topup = charged - from_plan
            plan_after = before.plan_credits - from_plan
            topup_after = before.topup_credits - from_topup
            await conn.execute(
                update(balances)
                .where(balances.c.account_id == hold.account_id)
                .values(
                    held=balances.c.held - hold.amount,
                    plan_credits=balances.c.plan_credits - from_plan,
                    topup_credits=balances.c.topup_credits - from_topup,
                )
            )
            entry = None
            if cost > 0:
                inserted = await conn.execute(
                    insert(ledger)
                    .values(
                        account_id=hold.account_id,
                        ref=ref,
                        reason="request",
                        actor="api",
                        plan_delta=-from_plan,
                        topup_delta=-from_topup,
                        uncollected=cost - charged,
                        plan_after=plan_after,
                        topup_after=topup_after,
                        memo=memo,
                        created_at=now,
                    )
                    .returning(*_ENTRY_COLUMNS)
                )
                entry = _entry(inserted.one())
        after = replace(before, plan_credits=plan_after, topup_credits=topup_after, held=before.held - hold.amount)
        return Charge(hold_id, hold.account_id, cost, charged, cost - charged, entry, after.total)

    async def _settle_in_postgres(self, hold_id: str, cost: int, memo: str, account_id: int | None) -> Charge | None:
        now = self.clock.now()
        if account_id is not None and self._batcher is not None:
            row = await self._batcher.settle(account_id, hold_id, cost, memo)
        else:
            row = await (await self.store.hot()).fetchrow(_PG_SETTLE, hold_id, cost, now, memo)
        if row is None:
            return None
        entry = None
        if row["o_entry"] is not None:
            entry = Entry(
                row["o_entry"],
                row["o_account"],
                f"req:{hold_id}",
                "request",
                "api",
                row["o_plan_delta"],
                row["o_topup_delta"],
                row["o_uncollected"],
                row["o_plan_after"],
                row["o_topup_after"],
                now,
            )
        return Charge(hold_id, row["o_account"], cost, row["o_charged"], row["o_uncollected"], entry, row["o_balance"])

    async def _settle_batch(self, batch: Sequence[SettleItem]) -> dict[str, Any]:
        pool = await self.store.hot()
        rows = await pool.fetch(
            _PG_SETTLE_MANY,
            [item.hold_id for item in batch],
            [item.cost for item in batch],
            self.clock.now(),
            [item.memo for item in batch],
        )
        return {row["o_id"]: row for row in rows}

    async def close(self) -> None:
        """Settle whatever is still gathered for a batch."""
        if self._batcher is not None:
            await self._batcher.close()

    async def release(self, hold_id: str) -> None:
        """Give a hold back untouched (the request failed before producing anything)."""
        await self.settle(hold_id, 0)

    # -- crash recovery ----------------------------------------------------------------------------------

    async def renew_leases(self) -> int:
        """Extend the leases of the holds this process still means to settle (and only those: a hold it gave
        up on expires and is released by whichever process sweeps first); returns how many.

        Rows are locked in (account, id) order, the order a settle batch takes them in, so a renewal and a
        batch never wait on each other in a cycle.
        """
        if not self.open_holds:
            return 0
        now = self.clock.now()
        mine = (
            select(holds.c.id)
            .where(holds.c.owner == self.owner, holds.c.id.in_(sorted(self.open_holds)))
            .order_by(holds.c.account_id, holds.c.id)
        )
        if not self.store.is_sqlite:
            mine = mine.with_for_update()
        async with self.store.begin_fast() as conn:
            ids = [row.id for row in await conn.execute(mine)]
            if not ids:
                return 0
            result = await conn.execute(update(holds).where(holds.c.id.in_(ids)).values(lease_until=now + self.lease))
        return result.rowcount or 0

    async def overdue_holds(self, grace: timedelta = timedelta(0)) -> list[OverdueHold]:
        """Holds whose lease ran out more than ``grace`` ago: credits locked for requests nobody settles (a
        healthy gateway releases these within one housekeeping pass)."""
        query = (
            select(holds.c.id, holds.c.account_id, holds.c.amount, holds.c.lease_until)
            .where(holds.c.lease_until < self.clock.now() - grace)
            .order_by(holds.c.lease_until)
        )
        async with self.store.connect() as conn:
            return [OverdueHold(*row) for row in await conn.execute(query)]

    async def release_stale_holds(self, everything: bool = False) -> int:
        """Release holds whose lease ran out (their process died), or every hold when ``everything`` (a single
        process starting on SQLite: no other process can own one). Returns how many were released."""
        query = select(holds.c.id)
        if not everything:
            query = query.where(holds.c.lease_until < self.clock.now())
        async with self.store.connect() as conn:
            stale = [row.id for row in await conn.execute(query)]
        for hold_id in stale:
            await self.release(hold_id)
        if stale:
            log.warning("released %d hold(s) left behind by a stopped process", len(stale))
        return len(stale)

    # -- audit -------------------------------------------------------------------------------------------

    async def check(self) -> list[Mismatch]:
        """Every account whose buckets differ from its ledger sums or whose ``held`` differs from its holds."""
        sums = (
            select(
                ledger.c.account_id,
                func.coalesce(func.sum(ledger.c.plan_delta), 0).label("plan"),
                func.coalesce(func.sum(ledger.c.topup_delta), 0).label("topup"),
            )
            .group_by(ledger.c.account_id)
            .subquery()
        )
        held = (
            select(holds.c.account_id, func.coalesce(func.sum(holds.c.amount), 0).label("held"))
            .group_by(holds.c.account_id)
            .subquery()
        )
        query = select(
            balances.c.account_id,
            balances.c.plan_credits,
            balances.c.topup_credits,
            balances.c.held,
            func.coalesce(sums.c.plan, literal(0)).label("plan_sum"),
            func.coalesce(sums.c.topup, literal(0)).label("topup_sum"),
            func.coalesce(held.c.held, literal(0)).label("held_sum"),
        ).select_from(
            balances.outerjoin(sums, sums.c.account_id == balances.c.account_id).outerjoin(
                held, held.c.account_id == balances.c.account_id
            )
        )
        problems: list[Mismatch] = []
        async with self.store.connect() as conn:
            for row in await conn.execute(query):
                for field, stored, expected in (
                    ("plan_credits", row.plan_credits, row.plan_sum),
                    ("topup_credits", row.topup_credits, row.topup_sum),
                    ("held", row.held, row.held_sum),
                ):
                    if int(stored) != int(expected) or int(stored) < 0:
                        problems.append(Mismatch(row.account_id, field, int(stored), int(expected)))
        return problems
