"""A scripted notification channel for the outbox, notification and ban tests (imported by them; no tests here)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from resayil_gateway.events.channels import DeliveryFailed, Message, Receipt
from resayil_gateway.plugins import hookimpl


class FakeChannel:
    """Records every message; ``failures`` are raised (in order) before messages go through; ``hold`` makes
    ``send`` wait until released (a crash in the middle of a delivery)."""

    def __init__(self, name: str = "fake", extra_admins: Iterable[str] = ("+96599990000",)) -> None:
        self.name = name
        self.extra_admin_recipients = tuple(extra_admins)
        self.sent: list[Message] = []
        self.failures: list[DeliveryFailed] = []
        self.hold_after: int | None = None
        self.holding = asyncio.Event()
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    async def send(self, message: Message) -> Receipt:
        if self.failures:
            raise self.failures.pop(0)
        if self.hold_after is not None and len(self.sent) >= self.hold_after:
            self.holding.set()
            await asyncio.Event().wait()  # never returns: the worker dies here
        await asyncio.sleep(0)
        self.sent.append(message)
        return Receipt(f"wamid-{len(self.sent)}")

    def to(self, recipient: str) -> list[Message]:
        return [message for message in self.sent if message.recipient == recipient]


class ChannelPlugin:
    """Registers the given channels."""

    def __init__(self, *channels: Any) -> None:
        self.channels = channels

    @hookimpl
    def register_channels(self, register: Any, gateway: Any) -> None:
        for channel in self.channels:
            register(channel)


class EventRecorder:
    """An ``on_event`` plugin that remembers every event it saw."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def on_event(self, event: Any, gateway: Any) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [event.name for event in self.events]


def worker_for(gateway: Any) -> Any:
    """The delivery worker the application runs, for ``gateway``."""
    from resayil_gateway.events.delivery import DeliveryWorker

    return DeliveryWorker(
        gateway.events, gateway.channels, gateway.settings.notifications, gateway.clock, gateway.metrics
    )


async def charge(gateway: Any, account_id: int, cost: int, hold_id: str) -> Any:
    """Hold and settle ``cost`` as a request would, and tell the gateway what metering tells it."""
    from resayil_gateway.domain import Event

    await gateway.ledger.reserve(hold_id, account_id, cost)
    settled = await gateway.ledger.settle(hold_id, cost, account_id=account_id)
    data = {
        "model": "m",
        "credits": settled.charged,
        "uncollected": settled.uncollected,
        "balance": settled.balance_after,
    }
    await gateway.emit(Event("request.charged", data, account_id))
    await gateway.drain()
    return settled
