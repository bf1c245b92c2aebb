"""The notification-channel interface plugins implement (WhatsApp is one), and the values it exchanges.

The core renders each message (Arabic then English) from templates, stores it in the outbox in the same
transaction as the change that caused it, and hands it to a channel from a background worker that retries
transient failures with backoff. A channel only delivers one text to one recipient and says how it went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class DeliveryFailed(Exception):
    """A message was not delivered. ``permanent`` failures are not retried (a bad number, a refused token)."""

    permanent: bool = False

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TransientDeliveryError(DeliveryFailed):
    """Worth retrying later: a timeout, a 5xx, a 429, a connection refused.

    ``retry_after`` (seconds) is the provider's own hint (a ``Retry-After`` header) when it gave one; a
    delivery worker waits at least that long before the next attempt.
    """

    permanent = False

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryFailed):
    """Retrying will not help: a 4xx other than 429, an invalid recipient, a rejected token."""

    permanent = True


@dataclass(frozen=True, slots=True)
class Message:
    """One text for one recipient (``recipient`` in E.164 with '+'); ``key`` is the outbox's de-dup key."""

    recipient: str
    text: str
    event: str = ""
    key: str = ""


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider answered: its message id when it gave one, and a short detail for the log."""

    provider_id: str | None
    detail: str = ""


@runtime_checkable
class Channel(Protocol):
    """A notification channel registered through ``register_channels``."""

    name: str

    async def start(self) -> None:
        """Open connections. Called once per process when the application starts."""

    async def close(self) -> None:
        """Close connections."""

    async def send(self, message: Message) -> Receipt:
        """Deliver ``message``; raise :class:`TransientDeliveryError` or :class:`PermanentDeliveryError`."""
