"""The token never shows: not in delivery errors (even when the provider echoes it), not in logs, not in reprs."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aioresponses import aioresponses
from resayil_whatsapp.channel import WhatsAppChannel
from whatsapp_helpers import META_URL, RESAYIL_URL, TOKEN, message, meta_settings, resayil_settings

from resayil_gateway.events.channels import DeliveryFailed

ECHO = f"Invalid token {TOKEN} for this account"
ANSWERS = [
    {"status": 401, "payload": {"message": ECHO}},
    {"status": 403, "body": f"<html>Forbidden: Token: {TOKEN}</html>".encode()},
    {"status": 200, "payload": {"error": ECHO}},
    {"status": 429, "payload": {"message": ECHO}, "headers": {"Retry-After": "5"}},
    {"status": 503, "payload": {"error": {"message": ECHO}}},
    {"status": 400, "payload": {"error": {"code": 190, "message": ECHO, "error_data": {"details": ECHO}}}},
    {"status": 400, "payload": {"error": {"code": 130429, "message": ECHO}}},
    {"status": 400, "payload": {"error": {"code": 999, "message": ECHO}}},
    {"exception": TimeoutError()},
    {"exception": aiohttp.ClientConnectionError(f"cannot connect with {TOKEN}")},
]


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("settings", [resayil_settings, meta_settings], ids=["resayil", "meta"])
async def test_token_is_in_no_error_and_no_log_line(channel_for, caplog, settings, answer):
    caplog.set_level(logging.DEBUG)
    channel = await channel_for(settings())
    url = META_URL if channel.transport.label == "meta" else RESAYIL_URL
    with aioresponses() as mocked:
        mocked.post(url, **answer)
        with pytest.raises(DeliveryFailed) as caught:
            await channel.send(message())
    error = caught.value
    assert TOKEN not in error.detail and TOKEN not in str(error) and TOKEN not in repr(error)
    assert error.__cause__ is None and error.__suppress_context__
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("settings", [resayil_settings, meta_settings], ids=["resayil", "meta"])
async def test_token_is_not_logged_on_success(channel_for, caplog, settings):
    caplog.set_level(logging.DEBUG)
    channel = await channel_for(settings())
    url = META_URL if channel.transport.label == "meta" else RESAYIL_URL
    with aioresponses() as mocked:
        mocked.post(url, payload={"id": "1", "messages": [{"id": "wamid.1"}]})
        await channel.send(message())
    assert caplog.records  # the debug line was written, without the token
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("settings", [resayil_settings, meta_settings], ids=["resayil", "meta"])
def test_reprs_of_channel_transport_and_request_hide_the_token(settings):
    channel = WhatsAppChannel(settings())
    outbound = channel.transport.request("+96550000000", "hi")
    assert TOKEN in str(outbound.headers)  # it is sent …
    for shown in (repr(channel), repr(channel.transport), repr(outbound), repr(channel.settings)):
        assert TOKEN not in shown  # … and never shown
