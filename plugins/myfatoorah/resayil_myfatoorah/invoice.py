"""The ``ExecutePayment`` request for a :class:`~resayil_gateway.billing.payments.Checkout` (a pure function)."""

from __future__ import annotations

import json
import re
from typing import Any

from resayil_gateway.billing.payments import Checkout, PaymentError

from .money import Kwd

# Currencies whose minor unit is 1/1000 (fils/baisa), so ``amount_fils`` maps to them without rounding.
THREE_DECIMAL_CURRENCIES = frozenset({"KWD", "BHD", "OMR", "JOD"})
# Country calling codes of MyFatoorah's markets, longest first; a number elsewhere is sent without a mobile.
COUNTRY_CODES = ("+965", "+966", "+971", "+973", "+974", "+968", "+962", "+20")
MAX_URL = 254
MAX_MOBILE = 11
MAX_ITEM_NAME = 100
_NOT_NAME = re.compile(r"[^\w\s]|_", re.UNICODE)


def execute_payment_body(checkout: Checkout, method_id: int) -> dict[str, Any]:
    """The JSON body that creates the invoice for ``checkout`` and pays it with method ``method_id``."""
    currency = checkout.currency.upper()
    if currency not in THREE_DECIMAL_CURRENCIES:
        raise PaymentError(f"MyFatoorah: currency {checkout.currency!r} is not supported (KWD, BHD, OMR, JOD)")
    if checkout.amount_fils <= 0:
        raise PaymentError("MyFatoorah: the amount must be more than 0")
    for name, url in (("callback_url", checkout.callback_url), ("error_url", checkout.error_url)):
        if not url.startswith(("http://", "https://")) or len(url) > MAX_URL:
            raise PaymentError(f"MyFatoorah: {name} must be an absolute http(s) URL of at most {MAX_URL} characters")
    amount = Kwd(checkout.amount_fils)
    body: dict[str, Any] = {
        "PaymentMethodId": method_id,
        "InvoiceValue": amount,
        "DisplayCurrencyIso": currency,
        "CallBackUrl": checkout.callback_url,
        "ErrorUrl": checkout.error_url,
        "Language": checkout.language.upper(),
        "CustomerReference": checkout.order_id,
        "UserDefinedField": json.dumps({"order_id": checkout.order_id}, separators=(",", ":")),
        "CustomerEmail": checkout.customer_email.strip() or None,
        "InvoiceItems": [
            {
                "ItemName": (checkout.description.strip() or f"Order {checkout.order_id}")[:MAX_ITEM_NAME],
                "Quantity": 1,
                "UnitPrice": amount,
            }
        ],
    }
    name = customer_name(checkout.customer_name)
    if name:
        body["CustomerName"] = name
    mobile = split_mobile(checkout.customer_phone)
    if mobile is not None:
        body["MobileCountryCode"], body["CustomerMobile"] = mobile
    return body


def customer_name(name: str) -> str:
    """The name with only letters, digits and spaces (what MyFatoorah keeps), spaces collapsed."""
    return " ".join(_NOT_NAME.sub("", name).split())


def split_mobile(phone: str) -> tuple[str, str] | None:
    """``"+96550000002"`` → ``("+965", "50000002")``; None when the number is not one MyFatoorah can take."""
    phone = phone.strip().replace(" ", "")
    code = next((code for code in COUNTRY_CODES if phone.startswith(code)), None)
    if code is None:
        return None
    local = phone[len(code) :]
    if not local.isdigit() or not local.isascii() or not 3 <= len(local) <= MAX_MOBILE:
        return None
    return code, local
