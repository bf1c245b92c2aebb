"""Webhooks: only signed, fresh payment events of the accepted version are believed; everything else is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from myfatoorah_helpers import EVENT_TIME, SECRET, V1_SAMPLE, signed_v1, signed_v2, v2_event
from resayil_myfatoorah.webhooks import WebhookPolicy, verify_webhook

from resayil_gateway.billing.payments import WebhookNotice, WebhookRejected

POLICY = WebhookPolicy(secret=SECRET, version="v2", max_age_s=600)


def test_signed_v2_payment_event_gives_the_notice():
    headers, body = signed_v2(v2_event())
    notice = verify_webhook(headers, body, POLICY, EVENT_TIME)
    assert notice == WebhookNotice(
        invoice_id="7100001",
        payment_id="07077100001000000001",
        state="paid",
        order_id="order-42",
        created_at=datetime(2026, 2, 1, 7, 17, 41, 200000, tzinfo=UTC),
        reference="WH-900001",
    )


@pytest.mark.parametrize(
    ("status", "state"), [("SUCCESS", "paid"), ("FAILED", "failed"), ("CANCELED", "failed"), ("AUTHORIZE", "pending")]
)
def test_transaction_status_maps_to_a_payment_state(status, state):
    headers, body = signed_v2(v2_event(Transaction__Status=status))
    assert verify_webhook(headers, body, POLICY, EVENT_TIME).state == state


def test_headers_are_matched_case_insensitively():
    headers, body = signed_v2(v2_event())
    lowered = {"myfatoorah-signature": headers["MyFatoorah-Signature"], "myfatoorah-webhook-version": "V2"}
    assert verify_webhook(lowered, body, POLICY, EVENT_TIME).invoice_id == "7100001"


def test_missing_version_header_is_read_from_the_body_shape():
    headers, body = signed_v2(v2_event())
    del headers["MyFatoorah-Webhook-Version"]
    assert verify_webhook(headers, body, POLICY, EVENT_TIME).state == "paid"


def test_unsigned_webhook_is_rejected():
    _, body = signed_v2(v2_event())
    with pytest.raises(WebhookRejected, match="unsigned"):
        verify_webhook({"MyFatoorah-Webhook-Version": "v2"}, body, POLICY, EVENT_TIME)


def test_webhook_signed_with_another_secret_is_rejected():
    headers, body = signed_v2(v2_event(), secret="not-the-secret")
    with pytest.raises(WebhookRejected, match="forged"):
        verify_webhook(headers, body, POLICY, EVENT_TIME)


def test_webhook_signed_with_the_api_token_or_over_the_raw_body_is_rejected():
    from resayil_myfatoorah.signature import sign

    _, body = signed_v2(v2_event())
    headers = {"MyFatoorah-Signature": sign(SECRET, body.decode()), "MyFatoorah-Webhook-Version": "v2"}
    with pytest.raises(WebhookRejected, match="forged"):
        verify_webhook(headers, body, POLICY, EVENT_TIME)


@pytest.mark.parametrize(
    "change",
    [
        {"Transaction__Status": "SUCCESS", "Invoice__Id": "7100999"},
        {"Transaction__PaymentId": "07077100001000000999"},
        {"Invoice__ExternalIdentifier": "someone-else"},
    ],
)
def test_tampered_signed_field_is_rejected(change):
    headers, _ = signed_v2(v2_event())
    tampered = orjson.dumps(v2_event(**change))
    with pytest.raises(WebhookRejected, match="forged"):
        verify_webhook(headers, tampered, POLICY, EVENT_TIME)


def test_failed_event_turned_into_success_is_rejected():
    headers, _ = signed_v2(v2_event(Transaction__Status="FAILED", Invoice__Status="PENDING"))
    tampered = orjson.dumps(v2_event(Transaction__Status="SUCCESS", Invoice__Status="PENDING"))
    with pytest.raises(WebhookRejected, match="forged"):
        verify_webhook(headers, tampered, POLICY, EVENT_TIME)


def test_stale_webhook_is_rejected():
    headers, body = signed_v2(v2_event())
    later = datetime(2026, 2, 1, 7, 27, 42, tzinfo=UTC)  # 10 min 0.8 s after the event
    with pytest.raises(WebhookRejected, match="stale"):
        verify_webhook(headers, body, POLICY, later)


def test_webhook_from_the_future_is_rejected():
    headers, body = signed_v2(v2_event(Event__CreationDate="2026-02-01T08:17:41Z"))
    with pytest.raises(WebhookRejected, match="future"):
        verify_webhook(headers, body, POLICY, EVENT_TIME)


def test_webhook_without_a_readable_time_is_rejected():
    headers, body = signed_v2(v2_event(Event__CreationDate="yesterday"))
    with pytest.raises(WebhookRejected, match="time"):
        verify_webhook(headers, body, POLICY, EVENT_TIME)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"hello": "world"}', b'{"Event": {"Code": 1}}'])
def test_malformed_body_is_rejected(body):
    with pytest.raises(WebhookRejected, match="malformed"):
        verify_webhook({"MyFatoorah-Signature": "abc="}, body, POLICY, EVENT_TIME)


def test_unknown_event_code_is_rejected():
    payload = v2_event(Event__Code=6, Event__Name="DISPUTE_STATUS_CHANGED")
    headers, _ = signed_v2({**payload, "Event": {**payload["Event"], "Code": 1}})
    with pytest.raises(WebhookRejected, match="unknown webhook event code 6"):
        verify_webhook(headers, orjson.dumps(payload), POLICY, EVENT_TIME)


def test_signed_refund_event_is_not_taken_for_a_payment():
    refund = {
        "Event": {"Code": 2, "Name": "REFUND_STATUS_CHANGED", "CreationDate": "2026-02-01T07:17:41Z"},
        "Data": {"Refund": {"Id": "1", "Status": "REFUNDED"}, "ReferencedInvoice": {"Id": "7100001"}},
    }
    headers, body = signed_v2(refund)
    with pytest.raises(WebhookRejected, match="not a payment event"):
        verify_webhook(headers, body, POLICY, EVENT_TIME)


def test_unknown_version_header_is_rejected():
    headers, body = signed_v2(v2_event())
    headers["MyFatoorah-Webhook-Version"] = "v9"
    with pytest.raises(WebhookRejected, match="unknown webhook version"):
        verify_webhook(headers, body, POLICY, EVENT_TIME)


def test_empty_webhook_secret_refuses_everything():
    headers, body = signed_v2(v2_event(), secret="")
    with pytest.raises(WebhookRejected, match="webhook_secret"):
        verify_webhook(headers, body, WebhookPolicy(secret=""), EVENT_TIME)


# V1 ------------------------------------------------------------------------------------------------------

V1_POLICY = WebhookPolicy(secret=SECRET, version="v1", max_age_s=600)
V1_TIME = datetime(2026, 2, 1, 7, 17, 2, tzinfo=UTC)  # DateTime 01022026101702 is Kuwait time (UTC+3)


def test_signed_v1_payment_event_gives_the_notice():
    headers, body = signed_v1(V1_SAMPLE)
    notice = verify_webhook(headers, body, V1_POLICY, V1_TIME)
    assert (notice.invoice_id, notice.payment_id, notice.state, notice.order_id) == (
        "7100001",
        "100600000000000001",
        "paid",
        "order-42",
    )
    assert notice.created_at == V1_TIME


def test_v1_is_refused_when_only_v2_is_accepted():
    headers, body = signed_v1(V1_SAMPLE)
    with pytest.raises(WebhookRejected, match="version v1 is not accepted"):
        verify_webhook(headers, body, POLICY, V1_TIME)


def test_v1_and_v2_are_both_accepted_with_any():
    policy = WebhookPolicy(secret=SECRET, version="any", max_age_s=600)
    assert verify_webhook(*signed_v1(V1_SAMPLE), policy, V1_TIME).state == "paid"
    assert verify_webhook(*signed_v2(v2_event()), policy, EVENT_TIME).state == "paid"


def test_tampered_v1_body_is_rejected():
    headers, _ = signed_v1(V1_SAMPLE)
    tampered = {**V1_SAMPLE, "Data": {**V1_SAMPLE["Data"], "InvoiceValueInBaseCurrency": "500"}}
    with pytest.raises(WebhookRejected, match="forged"):
        verify_webhook(headers, orjson.dumps(tampered), V1_POLICY, V1_TIME)


def test_stale_v1_webhook_is_rejected():
    headers, body = signed_v1(V1_SAMPLE)
    with pytest.raises(WebhookRejected, match="stale"):
        verify_webhook(headers, body, V1_POLICY, datetime(2026, 2, 1, 8, 0, tzinfo=UTC))
