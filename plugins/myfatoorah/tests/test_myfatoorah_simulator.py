"""The sandbox simulator on real sockets, driven by the real provider: pay, decline, signed webhooks, switches."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner
from myfatoorah_helpers import SECRET, TOKEN, checkout, settings
from resayil_myfatoorah.provider import MyFatoorahProvider
from resayil_myfatoorah.simulator import simulator_command

from resayil_gateway.billing.payments import PaymentError, WebhookNotice, WebhookRejected

CALLBACK = "http://127.0.0.1:9/billing/callback?order=ord_1"
ERROR = "http://127.0.0.1:9/billing/callback?order=ord_1&failed=1"


@dataclass
class Receiver:
    """A tiny webhook endpoint that verifies with the provider, as the gateway's route will."""

    provider: MyFatoorahProvider | None = None
    url: str = ""
    refuse_first: int = 0
    notices: list[WebhookNotice] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        if self.refuse_first > 0:
            self.refuse_first -= 1
            return web.Response(status=503)
        assert self.provider is not None
        try:
            self.notices.append(self.provider.verify_webhook(request.headers, await request.read()))
        except WebhookRejected as exc:
            self.rejected.append(str(exc))
            return web.Response(status=401)
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver on a real socket; give it a provider before webhooks arrive."""
    state = Receiver()
    app = web.Application()
    app.router.add_post("/billing/webhooks/myfatoorah", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/billing/webhooks/myfatoorah"
    yield state
    await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that does not follow redirects, like a test of where the browser is sent."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sandbox(simulator, receiver, provider_for):
    """A simulator with webhooks to the receiver, and a provider pointed at the simulator (real clock)."""

    async def start(timeout_s: float = 2, **config):
        values = {"api_token": TOKEN, "webhook_url": receiver.url, "webhook_secret": SECRET, **config}
        sim = await simulator(webhook_retry_delay_s=0.01, **values)
        provider = MyFatoorahProvider(settings(base_url=sim.url, timeout_s=timeout_s))
        await provider.start()
        receiver.provider = provider
        started.append(provider)
        return sim, provider

    started: list[MyFatoorahProvider] = []
    yield start
    for provider in started:
        await provider.close()


async def open_page(browser: aiohttp.ClientSession, payment_url: str) -> tuple[str, str]:
    """The payment page's HTML and the URL its form posts to (as a browser resolves it)."""
    async with browser.get(payment_url) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page).group(1))
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(payment_url))
    return page, origin + action


async def press(browser: aiohttp.ClientSession, form_url: str, button: str) -> tuple[int, str]:
    async with browser.post(form_url, data={"action": button}, allow_redirects=False) as response:
        return response.status, response.headers.get("Location", "")


async def delivered(sim, count: int) -> None:
    async with asyncio.timeout(5):
        await sim.state.stats.wait_until(lambda stats: stats.webhooks_delivered + stats.webhooks_failed >= count)


async def test_pay_redirects_to_callback_with_payment_id_and_status_is_paid(sandbox, receiver, browser):
    sim, provider = await sandbox()
    started = await provider.create_payment(checkout(callback_url=CALLBACK, error_url=ERROR))
    page, form = await open_page(browser, started.payment_url)
    assert "5.000 KWD" in page and started.invoice_id in page
    assert 'value="pay"' in page and 'value="decline"' in page and "<script" not in page

    status, location = await press(browser, form, "pay")

    assert status == 303
    assert location.startswith("http://127.0.0.1:9/billing/callback?")
    query = parse_qs(urlsplit(location).query)
    assert query["order"] == ["ord_1"] and query["paymentId"] == query["Id"]
    paid = await provider.payment_status(payment_id=query["paymentId"][0])
    assert (paid.state, paid.invoice_id, paid.order_id) == ("paid", started.invoice_id, "ord_1")
    assert (paid.amount_fils, paid.currency, paid.payment_id) == (5000, "KWD", query["paymentId"][0])
    await delivered(sim, 1)
    (notice,) = receiver.notices
    assert (notice.invoice_id, notice.payment_id, notice.state, notice.order_id) == (
        started.invoice_id,
        query["paymentId"][0],
        "paid",
        "ord_1",
    )


async def test_decline_redirects_to_error_url_and_the_attempt_is_failed(sandbox, receiver, browser):
    sim, provider = await sandbox()
    started = await provider.create_payment(checkout(amount_fils=12345, callback_url=CALLBACK, error_url=ERROR))
    page, form = await open_page(browser, started.payment_url)
    assert "12.345 KWD" in page

    status, location = await press(browser, form, "decline")

    assert status == 303
    query = parse_qs(urlsplit(location).query)
    assert query["failed"] == ["1"] and "Id" not in query
    attempt = await provider.payment_status(payment_id=query["paymentId"][0])
    assert (attempt.state, attempt.amount_fils) == ("failed", 12345)
    assert (await provider.payment_status(invoice_id=started.invoice_id)).state == "pending"
    await delivered(sim, 1)
    assert [notice.state for notice in receiver.notices] == ["failed"]


async def test_paying_again_after_a_decline_succeeds_and_paying_twice_changes_nothing(sandbox, receiver, browser):
    sim, provider = await sandbox()
    started = await provider.create_payment(checkout())
    _, form = await open_page(browser, started.payment_url)
    await press(browser, form, "decline")
    _, first = await press(browser, form, "pay")
    _, second = await press(browser, form, "pay")
    assert first == second
    assert (await provider.payment_status(invoice_id=started.invoice_id)).state == "paid"
    await delivered(sim, 2)
    assert [notice.state for notice in receiver.notices] == ["failed", "paid"]
    assert sim.state.stats.paid == 1


async def test_duplicate_switch_sends_copies_of_the_same_event(sandbox, receiver):
    sim, provider = await sandbox(duplicates=3)
    started = await provider.create_payment(checkout())
    sim.state.settle(sim.state.sandbox.invoices[int(started.invoice_id)], "paid")
    await delivered(sim, 3)
    assert len(receiver.notices) == 3
    assert len({notice.reference for notice in receiver.notices}) == 1


async def test_out_of_order_switch_delivers_a_failure_after_the_payment(sandbox, receiver):
    sim, provider = await sandbox(out_of_order=True)
    started = await provider.create_payment(checkout())
    sim.state.settle(sim.state.sandbox.invoices[int(started.invoice_id)], "paid")
    await delivered(sim, 2)
    assert [notice.state for notice in receiver.notices] == ["paid", "failed"]
    assert (await provider.payment_status(invoice_id=started.invoice_id)).state == "paid"


async def test_late_switch_delays_the_webhook(sandbox, receiver):
    sim, provider = await sandbox(webhook_delay_s=0.2)
    started = await provider.create_payment(checkout())
    sim.state.settle(sim.state.sandbox.invoices[int(started.invoice_id)], "paid")
    assert sim.state.stats.webhooks_attempted == 0
    await delivered(sim, 1)
    assert [notice.state for notice in receiver.notices] == ["paid"]


async def test_webhooks_are_retried_until_the_receiver_answers_200(sandbox, receiver):
    sim, provider = await sandbox(webhook_retries=3)
    receiver.refuse_first = 2
    started = await provider.create_payment(checkout())
    sim.state.settle(sim.state.sandbox.invoices[int(started.invoice_id)], "paid")
    await delivered(sim, 1)
    assert [d.status for d in sim.state.webhooks.deliveries] == [503, 503, 200]
    assert len(receiver.notices) == 1


async def test_unsigned_webhooks_are_refused_by_the_provider_and_given_up(sandbox, receiver):
    sim, provider = await sandbox(webhook_secret="", webhook_retries=1)
    started = await provider.create_payment(checkout())
    sim.state.settle(sim.state.sandbox.invoices[int(started.invoice_id)], "paid")
    await delivered(sim, 1)
    assert sim.state.stats.webhooks_failed == 1
    assert receiver.notices == [] and receiver.rejected == ["unsigned webhook: no MyFatoorah-Signature header"] * 2


async def test_injected_server_error_is_transient_and_clears(sandbox):
    sim, provider = await sandbox()
    sim.state.fail_next(mode="status", status=503, endpoint="ExecutePayment")
    with pytest.raises(PaymentError, match="HTTP 503") as raised:
        await provider.create_payment(checkout())
    assert raised.value.transient is True
    assert (await provider.create_payment(checkout())).invoice_id


@pytest.mark.parametrize(
    ("rule", "match", "transient"),
    [
        ({"mode": "rejected", "status": 400, "message": "Invalid key"}, "Invalid key", False),
        ({"mode": "status", "status": 200, "message": "Something off"}, "Something off", False),
        ({"mode": "not_json", "status": 502}, "not JSON", True),
        ({"mode": "empty", "status": 500}, "empty body", True),
        ({"mode": "timeout", "delay_s": 5}, "no answer within", True),
    ],
)
async def test_injected_failures_reach_the_provider_as_payment_errors(sandbox, browser, rule, match, transient):
    sim, provider = await sandbox(timeout_s=0.3)
    async with browser.post(f"{sim.url}/_sim/fail", json={**rule, "endpoint": "GetPaymentStatus"}) as response:
        assert response.status == 200
    with pytest.raises(PaymentError, match=match) as raised:
        await provider.payment_status(invoice_id="7100001")
    assert raised.value.transient is transient


async def test_wrong_token_is_refused_with_401_and_never_echoed(sandbox):
    sim, _ = await sandbox()
    provider = MyFatoorahProvider(settings(base_url=sim.url, api_token="wrong-token-value"))
    await provider.start()
    try:
        with pytest.raises(PaymentError, match="HTTP 401") as raised:
            await provider.create_payment(checkout())
    finally:
        await provider.close()
    assert raised.value.transient is False and "wrong-token-value" not in str(raised.value)


async def test_execute_payment_is_validated_like_the_real_one(sandbox, browser):
    sim, _ = await sandbox()
    body = {
        "PaymentMethodId": 99,
        "InvoiceValue": 5.0001,
        "CallBackUrl": "http://localhost/cb",
        "ErrorUrl": "https://x.test/" + "e" * 260,
        "CustomerMobile": "123456789012",
        "InvoiceItems": [{"ItemName": "x", "Quantity": 1, "UnitPrice": 4}],
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with browser.post(f"{sim.url}/v2/ExecutePayment", json=body, headers=headers) as response:
        assert response.status == 400
        reply = await response.json()
    assert reply["IsSuccess"] is False and reply["Data"] is None
    names = {item["Name"] for item in reply["ValidationErrors"]}
    assert names == {"PaymentMethodId", "InvoiceValue", "CallBackUrl", "ErrorUrl", "CustomerMobile"}


async def test_items_must_add_up_to_the_invoice_value(sandbox, browser):
    sim, _ = await sandbox()
    body = {
        "PaymentMethodId": 1,
        "InvoiceValue": 5,
        "CallBackUrl": CALLBACK,
        "ErrorUrl": ERROR,
        "InvoiceItems": [{"ItemName": "x", "Quantity": 2, "UnitPrice": 2.4}],
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with browser.post(f"{sim.url}/v2/ExecutePayment", json=body, headers=headers) as response:
        reply = await response.json()
    assert [item["Name"] for item in reply["ValidationErrors"]] == ["InvoiceItems"]


async def test_unknown_endpoint_answers_the_routing_error(sandbox):
    _, provider = await sandbox()
    with pytest.raises(PaymentError, match="No HTTP resource was found") as raised:
        await provider.client.call("createInvoice", {})
    assert raised.value.transient is False


async def test_control_api_lists_invoices_changes_switches_and_settles(sandbox, browser):
    sim, provider = await sandbox()
    started = await provider.create_payment(checkout())
    async with browser.get(f"{sim.url}/_sim/invoices") as response:
        (invoice,) = await response.json()
    assert (invoice["invoice_id"], invoice["status"], invoice["amount_fils"]) == (
        int(started.invoice_id),
        "Pending",
        5000,
    )
    async with browser.post(f"{sim.url}/_sim/config", json={"duplicates": 2}) as response:
        shown = await response.json()
    assert shown["duplicates"] == 2 and shown["webhook_secret"] is True  # the secret itself is never shown
    async with browser.post(f"{sim.url}/_sim/config", json={"duplicates": 0}) as response:
        assert response.status == 400
    async with browser.post(f"{sim.url}/_sim/config", json={"colour": "red"}) as response:
        assert response.status == 400
    async with browser.post(f"{sim.url}/_sim/config", json={"out_of_order": "false", "duplicates": 1}) as response:
        assert response.status == 400
    async with browser.post(f"{sim.url}/_sim/fail", json={"mode": "explode"}) as response:
        assert response.status == 400
    assert sim.state.config.duplicates == 2
    async with browser.post(f"{sim.url}/_sim/invoices/{started.invoice_id}/pay") as response:
        assert "paymentId=" in (await response.json())["redirect"]
    await delivered(sim, 2)
    async with browser.get(f"{sim.url}/_sim/stats") as response:
        stats = await response.json()
    assert (stats["invoices"], stats["paid"], stats["webhooks_delivered"]) == (1, 1, 2)


async def test_expired_invoice_cannot_be_paid_and_reads_as_failed(simulator, provider_for, clock, browser):
    sim = await simulator(clock=clock, invoice_ttl_s=3600)
    provider = await provider_for(base_url=sim.url)
    started = await provider.create_payment(checkout())
    _, form = await open_page(browser, started.payment_url)
    clock.advance(3601)
    status, _ = await press(browser, form, "pay")
    assert status == 410
    assert (await provider.payment_status(invoice_id=started.invoice_id)).state == "failed"


def test_command_line_refuses_bad_switches():
    result = CliRunner().invoke(simulator_command, ["--duplicates", "0"])
    assert result.exit_code == 2 and "duplicates" in result.output
