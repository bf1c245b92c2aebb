"""Verify a MyFatoorah webhook (V2 or V1) and read which payment it is about.

A webhook is accepted only when it carries a ``MyFatoorah-Signature`` that matches the canonical string under
the portal's Webhook Secret Key, is a payment-status event of an accepted version, and is younger than the
maximum age. Anything else raises :class:`~resayil_gateway.billing.payments.WebhookRejected` with a reason
safe to log; the core answers 401 and changes nothing. The body is never trusted beyond telling the core
which invoice to re-check with ``GetPaymentStatus``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from resayil_gateway.billing.payments import PaymentState, WebhookNotice, WebhookRejected

from .money import decode_json
from .signature import V2_SIGNED_FIELDS, canonical_v1, canonical_v2, signature_matches

SIGNATURE_HEADER = "MyFatoorah-Signature"
VERSION_HEADER = "MyFatoorah-Webhook-Version"
PAYMENT_EVENT = 1  # V2 PAYMENT_STATUS_CHANGED, V1 TransactionsStatusChanged
V1_EVENT_TYPES = range(1, 8)
V1_DATE_FORMAT = "%d%m%Y%H%M%S"
VENDOR_ZONE = ZoneInfo("Asia/Kuwait")
WEBHOOK_STATES: dict[str, PaymentState] = {
    "SUCCESS": "paid",
    "FAILED": "failed",
    "CANCELED": "failed",
    "CANCELLED": "failed",
}


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """What a webhook must satisfy: the secret, the accepted version and the maximum age."""

    secret: str
    version: Literal["v1", "v2", "any"] = "v2"
    max_age_s: float = 3600.0
    zone: ZoneInfo = VENDOR_ZONE  # V1 ``DateTime`` has no zone: it is the vendor's local time


def verify_webhook(headers: Mapping[str, str], body: bytes, policy: WebhookPolicy, now: datetime) -> WebhookNotice:
    """The verified notice in ``body``; :class:`WebhookRejected` when it is unsigned, forged, stale or malformed."""
    if not policy.secret:
        raise WebhookRejected("myfatoorah.webhook_secret is not set: every webhook is refused")
    signature = _header(headers, SIGNATURE_HEADER)
    if not signature:
        raise WebhookRejected(f"unsigned webhook: no {SIGNATURE_HEADER} header")
    try:
        payload = decode_json(body)
    except ValueError:
        raise WebhookRejected("malformed webhook: the body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookRejected("malformed webhook: the body is not a JSON object")
    version = _version(headers, payload)
    if policy.version != "any" and version != policy.version:
        accepted = f"myfatoorah.webhook_version = {policy.version}"
        raise WebhookRejected(f"webhook version {version} is not accepted ({accepted})")
    if version == "v2":
        notice = _v2(payload, signature, policy.secret)
    else:
        notice = _v1(payload, signature, policy.secret, policy.zone)
    _check_age(notice.created_at, now, policy.max_age_s)
    return notice


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((item for key, item in headers.items() if key.lower() == wanted), None)
    return value.strip() if isinstance(value, str) else ""


def _version(headers: Mapping[str, str], payload: Mapping[str, Any]) -> str:
    """The version from the header (case-insensitive), else from the body's shape; the two must agree."""
    shape = "v2" if isinstance(payload.get("Event"), dict) else "v1" if _integer(payload.get("EventType")) else None
    declared = _header(headers, VERSION_HEADER).lower()
    if declared and declared not in ("v1", "v2"):
        raise WebhookRejected(f"unknown webhook version {declared[:10]!r}")
    if shape is None or (declared and declared != shape):
        raise WebhookRejected("malformed webhook: the body is neither a V1 nor a V2 event")
    return shape


def _v2(payload: Mapping[str, Any], signature: str, secret: str) -> WebhookNotice:
    event = payload["Event"]
    data = payload.get("Data")
    code = _integer(event.get("Code"))
    if not isinstance(data, dict) or code is None:
        raise WebhookRejected("malformed webhook: V2 event without Event.Code or Data")
    if code not in V2_SIGNED_FIELDS:
        raise WebhookRejected(f"unknown webhook event code {code}")
    if not signature_matches(secret, canonical_v2(code, data), signature):
        raise WebhookRejected(f"forged webhook: {SIGNATURE_HEADER} does not match")
    if code != PAYMENT_EVENT:
        raise WebhookRejected(f"not a payment event: V2 code {code} ({_text(event.get('Name'))[:40]})")
    invoice = _object(data.get("Invoice"))
    transaction = _object(data.get("Transaction"))
    invoice_id = _text(invoice.get("Id"))
    if not invoice_id:
        raise WebhookRejected("malformed webhook: no Data.Invoice.Id")
    return WebhookNotice(
        invoice_id=invoice_id,
        payment_id=_text(transaction.get("PaymentId")) or None,
        state=WEBHOOK_STATES.get(_text(transaction.get("Status")).upper(), "pending"),
        order_id=_text(invoice.get("ExternalIdentifier")) or None,
        created_at=_iso_time(event.get("CreationDate")),
        reference=_text(event.get("Reference")) or None,
    )


def _v1(payload: Mapping[str, Any], signature: str, secret: str, zone: ZoneInfo) -> WebhookNotice:
    event_type = _integer(payload.get("EventType"))
    data = payload.get("Data")
    if not isinstance(data, dict) or event_type is None:
        raise WebhookRejected("malformed webhook: V1 event without EventType or Data")
    if event_type not in V1_EVENT_TYPES:
        raise WebhookRejected(f"unknown webhook event type {event_type}")
    if not signature_matches(secret, canonical_v1(data, event_type), signature):
        raise WebhookRejected(f"forged webhook: {SIGNATURE_HEADER} does not match")
    if event_type != PAYMENT_EVENT:
        raise WebhookRejected(f"not a payment event: V1 EventType {event_type}")
    invoice_id = _text(data.get("InvoiceId"))
    if not invoice_id:
        raise WebhookRejected("malformed webhook: no Data.InvoiceId")
    try:
        created = datetime.strptime(_text(payload.get("DateTime")), V1_DATE_FORMAT).replace(tzinfo=zone)
    except ValueError:
        created = None
    return WebhookNotice(
        invoice_id=invoice_id,
        payment_id=_text(data.get("PaymentId")) or None,
        state=WEBHOOK_STATES.get(_text(data.get("TransactionStatus")).upper(), "pending"),
        order_id=_text(data.get("CustomerReference")) or None,
        created_at=created,
        reference=None,
    )


def _check_age(created: datetime | None, now: datetime, max_age_s: float) -> None:
    if created is None:
        raise WebhookRejected("malformed webhook: no readable event time")
    age = (now - created).total_seconds()
    if age > max_age_s:
        raise WebhookRejected(f"stale webhook: {age:.0f} s old (myfatoorah.webhook_max_age_s = {max_age_s:g})")
    if -age > max_age_s:
        raise WebhookRejected(f"webhook dated {-age:.0f} s in the future")


def _iso_time(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(_text(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""
