"""The whole sandbox journey over real sockets: a signed-in user buys a top-up and a plan through the
MyFatoorah simulator (hosted page, browser return, signed webhooks) and is credited exactly once.

The gateway runs with the MyFatoorah plugin and the portal (for ``/login`` and ``/dashboard``); the
simulator sends each webhook twice to the gateway's ``/billing/webhooks/myfatoorah``.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
from typing import Any

import pytest
from click.testing import CliRunner
from resayil_myfatoorah import plugin as myfatoorah_plugin
from resayil_myfatoorah.simulator import SIMULATOR, start_simulator
from resayil_portal import plugin as portal_plugin
from yarl import URL

from resayil_gateway.app import create_app
from resayil_gateway.cli import build_cli
from resayil_gateway.plugins import make_plugin_manager
from resayil_gateway.testing import TEST_SECRET, FakeBackend, FakeBackendPlugin, free_port

CSRF = re.compile(r"name=[\"']csrf_token[\"'] value=[\"']([^\"']+)[\"']")
FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')
EMAIL, PASSWORD = "huda@example.com", "a-long-test-password"


@pytest.fixture
async def journey(make_gateway, aiohttp_client, stack_info) -> Any:
    """The gateway (portal + MyFatoorah) on a real port, the simulator pointed both ways, a signed-in user."""
    port, secret, token = free_port(), secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    base = f"http://127.0.0.1:{port}"
    runner, sim_url = await start_simulator(
        webhook_url=f"{base}/billing/webhooks/myfatoorah", webhook_secret=secret, api_token=token, duplicates=2
    )
    gateway = make_gateway(
        plugins=[myfatoorah_plugin, portal_plugin, FakeBackendPlugin(FakeBackend())],
        overrides={
            "gateway": {"public_url": base},
            "myfatoorah": {
                "enabled": True,
                "base_url": sim_url,
                "webhook_secret": secret,
                "api_token": token,
                "reconcile_after_s": 0.001,  # the reconciler may ask about any pending order at once
            },
        },
    )
    client = await aiohttp_client(create_app(gateway), server_kwargs={"port": port})
    account = await gateway.accounts.create(EMAIL, "+96551234567", PASSWORD, name="Huda")
    login_page = await (await client.get("/login")).text()
    form = {"csrf_token": CSRF.search(login_page).group(1), "login": EMAIL, "password": PASSWORD}
    assert (await client.post("/login", data=form, allow_redirects=False)).status == 303
    client.gateway, client.account, client.sim, client.stack = gateway, account, runner.app[SIMULATOR], stack_info
    yield client
    await runner.cleanup()


async def buy(client: Any, field: str, item: str) -> str:
    """Press Buy on the top-up page; returns the hosted payment page's URL."""
    page = await (await client.get("/billing/top-up")).text()
    data = {"csrf_token": CSRF.search(page).group(1), field: item}
    response = await client.post("/billing/checkout", data=data, allow_redirects=False)
    assert response.status == 303, await response.text()
    return response.headers["Location"]


async def press(client: Any, pay_url: str, action: str) -> str:
    """Press Pay or Decline on the simulator's page; returns where it sends the browser."""
    page = await (await client.session.get(pay_url)).text()
    target = URL(pay_url).join(URL(html.unescape(FORM_ACTION.search(page).group(1))))
    response = await client.session.post(target, data={"action": action}, allow_redirects=False)
    assert response.status == 303, await response.text()
    return response.headers["Location"]


async def delivered(journey: Any, count: int) -> None:
    """Wait (on the simulator's event, bounded) until ``count`` webhooks were answered 200."""
    await asyncio.wait_for(journey.sim.stats.wait_until(lambda s: s.webhooks_delivered >= count), 20)


def credits_show(stack: Any) -> dict[str, int]:
    """``resayil credits show EMAIL --json`` against the same database."""
    env = {
        "RESAYIL_CONFIG": None,
        "RESAYIL_LOAD_PLUGINS": None,
        "RESAYIL_DISABLE_PLUGINS": None,
        "RESAYIL_DATABASE_URL": stack.database_url,
        "RESAYIL_REDIS_URL": stack.redis_url,
        "RESAYIL_SECRET_KEY": TEST_SECRET,
    }
    result = CliRunner().invoke(build_cli(make_plugin_manager(env={})), ["credits", "show", EMAIL, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


async def test_a_top_up_paid_on_the_sandbox_is_credited_once_despite_duplicate_webhooks(journey):
    pay_url = await buy(journey, "pack", "5k")
    callback = await press(journey, pay_url, "pay")
    assert callback.startswith(f"{journey.gateway.settings.gateway.public_url}/billing/callback?paymentId=")
    back = await journey.session.get(callback, allow_redirects=False)
    assert back.status == 303, await back.text()
    assert back.headers["Location"].startswith("/dashboard?paid=ord_")
    order_id = back.headers["Location"].split("=", 1)[1]
    await delivered(journey, 2)
    deliveries = journey.sim.webhooks.deliveries
    assert len(deliveries) == 2 and all(item.status == 200 for item in deliveries)
    shown = await asyncio.to_thread(credits_show, journey.stack)
    assert shown == {"balance": 5000, "plan_credits": 0, "topup_credits": 5000}
    (order,) = await journey.gateway.orders.list(account_id=journey.account.id)
    assert (order.id, order.status, order.amount_fils) == (order_id, "paid", 5000)
    assert await journey.gateway.ledger.check() == []


async def test_a_declined_plan_payment_then_paid_on_retry_activates_the_plan_once(journey):
    pay_url = await buy(journey, "plan", "pro")
    error = await press(journey, pay_url, "decline")
    page = await journey.session.get(error)
    assert "Payment not completed" in await page.text()
    (order,) = await journey.gateway.orders.list(account_id=journey.account.id)
    assert order.status == "failed"
    callback = await press(journey, pay_url, "pay")  # the customer tries again on the same invoice
    back = await journey.session.get(callback, allow_redirects=False)
    assert back.status == 303, await back.text()
    assert back.headers["Location"] == f"/dashboard?paid={order.id}"
    await delivered(journey, 4)
    plan, ends = await journey.gateway.accounts.plan_of(journey.account.id)
    assert plan == "pro" and ends is not None
    balance = await journey.gateway.ledger.balance(journey.account.id)
    assert (balance.plan_credits, balance.topup_credits) == (500, 0)
    assert (await journey.gateway.orders.get(order.id)).status == "paid"
    assert await journey.gateway.ledger.check() == []


def invoice_of(journey: Any, pay_url: str) -> Any:
    """The simulator's invoice behind a hosted payment page."""
    return journey.sim.sandbox.by_key(URL(pay_url).query["invoiceKey"])


async def test_out_of_order_webhooks_alone_credit_once_and_a_late_failure_changes_nothing(journey):
    journey.sim.configure({"out_of_order": True})  # each payment also sends a failed attempt's webhook, after
    pay_url = await buy(journey, "pack", "15k")
    journey.sim.settle(invoice_of(journey, pay_url), "paid")  # the browser never comes back
    await delivered(journey, 4)
    assert [item.transaction_status for item in journey.sim.webhooks.deliveries] == [
        "SUCCESS",
        "SUCCESS",
        "FAILED",
        "FAILED",
    ]
    (order,) = await journey.gateway.orders.list(account_id=journey.account.id)
    assert (order.status, order.amount_fils) == ("paid", 12000)
    assert (await journey.gateway.ledger.balance(journey.account.id)).topup_credits == 15000
    assert await journey.gateway.ledger.check() == []


async def test_the_reconciler_credits_a_payment_whose_return_and_webhooks_were_lost(journey):
    journey.sim.configure({"webhook_url": ""})  # no webhooks at all
    pay_url = await buy(journey, "pack", "5k")
    (order,) = await journey.gateway.orders.list(account_id=journey.account.id)
    assert await journey.gateway.orders.reconcile() == {"pending": 1}  # not paid yet: asked, left pending
    journey.sim.settle(invoice_of(journey, pay_url), "paid")
    assert await journey.gateway.orders.reconcile() == {"paid": 1}
    assert await journey.gateway.orders.reconcile() == {}
    assert (await journey.gateway.orders.get(order.id)).status == "paid"
    assert (await journey.gateway.ledger.balance(journey.account.id)).topup_credits == 5000
    assert journey.sim.stats.webhooks_skipped == 1
    assert await journey.gateway.ledger.check() == []
