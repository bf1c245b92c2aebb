"""MyFatoorah webhook signatures: the canonical strings of V1 and V2, and their HMAC-SHA256 in base64.

The header ``MyFatoorah-Signature`` is ``base64(HMAC-SHA256(webhook secret, canonical string))``. V1 signs every
key of ``Data``, sorted case-insensitively, as ``Key=Value`` joined by ``,``; V2 signs a fixed list of dotted
paths per event code, in that order. Values are written as PHP writes decoded JSON (MyFatoorah's reference
library is PHP): ``null`` and ``false`` → ``""``, ``true`` → ``"1"``, ``5.0`` → ``"5"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

V2_SIGNED_FIELDS: dict[int, tuple[str, ...]] = {
    1: ("Invoice.Id", "Invoice.Status", "Transaction.Status", "Transaction.PaymentId", "Invoice.ExternalIdentifier"),
    2: ("Refund.Id", "Refund.Status", "Amount.ValueInBaseCurrency", "ReferencedInvoice.Id"),
    3: ("Deposit.Reference", "Deposit.ValueInBaseCurrency", "Deposit.NumberOfTransactions"),
    4: ("Supplier.Code", "KycDecision.Status"),
    5: ("Recurring.Id", "Recurring.Status", "Recurring.InitialInvoiceId"),
}
V1_UNSIGNED_KEYS: dict[int, tuple[str, ...]] = {2: ("GatewayReference",), 4: ("KycFeedback",)}


def php_string(value: Any) -> str:
    """``value`` (decoded JSON) as PHP's string conversion writes it."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "") else text
    if isinstance(value, dict | list):
        return "Array"
    return str(value)


def canonical_v1(data: Mapping[str, Any], event_type: int = 1) -> str:
    """The V1 string: every key of ``Data`` (less the unsigned ones), sorted case-insensitively, ``k=v`` by ``,``."""
    skipped = V1_UNSIGNED_KEYS.get(event_type, ())
    keys = sorted((key for key in data if key not in skipped), key=str.lower)
    return ",".join(f"{key}={php_string(data[key])}" for key in keys)


def canonical_v2(code: int, data: Mapping[str, Any]) -> str:
    """The V2 string for event ``code``: its fixed dotted paths, in order. ``KeyError`` for a code without one."""
    return ",".join(f"{path}={php_string(_dig(data, path))}" for path in V2_SIGNED_FIELDS[code])


def sign(secret: str, canonical: str) -> str:
    """``base64(HMAC-SHA256(secret, canonical))`` with padding: the ``MyFatoorah-Signature`` value."""
    digest = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_matches(secret: str, canonical: str, signature: str) -> bool:
    """Whether ``signature`` is the signature of ``canonical``, compared in constant time."""
    return hmac.compare_digest(sign(secret, canonical).encode(), signature.strip().encode())


def _dig(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node
