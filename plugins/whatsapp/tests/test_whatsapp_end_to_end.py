"""The ten notifications of SPEC §6 end to end: each raised by its real source in a running gateway (the API,
order fulfilment, plan activation, the cloud budget, the renewal job, fail2ban's ``resayil bans report`` in
another process), delivered by the application's own delivery worker through the real WhatsApp plugin to the
sink on a real socket, and checked there: the phone in E.164 with '+', the token accepted, and the exact text,
Arabic first then English, with the event's values. Every event arrives once and only once.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from resayil_whatsapp.sink import Sink
from sqlalchemy import func, select
from whatsapp_helpers import EXTRA_ADMIN, SINK_TOKEN, sink_env

from resayil_gateway.app import create_app
from resayil_gateway.billing.payments import PaymentStatus
from resayil_gateway.events.reminders import send_renewal_reminders
from resayil_gateway.store import Store
from resayil_gateway.store.tables import outbox
from resayil_gateway.testing import TEST_SECRET, FakeBackend, FakeBackendPlugin

PUBLIC_URL = "https://api.resayil.example"
TOP_UP = f"{PUBLIC_URL}/billing/top-up"
ADMIN = "+96550000009"
AMAL = "+96550000001"
CEO = "+96550000002"
PLAN_CREDITS = 20  # [plans.pro] credits: the warning is due below 4 (20 %)
CLOUD_BUDGET = 5  # requests a day: the warning at the 4th (80 %), the cloud off at the 5th
RESAYIL = Path(sys.executable).parent / "resayil"
SETTINGS: dict[str, Any] = {
    "gateway": {"public_url": PUBLIC_URL},
    "models": {
        "catalog": {
            "fake-small": {"backend": "local", "size": "small"},
            "cloud-big": {"backend": "cloud", "size": "large"},
        }
    },
    "plans": {"pro": {"credits": PLAN_CREDITS}},
    # the worker polls for what another process queued (the ban): keep the test quick
    "notifications": {"poll_interval_s": 0.05},
}
WAIT_S = 15.0


def bilingual(arabic: str, english: str) -> str:
    """A message as the gateway renders it: Arabic, a blank line, English."""
    return f"{arabic}\n\n{english}"


def welcome(name: str, email: str) -> str:
    return bilingual(
        f"مرحباً {name} في Resayil! تم إنشاء حسابك ({email}) ورصيدك الحالي 0 رصيد.",
        f"Welcome to Resayil, {name}! Your account ({email}) is active with 0 credits.",
    )


def subscription(plan_ar: str, plan_en: str, credits: int, expiry: str) -> str:
    return bilingual(
        f"تم تفعيل باقة {plan_ar} حتى {expiry}. أُضيف {credits} رصيد إلى حسابك.",
        f"Your {plan_en} plan is active until {expiry}. {credits} credits were added.",
    )


def renewal(plan_ar: str, plan_en: str, expiry: str) -> str:
    return bilingual(
        f"تنتهي باقة {plan_ar} خلال 3 أيام ({expiry}). جدّد الآن لاستمرار الخدمة.",
        f"Your {plan_en} plan expires in 3 days ({expiry}). Renew to keep your service.",
    )


@dataclass
class Deployment:
    """A gateway with the WhatsApp plugin serving on a test client, the sink it delivers to, and what the test
    has already read from the sink."""

    gateway: Any
    client: Any
    sink: Sink
    sink_url: str
    stack_info: Any
    clock: Any
    seen: int = 0
    keys: dict[str, str] = field(default_factory=dict)

    async def delivered(self, count: int) -> list[tuple[str, str]]:
        """The next ``count`` messages the sink receives, as ``(phone, text)`` sorted (same-step messages may
        arrive in any order)."""
        async with asyncio.timeout(WAIT_S):
            messages = await self.sink.wait_for(self.seen + count)
        new, self.seen = messages[self.seen :], self.seen + count
        assert all(message.api == "resayil" for message in new)
        return sorted((message.phone, message.text) for message in new)

    async def queued(self) -> int:
        """How many messages the outbox holds, once every charge and alert check has settled."""
        await self.gateway.drain()
        async with self.gateway.store.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(outbox)) or 0)

    async def register(self, email: str, phone: str, name: str, role: str = "user") -> Any:
        """Create an account (as sign-up and ``resayil users create`` do) and give it an API key."""
        account = await self.gateway.accounts.create(email, phone, "test-password-123", name=name, role=role)
        self.keys[phone] = (await self.gateway.keys.create(account.id, "e2e", enforce_limit=False)).secret
        return account

    async def chat(self, phone: str, model: str = "fake-small") -> int:
        """One chat completion through the API with the account's key (1 credit); returns the status."""
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        headers = {"Authorization": f"Bearer {self.keys[phone]}"}
        response = await self.client.post("/v1/chat/completions", json=body, headers=headers)
        await response.read()
        return int(response.status)

    async def pay(self, account_id: int, kind: str, item: str) -> None:
        """Buy a plan or a pack: the order is stored, the provider confirms it twice (the customer's return and
        its webhook), and fulfilment credits it once."""
        orders = self.gateway.orders
        order = await orders.create(account_id, kind, item, provider="sim")
        await orders.attach_invoice(order.id, f"inv-{order.id}")
        paid = PaymentStatus("paid", f"inv-{order.id}", order.id, order.amount_fils, order.currency, f"pay-{order.id}")
        outcomes = [(await orders.fulfil(order.id, paid, source)).outcome for source in ("callback", "webhook")]
        assert outcomes == ["paid", "duplicate"]

    async def fail2ban_reports(self, ip: str, jail: str, reason: str) -> None:
        """Run fail2ban's action (``examples/fail2ban/action.d/resayil-report.conf``) in its own process, with
        the deployment's configuration from its environment."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("RESAYIL_")}
        env.update(sink_env(self.sink_url))
        env.update(
            {
                "RESAYIL_DATABASE_URL": self.stack_info.database_url,
                "RESAYIL_REDIS_URL": self.stack_info.redis_url,
                "RESAYIL_GATEWAY__REDIS_PREFIX": self.stack_info.redis_prefix,
                "RESAYIL_SECRET_KEY": TEST_SECRET,
            }
        )
        process = await asyncio.create_subprocess_exec(
            str(RESAYIL),
            *("bans", "report", ip, "--jail", jail, "--reason", reason),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(120):
            out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        assert out.decode().startswith(f"recorded ban 1 of {ip} ({jail})")


@pytest.fixture
async def deployment(gateway_to_sink, aiohttp_client, clock, stack_info, sink) -> AsyncIterator[Deployment]:
    running = await sink(token=SINK_TOKEN)
    local = FakeBackend(model_names=("fake-small",))
    cloud = FakeBackend(name="cloud", kind="cloud", model_names=("cloud-big",))
    cloud.daily_request_budget = CLOUD_BUDGET  # type: ignore[attr-defined]
    gateway = gateway_to_sink(running.url, plugins=[FakeBackendPlugin(local, cloud)], overrides=SETTINGS)
    client = await aiohttp_client(create_app(gateway))  # starts the channel and the delivery worker
    yield Deployment(gateway, client, running.state, running.url, stack_info, clock)


async def test_each_of_the_ten_notifications_reaches_whatsapp_once_in_arabic_then_english(deployment):
    d = deployment
    gateway, sink = d.gateway, d.sink

    # NOTIF-01, welcome: on registration, to the new account's phone
    await d.register("boss@example.com", ADMIN, "Boss", role="admin")
    assert await d.delivered(1) == [(ADMIN, welcome("Boss", "boss@example.com"))]
    amal = await d.register("amal@example.com", AMAL, "Amal")
    assert await d.delivered(1) == [(AMAL, welcome("Amal", "amal@example.com"))]

    # NOTIF-02, subscription confirmed: a paid plan order (confirmed twice) with plan, credits and expiry
    await d.pay(amal.id, "plan", "pro")
    assert await d.delivered(1) == [(AMAL, subscription("الاحترافية", "Pro", PLAN_CREDITS, "2026-02-14"))]

    # NOTIF-03, credit warning: below 20 % of the amount after the latest grant, once for that grant
    assert [await d.chat(AMAL) for _ in range(16)] == [200] * 16  # 4 left: not below 20 % of 20
    before = await d.queued()
    assert await d.chat(AMAL) == 200  # 3 left
    assert await d.delivered(1) == [
        (
            AMAL,
            bilingual(
                f"تنبيه: تبقّى 3 رصيد فقط (15% من 20). اشحن الآن لتفادي التوقف: {TOP_UP}",
                f"Only 3 credits left (15% of 20). Top up to avoid interruption: {TOP_UP}",
            ),
        )
    ]
    assert await d.queued() == before + 1
    assert [await d.chat(AMAL) for _ in range(2)] == [200, 200]  # 2, then 1 left: warned already
    assert await d.queued() == before + 1

    # NOTIF-04, credits exhausted: the absolute top-up link from gateway.public_url
    assert await d.chat(AMAL) == 200  # the last credit
    assert await d.delivered(1) == [
        (AMAL, bilingual(f"نفد رصيدك. اشحن للمتابعة: {TOP_UP}", f"You are out of credits. Top up here: {TOP_UP}"))
    ]
    assert await d.chat(AMAL) == 402
    assert await d.queued() == before + 2

    # NOTIF-05, top-up confirmed: a paid pack order (confirmed twice), credits added and the new balance
    await d.pay(amal.id, "topup", "5k")
    assert await d.delivered(1) == [
        (AMAL, bilingual("أُضيف 5000 رصيد إلى حسابك. الرصيد الحالي: 5000.", "5000 credits added. New balance: 5000."))
    ]

    # NOTIF-02 and NOTIF-10: an admin puts a new customer on the Enterprise plan; the admins (the admin
    # account and whatsapp.admin_phones, not the customer) hear of it
    ceo = await d.register("ceo@corp.example", CEO, "Corp CEO")
    assert await d.delivered(1) == [(CEO, welcome("Corp CEO", "ceo@corp.example"))]
    await gateway.plans.activate(ceo.id, "enterprise", ref=f"admin-plan:{ceo.id}", actor="admin:boss@example.com")
    enterprise = bilingual(
        "عميل مؤسسات جديد: Corp CEO (ceo@corp.example، +96550000002) على باقة المؤسسات.",
        "New Enterprise customer: Corp CEO (ceo@corp.example, +96550000002) on the Enterprise plan.",
    )
    assert await d.delivered(3) == sorted(
        [
            (CEO, subscription("المؤسسات", "Enterprise", 2000, "2026-02-14")),
            (ADMIN, enterprise),
            (EXTRA_ADMIN, enterprise),
        ]
    )

    # NOTIF-07 and NOTIF-08: cloud requests spend the day's cloud budget; 80 % warns, 100 % turns it off
    assert [await d.chat(CEO, "cloud-big") for _ in range(CLOUD_BUDGET - 2)] == [200] * 3
    assert await d.chat(CEO, "cloud-big") == 200  # the 4th of 5: 80 %
    warning = bilingual(
        "استهلاك السحابة بلغ 80% من الحد اليومي (4/5) ليوم 2026-01-15.",
        "Cloud usage reached 80% of the daily cap (4/5) on 2026-01-15.",
    )
    assert await d.delivered(2) == [(ADMIN, warning), (EXTRA_ADMIN, warning)]
    assert await d.chat(CEO, "cloud-big") == 200  # the 5th: 100 %
    off = bilingual(
        "بلغ استهلاك السحابة الحد اليومي (5/5) ليوم 2026-01-15 وتم إيقافها حتى الغد.",
        "Daily cloud cap reached (5/5) on 2026-01-15; cloud routing is off until tomorrow.",
    )
    assert await d.delivered(2) == [(ADMIN, off), (EXTRA_ADMIN, off)]
    assert await d.chat(CEO, "cloud-big") == 503  # the cloud is off: no request, no second alert

    # NOTIF-06, renewal reminder: the scheduled job, 3 days before the period ends, once per period
    events, settings = gateway.events, gateway.settings
    d.clock.advance(days=26)
    assert await send_renewal_reminders(events, settings) == 0  # 4 days left
    d.clock.advance(days=1, hours=1)
    assert await send_renewal_reminders(events, settings) == 2
    assert await send_renewal_reminders(events, settings) == 0
    assert await d.delivered(2) == [
        (AMAL, renewal("الاحترافية", "Pro", "2026-02-14")),
        (CEO, renewal("المؤسسات", "Enterprise", "2026-02-14")),
    ]

    # NOTIF-09, IP banned: fail2ban's action runs ``resayil bans report`` in its own process, on its own
    # (real) clock; this worker finds the message when it polls, once the fake clock has caught up
    await d.fail2ban_reports("203.0.113.9", "resayil-auth", "5 authentication failures")
    d.clock.advance(seconds=(datetime.now(UTC) - d.clock.now()).total_seconds() + 1)
    banned = bilingual(
        "تنبيه أمني: تم حظر العنوان 203.0.113.9 في resayil-auth. السبب: 5 authentication failures.",
        "Security alert: IP 203.0.113.9 banned by resayil-auth. Reason: 5 authentication failures.",
    )
    assert await d.delivered(2) == [(ADMIN, banned), (EXTRA_ADMIN, banned)]

    # once and only once: every outbox row sent, one accepted request each, no retry, nothing else
    await d.client.close()  # stopping lets the worker finish recording its last send
    store = Store(d.stack_info.database_url)
    try:
        async with store.connect() as conn:
            rows = (await conn.execute(select(outbox))).all()
    finally:
        await store.dispose()
    assert {row.status for row in rows} == {"sent"}
    assert len(rows) == d.seen == len(sink.messages) == sink.requests == 18
    assert {row.event for row in rows} == {
        "account.created",
        "plan.activated",
        "credits.warning",
        "credits.exhausted",
        "topup.credited",
        "enterprise.customer",
        "cloud.budget_warning",
        "cloud.budget_exhausted",
        "plan.renewal_reminder",
        "ip.banned",
    }
    assert sorted(row.provider_id for row in rows) == sorted(message.id for message in sink.messages)
    assert all(row.recipient.startswith("+") for row in rows)
