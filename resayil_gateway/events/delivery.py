"""The delivery worker: claims due outbox rows, renders each message (Arabic then English) and hands it to the
notification channel, then records the provider's answer. Transient failures are retried with exponential
backoff and jitter (never sooner than the provider's ``Retry-After``) up to ``notifications.max_attempts``;
permanent ones fail at once; the error is kept.

It wakes at once when this process queues a message and polls otherwise (another process may have queued
one). :func:`run_notifications` is the application's background loop that runs it, with the renewal
reminders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ..outages import describe_outage, is_unavailable
from .channels import DeliveryFailed, Message
from .outbox import OutboxRow
from .reminders import send_renewal_reminders
from .templates import TemplateError

if TYPE_CHECKING:
    from ..clock import Clock
    from ..config import NotificationsSettings, Settings
    from ..metrics import Metrics
    from .bus import Events

log = logging.getLogger("resayil.notifications")
T = TypeVar("T")


def backoff(attempts: int, base: float, cap: float, jitter: float | None = None) -> float:
    """Seconds before the next try after ``attempts`` failed ones: ``base × 2^(attempts-1)``, capped, times a
    random factor in [0.5, 1) so that many failures never retry in lockstep."""
    factor = random.uniform(0.5, 1.0) if jitter is None else jitter
    return min(cap, base * 2 ** max(0, attempts - 1)) * factor


class DeliveryWorker:
    """Sends the outbox through the notification channel (the first registered one)."""

    def __init__(
        self,
        events: Events,
        channels: Mapping[str, Any],
        settings: NotificationsSettings,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.events = events
        self.channels = channels
        self.settings = settings
        self.clock = clock
        self.metrics = metrics

    def channel(self) -> Any | None:
        """The channel messages go through, or None."""
        return next(iter(self.channels.values()), None)

    async def deliver_due(self) -> int:
        """Claim one batch of due messages and try each once; returns how many were tried."""
        rows = await self.events.outbox.claim(self.settings.batch_size, timedelta(seconds=self.settings.lease_s))
        for row in rows:
            await self._deliver(row)
        return len(rows)

    async def deliver_all(self) -> int:
        """Deliver batches until nothing is due now; returns how many messages were tried."""
        total = 0
        while tried := await self.deliver_due():
            total += tried
        return total

    async def _deliver(self, row: OutboxRow) -> None:
        outbox = self.events.outbox
        channel = self.channel()
        if channel is None:
            await outbox.mark_failed(row, "", "no notification channel is configured")
            self._count("none", row.event, "failed")
            return
        try:
            text = self.events.templates.render(row.event, row.payload)
            receipt = await channel.send(Message(row.recipient, text, row.event, row.dedupe_key))
        except TemplateError as exc:
            await outbox.mark_failed(row, channel.name, str(exc))
            self._count(channel.name, row.event, "failed")
        except DeliveryFailed as exc:
            await self._failed(row, channel.name, exc)
        except Exception as exc:  # a channel bug is retried like a transient failure, and logged
            stop_if_cancelled(exc)
            log.exception("channel %s failed on outbox row %d", channel.name, row.id)
            await self._failed(row, channel.name, DeliveryFailed(f"{type(exc).__name__}: {exc}"))
        else:
            await outbox.mark_sent(row, channel.name, receipt.provider_id)
            self._count(channel.name, row.event, "sent")

    async def _failed(self, row: OutboxRow, channel: str, error: DeliveryFailed) -> None:
        outbox = self.events.outbox
        if error.permanent or row.attempts >= self.settings.max_attempts:
            await outbox.mark_failed(row, channel, error.detail)
            self._count(channel, row.event, "failed")
            log.warning("outbox row %d (%s) failed after %d attempt(s): %s", row.id, row.event, row.attempts, error)
            return
        delay = backoff(row.attempts, self.settings.backoff_base_s, self.settings.backoff_max_s)
        hint = getattr(error, "retry_after", None)
        if hint is not None:  # the provider said when (Retry-After): never sooner than that
            delay = max(delay, float(hint))
        await outbox.mark_retry(row, channel, error.detail, self.clock.now() + timedelta(seconds=delay))
        self._count(channel, row.event, "retried")

    def _count(self, channel: str, event: str, outcome: str) -> None:
        self.metrics.child(self.metrics.notifications, channel, event, outcome).inc()

    async def update_depth(self) -> None:
        """Publish the outbox's size per status on ``/metrics``."""
        for status, count in (await self.events.outbox.counts()).items():
            self.metrics.child(self.metrics.outbox_depth, status).set(count)

    async def _cycle(self) -> None:
        await self.deliver_all()
        await self.update_depth()

    async def run(self) -> None:
        """Deliver until cancelled: at once when this process queues a message, else every poll interval."""
        queued = self.events.queued
        while True:
            try:
                queued.clear()
                await uninterrupted(self._cycle())
            except Exception as exc:
                stop_if_cancelled(exc)
                wait = self.settings.poll_interval_s
                log.error("outbox delivery failed (%s); retrying in %.0f s", describe(exc), wait)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval_s):
                    await queued.wait()


async def remind_periodically(events: Events, settings: Settings) -> None:
    """Queue renewal reminders now and then every ``notifications.reminder_check_interval_s``."""
    interval = settings.notifications.reminder_check_interval_s
    while True:
        try:
            await uninterrupted(send_renewal_reminders(events, settings))
        except Exception as exc:
            stop_if_cancelled(exc)
            log.error("renewal reminders failed (%s); retrying in %.0f s", describe(exc), interval)
        await asyncio.sleep(interval)


async def uninterrupted(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end even when the caller is cancelled meanwhile, then let the cancellation through:
    stopping the server never cuts a claim or a send in the middle of its database transaction."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def stop_if_cancelled(exc: Exception) -> None:
    """Re-raise a cancellation that a driver turned into another error while cleaning up (a loop that swallowed
    it would never stop)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def describe(exc: BaseException) -> str:
    """A store outage in one line; anything else with its type (the traceback goes to the debug log)."""
    if is_unavailable(exc):
        return describe_outage(exc)
    log.debug("background notification work failed", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


async def run_notifications(
    events: Events, channels: Mapping[str, Any], settings: Settings, clock: Clock, metrics: Metrics
) -> None:
    """The application's notification loop: the delivery worker and the renewal reminders, until cancelled.
    Without a channel nothing runs: messages stay pending and are sent once a channel is configured."""
    if not channels:
        log.warning("no notification channel is configured: notifications wait in the outbox until one is")
        return
    worker = DeliveryWorker(events, channels, settings.notifications, clock, metrics)
    await asyncio.gather(worker.run(), remind_periodically(events, settings))
