"""The Meta Cloud API transport: text and template messages, the wamid, and errors classified by Meta's code."""

from __future__ import annotations

import aiohttp
import pytest
from aioresponses import aioresponses
from resayil_whatsapp.meta_api import template_parameter
from whatsapp_helpers import BILINGUAL, META_BASE, META_URL, PHONE_NUMBER_ID, TOKEN, message, meta_settings
from yarl import URL

from resayil_gateway.events.channels import PermanentDeliveryError, TransientDeliveryError

ACCEPTED = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": "96550000000", "wa_id": "96550000000"}],
    "messages": [{"id": "wamid.HBgLOTY1NTAwMDAwMDAVAgARGBI0", "message_status": "accepted"}],
}


def meta_error(code: int, details: str = "", message_text: str = "error") -> dict:
    return {
        "error": {
            "message": f"(#{code}) {message_text}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "Abc123XyZ",
        }
    }


def only_call(mocked: aioresponses, url: str = META_URL):
    (call,) = mocked.requests[("POST", URL(url))]
    return call


async def test_text_message_goes_to_the_phone_number_id_with_a_bearer_token(channel_for):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked:
        mocked.post(META_URL, payload=ACCEPTED)
        await channel.send(message())
    call = only_call(mocked)
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert "Token" not in call.kwargs["headers"]
    assert call.kwargs["json"] == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "96550000000",
        "type": "text",
        "text": {"preview_url": False, "body": BILINGUAL},
    }


async def test_graph_api_version_comes_from_the_settings(channel_for):
    channel = await channel_for(meta_settings(meta_api_version="v26.0"))
    url = f"{META_BASE}/v26.0/{PHONE_NUMBER_ID}/messages"
    with aioresponses() as mocked:
        mocked.post(url, payload=ACCEPTED)
        await channel.send(message())
    assert only_call(mocked, url)


async def test_accepted_message_returns_the_wamid(channel_for):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked:
        mocked.post(META_URL, payload=ACCEPTED)
        receipt = await channel.send(message())
    assert receipt.provider_id == "wamid.HBgLOTY1NTAwMDAwMDAVAgARGBI0"
    assert receipt.detail == "meta: HTTP 200, accepted"


async def test_with_a_template_the_text_is_its_one_body_parameter(channel_for):
    channel = await channel_for(meta_settings(meta_template="resayil_notification", meta_template_language="en_US"))
    with aioresponses() as mocked:
        mocked.post(META_URL, payload=ACCEPTED)
        await channel.send(message())
    payload = only_call(mocked).kwargs["json"]
    assert payload["type"] == "template" and payload["to"] == "96550000000"
    assert payload["template"] == {
        "name": "resayil_notification",
        "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": template_parameter(BILINGUAL)}]}],
    }


def test_template_parameter_has_no_line_breaks_tabs_or_long_space_runs():
    text = "سطر أول\n\nsecond line\twith tab      and spaces\r\nend"
    assert template_parameter(text) == "سطر أول / second line / with tab and spaces / end"


async def test_text_longer_than_4096_characters_is_permanent_and_not_sent(channel_for):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked, pytest.raises(PermanentDeliveryError, match="4096"):
        await channel.send(message(text="x" * 4097))
    assert mocked.requests == {}


@pytest.mark.parametrize(
    ("status", "code", "meaning"),
    [
        (401, 190, "access token invalid or expired"),
        (401, 0, "authentication failed"),
        (403, 10, "permission denied"),
        (403, 200, "permission denied"),
        (403, 294, "permission denied"),
        (400, 368, "blocked for policy violations"),
        (400, 100, "invalid parameter"),
        (400, 131009, "recipient number"),
        (400, 131026, "undeliverable"),
        (400, 131030, "allowed list"),
        (400, 131047, "meta_template"),
        (400, 131051, "unsupported message type"),
        (404, 132001, "template does not exist"),
        (400, 133010, "not registered"),
    ],
)
async def test_errors_meaning_bad_token_recipient_or_payload_are_permanent(channel_for, status, code, meaning):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked:
        mocked.post(META_URL, status=status, payload=meta_error(code, "details from Meta"))
        with pytest.raises(PermanentDeliveryError) as caught:
            await channel.send(message())
    assert f"error {code} (" in caught.value.detail and meaning in caught.value.detail
    assert "details from Meta" in caught.value.detail


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 130429), (400, 131056), (400, 80007), (400, 4), (429, 4), (400, 131048), (500, 1), (503, 2), (500, 131000)],
)
async def test_rate_limits_and_outages_are_transient_whatever_the_status(channel_for, status, code):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked:
        mocked.post(META_URL, status=status, payload=meta_error(code, "Message failed to send because …"))
        with pytest.raises(TransientDeliveryError, match=f"error {code} "):
            await channel.send(message())


async def test_rate_limit_honours_retry_after(channel_for):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked:
        mocked.post(META_URL, status=429, headers={"Retry-After": "30"}, payload=meta_error(130429))
        with pytest.raises(TransientDeliveryError) as caught:
            await channel.send(message())
    assert caught.value.retry_after == 30


@pytest.mark.parametrize(("status", "error"), [(400, PermanentDeliveryError), (502, TransientDeliveryError)])
async def test_unknown_error_code_falls_back_to_the_status(channel_for, status, error):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked:
        mocked.post(META_URL, status=status, payload=meta_error(999999, "something new"))
        with pytest.raises(error, match="error 999999: something new"):
            await channel.send(message())


@pytest.mark.parametrize(("status", "error"), [(404, PermanentDeliveryError), (503, TransientDeliveryError)])
async def test_answer_without_meta_envelope_is_classified_by_status(channel_for, status, error):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked:
        mocked.post(META_URL, status=status, body=b"<html>Service Unavailable</html>")
        with pytest.raises(error, match=f"HTTP {status}"):
            await channel.send(message())


async def test_timeout_and_connection_errors_are_transient(channel_for):
    channel = await channel_for(meta_settings(timeout_s=2.5))
    with aioresponses() as mocked:
        mocked.post(META_URL, exception=TimeoutError())
        mocked.post(META_URL, exception=aiohttp.ClientOSError("Network is unreachable"))
        with pytest.raises(TransientDeliveryError, match=r"no answer within 2\.5s"):
            await channel.send(message())
        with pytest.raises(TransientDeliveryError, match="meta: "):
            await channel.send(message())


async def test_recipient_not_in_e164_is_permanent_and_nothing_is_sent(channel_for):
    channel = await channel_for(meta_settings())
    with aioresponses() as mocked, pytest.raises(PermanentDeliveryError, match=r"E\.164"):
        await channel.send(message(recipient="965-not-a-number"))
    assert mocked.requests == {}
