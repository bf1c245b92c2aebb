"""The simulator's memory: invoices and their payment attempts, shaped as MyFatoorah reports them.

Reproduces the real oddities on purpose: ``Succss`` and ``TransationValue`` (sic), transaction amounts as
strings in ``"KD"``, ``ExpiryDate`` in English prose with a separate ``ExpiryTime``, Kuwait local times
without a zone in ``GetPaymentStatus``, ``InvoiceId`` an integer there and a string in V2 webhooks.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from resayil_gateway.simulators import Counters

from .money import Kwd, fils_to_kwd_text

KUWAIT = ZoneInfo("Asia/Kuwait")
PaymentOutcome = Literal["paid", "declined"]


@dataclass(frozen=True, slots=True)
class SimMethod:
    """A payment method the sandbox account has enabled."""

    id: int
    code: str
    name_en: str
    name_ar: str
    service_charge_fils: int = 0
    is_direct: bool = False

    def initiate_entry(self, amount_fils: int, currency: str) -> dict[str, Any]:
        """This method as an item of ``InitiatePayment``'s ``PaymentMethods``."""
        return {
            "PaymentMethodId": self.id,
            "PaymentMethodAr": self.name_ar,
            "PaymentMethodEn": self.name_en,
            "PaymentMethodCode": self.code,
            "IsDirectPayment": self.is_direct,
            "ServiceCharge": Kwd(self.service_charge_fils),
            "TotalAmount": Kwd(amount_fils),
            "CurrencyIso": currency,
            "ImageUrl": f"https://demo.myfatoorah.com/imgs/payment-methods/{self.code}.png",
            "IsEmbeddedSupported": False,
            "PaymentCurrencyIso": currency,
        }


DEFAULT_METHODS = (
    SimMethod(1, "kn", "KNET", "كي نت", 25),
    SimMethod(2, "vm", "VISA/MASTER", "فيزا / ماستر", 125),
    SimMethod(11, "ap", "Apple Pay", "أبل الدفع", 125),
)


@dataclass(slots=True)
class SimTransaction:
    """One attempt to pay an invoice (each retry on the payment page adds one with its own ``PaymentId``)."""

    payment_id: str
    status: Literal["InProgress", "Succss", "Failed"]
    method: str
    created_at: datetime
    number: int
    error: str | None = None
    error_code: str = ""


@dataclass(slots=True)
class SimInvoice:
    """An invoice created by ``ExecutePayment``."""

    id: int
    key: str
    value_fils: int
    currency: str
    method: SimMethod
    customer_reference: str
    user_defined_field: str
    customer_name: str
    customer_mobile: str
    customer_email: str | None
    callback_url: str
    error_url: str
    language: str
    item_name: str
    webhook_url: str
    created_at: datetime
    expires_at: datetime
    status: Literal["Pending", "Paid", "Canceled"] = "Pending"
    transactions: list[SimTransaction] = field(default_factory=list)

    @property
    def display_value(self) -> str:
        """``"5.000 KD"``, as ``InvoiceDisplayValue`` shows it."""
        return f"{fils_to_kwd_text(self.value_fils)} {'KD' if self.currency == 'KWD' else self.currency}"

    def succeeded(self) -> SimTransaction | None:
        """The successful attempt, if any."""
        return next((tx for tx in self.transactions if tx.status == "Succss"), None)

    def summary(self) -> dict[str, Any]:
        """A short JSON view for ``GET /_sim/invoices``."""
        return {
            "invoice_id": self.id,
            "invoice_key": self.key,
            "status": self.status,
            "amount_fils": self.value_fils,
            "currency": self.currency,
            "customer_reference": self.customer_reference,
            "payment_ids": [tx.payment_id for tx in self.transactions],
            "transaction_statuses": [tx.status for tx in self.transactions],
        }


@dataclass(slots=True)
class FailureRule:
    """Make the next ``count`` calls to ``endpoint`` (any when empty) fail.

    ``mode``: ``"status"`` answers HTTP ``status`` with an ``IsSuccess: false`` envelope; ``"rejected"``
    answers ``status`` (default 400) with ``ValidationErrors``; ``"timeout"`` answers only after
    ``delay_s``; ``"not_json"`` answers ``status`` with an HTML page; ``"empty"`` with an empty body.
    """

    mode: Literal["status", "rejected", "timeout", "not_json", "empty"] = "status"
    endpoint: str = ""
    status: int = 500
    message: str = "Simulated failure"
    count: int = 1
    delay_s: float = 60.0


@dataclass(slots=True)
class SimulatorConfig:
    """The simulator's behaviour; every field can be changed while it runs (``POST /_sim/config``).

    ``api_token`` empty accepts any Bearer token. Webhooks go to ``webhook_url`` (or the invoice's own
    ``WebhookUrl``), signed with ``webhook_secret`` (unsigned when it is empty), ``duplicates`` copies of each,
    after ``webhook_delay_s`` (late delivery), retried ``webhook_retries`` times ``webhook_retry_delay_s``
    apart while the receiver does not answer 200. ``out_of_order`` makes every successful payment also
    produce a failed attempt whose webhook arrives after the paid one.
    """

    api_token: str = ""
    webhook_url: str = ""
    webhook_secret: str = ""
    duplicates: int = 1
    out_of_order: bool = False
    webhook_delay_s: float = 0.0
    webhook_retries: int = 5
    webhook_retry_delay_s: float = 0.5
    webhook_timeout_s: float = 10.0
    invoice_ttl_s: float = 3 * 86400.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ValueError` for a value out of range."""
        if self.duplicates < 1 or self.webhook_retries < 0:
            raise ValueError("duplicates must be at least 1 and webhook_retries at least 0")
        if min(self.webhook_delay_s, self.webhook_retry_delay_s) < 0 or self.webhook_timeout_s <= 0:
            raise ValueError("webhook delays must be ≥ 0 and webhook_timeout_s > 0")
        if self.invoice_ttl_s <= 0:
            raise ValueError("invoice_ttl_s must be > 0")

    def public(self) -> dict[str, Any]:
        """The switches, secrets left out (what ``/_sim/config`` returns)."""
        shown = {item.name: getattr(self, item.name) for item in fields(self)}
        shown["api_token"] = bool(self.api_token)
        shown["webhook_secret"] = bool(self.webhook_secret)
        return shown


@dataclass(slots=True)
class SandboxStats(Counters):
    """Counters, and :meth:`wait_until` to wait for a condition on them without sleeping; :meth:`reset` zeroes
    them all."""

    api_calls: int = 0
    invoices: int = 0
    paid: int = 0
    declined: int = 0
    injected_failures: int = 0
    webhooks_attempted: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0
    webhooks_skipped: int = 0


class Sandbox:
    """Invoices by id, with lookups by key, ``PaymentId`` and ``CustomerReference``."""

    def __init__(self, methods: tuple[SimMethod, ...] = DEFAULT_METHODS, invoice_ttl_s: float = 3 * 86400) -> None:
        self.methods = {method.id: method for method in methods}
        self.invoice_ttl = timedelta(seconds=invoice_ttl_s)
        self.invoices: dict[int, SimInvoice] = {}
        self._invoice_ids = itertools.count(7100001)
        self._transaction_numbers = itertools.count(1)

    def create(self, *, value_fils: int, currency: str, method: SimMethod, now: datetime, **fields: Any) -> SimInvoice:
        """Store a new pending invoice."""
        invoice_id = next(self._invoice_ids)
        key = f"01{invoice_id:011d}-{secrets.token_hex(4)}"
        invoice = SimInvoice(
            id=invoice_id,
            key=key,
            value_fils=value_fils,
            currency=currency,
            method=method,
            created_at=now,
            expires_at=now + self.invoice_ttl,
            **fields,
        )
        self.invoices[invoice_id] = invoice
        return invoice

    def by_key(self, key: str) -> SimInvoice | None:
        """The invoice whose payment-page key is ``key``."""
        return next((invoice for invoice in self.invoices.values() if invoice.key == key), None)

    def lookup(self, key: str, key_type: str) -> SimInvoice | None:
        """``GetPaymentStatus``'s lookup: by ``InvoiceId``, ``PaymentId`` or (latest) ``CustomerReference``."""
        kind = key_type.lower()
        if kind == "invoiceid":
            return self.invoices.get(int(key)) if key.isdigit() else None
        if kind == "paymentid":
            return next((i for i in self.invoices.values() if any(tx.payment_id == key for tx in i.transactions)), None)
        if kind == "customerreference":
            return next((i for i in reversed(self.invoices.values()) if i.customer_reference == key), None)
        return None

    def attempt(self, invoice: SimInvoice, outcome: PaymentOutcome, now: datetime) -> SimTransaction:
        """Add a payment attempt that succeeded (the invoice becomes ``Paid``) or was declined."""
        number = next(self._transaction_numbers)
        tx = SimTransaction(
            payment_id=f"0707{invoice.id:08d}{number:08d}",
            status="Succss" if outcome == "paid" else "Failed",
            method=invoice.method.name_en,
            created_at=now,
            number=number,
            error=None if outcome == "paid" else "Transaction canceled!",
            error_code="" if outcome == "paid" else "MF006",
        )
        invoice.transactions.append(tx)
        if outcome == "paid":
            invoice.status = "Paid"
        return tx


def kuwait_time(moment: datetime) -> str:
    """``2026-02-01T10:15:00.123``: Kuwait local time, milliseconds, no zone (``CreatedDate``)."""
    local = moment.astimezone(KUWAIT)
    return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond // 1000:03d}"


def utc_time(moment: datetime) -> str:
    """``2026-02-01T07:17:41.2000000Z``: UTC with seven fractional digits (webhook V2 times)."""
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z"


def status_data(invoice: SimInvoice) -> dict[str, Any]:
    """``GetPaymentStatus``'s ``Data`` for ``invoice``."""
    expiry = invoice.expires_at.astimezone(KUWAIT)
    return {
        "InvoiceId": invoice.id,
        "InvoiceStatus": invoice.status,
        "InvoiceReference": f"2026{invoice.id:06d}",
        "CustomerReference": invoice.customer_reference,
        "CreatedDate": kuwait_time(invoice.created_at),
        "ExpiryDate": f"{expiry:%B} {expiry.day}, {expiry.year}",
        "ExpiryTime": kuwait_time(invoice.expires_at).split("T")[1],
        "InvoiceValue": Kwd(invoice.value_fils),
        "Comments": None,
        "CustomerName": invoice.customer_name,
        "CustomerMobile": invoice.customer_mobile,
        "CustomerEmail": invoice.customer_email,
        "UserDefinedField": invoice.user_defined_field,
        "InvoiceDisplayValue": invoice.display_value,
        "DueDeposit": Kwd(invoice.value_fils),
        "DepositStatus": "Not Deposited",
        "InvoiceItems": [{"ItemName": invoice.item_name, "Quantity": 1, "UnitPrice": Kwd(invoice.value_fils)}],
        "Suppliers": [],
        "InvoiceTransactions": [_transaction_data(invoice, tx) for tx in invoice.transactions],
    }


def _transaction_data(invoice: SimInvoice, tx: SimTransaction) -> dict[str, Any]:
    value = fils_to_kwd_text(invoice.value_fils)
    return {
        "TransactionDate": kuwait_time(tx.created_at),
        "PaymentGateway": tx.method,
        "ReferenceId": f"6{tx.number:011d}",
        "TrackId": f"{tx.created_at.astimezone(KUWAIT):%d-%m-%Y}_{tx.number}",
        "TransactionId": f"6{tx.number:014d}",
        "PaymentId": tx.payment_id,
        "AuthorizationId": f"B{tx.number:05d}" if tx.status == "Succss" else "",
        "TransactionStatus": tx.status,
        "TransationValue": value,
        "CustomerServiceCharge": "0.000",
        "TotalServiceCharge": fils_to_kwd_text(invoice.method.service_charge_fils),
        "DueValue": value,
        "PaidCurrency": "KD",
        "PaidCurrencyValue": value,
        "VatAmount": "0.000",
        "IpAddress": "203.0.113.5",
        "Country": "Kuwait",
        "Currency": "KD",
        "Error": tx.error,
        "ErrorCode": tx.error_code,
        "CardNumber": None,
        "ECI": None,
        "Card": _empty_card(),
    }


def webhook_payload(invoice: SimInvoice, tx: SimTransaction, reference: str, now: datetime) -> dict[str, Any]:
    """A V2 ``PAYMENT_STATUS_CHANGED`` event for attempt ``tx``, with the invoice as it was after it."""
    paid = tx.status == "Succss"
    value = fils_to_kwd_text(invoice.value_fils)
    return {
        "Event": {
            "Code": 1,
            "Name": "PAYMENT_STATUS_CHANGED",
            "CountryIsoCode": "KWT",
            "CreationDate": utc_time(now),
            "Reference": reference,
        },
        "Data": {
            "Invoice": {
                "Id": str(invoice.id),
                "Status": "PAID" if paid else "PENDING",
                "Reference": f"2026{invoice.id:06d}",
                "CreationDate": utc_time(invoice.created_at),
                "ExpirationDate": utc_time(invoice.expires_at),
                "UserDefinedField": invoice.user_defined_field,
                "ExternalIdentifier": invoice.customer_reference,
                "MetaData": None,
            },
            "Transaction": {
                "Id": str(tx.number),
                "Status": "SUCCESS" if paid else "FAILED",
                "PaymentMethod": tx.method,
                "PaymentId": tx.payment_id,
                "ReferenceId": f"6{tx.number:011d}",
                "TrackId": f"{tx.created_at.astimezone(KUWAIT):%d-%m-%Y}_{tx.number}",
                "AuthorizationId": f"B{tx.number:05d}" if paid else "",
                "TransactionDate": utc_time(tx.created_at),
                "ECI": "",
                "IP": {"Address": "203.0.113.5", "Country": "Kuwait"},
                "Error": {"Code": tx.error_code, "Message": tx.error or ""},
                "Card": _empty_card(),
            },
            "Customer": {
                "Name": invoice.customer_name,
                "Mobile": invoice.customer_mobile,
                "Email": invoice.customer_email or "",
            },
            "Amount": {
                "BaseCurrency": invoice.currency,
                "ValueInBaseCurrency": value,
                "ServiceCharge": fils_to_kwd_text(invoice.method.service_charge_fils),
                "ServiceChargeVAT": "0.000",
                "ReceivableAmount": fils_to_kwd_text(max(invoice.value_fils - invoice.method.service_charge_fils, 0)),
                "DisplayCurrency": invoice.currency,
                "ValueInDisplayCurrency": value,
                "PayCurrency": invoice.currency,
                "ValueInPayCurrency": value,
            },
            "Suppliers": [],
        },
    }


def _empty_card() -> dict[str, str]:
    keys = ("NameOnCard", "Number", "Token", "PanHash", "ExpiryMonth", "ExpiryYear", "Brand", "Issuer")
    return {key: "" for key in (*keys, "IssuerCountry", "FundingMethod")}
