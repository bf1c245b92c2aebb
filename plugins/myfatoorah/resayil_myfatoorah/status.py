"""``GetPaymentStatus`` → :class:`~resayil_gateway.billing.payments.PaymentStatus` (MF-lib's decision model).

1. ``InvoiceStatus`` is ``Paid`` (or ``DuplicatePayment``) and a transaction is ``Succss`` (sic) → ``paid``.
2. Else, asked by ``PaymentId``: that transaction ``Failed`` or ``Canceled`` → ``failed``.
3. Else the invoice is ``Canceled``, or its ``ExpiryDate`` + ``ExpiryTime`` (vendor time zone) has passed →
   ``failed``: it can no longer be paid.
4. Else ``pending``: every retry on the payment page adds a transaction, and any of them may still succeed.

The amount comes from ``InvoiceDisplayValue`` (``"5.000 KD"``, amount and currency together), else from
``InvoiceValue`` in the account's base currency; either way as exact integer fils.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from resayil_gateway.billing.payments import PaymentError, PaymentState, PaymentStatus

from .money import kwd_to_fils, parse_display_value, plain_json

PAID_INVOICE = {"paid", "duplicatepayment"}
SUCCEEDED = {"succss", "success"}
FAILED_ATTEMPT = {"failed", "canceled", "cancelled"}
_CLOCK_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?")


def payment_status_from(
    data: Mapping[str, Any],
    *,
    payment_id: str | None,
    now: datetime,
    zone: ZoneInfo,
    base_currency: str = "KWD",
) -> PaymentStatus:
    """The status of the invoice in ``data`` (``GetPaymentStatus``'s ``Data``), as seen at ``now``."""
    invoice_id = data.get("InvoiceId")
    if invoice_id in (None, ""):
        raise PaymentError("MyFatoorah GetPaymentStatus: the reply has no InvoiceId", transient=False)
    amount_fils, currency = _amount(data, base_currency)
    transactions = [tx for tx in data.get("InvoiceTransactions") or () if isinstance(tx, dict)]
    invoice_status = str(data.get("InvoiceStatus") or "")
    state, detail, chosen = _decide(invoice_status, transactions, payment_id, data, now, zone)
    reference = data.get("CustomerReference")
    return PaymentStatus(
        state=state,
        invoice_id=str(invoice_id),
        order_id=str(reference) if reference not in (None, "") else None,
        amount_fils=amount_fils,
        currency=currency,
        payment_id=chosen,
        detail=detail,
        raw=plain_json(dict(data)),
    )


def _decide(
    invoice_status: str,
    transactions: list[dict[str, Any]],
    payment_id: str | None,
    data: Mapping[str, Any],
    now: datetime,
    zone: ZoneInfo,
) -> tuple[PaymentState, str, str | None]:
    succeeded = next((tx for tx in transactions if _lower(tx.get("TransactionStatus")) in SUCCEEDED), None)
    if invoice_status.lower() in PAID_INVOICE and succeeded is not None:
        return "paid", invoice_status, _text(succeeded.get("PaymentId")) or payment_id
    attempt = _attempt(transactions, payment_id)
    chosen = payment_id or (_text(attempt.get("PaymentId")) if attempt else None) or None
    if payment_id and attempt and _lower(attempt.get("TransactionStatus")) in FAILED_ATTEMPT:
        reason = _text(attempt.get("Error")) or _text(attempt.get("ErrorCode")) or "the payment attempt failed"
        return "failed", reason, chosen
    if invoice_status.lower() == "canceled":
        return "failed", "the invoice was canceled", chosen
    expiry = _expiry(data, zone)
    if expiry is not None and expiry <= now:
        return "failed", "the invoice expired", chosen
    return "pending", invoice_status or "Pending", chosen


def _attempt(transactions: list[dict[str, Any]], payment_id: str | None) -> dict[str, Any] | None:
    if payment_id:
        return next((tx for tx in transactions if _text(tx.get("PaymentId")) == payment_id), None)
    return transactions[-1] if transactions else None


def _amount(data: Mapping[str, Any], base_currency: str) -> tuple[int, str]:
    shown = parse_display_value(_text(data.get("InvoiceDisplayValue")))
    if shown is not None:
        return shown
    value = data.get("InvoiceValue")
    try:
        if not isinstance(value, Decimal | int | str) or isinstance(value, bool):
            raise ValueError("missing")
        return kwd_to_fils(value), base_currency
    except ValueError:
        raise PaymentError(
            "MyFatoorah GetPaymentStatus: the reply has no usable InvoiceValue or InvoiceDisplayValue",
            transient=False,
        ) from None


def _expiry(data: Mapping[str, Any], zone: ZoneInfo) -> datetime | None:
    """``ExpiryDate`` ("February 4, 2026") + ``ExpiryTime`` ("10:15:00.123") in the vendor zone; None if absent."""
    try:
        day = datetime.strptime(_text(data.get("ExpiryDate")), "%B %d, %Y").date()
    except ValueError:
        return None
    clock = _CLOCK_TIME.match(_text(data.get("ExpiryTime")))
    try:
        at = time(int(clock[1]), int(clock[2]), int(clock[3] or 0)) if clock else time(23, 59, 59)
    except ValueError:
        at = time(23, 59, 59)
    return datetime.combine(day, at, tzinfo=zone)


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def _lower(value: Any) -> str:
    return _text(value).lower()
