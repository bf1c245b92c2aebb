"""Orders: a plan or a top-up bought through a payment provider, credited exactly once.

An order is stored ``pending`` before the customer is redirected to pay. Confirmation may arrive by the
browser's return, by any number of webhooks, or by the reconciler that polls old pending orders; every path
asks the provider (:meth:`PaymentProvider.payment_status`) and calls :meth:`OrderService.fulfil`, which
checks the provider's amount, currency and reference against the order and then moves it to ``paid`` with
one conditional UPDATE in the same transaction as the credits. Whoever loses that race changes nothing.
A ``failed`` order can still become ``paid`` (the customer retried on the payment page); ``paid`` is final.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import insert, select, update

from ..domain import Event
from ..outages import describe_outage, is_unavailable
from ..store.tables import orders
from .payments import PaymentError, PaymentStatus
from .plans import PlanActivation

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from ..clock import Clock
    from ..config import Settings
    from ..domain import Emit
    from ..events.unit_of_work import RecordEvent
    from ..store import Store
    from .ledger import Entry, Ledger
    from .plans import PlanService

log = logging.getLogger("resayil.orders")

OrderKind = Literal["plan", "topup"]
OrderStatus = Literal["pending", "paid", "failed"]
Outcome = Literal["paid", "duplicate", "failed", "pending", "refused"]
DEFAULT_RECONCILE_AFTER_S = 600.0
RECONCILE_INTERVAL_S = 60.0
_OPEN = ("pending", "failed")


class OrderError(Exception):
    """An order that cannot be made (unknown plan or pack) or found."""


@dataclass(frozen=True, slots=True)
class Order:
    """One purchase: what was bought, for how much, and where it stands."""

    id: str
    account_id: int
    kind: OrderKind
    item: str
    amount_fils: int
    currency: str
    credits: int
    status: OrderStatus
    provider: str
    invoice_id: str | None
    payment_id: str | None
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        """The order as JSON-ready values (for ``/billing/orders`` and ``resayil orders list --json``)."""
        return {
            "id": self.id,
            "account_id": self.account_id,
            "kind": self.kind,
            "item": self.item,
            "amount_fils": self.amount_fils,
            "currency": self.currency,
            "credits": self.credits,
            "status": self.status,
            "provider": self.provider,
            "invoice_id": self.invoice_id,
            "created_at": self.created_at.isoformat(),
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
        }


@dataclass(frozen=True, slots=True)
class Fulfilment:
    """What one confirmation did: ``paid`` (credited now), ``duplicate`` (already paid: nothing changed),
    ``failed``, ``pending`` (nothing yet) or ``refused`` (the provider's answer did not match the order)."""

    outcome: Outcome
    order: Order | None
    reason: str = ""


_COLUMNS = (
    orders.c.id,
    orders.c.account_id,
    orders.c.kind,
    orders.c.item,
    orders.c.amount_fils,
    orders.c.currency,
    orders.c.credits,
    orders.c.status,
    orders.c.provider,
    orders.c.provider_invoice_id,
    orders.c.provider_payment_id,
    orders.c.created_at,
    orders.c.updated_at,
    orders.c.paid_at,
)


def _order(row: Any) -> Order:
    return Order(
        id=row.id,
        account_id=int(row.account_id),
        kind=row.kind,
        item=row.item,
        amount_fils=int(row.amount_fils),
        currency=row.currency,
        credits=int(row.credits),
        status=row.status,
        provider=row.provider,
        invoice_id=row.provider_invoice_id,
        payment_id=row.provider_payment_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        paid_at=row.paid_at,
    )


def format_kwd(fils: int) -> str:
    """Integer fils as KWD text with three decimals (``2500`` → ``"2.500"``), never through a float."""
    sign = "-" if fils < 0 else ""
    whole, part = divmod(abs(fils), 1000)
    return f"{sign}{whole}.{part:03d}"


class OrderService:
    """Creates orders, confirms them exactly once, and reconciles the ones nobody confirmed."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        ledger: Ledger,
        plans: PlanService,
        emit: Emit,
        providers: Mapping[str, Any] | None = None,
        *,
        record: RecordEvent | None = None,
    ) -> None:
        self._record = record
        self._store = store
        self._clock = clock
        self._settings = settings
        self._ledger = ledger
        self._plans = plans
        self._emit = emit
        self._providers: Mapping[str, Any] = providers if providers is not None else {}

    # -- reads -------------------------------------------------------------------------------------------

    async def get(self, order_id: str) -> Order | None:
        """The order with this id, or None."""
        async with self._store.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(orders.c.id == order_id))).first()
        return _order(row) if row else None

    async def by_invoice(self, provider: str, invoice_id: str) -> Order | None:
        """The order a provider's invoice belongs to, or None."""
        query = select(*_COLUMNS).where(orders.c.provider == provider, orders.c.provider_invoice_id == invoice_id)
        async with self._store.connect() as conn:
            row = (await conn.execute(query)).first()
        return _order(row) if row else None

    async def list(
        self, *, account_id: int | None = None, status: str | None = None, limit: int = 100
    ) -> Sequence[Order]:
        """Orders, newest first, optionally of one account and/or in one status."""
        query = select(*_COLUMNS).order_by(orders.c.created_at.desc(), orders.c.id).limit(limit)
        if account_id is not None:
            query = query.where(orders.c.account_id == account_id)
        if status is not None:
            query = query.where(orders.c.status == status)
        async with self._store.connect() as conn:
            return [_order(row) for row in await conn.execute(query)]

    # -- checkout ----------------------------------------------------------------------------------------

    def price(self, kind: OrderKind, item: str) -> tuple[int, int]:
        """``(amount_fils, credits)`` of a plan or pack from configuration; :class:`OrderError` if unknown."""
        if kind == "plan":
            plan = self._settings.plans.get(item)
            if plan is None or plan.price_fils <= 0:
                raise OrderError(f"unknown plan {item!r}")
            return plan.price_fils, plan.credits
        if kind == "topup":
            pack = self._settings.packs.get(item)
            if pack is None:
                raise OrderError(f"unknown pack {item!r}")
            return pack.price_fils, pack.credits
        raise OrderError(f"unknown order kind {kind!r}")

    async def create(self, account_id: int, kind: OrderKind, item: str, provider: str) -> Order:
        """Store a pending order (before the customer is sent to pay); price and credits come from config."""
        amount_fils, credits = self.price(kind, item)
        now = self._clock.now()
        order_id = "ord_" + secrets.token_hex(12)
        async with self._store.begin() as conn:
            await conn.execute(
                insert(orders).values(
                    id=order_id,
                    account_id=account_id,
                    kind=kind,
                    item=item,
                    amount_fils=amount_fils,
                    currency=self._settings.billing.currency,
                    credits=credits,
                    status="pending",
                    provider=provider,
                    created_at=now,
                    updated_at=now,
                )
            )
        log.info("order %s created: account %s %s %s %s fils", order_id, account_id, kind, item, amount_fils)
        order = await self.get(order_id)
        assert order is not None
        return order

    async def attach_invoice(self, order_id: str, invoice_id: str) -> None:
        """Remember the provider's invoice id for the order (the reconciler asks about it later)."""
        async with self._store.begin() as conn:
            await conn.execute(
                update(orders)
                .where(orders.c.id == order_id)
                .values(provider_invoice_id=invoice_id, updated_at=self._clock.now())
            )

    async def mark_failed(self, order_id: str, reason: str) -> bool:
        """Move a pending order to ``failed`` (the provider refused the checkout); False if it was not pending."""
        async with self._store.begin() as conn:
            result = await conn.execute(
                update(orders)
                .where(orders.c.id == order_id, orders.c.status == "pending")
                .values(status="failed", updated_at=self._clock.now(), detail={"reason": reason[:200]})
            )
        return bool(result.rowcount)

    # -- confirmation ------------------------------------------------------------------------------------

    async def fulfil_status(self, provider: str, status: PaymentStatus, source: str) -> Fulfilment:
        """Find the order a provider's status is about (by our stored invoice id, else its reference) and
        :meth:`fulfil` it."""
        order = await self.by_invoice(provider, status.invoice_id) if status.invoice_id else None
        order_id = order.id if order is not None else status.order_id
        if not order_id:
            log.warning("payment refused: %s invoice %s matches no order (via %s)", provider, status.invoice_id, source)
            return Fulfilment("refused", None, "no matching order")
        return await self.fulfil(order_id, status, source)

    async def fulfil(self, order_id: str, status: PaymentStatus, source: str) -> Fulfilment:
        """Apply the provider's ``status`` to the order, idempotently.

        ``paid`` (amount, currency and reference matching) moves pending|failed → paid exactly once, in one
        transaction with the credits or the plan, then emits ``order.paid`` and ``topup.credited`` or
        ``plan.activated``. ``failed`` moves pending → failed. A mismatch is refused, logged, and changes
        nothing. ``source`` (callback, webhook, reconciler, …) is for the log.
        """
        order = await self.get(order_id)
        if order is None:
            log.warning("payment refused: order %s does not exist (via %s)", order_id, source)
            return Fulfilment("refused", None, "unknown order")
        problem = self._mismatch(order, status)
        if problem:
            log.warning("payment refused for order %s via %s: %s; order untouched", order.id, source, problem)
            return Fulfilment("refused", order, problem)
        if status.state == "failed":
            return await self._fail(order, status, source)
        if status.state != "paid":
            return Fulfilment("pending", order)
        return await self._pay(order, status, source)

    @staticmethod
    def _mismatch(order: Order, status: PaymentStatus) -> str:
        if status.order_id != order.id:
            return f"reference {status.order_id!r} is not this order"
        if order.invoice_id and status.invoice_id and status.invoice_id != order.invoice_id:
            return f"invoice {status.invoice_id!r} is not this order's {order.invoice_id!r}"
        if status.currency.upper() != order.currency.upper():
            return f"currency {status.currency!r} is not {order.currency!r}"
        if status.amount_fils != order.amount_fils:
            return f"amount {status.amount_fils} fils is not {order.amount_fils} fils"
        return ""

    async def _fail(self, order: Order, status: PaymentStatus, source: str) -> Fulfilment:
        async with self._store.begin() as conn:
            result = await conn.execute(
                update(orders)
                .where(orders.c.id == order.id, orders.c.status == "pending")
                .values(status="failed", updated_at=self._clock.now(), detail={"reason": status.detail[:200]})
            )
        if result.rowcount:
            log.info("order %s failed (via %s): %s", order.id, source, status.detail or "declined or expired")
        after = await self.get(order.id)
        return Fulfilment("duplicate" if after is not None and after.status == "paid" else "failed", after)

    async def _pay(self, order: Order, status: PaymentStatus, source: str) -> Fulfilment:
        now = self._clock.now()
        credit: PlanActivation | Entry | None = None
        async with self._store.begin() as conn:
            claimed = await conn.execute(
                update(orders)
                .where(orders.c.id == order.id, orders.c.status.in_(_OPEN))
                .values(
                    status="paid",
                    paid_at=now,
                    updated_at=now,
                    provider_payment_id=status.payment_id,
                    provider_invoice_id=order.invoice_id or status.invoice_id,
                )
            )
            credited = claimed.rowcount == 1
            if credited:
                credit = await self._credit(conn, order)
        if not credited:  # someone else confirmed it first: report the order as it is now
            return Fulfilment("duplicate", await self.get(order.id))
        log.info("order %s paid (via %s): account %s %s %s", order.id, source, order.account_id, order.kind, order.item)
        paid = await self.get(order.id)
        await self._announce(order, credit)
        return Fulfilment("paid", paid)

    async def _credit(self, conn: AsyncConnection, order: Order) -> PlanActivation | Entry:
        ref, actor = f"order:{order.id}", f"order:{order.id}"
        if order.kind == "plan":
            return await self._plans.activate(order.account_id, order.item, ref=ref, actor=actor, conn=conn)
        entry = await self._ledger.grant(
            order.account_id,
            order.credits,
            bucket="topup",
            ref=ref,
            reason="topup",
            actor=actor,
            memo=f"pack {order.item}",
            conn=conn,
        )
        if self._record is not None:  # the top-up message (NOTIF-05) commits with the credits
            await self._record(conn, _topup_credited(order, entry))
        return entry

    async def _announce(self, order: Order, credit: PlanActivation | Entry | None) -> None:
        data = {
            "order_id": order.id,
            "kind": order.kind,
            "item": order.item,
            "amount_fils": order.amount_fils,
            "currency": order.currency,
            "credits": order.credits,
        }
        await self._emit(Event("order.paid", data, order.account_id, key=f"order.paid:{order.id}"))
        if isinstance(credit, PlanActivation):
            await self._plans.announce(credit)
        elif credit is not None:
            await self._emit(_topup_credited(order, credit))

    # -- reconciliation ----------------------------------------------------------------------------------

    def reconcile_after(self) -> timedelta:
        """How old a pending order must be before the reconciler asks about it (``[myfatoorah]
        reconcile_after_s`` when that section exists, else 600 s)."""
        try:
            seconds = float(self._settings.section("myfatoorah").reconcile_after_s)
        except (KeyError, AttributeError):
            seconds = DEFAULT_RECONCILE_AFTER_S
        return timedelta(seconds=seconds)

    async def _claim(self, limit: int) -> Sequence[Order]:
        """Pending orders nobody touched for ``reconcile_after``; their ``updated_at`` is bumped in the same
        transaction, so another worker's reconciler skips them (on PostgreSQL rows another transaction holds
        are skipped, never waited for)."""
        now = self._clock.now()
        query = (
            select(*_COLUMNS)
            .where(orders.c.status == "pending", orders.c.updated_at <= now - self.reconcile_after())
            .order_by(orders.c.updated_at)
            .limit(limit)
        )
        if not self._store.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        async with self._store.begin() as conn:
            claimed = [_order(row) for row in await conn.execute(query)]
            if claimed:
                await conn.execute(
                    update(orders).where(orders.c.id.in_([order.id for order in claimed])).values(updated_at=now)
                )
        return claimed

    async def reconcile(self, limit: int = 50) -> dict[str, int]:
        """Ask the provider about pending orders older than ``reconcile_after`` and fulfil or fail them.
        Returns how many ended in each outcome (``errors``: the provider could not answer; retried later)."""
        counts: dict[str, int] = {}
        for order in await self._claim(limit):
            outcome = await self._reconcile_one(order)
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    async def _reconcile_one(self, order: Order) -> str:
        provider = self._providers.get(order.provider)
        if provider is None:
            return "skipped"
        if not order.invoice_id:  # the checkout never reached the provider
            await self.mark_failed(order.id, "no invoice was created")
            return "failed"
        try:
            status = await provider.payment_status(invoice_id=order.invoice_id)
        except PaymentError as exc:
            log.warning("reconciler: %s could not report order %s: %s", order.provider, order.id, exc)
            return "errors"
        return (await self.fulfil(order.id, status, "reconciler")).outcome

    async def run(self, interval: float = RECONCILE_INTERVAL_S) -> None:
        """Reconcile every ``interval`` seconds while a payment provider is registered (a background loop)."""
        if not self._providers:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                counts = await self.reconcile()
            except Exception as exc:
                if is_unavailable(exc):
                    log.error("reconciler: %s; retrying in %.0f s", describe_outage(exc), interval)
                else:
                    log.exception("reconciler failed; retrying in %.0f s", interval)
                continue
            if counts:
                log.info("reconciler: %s", ", ".join(f"{name} {count}" for name, count in sorted(counts.items())))


def _topup_credited(order: Order, entry: Entry) -> Event:
    """``topup.credited`` for a paid pack: credits added and the new balance (one key per order)."""
    credited = {
        "order_id": order.id,
        "credits": order.credits,
        "pack": order.item,
        "balance": entry.plan_after + entry.topup_after,
        "topup_balance": entry.topup_after,
    }
    return Event("topup.credited", credited, order.account_id, key=f"topup:{order.id}")
