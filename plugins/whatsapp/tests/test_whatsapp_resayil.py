"""The Resayil transport: the exact request shape, and every answer read as delivered, transient or permanent."""

from __future__ import annotations

import aiohttp
import pytest
from aioresponses import aioresponses
from whatsapp_helpers import BILINGUAL, PHONE, RESAYIL_URL, TOKEN, message, resayil_settings
from yarl import URL

from resayil_gateway.events.channels import PermanentDeliveryError, Receipt, TransientDeliveryError

E164_ERROR = (
    "Phone number is not a valid international mobile number (96550000000). Number must be in E164 format, "
    "including the country code with no spaces (e.g: +1234567890)"
)


def sent(mocked: aioresponses) -> list:
    return mocked.requests.get(("POST", URL(RESAYIL_URL)), [])


async def test_posts_phone_and_message_with_the_token_header(channel_for):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=201, payload={"id": "66f0a1b2c3", "status": "queued"})
        await channel.send(message())
    (call,) = sent(mocked)
    assert call.kwargs["json"] == {"phone": PHONE, "message": BILINGUAL}
    headers = call.kwargs["headers"]
    assert headers["Token"] == TOKEN
    assert "Authorization" not in headers


async def test_accepted_message_returns_the_provider_id(channel_for):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=201, payload={"id": "66f0a1b2c3", "status": "queued"})
        receipt = await channel.send(message())
    assert receipt == Receipt(provider_id="66f0a1b2c3", detail="resayil: HTTP 201, queued")


@pytest.mark.parametrize(
    ("status", "body", "provider_id"),
    [
        (200, b'{"message_id": "abc123", "status": "processed"}', "abc123"),
        (200, b'{"ok": true, "error": null}', None),
        (202, b"", None),
        (200, b"Message queued", None),
    ],
)
async def test_any_2xx_without_an_error_key_is_accepted(channel_for, status, body, provider_id):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=status, body=body)
        receipt = await channel.send(message())
    assert receipt.provider_id == provider_id


async def test_2xx_with_an_error_key_is_a_permanent_failure(channel_for):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=200, payload={"error": "Device is not connected"})
        with pytest.raises(PermanentDeliveryError, match="Device is not connected"):
            await channel.send(message())


async def test_phone_rejected_by_resayil_is_permanent_with_its_reason(channel_for):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=400, payload={"message": E164_ERROR})
        with pytest.raises(PermanentDeliveryError) as caught:
            await channel.send(message())
    assert caught.value.detail.startswith("resayil: HTTP 400: Phone number is not a valid international")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_client_errors_are_permanent(channel_for, status):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=status, payload={"status": status, "message": "Invalid or missing API token"})
        with pytest.raises(PermanentDeliveryError, match=f"HTTP {status}: Invalid or missing API token"):
            await channel.send(message())


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_server_errors_are_transient(channel_for, status):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=status, body=b"<html>Bad Gateway</html>")
        with pytest.raises(TransientDeliveryError, match=f"HTTP {status}") as caught:
            await channel.send(message())
    assert caught.value.retry_after is None


async def test_rate_limit_is_transient_and_carries_retry_after(channel_for):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=429, headers={"Retry-After": "17"}, payload={"message": "Too many requests"})
        with pytest.raises(TransientDeliveryError) as caught:
            await channel.send(message())
    assert caught.value.retry_after == 17
    assert "retry after 17s" in caught.value.detail


async def test_retry_after_as_an_http_date_is_read_as_seconds(channel_for):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
        with pytest.raises(TransientDeliveryError) as caught:
            await channel.send(message())
    assert caught.value.retry_after == 0  # a date in the past: retry now


async def test_timeout_is_transient(channel_for):
    channel = await channel_for(resayil_settings(timeout_s=3))
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, exception=TimeoutError())
        with pytest.raises(TransientDeliveryError, match="no answer within 3s"):
            await channel.send(message())


@pytest.mark.parametrize(
    "error",
    [aiohttp.ClientConnectionError("Connection refused"), aiohttp.ServerDisconnectedError(), ConnectionResetError()],
)
async def test_connection_errors_are_transient(channel_for, error):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, exception=error)
        with pytest.raises(TransientDeliveryError, match=f"resayil: {type(error).__name__}"):
            await channel.send(message())


@pytest.mark.parametrize("recipient", ["96550000000", "50000000", "+1234567890", "+965 5000", "phone", ""])
async def test_recipient_not_in_e164_is_permanent_and_nothing_is_sent(channel_for, recipient):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked, pytest.raises(PermanentDeliveryError, match="recipient"):
        await channel.send(message(recipient=recipient))
    assert mocked.requests == {}


async def test_formatted_international_recipient_is_sent_in_e164(channel_for):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked:
        mocked.post(RESAYIL_URL, status=201, payload={"id": "1"})
        await channel.send(message(recipient="00965 5000-0000"))
    (call,) = sent(mocked)
    assert call.kwargs["json"]["phone"] == PHONE


async def test_empty_text_is_permanent_and_nothing_is_sent(channel_for):
    channel = await channel_for(resayil_settings())
    with aioresponses() as mocked, pytest.raises(PermanentDeliveryError, match="empty"):
        await channel.send(message(text="  \n "))
    assert mocked.requests == {}


async def test_send_opens_the_session_when_start_was_not_called():
    from resayil_whatsapp.channel import WhatsAppChannel

    channel = WhatsAppChannel(resayil_settings())
    try:
        with aioresponses() as mocked:
            mocked.post(RESAYIL_URL, status=201, payload={"id": "1"})
            assert (await channel.send(message())).provider_id == "1"
    finally:
        await channel.close()
