""":class:`MyFatoorahProvider`: the gateway's payment provider over MyFatoorah API v2.

``create_payment`` picks a payment method (``InitiatePayment``, cached) and calls ``ExecutePayment``;
``payment_status`` calls ``GetPaymentStatus`` by ``PaymentId`` (browser return) or ``InvoiceId``
(reconciliation); ``verify_webhook`` checks ``MyFatoorah-Signature`` and freshness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resayil_gateway.billing.payments import (
    Checkout,
    CheckoutStarted,
    PaymentError,
    PaymentStatus,
    WebhookNotice,
)
from resayil_gateway.clock import Clock

from .client import MyFatoorahClient
from .invoice import execute_payment_body
from .money import Kwd
from .settings import MyFatoorahSettings
from .status import payment_status_from
from .webhooks import WebhookPolicy, verify_webhook


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    """One payment method ``InitiatePayment`` lists for an amount (ids are account-specific)."""

    id: int
    code: str
    name_en: str
    name_ar: str
    is_direct: bool
    image_url: str = ""


class MyFatoorahProvider:
    """MyFatoorah as a :class:`~resayil_gateway.billing.payments.PaymentProvider` named ``myfatoorah``."""

    name = "myfatoorah"

    def __init__(self, settings: MyFatoorahSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.reconcile_after_s = settings.reconcile_after_s
        self.client = MyFatoorahClient(settings)
        self._policy = WebhookPolicy(
            secret=settings.webhook_secret.get_secret_value(),
            version=settings.webhook_version,
            max_age_s=settings.webhook_max_age_s,
            zone=self.clock.zone,
        )
        self._methods: dict[tuple[int, str], tuple[float, tuple[PaymentMethod, ...]]] = {}

    async def start(self) -> None:
        """Open the HTTP session to MyFatoorah."""
        await self.client.start()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.client.close()

    async def payment_methods(self, amount_fils: int, currency: str = "KWD") -> tuple[PaymentMethod, ...]:
        """The methods enabled for this amount (``InitiatePayment``), cached ``methods_cache_s`` seconds."""
        key = (amount_fils, currency.upper())
        cached = self._methods.get(key)
        now = self.clock.monotonic()
        if cached is not None and now - cached[0] < self.settings.methods_cache_s:
            return cached[1]
        data = await self.client.call("InitiatePayment", {"InvoiceAmount": Kwd(amount_fils), "CurrencyIso": key[1]})
        methods = tuple(_method(item) for item in data.get("PaymentMethods") or () if isinstance(item, dict))
        methods = tuple(method for method in methods if method.id > 0)
        self._methods[key] = (now, methods)
        return methods

    async def choose_method(self, amount_fils: int, currency: str) -> int:
        """``payment_method_id`` when set, else the first method that redirects to a hosted page (not direct)."""
        if self.settings.payment_method_id:
            return self.settings.payment_method_id
        methods = await self.payment_methods(amount_fils, currency)
        hosted = next((method for method in methods if not method.is_direct), None)
        if hosted is None:
            raise PaymentError("MyFatoorah: InitiatePayment lists no hosted payment method for this account")
        return hosted.id

    async def create_payment(self, checkout: Checkout) -> CheckoutStarted:
        """Create the invoice (``ExecutePayment``) and return the hosted payment page and the invoice id."""
        execute_payment_body(checkout, 0)  # validate before spending a round trip on InitiatePayment
        method_id = await self.choose_method(checkout.amount_fils, checkout.currency.upper())
        data = await self.client.call("ExecutePayment", execute_payment_body(checkout, method_id))
        invoice_id, payment_url = data.get("InvoiceId"), data.get("PaymentURL")
        if invoice_id in (None, "") or not isinstance(payment_url, str) or not payment_url:
            raise PaymentError("MyFatoorah ExecutePayment: the reply has no InvoiceId or PaymentURL")
        return CheckoutStarted(payment_url=payment_url, invoice_id=str(invoice_id))

    async def payment_status(self, *, payment_id: str | None = None, invoice_id: str | None = None) -> PaymentStatus:
        """The invoice's status from ``GetPaymentStatus``, by ``payment_id`` if given, else by ``invoice_id``."""
        if payment_id:
            body = {"Key": payment_id, "KeyType": "PaymentId"}
        elif invoice_id:
            body = {"Key": invoice_id, "KeyType": "InvoiceId"}
        else:
            raise ValueError("payment_status needs payment_id or invoice_id")
        data = await self.client.call("GetPaymentStatus", body)
        return payment_status_from(data, payment_id=payment_id or None, now=self.clock.now(), zone=self.clock.zone)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        """Check ``MyFatoorah-Signature``, version and age; raise ``WebhookRejected``, else return the notice."""
        return verify_webhook(headers, body, self._policy, self.clock.now())


def _method(item: Mapping[str, Any]) -> PaymentMethod:
    raw_id = item.get("PaymentMethodId")
    return PaymentMethod(
        id=raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else 0,
        code=str(item.get("PaymentMethodCode") or ""),
        name_en=str(item.get("PaymentMethodEn") or ""),
        name_ar=str(item.get("PaymentMethodAr") or ""),
        is_direct=item.get("IsDirectPayment") is True,
        image_url=str(item.get("ImageUrl") or ""),
    )
