"""Webhook signatures against the documented canonical strings and worked examples (wire-formats §1.9)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from myfatoorah_helpers import SECRET, V1_SAMPLE, V2_SAMPLE
from resayil_myfatoorah.signature import canonical_v1, canonical_v2, php_string, sign, signature_matches

V1_CANONICAL = (
    "AuthorizationId=B00001,BaseCurrency=KWD,CreatedDate=01022026101500,CustomerEmail=,CustomerMobile=965XXXXXXXX,"
    "CustomerName=Test User,CustomerReference=order-42,DisplayCurrency=KWD,InvoiceId=7100001,"
    "InvoiceReference=2026000999,InvoiceValueInBaseCurrency=5,InvoiceValueInDisplayCurreny=5,"
    "InvoiceValueInPayCurrency=5,PayCurrency=KWD,PaymentId=100600000000000001,PaymentMethod=KNET,"
    "ReferenceId=600000000001,TrackId=01-02-2026_1,TransactionStatus=SUCCESS,UserDefinedField="
)
V2_CANONICAL = (
    "Invoice.Id=7100001,Invoice.Status=PAID,Transaction.Status=SUCCESS,"
    "Transaction.PaymentId=07077100001000000001,Invoice.ExternalIdentifier=order-42"
)


def test_v1_canonical_string_is_the_documented_one():
    assert canonical_v1(V1_SAMPLE["Data"]) == V1_CANONICAL


def test_v1_signature_matches_the_documented_worked_example():
    assert sign(SECRET, V1_CANONICAL) == "PERSaC/8K3Zf6pRcajL4jWmjmSLHwMf/c/aOrHtaWbg="


def test_v2_canonical_string_uses_the_fixed_field_order():
    assert canonical_v2(1, V2_SAMPLE["Data"]) == V2_CANONICAL


def test_v2_signatures_match_the_documented_worked_examples():
    assert sign(SECRET, V2_CANONICAL) == "l/Pw31ZSXbZiWoHxuA9t1litOADz0moPPuWwBHQRUcs="
    failed = {
        "Invoice": {"Id": "7100002", "Status": "PENDING", "ExternalIdentifier": None},
        "Transaction": {"Status": "FAILED", "PaymentId": "07077100002000000002"},
    }
    assert sign(SECRET, canonical_v2(1, failed)) == "2+Ymi1XuJp9GxhJMvz/DaKeJDzmMKU6oZXdzRlths9s="


def test_v1_refund_events_leave_gateway_reference_out_of_the_signature():
    data = {"RefundId": 1, "GatewayReference": {"x": 1}, "amount": "5"}
    assert canonical_v1(data, event_type=2) == "amount=5,RefundId=1"


def test_unknown_v2_codes_have_no_canonical_string():
    with pytest.raises(KeyError):
        canonical_v2(6, {})


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (True, "1"), (False, ""), (5, "5"), (5.0, "5"), (Decimal("5.50"), "5.5"), ("x", "x")],
)
def test_values_are_written_as_php_writes_decoded_json(value, text):
    assert php_string(value) == text


def test_signature_comparison_accepts_only_the_exact_signature():
    good = sign(SECRET, V2_CANONICAL)
    assert signature_matches(SECRET, V2_CANONICAL, good)
    assert not signature_matches(SECRET, V2_CANONICAL, good[:-2] + "A=")
    assert not signature_matches("another-secret", V2_CANONICAL, good)
    assert not signature_matches(SECRET, V2_CANONICAL, "")
