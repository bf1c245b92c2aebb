"""Metering one API request: hold credits before it runs, charge what it used after, record a usage row.

A request that fails before producing anything is released, not charged; one that produced output (a
stream cut by the client or the backend included) is charged for what it produced. Settling is shielded
from cancellation, so a client that goes away never leaves a charge half done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..domain import Caller, Event, ModelInfo, Usage
from ..errors import AuthenticationFailed, InsufficientCredits
from ..outages import describe_outage, is_unavailable
from .ledger import Charge, HoldRefused
from .pricing import hold_usage
from .usage import UsageRecord

if TYPE_CHECKING:
    from ..auth.account_changes import AccountChanges
    from ..background import BackgroundTasks
    from ..config import Settings
    from ..domain import Emit
    from ..metrics import Metrics
    from .ledger import Ledger
    from .usage import UsageRecorder

Price = Callable[[Caller, ModelInfo, str, Usage], Awaitable[int]]

log = logging.getLogger("resayil.metering")

SETTLE_BACKOFF_S = 0.2
SETTLE_BACKOFF_MAX_S = 5.0
FINISH_WAIT_S = 5.0  # how long a handler waits for its own settle before leaving it to the background


class Metering:
    """What a request's billing needs: the ledger, the usage recorder, pricing, metrics and events."""

    def __init__(
        self,
        ledger: Ledger,
        usage: UsageRecorder,
        metrics: Metrics,
        settings: Settings,
        price: Price,
        emit: Emit,
        changes: AccountChanges,
        tasks: BackgroundTasks,
    ) -> None:
        self.ledger = ledger
        self.usage = usage
        self.metrics = metrics
        self.settings = settings
        self.price = price
        self.emit = emit
        self.changes = changes
        self.tasks = tasks

    def meter(
        self, caller: Caller, model: ModelInfo, backend: str, request_id: str, endpoint: str, stream: bool
    ) -> Meter:
        """The billing life of one request (see :class:`Meter`)."""
        return Meter(self, caller, model, backend, request_id, endpoint, stream)


class Meter:
    """The billing life of one request: ``reserve`` → run → ``finish`` (exactly once)."""

    __slots__ = ("_done", "at", "backend", "billing", "caller", "endpoint", "hold_id", "model", "started", "stream")

    def __init__(
        self,
        billing: Metering,
        caller: Caller,
        model: ModelInfo,
        backend: str,
        request_id: str,
        endpoint: str,
        stream: bool,
    ) -> None:
        self.billing = billing
        self.caller = caller
        self.model = model
        self.hold_id = request_id
        self.endpoint = endpoint
        self.stream = stream
        self.backend = backend
        self.started = time.perf_counter()
        self.at = billing.ledger.clock.now()
        self._done = False

    async def reserve(self, prompt_estimate: int, max_tokens: int | None) -> int:
        """Hold the estimated cost; raises 402 (with the top-up link) or 401 (key revoked meanwhile)."""
        estimate = hold_usage(prompt_estimate, max_tokens, self.billing.settings.billing.default_hold_tokens)
        amount = max(1, await self.billing.price(self.caller, self.model, self.backend, estimate))
        reserving = asyncio.ensure_future(
            self.billing.ledger.reserve(self.hold_id, self.caller.account_id, amount, self.caller.key_id)
        )
        try:
            await asyncio.shield(reserving)
        except asyncio.CancelledError:
            # The client left while the hold was being taken: give it back as soon as it exists.
            self._done = True
            reserving.add_done_callback(self._release_if_held)
            raise
        except HoldRefused as refused:
            self._done = True
            if refused.why == "insufficient":
                raise insufficient_credits(
                    self.billing.settings.gateway.public_url, amount, refused.available
                ) from None
            if refused.why in ("revoked", "disabled"):
                await self.billing.changes.announce(self.caller.account_id)
            message = {
                "revoked": "This API key has been revoked.",
                "disabled": "This account is disabled.",
            }.get(refused.why, "Incorrect API key provided.")
            raise AuthenticationFailed(message, code=f"{refused.why}_api_key") from None
        return amount

    def _release_if_held(self, reserving: asyncio.Future[Any]) -> None:
        if not reserving.cancelled() and reserving.exception() is None:
            self.billing.tasks.track(asyncio.ensure_future(self.billing.ledger.release(self.hold_id)))

    async def finish(self, usage: Usage | None, status: int, error_code: str | None = None) -> Charge | None:
        """Charge ``usage`` (None or empty: release the hold) and record the request. Safe to await from a
        cancelled task: the work runs to completion in its own task."""
        task = self.finish_later(usage, status, error_code)
        if task is None:
            return None
        # never hold the client for long: a settle waiting for the store goes on in the background
        done, _ = await asyncio.wait([task], timeout=FINISH_WAIT_S)
        return task.result() if done else None

    def finish_later(
        self, usage: Usage | None, status: int, error_code: str | None = None
    ) -> asyncio.Future[Charge | None] | None:
        """Start :meth:`finish` in the background (the answer is already on its way to the client, so its
        latency never includes the settle). The gateway drains these before it stops."""
        if self._done:
            return None
        self._done = True
        task = asyncio.ensure_future(self._finish(usage, status, error_code))
        self.billing.tasks.track(task)
        return task

    async def _settle(self, cost: int) -> Charge | None:
        """Settle, retrying for as long as this process lives while the store cannot be reached: a served
        request is never left uncharged and its credits never stay locked. Retrying is safe: the first settle
        that commits deletes the hold, so a repeat finds nothing and charges nothing. Any other failure (a
        bug) gives up at once: the hold is abandoned, its lease runs out, and housekeeping releases it."""
        ledger = self.billing.ledger
        attempt = 0
        while True:
            try:
                return await ledger.settle(self.hold_id, cost, memo=self.model.id, account_id=self.caller.account_id)
            except Exception as exc:
                if not is_unavailable(exc):
                    ledger.abandon(self.hold_id)
                    log.exception("could not settle hold %s (cost %d); it will be released", self.hold_id, cost)
                    return None
                if attempt == 0 or attempt % 20 == 0:
                    log.error(
                        "settle of hold %s (cost %d) waits for the store: %s", self.hold_id, cost, describe_outage(exc)
                    )
                await asyncio.sleep(min(SETTLE_BACKOFF_MAX_S, SETTLE_BACKOFF_S * 2**attempt))
                attempt += 1

    async def _finish(self, usage: Usage | None, status: int, error_code: str | None) -> Charge | None:
        billing = self.billing
        cost = 0
        if usage is not None and usage.total_tokens > 0:
            cost = await billing.price(self.caller, self.model, self.backend, usage)
        charge = await self._settle(cost)
        used = usage or Usage()
        metrics = billing.metrics
        if used.total_tokens:
            metrics.child(metrics.tokens, self.model.id, "prompt").inc(used.prompt_tokens)
            metrics.child(metrics.tokens, self.model.id, "completion").inc(used.completion_tokens)
        if charge is not None:
            if charge.charged:
                metrics.child(metrics.credits, self.model.id).inc(charge.charged)
            if charge.uncollected:
                metrics.child(metrics.uncollected, self.model.id).inc(charge.uncollected)
        billing.usage.record(
            UsageRecord(
                request_id=self.hold_id,
                account_id=self.caller.account_id,
                key_id=self.caller.key_id,
                model=self.model.id,
                backend=self.backend,
                endpoint=self.endpoint,
                stream=self.stream,
                prompt_tokens=used.prompt_tokens,
                completion_tokens=used.completion_tokens,
                credits=charge.charged if charge else 0,
                status=status,
                error_code=error_code,
                latency_ms=(time.perf_counter() - self.started) * 1000,
                created_at=self.at,
            )
        )
        if charge is not None and charge.cost:
            await billing.emit(
                Event(
                    "request.charged",
                    {
                        "model": self.model.id,
                        "credits": charge.charged,
                        "uncollected": charge.uncollected,
                        "balance": charge.balance_after,
                    },
                    self.caller.account_id,
                )
            )
        return charge


def insufficient_credits(public_url: str, needed: int, available: int) -> InsufficientCredits:
    """The 402 answer: OpenAI-shaped, with an absolute ``top_up_url`` and ``x-should-retry: false``."""
    top_up_url = f"{public_url}/billing/top-up"
    return InsufficientCredits(
        f"Insufficient credits: this request needs up to {needed} credits and {available} are available. "
        f"Top up at {top_up_url}",
        headers={"x-should-retry": "false"},
        extra={"top_up_url": top_up_url, "credits_needed": needed, "credits_available": available},
    )
