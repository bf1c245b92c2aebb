"""The payment-provider interface plugins implement (MyFatoorah is one), and the values it exchanges.

The core owns orders and fulfilment; a provider only starts a hosted payment, reports a payment's status
as the provider's own server sees it, and verifies webhooks. The core never trusts a redirect or a webhook
body: it asks :meth:`PaymentProvider.payment_status` before it fulfils anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

PaymentState = Literal["paid", "pending", "failed"]


class PaymentError(Exception):
    """The provider refused or could not be reached. ``transient`` says whether a retry may succeed."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class WebhookRejected(Exception):
    """A webhook that is unsigned, forged, stale or malformed: answer 401 and change nothing."""


@dataclass(frozen=True, slots=True)
class Checkout:
    """What the core asks a provider to charge: one order, in integer minor units (fils for KWD)."""

    order_id: str
    amount_fils: int
    currency: str
    description: str
    language: Literal["ar", "en"]
    callback_url: str
    error_url: str
    customer_name: str = ""
    customer_email: str = ""
    customer_phone: str = ""  # E.164 with '+'


@dataclass(frozen=True, slots=True)
class CheckoutStarted:
    """Where to send the customer (``payment_url``) and the provider's id for the payment (``invoice_id``)."""

    payment_url: str
    invoice_id: str


@dataclass(frozen=True, slots=True)
class PaymentStatus:
    """A payment as the provider's server reports it; ``order_id`` is the reference we gave at checkout."""

    state: PaymentState
    invoice_id: str
    order_id: str | None
    amount_fils: int
    currency: str
    payment_id: str | None = None
    detail: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookNotice:
    """A verified webhook: which payment changed. The core re-checks it with ``payment_status``."""

    invoice_id: str
    payment_id: str | None
    state: PaymentState
    order_id: str | None
    created_at: datetime | None = None
    reference: str | None = None  # the provider's id for this event (MyFatoorah ``Event.Reference``), for dedupe/logs


@runtime_checkable
class PaymentProvider(Protocol):
    """A checkout provider registered through ``register_payment_providers``."""

    name: str

    async def start(self) -> None:
        """Open connections. Called once per process when the application starts."""

    async def close(self) -> None:
        """Close connections."""

    async def create_payment(self, checkout: Checkout) -> CheckoutStarted:
        """Create a hosted payment for ``checkout``; raise :class:`PaymentError` when refused."""

    async def payment_status(self, *, payment_id: str | None = None, invoice_id: str | None = None) -> PaymentStatus:
        """Ask the provider's server for a payment's status (by either id); raise :class:`PaymentError`."""

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        """Check a webhook's signature and freshness and parse it; raise :class:`WebhookRejected`."""
