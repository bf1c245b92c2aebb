"""MyFatoorahProvider against mocked HTTP (aioresponses): requests sent, answers read, every error shape mapped."""

from __future__ import annotations

import socket

import orjson
import pytest
from aioresponses import aioresponses
from myfatoorah_helpers import FAKE_URL, TOKEN, checkout, envelope, status_data
from resayil_myfatoorah.provider import MyFatoorahProvider
from yarl import URL

from resayil_gateway.billing.payments import CheckoutStarted, PaymentError, PaymentProvider

INITIATE = f"{FAKE_URL}/v2/InitiatePayment"
EXECUTE = f"{FAKE_URL}/v2/ExecutePayment"
STATUS = f"{FAKE_URL}/v2/GetPaymentStatus"
METHODS = envelope(
    {
        "PaymentMethods": [
            {"PaymentMethodId": 20, "PaymentMethodEn": "VISA/MASTER Direct", "IsDirectPayment": True},
            {"PaymentMethodId": 1, "PaymentMethodEn": "KNET", "PaymentMethodAr": "كي نت", "PaymentMethodCode": "kn"},
            {"PaymentMethodId": 2, "PaymentMethodEn": "VISA/MASTER", "PaymentMethodCode": "vm"},
        ]
    },
    "Initiated Successfully!",
)
CREATED = envelope(
    {
        "InvoiceId": 7100001,
        "IsDirectPayment": False,
        "CustomerReference": "ord_1",
        "PaymentURL": "https://demo.MyFatoorah.com/En/KWT/PayInvoice/Checkout?invoiceKey=0107710000141-abcd1234",
        "UserDefinedField": '{"order_id":"ord_1"}',
        "RecurringId": "",
    },
    "Invoice Created Successfully!",
)


def sent(mocked: aioresponses, url: str, index: int = 0) -> tuple[bytes, dict]:
    call = mocked.requests[("POST", URL(url))][index]
    return call.kwargs["data"], call.kwargs.get("headers") or {}


def test_provider_implements_the_protocol():
    from myfatoorah_helpers import settings

    provider = MyFatoorahProvider(settings())
    assert isinstance(provider, PaymentProvider)
    assert provider.name == "myfatoorah"


# ExecutePayment ------------------------------------------------------------------------------------------


async def test_create_payment_executes_the_invoice_with_exact_kwd_and_our_reference(provider):
    with aioresponses() as mocked:
        mocked.post(INITIATE, payload=METHODS)
        mocked.post(EXECUTE, payload=CREATED)
        started = await provider.create_payment(checkout(amount_fils=12345))
        raw, _ = sent(mocked, EXECUTE)
    assert started == CheckoutStarted(payment_url=CREATED["Data"]["PaymentURL"], invoice_id="7100001")
    assert b'"InvoiceValue":12.345,' in raw
    assert b'"UnitPrice":12.345}' in raw
    assert orjson.loads(raw) | {"InvoiceValue": 0, "InvoiceItems": None} == {
        "PaymentMethodId": 1,
        "InvoiceValue": 0,
        "DisplayCurrencyIso": "KWD",
        "CallBackUrl": "https://gw.example.com/billing/callback",
        "ErrorUrl": "https://gw.example.com/billing/callback?failed=1",
        "Language": "EN",
        "CustomerReference": "ord_1",
        "UserDefinedField": '{"order_id":"ord_1"}',
        "CustomerEmail": "user@example.com",
        "InvoiceItems": None,
        "CustomerName": "Test User",
        "MobileCountryCode": "+965",
        "CustomerMobile": "50000002",
    }
    assert orjson.loads(raw)["InvoiceItems"] == [{"ItemName": "Credit top-up 5K", "Quantity": 1, "UnitPrice": 12.345}]


async def test_initiate_payment_asks_for_the_amount_in_kwd_and_the_first_hosted_method_is_used(provider):
    with aioresponses() as mocked:
        mocked.post(INITIATE, payload=METHODS)
        mocked.post(EXECUTE, payload=CREATED)
        await provider.create_payment(checkout())
        initiate, _ = sent(mocked, INITIATE)
        execute, _ = sent(mocked, EXECUTE)
    assert initiate == b'{"InvoiceAmount":5.000,"CurrencyIso":"KWD"}'
    assert orjson.loads(execute)["PaymentMethodId"] == 1  # the direct method 20 is skipped


async def test_requests_carry_the_bearer_token(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(status_data()))
        await provider.payment_status(invoice_id="7100001")
        call = mocked.requests[("POST", URL(STATUS))][0]
    assert provider.client._session is not None
    assert provider.client._session.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.kwargs["headers"]["Content-Type"] == "application/json"


async def test_payment_methods_are_cached_per_amount_for_the_configured_time(provider_for, clock):
    provider = await provider_for(methods_cache_s=60)
    with aioresponses() as mocked:
        mocked.post(INITIATE, payload=METHODS, repeat=True)
        first = await provider.payment_methods(5000)
        await provider.payment_methods(5000)
        await provider.payment_methods(12000)
        assert len(mocked.requests[("POST", URL(INITIATE))]) == 2
        clock.advance(61)
        await provider.payment_methods(5000)
        assert len(mocked.requests[("POST", URL(INITIATE))]) == 3
    assert [(m.id, m.name_en, m.is_direct) for m in first][:2] == [(20, "VISA/MASTER Direct", True), (1, "KNET", False)]


async def test_configured_payment_method_skips_initiate_payment(provider_for):
    provider = await provider_for(payment_method_id=2)
    with aioresponses() as mocked:
        mocked.post(EXECUTE, payload=CREATED)
        await provider.create_payment(checkout(language="ar"))
        raw, _ = sent(mocked, EXECUTE)
    body = orjson.loads(raw)
    assert (body["PaymentMethodId"], body["Language"]) == (2, "AR")


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("+96550000002", ("+965", "50000002")),
        ("+966501234567", ("+966", "501234567")),
        ("+4915112345678", None),
        ("50000002", None),
        ("", None),
    ],
)
async def test_mobile_is_split_into_country_code_and_local_number(provider_for, phone, expected):
    provider = await provider_for(payment_method_id=1)
    with aioresponses() as mocked:
        mocked.post(EXECUTE, payload=CREATED)
        await provider.create_payment(checkout(customer_phone=phone, customer_email="", customer_name="A-b_c! د"))
        body = orjson.loads(sent(mocked, EXECUTE)[0])
    assert (body.get("MobileCountryCode"), body.get("CustomerMobile")) == (expected or (None, None))
    assert body["CustomerEmail"] is None
    assert body["CustomerName"] == "Abc د"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"amount_fils": 0}, "more than 0"),
        ({"currency": "SAR"}, "not supported"),
        ({"callback_url": "https://gw.example.com/" + "x" * 250}, "254"),
        ({"error_url": "/billing/callback"}, "absolute"),
    ],
)
async def test_a_checkout_myfatoorah_would_refuse_is_refused_before_any_call(provider, fields, message):
    with aioresponses() as mocked:
        with pytest.raises(PaymentError, match=message) as raised:
            await provider.create_payment(checkout(**fields))
        assert not mocked.requests
    assert raised.value.transient is False


async def test_reply_without_payment_url_is_an_error(provider_for):
    provider = await provider_for(payment_method_id=1)
    with aioresponses() as mocked:
        mocked.post(EXECUTE, payload=envelope({"InvoiceId": 7100001}))
        with pytest.raises(PaymentError, match="PaymentURL"):
            await provider.create_payment(checkout())


async def test_account_without_hosted_methods_is_an_error(provider):
    only_direct = envelope({"PaymentMethods": [{"PaymentMethodId": 20, "IsDirectPayment": True}]})
    with aioresponses() as mocked:
        mocked.post(INITIATE, payload=only_direct)
        with pytest.raises(PaymentError, match="no hosted payment method"):
            await provider.create_payment(checkout())


# GetPaymentStatus ----------------------------------------------------------------------------------------


async def test_status_by_payment_id_sends_key_type_payment_id_and_reads_a_paid_invoice(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(status_data()))
        status = await provider.payment_status(payment_id="07077100001000000001")
        raw, _ = sent(mocked, STATUS)
    assert orjson.loads(raw) == {"Key": "07077100001000000001", "KeyType": "PaymentId"}
    assert (status.state, status.invoice_id, status.order_id) == ("paid", "7100001", "ord_1")
    assert (status.amount_fils, status.currency, status.payment_id) == (5000, "KWD", "07077100001000000001")
    orjson.dumps(dict(status.raw))  # raw is plain JSON, safe to store


async def test_status_by_invoice_id_sends_key_type_invoice_id(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(status_data()))
        status = await provider.payment_status(invoice_id="7100001")
        assert orjson.loads(sent(mocked, STATUS)[0]) == {"Key": "7100001", "KeyType": "InvoiceId"}
    assert status.state == "paid"


async def test_paid_invoice_is_paid_even_when_asked_about_its_failed_attempt(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(status_data()))
        status = await provider.payment_status(payment_id="100600000000000000")
    assert (status.state, status.payment_id) == ("paid", "07077100001000000001")


async def test_failed_attempt_on_a_pending_invoice_is_failed_by_payment_id_but_pending_by_invoice_id(provider):
    pending = status_data(InvoiceStatus="Pending")
    pending["InvoiceTransactions"] = pending["InvoiceTransactions"][:1]
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(pending), repeat=True)
        by_payment = await provider.payment_status(payment_id="100600000000000000")
        by_invoice = await provider.payment_status(invoice_id="7100001")
    assert (by_payment.state, by_payment.detail) == ("failed", "Transaction canceled!")
    assert by_invoice.state == "pending"  # the customer may still retry on the payment page


async def test_paid_status_without_a_successful_transaction_is_not_paid(provider):
    data = status_data()
    data["InvoiceTransactions"] = [{**tx, "TransactionStatus": "InProgress"} for tx in data["InvoiceTransactions"]]
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(data))
        assert (await provider.payment_status(invoice_id="7100001")).state == "pending"


async def test_duplicate_payment_status_counts_as_paid(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(status_data(InvoiceStatus="DuplicatePayment")))
        assert (await provider.payment_status(invoice_id="7100001")).state == "paid"


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"InvoiceStatus": "Pending", "InvoiceTransactions": []}, "pending"),
        ({"InvoiceStatus": "Canceled", "InvoiceTransactions": []}, "failed"),
        ({"InvoiceStatus": "Pending", "InvoiceTransactions": [], "ExpiryDate": "January 31, 2026"}, "failed"),
        ({"InvoiceStatus": "Pending", "InvoiceTransactions": [], "ExpiryTime": "not a time"}, "pending"),
        ({"InvoiceStatus": "Pending", "InvoiceTransactions": [], "ExpiryTime": "99:99:99"}, "pending"),
    ],
)
async def test_unpaid_invoices_are_pending_until_canceled_or_expired(provider, fields, state):
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(status_data(**fields)))
        assert (await provider.payment_status(invoice_id="7100001")).state == state


async def test_expiry_is_read_in_kuwait_time(provider, clock):
    data = status_data(InvoiceStatus="Pending", InvoiceTransactions=[], ExpiryDate="February 1, 2026")
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope({**data, "ExpiryTime": "10:17:42"}), repeat=True)
        assert (await provider.payment_status(invoice_id="7100001")).state == "pending"  # 07:17:41Z = 10:17:41 AST
        clock.advance(2)
        assert (await provider.payment_status(invoice_id="7100001")).state == "failed"


async def test_amount_falls_back_to_invoice_value_exactly(provider):
    raw = orjson.dumps(envelope(status_data(InvoiceDisplayValue=None))).replace(
        b'"InvoiceValue":5', b'"InvoiceValue":12.345'
    )
    with aioresponses() as mocked:
        mocked.post(STATUS, body=raw, content_type="application/json")
        status = await provider.payment_status(invoice_id="7100001")
    assert (status.amount_fils, status.currency) == (12345, "KWD")


async def test_status_reply_without_invoice_id_or_amount_is_an_error(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, payload=envelope(status_data(InvoiceId=None)))
        mocked.post(STATUS, payload=envelope(status_data(InvoiceDisplayValue="", InvoiceValue=None)))
        with pytest.raises(PaymentError, match="InvoiceId"):
            await provider.payment_status(invoice_id="7100001")
        with pytest.raises(PaymentError, match="InvoiceValue"):
            await provider.payment_status(invoice_id="7100001")


async def test_status_needs_an_id(provider):
    with pytest.raises(ValueError):
        await provider.payment_status()


# error shapes --------------------------------------------------------------------------------------------


async def test_validation_errors_are_reported_and_not_retried(provider):
    body = {
        "IsSuccess": False,
        "Message": "Invalid data",
        "ValidationErrors": [
            {"Name": "InvoiceValue", "Error": "Invoice value must be more than 0"},
            {"Name": "CustomerMobile", "Error": ""},
        ],
        "Data": None,
    }
    with aioresponses() as mocked:
        mocked.post(STATUS, status=400, payload=body)
        with pytest.raises(PaymentError) as raised:
            await provider.payment_status(invoice_id="1")
    assert str(raised.value) == (
        "MyFatoorah GetPaymentStatus: HTTP 400: Invalid data "
        "(InvoiceValue: Invoice value must be more than 0; CustomerMobile)"
    )
    assert raised.value.transient is False


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            {"IsSuccess": False, "Message": "Invalid data", "FieldsErrors": [{"Name": "Key", "Error": "Bad"}]},
            "Key: Bad",
        ),
        ({"IsSuccess": False, "Message": "", "Data": {"ErrorMessage": "Card declined"}}, "Card declined"),
        ({"Message": "No HTTP resource was found", "MessageDetail": "No action"}, "No HTTP resource"),
        ({"IsSuccess": False}, "IsSuccess is not true"),
    ],
)
async def test_every_failure_envelope_gives_a_readable_message(provider, body, text):
    with aioresponses() as mocked:
        mocked.post(STATUS, status=200, payload=body)
        with pytest.raises(PaymentError, match=text) as raised:
            await provider.payment_status(invoice_id="1")
    assert raised.value.transient is False


async def test_rejected_token_is_permanent_and_never_echoed(provider):
    body = {"IsSuccess": False, "Message": f"The token is not valid or it is expired! ({TOKEN})", "Data": None}
    with aioresponses() as mocked:
        mocked.post(STATUS, status=401, payload=body)
        with pytest.raises(PaymentError) as raised:
            await provider.payment_status(invoice_id="1")
    assert raised.value.transient is False
    assert TOKEN not in str(raised.value)
    assert "myfatoorah.api_token" in str(raised.value)
    assert "The token is not valid" in str(raised.value)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_rate_limits_and_server_errors_are_transient(provider, status):
    with aioresponses() as mocked:
        mocked.post(STATUS, status=status, payload={"IsSuccess": False, "Message": "busy"})
        with pytest.raises(PaymentError, match=f"HTTP {status}") as raised:
            await provider.payment_status(invoice_id="1")
    assert raised.value.transient is True


async def test_html_403_from_the_firewall_is_permanent(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, status=403, body="<html><body>403 Forbidden</body></html>", content_type="text/html")
        with pytest.raises(PaymentError, match="HTTP 403") as raised:
            await provider.payment_status(invoice_id="1")
    assert raised.value.transient is False


@pytest.mark.parametrize(("status", "transient"), [(200, True), (502, True), (404, False)])
async def test_non_json_or_empty_bodies_are_errors(provider, status, transient):
    with aioresponses() as mocked:
        mocked.post(STATUS, status=status, body="<html>gateway error</html>", content_type="text/html")
        mocked.post(STATUS, status=status, body="")
        for what in ("not JSON", "empty body"):
            with pytest.raises(PaymentError, match=what) as raised:
                await provider.payment_status(invoice_id="1")
            assert raised.value.transient is transient


async def test_success_envelope_without_data_is_an_error(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, payload={"IsSuccess": True, "Message": "", "Data": None})
        with pytest.raises(PaymentError, match="no Data"):
            await provider.payment_status(invoice_id="1")


async def test_timeout_is_transient(provider):
    with aioresponses() as mocked:
        mocked.post(STATUS, exception=TimeoutError())
        with pytest.raises(PaymentError, match="no answer within 30 s") as raised:
            await provider.payment_status(invoice_id="1")
    assert raised.value.transient is True


async def test_connection_refused_is_transient_and_names_no_token(provider_for):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = await provider_for(base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(PaymentError, match="cannot reach") as raised:
        await provider.payment_status(invoice_id="1")
    assert raised.value.transient is True
    assert TOKEN not in str(raised.value)


async def test_a_provider_that_was_not_started_refuses_calls():
    from myfatoorah_helpers import settings

    with pytest.raises(PaymentError, match="not started"):
        await MyFatoorahProvider(settings()).payment_status(invoice_id="1")


async def test_provider_verifies_webhooks_with_its_secret_window_and_clock(provider_for, clock):
    from myfatoorah_helpers import signed_v2, v2_event

    from resayil_gateway.billing.payments import WebhookRejected

    provider = await provider_for(webhook_max_age_s=60)
    headers, body = signed_v2(v2_event())
    assert provider.verify_webhook(headers, body).reference == "WH-900001"
    clock.advance(61)
    with pytest.raises(WebhookRejected, match="stale"):
        provider.verify_webhook(headers, body)
