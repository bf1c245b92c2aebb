"""The sink on real sockets: the channel delivers to it, it shows and lists what came, and fails when told to."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from click.testing import CliRunner
from resayil_whatsapp.meta_api import template_parameter
from resayil_whatsapp.settings import WhatsAppSettings
from resayil_whatsapp.sink import sink_command
from whatsapp_helpers import BILINGUAL, PHONE, TOKEN, message

from resayil_gateway.events.channels import PermanentDeliveryError, TransientDeliveryError

ARABIC = "مرحباً بك في Resayil! رصيدك الحالي *100*."
ENGLISH = "Welcome to Resayil! Your balance is *100* credits."


def resayil_to(url: str, **values) -> WhatsAppSettings:
    return WhatsAppSettings(**{"enabled": True, "base_url": url, "token": TOKEN, **values})


def meta_to(url: str, **values) -> WhatsAppSettings:
    base = {"enabled": True, "transport": "meta", "meta_base_url": url, "meta_phone_number_id": "1065", "token": TOKEN}
    return WhatsAppSettings(**{**base, **values})


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def get_json(url: str):
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def post_json(url: str, payload, headers=None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.post(url, json=payload, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_channel_delivers_to_the_sink_which_records_the_message(sink, channel_for):
    running = await sink(token=TOKEN)
    channel = await channel_for(resayil_to(running.url))
    receipt = await channel.send(message())
    async with asyncio.timeout(5):
        (recorded,) = await running.state.wait_for(1)
    assert (recorded.api, recorded.phone, recorded.text) == ("resayil", PHONE, BILINGUAL)
    assert receipt.provider_id == recorded.id and receipt.detail == "resayil: HTTP 201, queued"


async def test_page_shows_arabic_and_english_newest_first_right_to_left_where_arabic(sink, channel_for):
    running = await sink(token=TOKEN)
    channel = await channel_for(resayil_to(running.url))
    await channel.send(message(text="first <b>message</b>", recipient="+96550000001"))
    await channel.send(message(text=f"{ARABIC}\n\n{ENGLISH}"))
    status, page = await get(running.url + "/")
    assert status == 200
    assert page.index(ARABIC) < page.index("first &lt;b&gt;message&lt;/b&gt;")  # newest first, escaped
    assert f'<p dir="auto">{ARABIC}</p><p dir="auto">{ENGLISH}</p>' in page
    assert page.count('<div class="text" dir="auto">') == 2
    assert '<span class="phone" dir="ltr">+96550000000</span>' in page
    assert re.search(r"<time datetime=\"[^\"]+\">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", page)
    assert "<script" not in page


async def test_page_and_json_filter_by_phone_with_or_without_plus(sink, channel_for):
    running = await sink()
    channel = await channel_for(resayil_to(running.url))
    await channel.send(message(text="to one", recipient="+96550000001"))
    await channel.send(message(text="to two", recipient="+96550000002"))
    everything = await get_json(running.url + "/_sink/messages")
    assert [item["text"] for item in everything] == ["to one", "to two"]  # oldest first
    for query in ("%2B96550000002", "96550000002", "+96550000002"):  # a raw '+' arrives as a space
        (only,) = await get_json(f"{running.url}/_sink/messages?phone={query}")
        assert (only["phone"], only["text"], only["api"]) == ("+96550000002", "to two", "resayil")
    _, page = await get(running.url + "/?phone=%2B96550000001")
    assert "to one" in page and "to two" not in page


async def test_wrong_token_is_refused_and_the_channel_reports_it_as_permanent(sink, channel_for):
    running = await sink(token="the-right-token")
    channel = await channel_for(resayil_to(running.url))
    with pytest.raises(PermanentDeliveryError, match="HTTP 401: Invalid or missing API token"):
        await channel.send(message())
    assert running.state.messages == [] and running.state.requests == 1


async def test_phone_without_plus_gets_resayils_own_400(sink):
    running = await sink()
    status, body = await post_json(running.url + "/v1/messages", {"phone": "96550000000", "message": "hi"})
    assert status == 400
    assert body["message"].startswith("Phone number is not a valid international mobile number (96550000000).")
    assert "Number must be in E164 format, including the country code with no spaces" in body["message"]


async def test_fails_on_demand_through_the_control_api_then_recovers(sink, channel_for):
    running = await sink(token=TOKEN)
    channel = await channel_for(resayil_to(running.url))
    status, body = await post_json(running.url + "/_sink/fail", {"count": 2, "status": 503, "retry_after": 3})
    assert (status, body) == (200, {"pending_failures": 2})
    for _ in range(2):
        with pytest.raises(TransientDeliveryError) as caught:
            await channel.send(message())
        assert caught.value.retry_after == 3
    receipt = await channel.send(message())
    assert receipt.provider_id and len(running.state.messages) == 1
    assert (running.state.requests, running.state.failed) == (3, 2)


async def test_fails_on_demand_from_constructor_arguments(sink, channel_for):
    running = await sink(fail_next=1, fail_status=401)
    channel = await channel_for(resayil_to(running.url))
    with pytest.raises(PermanentDeliveryError, match="HTTP 401"):
        await channel.send(message())
    assert (await channel.send(message())).provider_id


async def test_timeout_on_demand_is_a_transient_failure_then_the_sink_recovers(sink, channel_for):
    running = await sink(fail_next=1, fail_timeout=True)
    channel = await channel_for(resayil_to(running.url, timeout_s=0.3))
    with pytest.raises(TransientDeliveryError, match=r"no answer within 0\.3s"):
        await channel.send(message())
    assert (await channel.send(message())).provider_id


async def test_a_failure_planned_after_some_sends_lets_those_through_first(sink, channel_for):
    running = await sink(hang_s=5)
    channel = await channel_for(resayil_to(running.url, timeout_s=0.3))
    status, body = await post_json(running.url + "/_sink/fail", {"count": 1, "status": 502, "after": 1})
    assert (status, body) == (200, {"pending_failures": 1})
    running.state.fail_next(1, timeout=True, after=1)
    assert running.state.pending_failures == 2
    await channel.send(message(text="first"))
    with pytest.raises(TransientDeliveryError, match="HTTP 502"):
        await channel.send(message(text="second"))
    await channel.send(message(text="third"))
    sending = asyncio.ensure_future(channel.send(message(text="fourth")))
    async with asyncio.timeout(5):
        await running.state.wait_for(lambda _: running.state.held == 1)  # the fourth is being held
    with pytest.raises(TransientDeliveryError, match="no answer"):
        await sending
    await channel.send(message(text="fifth"))
    assert [m.text for m in running.state.messages] == ["first", "third", "fifth"]
    assert (running.state.requests, running.state.failed, running.state.pending_failures) == (5, 2, 0)


async def test_timeout_through_the_control_api(sink, channel_for):
    running = await sink()
    channel = await channel_for(meta_to(running.url, timeout_s=0.3))
    await post_json(running.url + "/_sink/fail", {"count": 1, "timeout": True})
    with pytest.raises(TransientDeliveryError, match="meta: no answer"):
        await channel.send(message())


async def test_meta_failures_come_in_metas_error_envelope(sink, channel_for):
    running = await sink(fail_next=1, fail_status=429, retry_after=2)
    channel = await channel_for(meta_to(running.url))
    with pytest.raises(TransientDeliveryError, match="error 130429") as caught:
        await channel.send(message())
    assert caught.value.retry_after == 2


async def test_control_api_refuses_a_bad_failure_plan(sink):
    running = await sink()
    status, body = await post_json(running.url + "/_sink/fail", {"count": 1, "status": 200})
    assert status == 400 and "status" in body["error"]


async def test_meta_text_and_template_messages_are_recorded(sink, channel_for):
    running = await sink(token=TOKEN)
    text_channel = await channel_for(meta_to(running.url))
    template_channel = await channel_for(meta_to(running.url, meta_template="resayil_notification"))
    receipt = await text_channel.send(message())
    await template_channel.send(message(recipient="+14155550123"))
    text, templated = running.state.messages
    assert (text.api, text.phone, text.text, text.template) == ("meta", PHONE, BILINGUAL, None)
    assert receipt.provider_id == text.id and text.id.startswith("wamid.")
    assert (templated.phone, templated.template, templated.language) == ("+14155550123", "resayil_notification", "ar")
    assert templated.text == template_parameter(BILINGUAL)
    _, page = await get(running.url + "/")
    assert "template resayil_notification (ar)" in page


async def test_meta_sink_refuses_template_parameters_with_line_breaks(sink):
    running = await sink()
    payload = {
        "messaging_product": "whatsapp",
        "to": "96550000000",
        "type": "template",
        "template": {
            "name": "n",
            "language": {"code": "ar"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "a\nb"}]}],
        },
    }
    status, body = await post_json(running.url + "/v24.0/1065/messages", payload, {"Authorization": "Bearer x"})
    assert (status, body["error"]["code"]) == (400, 132018)


async def test_wait_for_a_predicate_wakes_when_the_message_arrives(sink, channel_for):
    running = await sink()
    channel = await channel_for(resayil_to(running.url))
    waiter = asyncio.create_task(running.state.wait_for(lambda messages: any("*7*" in m.text for m in messages)))
    await channel.send(message(text="code *1*"))
    await asyncio.sleep(0)
    assert not waiter.done()
    await channel.send(message(text="code *7*"))
    async with asyncio.timeout(5):
        messages = await waiter
    assert [m.text for m in messages] == ["code *1*", "code *7*"]


async def test_clear_forgets_every_message(sink, channel_for):
    running = await sink()
    channel = await channel_for(resayil_to(running.url))
    await channel.send(message())
    async with aiohttp.ClientSession() as session:
        async with session.delete(running.url + "/_sink/messages") as resp:
            assert await resp.json() == {"cleared": 1}
        await channel.send(message())
        async with session.post(running.url + "/_sink/clear", data={}, allow_redirects=False) as resp:
            assert (resp.status, resp.headers["Location"]) == (303, "/")
    assert await get_json(running.url + "/_sink/messages") == []


async def test_resayil_delivery_lookup_lists_sent_messages(sink, channel_for):
    running = await sink(token=TOKEN)
    channel = await channel_for(resayil_to(running.url))
    receipt = await channel.send(message())
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.url + "/v1/messages", params={"phone": PHONE}, headers={"Token": TOKEN}) as resp,
    ):
        (item,) = await resp.json()
    assert (item["message_id"], item["phone"], item["deliveryStatus"]) == (receipt.provider_id, PHONE, "delivered")


def test_command_line_refuses_a_bad_failure_status():
    result = CliRunner().invoke(sink_command, ["--fail-next", "1", "--fail-status", "200"])
    assert result.exit_code == 2 and "status 400–599" in result.output
