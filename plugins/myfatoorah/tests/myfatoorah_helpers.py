"""Helpers shared by the MyFatoorah plugin's tests (a unique module name, so it never clashes with other suites)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
from resayil_myfatoorah.settings import MyFatoorahSettings
from resayil_myfatoorah.signature import canonical_v1, canonical_v2, sign

from resayil_gateway.billing.payments import Checkout

FAKE_URL = "https://mf.internal.test"
TOKEN = "tok-SECRET-1234567890"
SECRET = "test-webhook-secret-123"
# the moment of the doc's V2 sample event (Event.CreationDate 2026-02-01T07:17:41.2Z)
EVENT_TIME = datetime(2026, 2, 1, 7, 17, 41, 200000, tzinfo=UTC)


def settings(**values: Any) -> MyFatoorahSettings:
    """Settings for a provider against ``FAKE_URL`` with a token and a webhook secret."""
    base: dict[str, Any] = {"enabled": True, "base_url": FAKE_URL, "api_token": TOKEN, "webhook_secret": SECRET}
    return MyFatoorahSettings.model_validate({**base, **values})


def checkout(**fields: Any) -> Checkout:
    """A 5.000 KWD top-up checkout for order ``ord_1``."""
    values: dict[str, Any] = {
        "order_id": "ord_1",
        "amount_fils": 5000,
        "currency": "KWD",
        "description": "Credit top-up 5K",
        "language": "en",
        "callback_url": "https://gw.example.com/billing/callback",
        "error_url": "https://gw.example.com/billing/callback?failed=1",
        "customer_name": "Test User",
        "customer_email": "user@example.com",
        "customer_phone": "+96550000002",
    }
    return Checkout(**{**values, **fields})


def envelope(data: Any, message: str = "", **fields: Any) -> dict[str, Any]:
    """MyFatoorah's success envelope around ``data``."""
    return {"IsSuccess": True, "Message": message, "ValidationErrors": None, "Data": data, **fields}


def status_data(**fields: Any) -> dict[str, Any]:
    """``GetPaymentStatus`` Data for invoice 7100001 (5.000 KD, order ``ord_1``): paid after one failed try."""
    data: dict[str, Any] = {
        "InvoiceId": 7100001,
        "InvoiceStatus": "Paid",
        "InvoiceReference": "2026000999",
        "CustomerReference": "ord_1",
        "CreatedDate": "2026-02-01T10:15:00.123",
        "ExpiryDate": "February 4, 2026",
        "ExpiryTime": "10:15:00.123",
        "InvoiceValue": 5,
        "InvoiceDisplayValue": "5.000 KD",
        "InvoiceTransactions": [
            {
                "PaymentId": "100600000000000000",
                "TransactionStatus": "Failed",
                "TransationValue": "5.000",
                "Currency": "KD",
                "Error": "Transaction canceled!",
                "ErrorCode": "MF006",
            },
            {
                "PaymentId": "07077100001000000001",
                "TransactionStatus": "Succss",
                "TransationValue": "5.000",
                "Currency": "KD",
                "Error": None,
                "ErrorCode": "",
            },
        ],
    }
    data.update(fields)
    return data


V2_SAMPLE: dict[str, Any] = {
    "Event": {
        "Code": 1,
        "Name": "PAYMENT_STATUS_CHANGED",
        "CountryIsoCode": "KWT",
        "CreationDate": "2026-02-01T07:17:41.2000000Z",
        "Reference": "WH-900001",
    },
    "Data": {
        "Invoice": {
            "Id": "7100001",
            "Status": "PAID",
            "Reference": "2026000999",
            "CreationDate": "2026-02-01T07:15:00.123Z",
            "ExpirationDate": "2026-02-04T07:15:00Z",
            "UserDefinedField": '{"uid":42}',
            "ExternalIdentifier": "order-42",
            "MetaData": None,
        },
        "Transaction": {
            "Id": "90001",
            "Status": "SUCCESS",
            "PaymentMethod": "KNET",
            "PaymentId": "07077100001000000001",
            "ReferenceId": "600000000001",
            "TrackId": "01-02-2026_1",
            "AuthorizationId": "B00001",
            "TransactionDate": "2026-02-01T07:17:40.1000000Z",
            "ECI": "",
        },
        "Customer": {"Name": "Test User", "Mobile": "+965XXXXXXXX", "Email": ""},
        "Amount": {"BaseCurrency": "KWD", "ValueInBaseCurrency": "5", "ServiceCharge": "0.125"},
        "Suppliers": [],
    },
}

V1_SAMPLE: dict[str, Any] = {
    "EventType": 1,
    "Event": "TransactionsStatusChanged",
    "DateTime": "01022026101702",
    "CountryIsoCode": "KWT",
    "Data": {
        "InvoiceId": 7100001,
        "InvoiceReference": "2026000999",
        "CreatedDate": "01022026101500",
        "CustomerReference": "order-42",
        "CustomerName": "Test User",
        "CustomerMobile": "965XXXXXXXX",
        "CustomerEmail": None,
        "TransactionStatus": "SUCCESS",
        "PaymentMethod": "KNET",
        "UserDefinedField": None,
        "ReferenceId": "600000000001",
        "TrackId": "01-02-2026_1",
        "PaymentId": "100600000000000001",
        "AuthorizationId": "B00001",
        "InvoiceValueInBaseCurrency": "5",
        "BaseCurrency": "KWD",
        "InvoiceValueInDisplayCurreny": "5",
        "DisplayCurrency": "KWD",
        "InvoiceValueInPayCurrency": "5",
        "PayCurrency": "KWD",
    },
}


def v2_event(**changes: Any) -> dict[str, Any]:
    """A copy of the doc's V2 sample with ``Event``/``Invoice``/``Transaction`` fields changed (``Invoice__Id=``)."""
    payload = copy.deepcopy(V2_SAMPLE)
    for name, value in changes.items():
        part, key = name.split("__")
        (payload["Event"] if part == "Event" else payload["Data"][part])[key] = value
    return payload


def signed_v2(payload: dict[str, Any], secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``payload`` as MyFatoorah sends a V2 webhook."""
    signature = sign(secret, canonical_v2(int(payload["Event"]["Code"]), payload["Data"]))
    headers = {"MyFatoorah-Signature": signature, "MyFatoorah-Webhook-Version": "v2"}
    return headers, orjson.dumps(payload)


def signed_v1(payload: dict[str, Any], secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    """Headers and body of ``payload`` as MyFatoorah sends a V1 webhook."""
    signature = sign(secret, canonical_v1(payload["Data"], int(payload["EventType"])))
    return {"MyFatoorah-Signature": signature, "MyFatoorah-Webhook-Version": "v1"}, orjson.dumps(payload)
