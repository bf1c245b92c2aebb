"""Orders: a paid plan or top-up is credited exactly once, whatever the number and order of confirmations.

Runs on SQLite and on PostgreSQL + Redis (the stack where concurrency is real). The provider is a fake that
implements the PaymentProvider protocol: it keeps invoices in memory and signs its webhooks with HMAC.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from sqlalchemy import func, select

from resayil_gateway.billing.orders import Fulfilment, Order, OrderService, format_kwd
from resayil_gateway.billing.payments import (
    Checkout,
    CheckoutStarted,
    PaymentError,
    PaymentProvider,
    PaymentStatus,
    WebhookNotice,
    WebhookRejected,
)
from resayil_gateway.cli import build_cli
from resayil_gateway.clock import Clock
from resayil_gateway.plugins import hookimpl, make_plugin_manager
from resayil_gateway.store.tables import ledger, subscriptions
from resayil_gateway.testing import TEST_SECRET, build_gateway, seed_account
from resayil_gateway.web.sessions import csrf_exempt, login
from resayil_gateway.web_keys import GATEWAY

CSRF = re.compile(r"name='csrf_token' value='([^']+)'")


@dataclass
class FakeProvider:
    """A payment provider in memory: invoices by id, payments by id, HMAC-signed webhooks."""

    clock: Clock
    name: str = "fake"
    secret: bytes = b"fake-webhook-secret"
    max_age: timedelta = timedelta(hours=1)
    statuses: dict[str, PaymentStatus] = field(default_factory=dict)
    payments: dict[str, str] = field(default_factory=dict)
    checkouts: list[Checkout] = field(default_factory=list)
    refuse_checkout: PaymentError | None = None
    status_calls: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1001))

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def create_payment(self, checkout: Checkout) -> CheckoutStarted:
        if self.refuse_checkout is not None:
            raise self.refuse_checkout
        self.checkouts.append(checkout)
        invoice = str(next(self._ids))
        self.statuses[invoice] = PaymentStatus(
            "pending", invoice, checkout.order_id, checkout.amount_fils, checkout.currency
        )
        return CheckoutStarted(f"https://pay.example/invoice/{invoice}", invoice)

    def settle(self, invoice: str, state: str = "paid", **tampered: Any) -> str:
        """Pay (or fail) the invoice as the hosted page would; returns the attempt's payment id."""
        payment_id = f"pay-{next(self._ids)}"
        self.payments[payment_id] = invoice
        self.statuses[invoice] = replace(self.statuses[invoice], state=state, payment_id=payment_id, **tampered)
        return payment_id

    async def payment_status(self, *, payment_id: str | None = None, invoice_id: str | None = None) -> PaymentStatus:
        self.status_calls += 1
        await asyncio.sleep(0)  # let racing confirmations interleave
        invoice = self.payments.get(payment_id or "") or invoice_id or ""
        if invoice not in self.statuses:
            raise PaymentError("unknown payment")
        return self.statuses[invoice]

    def webhook(self, invoice: str, *, at: datetime | None = None) -> tuple[dict[str, str], bytes]:
        """A signed webhook about ``invoice`` (headers, body)."""
        created = (at or self.clock.now()).isoformat()
        body = json.dumps({"invoice_id": invoice, "created_at": created}).encode()
        return {"X-Signature": hmac.new(self.secret, body, hashlib.sha256).hexdigest()}, body

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        expected = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("X-Signature", "")):
            raise WebhookRejected("bad signature")
        data = json.loads(body)
        created = datetime.fromisoformat(data["created_at"])
        if abs(self.clock.now() - created) > self.max_age:
            raise WebhookRejected("stale webhook")
        invoice = str(data["invoice_id"])
        return WebhookNotice(invoice, None, self.statuses[invoice].state, None, created)


class ProviderPlugin:
    """Registers the fake provider, records events, and offers a test-only sign-in route."""

    def __init__(self, provider: FakeProvider | None) -> None:
        self.provider = provider
        self.events: list[str] = []
        self.payloads: dict[str, dict[str, Any]] = {}
        self.paid = asyncio.Event()

    @hookimpl
    def register_payment_providers(self, register: Any, gateway: Any) -> None:
        if self.provider is not None:
            register(self.provider)

    @hookimpl
    def on_event(self, event: Any, gateway: Any) -> None:
        self.events.append(event.name)
        self.payloads[event.name] = dict(event.data)
        if event.name == "order.paid":
            self.paid.set()

    @hookimpl
    def register_routes(self, gateway: Any) -> Any:
        @csrf_exempt
        async def sign_in(request: web.Request) -> web.Response:
            account = await request.app[GATEWAY].accounts.get(int(request.match_info["id"]))
            await login(request, account, remember=False)
            return web.Response(text="signed in")

        return [web.post("/test/sign-in/{id}", sign_in)]


def test_the_fake_provider_implements_the_protocol(clock):
    assert isinstance(FakeProvider(clock), PaymentProvider)


@pytest.fixture
def provider(clock) -> FakeProvider:
    return FakeProvider(clock)


@pytest.fixture
def plugin(provider) -> ProviderPlugin:
    return ProviderPlugin(provider)


@pytest.fixture
async def shop(make_gateway, clock, plugin):
    gateway = make_gateway(clock=clock, plugins=[plugin])
    gateway.account = await seed_account(gateway)
    return gateway


async def checkout(gateway: Any, provider: FakeProvider, kind: str = "topup", item: str = "5k") -> tuple[Order, str]:
    """Create an order and its invoice as the checkout page does."""
    order = await gateway.orders.create(gateway.account.id, kind, item, provider.name)
    started = await provider.create_payment(
        Checkout(order.id, order.amount_fils, order.currency, "test", "en", "http://x/cb", "http://x/err")
    )
    await gateway.orders.attach_invoice(order.id, started.invoice_id)
    return order, started.invoice_id


async def ledger_rows(gateway: Any, ref: str) -> int:
    async with gateway.store.connect() as conn:
        return int((await conn.execute(select(func.count()).where(ledger.c.ref == ref))).scalar_one())


async def test_prices_come_from_configuration_and_the_order_is_stored_pending_before_payment(shop, provider):
    order = await shop.orders.create(shop.account.id, "topup", "15k", provider.name)
    assert (order.status, order.amount_fils, order.credits, order.currency) == ("pending", 12000, 15000, "KWD")
    assert re.fullmatch(r"ord_[0-9a-f]{24}", order.id)
    plan = await shop.orders.create(shop.account.id, "plan", "pro", provider.name)
    assert (plan.amount_fils, plan.credits) == (7500, 500)
    assert format_kwd(order.amount_fils) == "12.000" and format_kwd(2500) == "2.500"


async def test_callback_five_duplicate_webhooks_and_the_reconciler_racing_credit_one_paid_order_once(
    shop, provider, plugin, clock
):
    order, invoice = await checkout(shop, provider)
    payment_id = provider.settle(invoice)
    clock.advance(seconds=601)  # old enough for the reconciler too

    async def callback() -> Fulfilment:
        status = await provider.payment_status(payment_id=payment_id)
        return await shop.orders.fulfil_status(provider.name, status, "callback")

    async def webhook() -> Fulfilment:
        status = await provider.payment_status(invoice_id=invoice)
        return await shop.orders.fulfil_status(provider.name, status, "webhook")

    async def reconciler() -> Fulfilment:
        counts = await shop.orders.reconcile()
        return Fulfilment("paid" if counts.get("paid") else "duplicate", await shop.orders.get(order.id))

    results = await asyncio.gather(callback(), *(webhook() for _ in range(5)), reconciler())
    outcomes = [result.outcome for result in results]
    assert outcomes.count("paid") == 1 and outcomes.count("duplicate") == 6, outcomes
    assert all(result.order.status == "paid" for result in results)  # every loser reports the order as paid
    balance = await shop.ledger.balance(shop.account.id)
    assert (balance.topup_credits, balance.plan_credits) == (5000, 0)  # the top-up bucket
    assert await ledger_rows(shop, f"order:{order.id}") == 1
    paid = await shop.orders.get(order.id)
    assert paid.status == "paid" and paid.paid_at is not None and paid.payment_id == payment_id
    assert plugin.events.count("order.paid") == 1 and plugin.events.count("topup.credited") == 1
    assert plugin.payloads["topup.credited"] == {
        "order_id": order.id,
        "credits": 5000,
        "pack": "5k",
        "balance": 5000,
        "topup_balance": 5000,
    }
    assert await shop.ledger.check() == []


@pytest.mark.parametrize(
    ("tampered", "reason"),
    [
        ({"amount_fils": 4999}, "amount 4999 fils"),
        ({"currency": "USD"}, "currency 'USD'"),
        ({"order_id": "ord_someone_elses"}, "reference 'ord_someone_elses'"),
    ],
)
async def test_a_status_that_does_not_match_the_order_is_refused_logged_and_credits_nothing(
    shop, provider, caplog, tampered, reason
):
    order, invoice = await checkout(shop, provider)
    provider.settle(invoice, **tampered)
    with caplog.at_level(logging.WARNING, logger="resayil.orders"):
        result = await shop.orders.fulfil_status(provider.name, await provider.payment_status(invoice_id=invoice), "t")
    assert result.outcome == "refused" and reason in result.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and order.id in warnings[0] and reason in warnings[0]
    assert (await shop.orders.get(order.id)).status == "pending"
    assert (await shop.ledger.balance(shop.account.id)).total == 0
    assert await shop.ledger.check() == []


async def test_a_failed_order_paid_later_is_credited_once_and_paid_never_goes_back(shop, provider):
    order, invoice = await checkout(shop, provider)
    provider.settle(invoice, "failed")
    assert (await shop.orders.fulfil_status(provider.name, provider.statuses[invoice], "error-return")).outcome == (
        "failed"
    )
    assert (await shop.orders.get(order.id)).status == "failed"
    provider.settle(invoice, "paid")  # the customer retried on the payment page
    for _ in range(2):
        await shop.orders.fulfil_status(provider.name, provider.statuses[invoice], "webhook")
    late_failure = replace(provider.statuses[invoice], state="failed")
    assert (await shop.orders.fulfil(order.id, late_failure, "webhook")).outcome == "duplicate"
    assert (await shop.orders.get(order.id)).status == "paid"
    assert (await shop.ledger.balance(shop.account.id)).topup_credits == 5000
    assert await ledger_rows(shop, f"order:{order.id}") == 1
    assert await shop.ledger.check() == []


async def test_a_plan_order_activates_the_plan_and_a_second_before_expiry_extends_from_the_current_end(
    shop, provider, plugin, clock
):
    first, invoice = await checkout(shop, provider, "plan", "pro")
    provider.settle(invoice)
    assert (await shop.orders.fulfil_status(provider.name, provider.statuses[invoice], "callback")).outcome == "paid"
    plan, end = await shop.accounts.plan_of(shop.account.id)
    assert plan == "pro" and end == clock.now() + timedelta(days=30)
    assert (await shop.ledger.balance(shop.account.id)).plan_credits == 500
    clock.advance(days=10)
    second, invoice2 = await checkout(shop, provider, "plan", "pro")
    provider.settle(invoice2)
    await shop.orders.fulfil_status(provider.name, provider.statuses[invoice2], "callback")
    plan, extended = await shop.accounts.plan_of(shop.account.id)
    assert plan == "pro" and extended == end + timedelta(days=30)
    assert [(await shop.orders.get(o.id)).status for o in (first, second)] == ["paid", "paid"]
    assert plugin.events.count("plan.activated") == 2 and plugin.events.count("order.paid") == 2
    async with shop.store.connect() as conn:
        assert len((await conn.execute(select(subscriptions))).all()) == 1
    assert await shop.ledger.check() == []


async def test_the_reconciler_asks_only_about_old_pending_orders_and_fails_expired_ones(shop, provider, clock):
    young, young_invoice = await checkout(shop, provider)
    provider.settle(young_invoice)
    assert await shop.orders.reconcile() == {}  # not old enough: the browser or webhook will come first
    clock.advance(seconds=601)
    expired, expired_invoice = await checkout(shop, provider, "topup", "15k")
    clock.advance(seconds=601)
    provider.settle(expired_invoice, "failed")
    assert await shop.orders.reconcile() == {"paid": 1, "failed": 1}
    assert (await shop.orders.get(young.id)).status == "paid"
    assert (await shop.orders.get(expired.id)).status == "failed"
    assert await shop.orders.reconcile() == {}  # nothing pending any more
    assert await shop.ledger.check() == []


async def test_reconcilers_of_two_workers_never_ask_about_the_same_order(shop, provider, clock):
    for _ in range(3):
        _order, invoice = await checkout(shop, provider)
        provider.settle(invoice)
    clock.advance(seconds=601)
    provider.status_calls = 0
    first, second = await asyncio.gather(shop.orders.reconcile(), shop.orders.reconcile())
    assert first.get("paid", 0) + second.get("paid", 0) == 3
    assert provider.status_calls == 3  # each order claimed by one reconciler only
    assert (await shop.ledger.balance(shop.account.id)).topup_credits == 15000
    assert await shop.ledger.check() == []


async def test_the_background_reconciler_runs_only_when_a_provider_is_registered(shop, provider, plugin, clock):
    lonely = OrderService(shop.store, clock, shop.settings, shop.ledger, shop.plans, shop.emit, providers={})
    assert await asyncio.wait_for(lonely.run(interval=0), 1) is None  # returns at once: nothing to ask
    _order, invoice = await checkout(shop, provider)
    provider.settle(invoice)
    clock.advance(seconds=601)
    loop = asyncio.create_task(shop.orders.run(interval=0))
    try:
        await asyncio.wait_for(plugin.paid.wait(), 10)
    finally:
        loop.cancel()
    assert (await shop.ledger.balance(shop.account.id)).topup_credits == 5000


# -- over HTTP -------------------------------------------------------------------------------------------


@pytest.fixture
async def client(gateway_client, plugin):
    return await gateway_client(plugin, credits=0)


async def signed_in(client: Any) -> str:
    """Sign the seeded account in; returns the CSRF token of its session (from the top-up page)."""
    assert (await client.post(f"/test/sign-in/{client.account.id}")).status == 200
    page = await (await client.get("/billing/top-up")).text()
    return CSRF.search(page).group(1)


async def test_checkout_stores_the_order_then_redirects_to_the_payment_page_and_the_callback_credits(client, provider):
    token = await signed_in(client)
    response = await client.post("/billing/checkout", data={"csrf_token": token, "pack": "5k"}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("https://pay.example/invoice/")
    (sent,) = provider.checkouts
    assert (sent.amount_fils, sent.currency, sent.customer_email) == (5000, "KWD", client.account.email)
    assert sent.callback_url.endswith("/billing/callback") and sent.error_url.endswith("/billing/error")
    (order,) = await client.gateway.orders.list(account_id=client.account.id)
    assert order.status == "pending" and order.id == sent.order_id and order.invoice_id
    payment_id = provider.settle(order.invoice_id)
    page = await client.get(f"/billing/callback?paymentId={payment_id}", allow_redirects=False)
    assert page.status == 200 and "Payment received" in await page.text()  # no portal: a confirmation page
    assert (await client.gateway.ledger.balance(client.account.id)).topup_credits == 5000
    listed = await (await client.get("/billing/orders")).json()
    assert [(o["id"], o["status"]) for o in listed["orders"]] == [(order.id, "paid")]
    assert await client.gateway.ledger.check() == []


async def test_checkout_refuses_unknown_items_anonymous_users_and_a_missing_csrf_token(client):
    assert (await client.get("/billing/orders")).status == 401
    anonymous = await client.get("/billing/top-up")
    text = await anonymous.text()
    assert "/login?next=/billing/top-up" in text and "csrf_token" not in text
    for price in ("2.500 KWD", "7.500 KWD", "25.000 KWD", "5.000 KWD", "12.000 KWD", "35.000 KWD"):
        assert price in text
    token = await signed_in(client)
    for form in ({"pack": "1m"}, {"plan": "gold"}, {}, {"plan": "pro", "pack": "5k"}):
        response = await client.post("/billing/checkout", data={"csrf_token": token, **form})
        assert response.status == 400, form
    assert (await client.post("/billing/checkout", data={"pack": "5k"})).status == 403
    assert await client.gateway.orders.list() == []


async def test_a_refused_checkout_answers_503_and_marks_the_order_failed(client, provider):
    provider.refuse_checkout = PaymentError("the provider is down", transient=True)
    token = await signed_in(client)
    response = await client.post("/billing/checkout", data={"csrf_token": token, "plan": "pro"})
    assert response.status == 503 and "Nothing was charged" in await response.text()
    (order,) = await client.gateway.orders.list()
    assert order.status == "failed"


async def test_without_a_payment_provider_checkout_answers_a_clear_503(gateway_client):
    client = await gateway_client(ProviderPlugin(None), credits=0)
    token = await signed_in(client)
    response = await client.post("/billing/checkout", data={"csrf_token": token, "pack": "5k"})
    assert response.status == 503 and "Payments are unavailable" in await response.text()
    assert await client.gateway.orders.list() == []


async def test_webhooks_forged_stale_and_replayed_change_nothing_and_a_genuine_one_credits_once(
    client, provider, clock, caplog
):
    client.gateway.account = client.account
    order, invoice = await checkout(client.gateway, provider)
    provider.settle(invoice)
    headers, body = provider.webhook(invoice)
    forged = {"X-Signature": "0" * 64, "Content-Type": "application/json"}
    with caplog.at_level(logging.WARNING, logger="resayil.billing"):
        response = await client.post("/billing/webhooks/fake", data=body, headers=forged)
    assert response.status == 401 and await response.json() == {"error": "webhook rejected"}
    assert any("webhook rejected" in r.getMessage() and "bad signature" in r.getMessage() for r in caplog.records)
    stale_headers, stale_body = provider.webhook(invoice, at=clock.now() - timedelta(hours=2))
    assert (await client.post("/billing/webhooks/fake", data=stale_body, headers=stale_headers)).status == 401
    assert (await client.gateway.orders.get(order.id)).status == "pending"
    assert (await client.gateway.ledger.balance(client.account.id)).total == 0
    outcomes = []
    for _ in range(3):  # the genuine one, then replays of it
        response = await client.post("/billing/webhooks/fake", data=body, headers=headers)
        assert response.status == 200
        outcomes.append((await response.json())["outcome"])
    assert outcomes == ["paid", "duplicate", "duplicate"]
    assert (await client.gateway.ledger.balance(client.account.id)).topup_credits == 5000
    assert (await client.post("/billing/webhooks/nobody", data=body, headers=headers)).status == 404
    assert await client.gateway.ledger.check() == []


async def test_the_error_return_marks_the_order_failed_with_a_retry_link(client, provider):
    client.gateway.account = client.account
    order, invoice = await checkout(client.gateway, provider)
    payment_id = provider.settle(invoice, "failed")
    page = await client.get(f"/billing/error?paymentId={payment_id}")
    text = await page.text()
    assert page.status == 200 and "Payment not completed" in text and "/billing/top-up" in text
    assert (await client.gateway.orders.get(order.id)).status == "failed"
    assert (await client.get("/billing/callback")).status == 400
    unknown = await client.get("/billing/callback?paymentId=pay-forged")
    assert unknown.status == 400 and "Unknown payment" in await unknown.text()


# -- the command line ------------------------------------------------------------------------------------


def test_resayil_plans_list_and_orders_list_and_reconcile(stack_info):
    async def seed() -> str:
        gateway = build_gateway(
            stack_info.database_url, redis_url=stack_info.redis_url, redis_prefix=stack_info.redis_prefix
        )
        try:
            account = await seed_account(gateway)
            return (await gateway.orders.create(account.id, "topup", "15k", "myfatoorah")).id
        finally:
            await gateway.close()

    order_id = asyncio.run(seed())
    env = {
        "RESAYIL_CONFIG": None,
        "RESAYIL_LOAD_PLUGINS": None,
        "RESAYIL_DISABLE_PLUGINS": None,
        "RESAYIL_DATABASE_URL": stack_info.database_url,
        "RESAYIL_REDIS_URL": stack_info.redis_url,
        "RESAYIL_SECRET_KEY": TEST_SECRET,
    }
    cli = build_cli(make_plugin_manager(env={}))

    def resayil(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=env)

    plans = resayil("plans", "list")
    assert plans.exit_code == 0, plans.output
    assert plans.stdout.splitlines()[0].split() == ["basic", "Basic", "2.500", "KWD", "100", "credits", "30", "days"]
    listed = resayil("orders", "list", "--json")
    assert [(o["id"], o["status"], o["amount_fils"]) for o in json.loads(listed.stdout)] == [
        (order_id, "pending", 12000)
    ]
    assert order_id in resayil("orders", "list", "--status", "pending").stdout
    assert resayil("orders", "list", "--status", "paid").stdout == ""
    refused = resayil("orders", "reconcile")
    assert (
        refused.exit_code == 1 and refused.stderr == "error: no payment provider is configured (enable [myfatoorah])\n"
    )
