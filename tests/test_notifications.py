"""The ten notifications of SPEC §6: each raised where it happens, rendered Arabic then English from templates
that are complete in both languages, sent to the right people once per cause."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_notifications_channel import ChannelPlugin, FakeChannel, charge, worker_for

from resayil_gateway.app import create_app
from resayil_gateway.events import templates as templates_module
from resayil_gateway.events.catalog import NOTIFICATIONS
from resayil_gateway.events.notifications import cloud_budget, record_topup_confirmed
from resayil_gateway.events.reminders import send_renewal_reminders
from resayil_gateway.events.templates import TemplateError, Templates, template_problems
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, seed_account

USER_PHONE = "+96550000001"
ADMIN_PHONE = "+96550000009"
EXTRA_ADMIN = "+96599990000"


@pytest.fixture
def channel():
    return FakeChannel(extra_admins=(EXTRA_ADMIN,))


@pytest.fixture
async def notified(make_gateway, clock, channel):
    gateway = make_gateway(clock=clock, plugins=[ChannelPlugin(channel)])
    gateway.worker = worker_for(gateway)
    return gateway


async def create_user(gateway, email="amal@example.com", phone=USER_PHONE, name="Amal", role="user"):
    return await gateway.accounts.create(email, phone, "test-password-123", name=name, role=role)


async def deliver(gateway, channel):
    await gateway.drain()
    before = len(channel.sent)
    await gateway.worker.deliver_all()
    return channel.sent[before:]


def arabic_then_english(text: str, arabic: str, english: str) -> None:
    ar, en = text.split("\n\n")
    assert arabic in ar, text
    assert english in en, text


# -- templates ------------------------------------------------------------------------------------------


def test_every_template_exists_in_both_languages_and_uses_only_placeholders_its_event_provides():
    assert len(NOTIFICATIONS) == 10
    assert template_problems(Templates()) == []


def test_a_template_with_an_unknown_placeholder_or_a_missing_language_fails_the_check(tmp_path, monkeypatch):
    (tmp_path / "ip.banned.en.txt").write_text("Banned ${ip} for ${mood}", encoding="utf-8")
    assert template_problems(Templates(tmp_path)) == [
        "the en template for ip.banned uses mood, which the event does not provide"
    ]
    packaged = tmp_path / "packaged"
    packaged.mkdir()
    for path in templates_module.PACKAGED.glob("*.ar.txt"):
        (packaged / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(templates_module, "PACKAGED", packaged)
    problems = template_problems(Templates())
    assert len(problems) == 10
    assert all(problem.startswith("no en template for") for problem in problems)


def test_a_template_is_overridden_from_the_configured_directory_without_code_changes(tmp_path):
    (tmp_path / "topup.credited.en.txt").write_text("Thanks! +${credits} (now ${balance})", encoding="utf-8")
    text = Templates(tmp_path).render("topup.credited", {"credits": 5000, "balance": 5100})
    arabic_then_english(text, "أُضيف 5000 رصيد", "Thanks! +5000 (now 5100)")


def test_rendering_with_a_missing_value_is_an_error_not_a_blank():
    with pytest.raises(TemplateError, match=r"topup\.credited.*balance"):
        Templates().render("topup.credited", {"credits": 5})


# -- the ten events ---------------------------------------------------------------------------------------


async def test_welcome_on_registration(notified, channel):
    await create_user(notified)
    (message,) = await deliver(notified, channel)
    assert message.recipient == USER_PHONE
    assert message.event == "account.created"
    arabic_then_english(message.text, "مرحباً Amal في Resayil", "Welcome to Resayil, Amal!")
    assert "0 credits" in message.text


async def test_subscription_confirmed_with_plan_credits_and_expiry(notified, channel):
    account = await create_user(notified)
    await deliver(notified, channel)
    await notified.plans.activate(account.id, "pro", ref="order-1", actor="test")
    (message,) = await deliver(notified, channel)
    assert message.recipient == USER_PHONE
    arabic_then_english(
        message.text,
        "تم تفعيل باقة الاحترافية حتى 2026-02-14. أُضيف 500 رصيد",
        "Your Pro plan is active until 2026-02-14. 500 credits were added.",
    )
    await notified.plans.activate(account.id, "pro", ref="order-1", actor="test")  # the same order again
    assert await deliver(notified, channel) == []


async def test_credit_warning_once_below_the_ratio_of_the_amount_after_the_latest_grant(notified, channel):
    account = await create_user(notified)
    await notified.ledger.grant(account.id, 100, bucket="topup", ref="pack-1", reason="topup")
    await deliver(notified, channel)
    await charge(notified, account.id, 80, "r1")  # 20 left: not below 20 %
    assert await deliver(notified, channel) == []
    await charge(notified, account.id, 5, "r2")  # 15 left
    (message,) = await deliver(notified, channel)
    arabic_then_english(
        message.text,
        "تبقّى 15 رصيد فقط (15% من 100)",
        "Only 15 credits left (15% of 100). Top up to avoid interruption: http://127.0.0.1:8080/billing/top-up",
    )
    await charge(notified, account.id, 5, "r3")  # still low: no second warning for this grant
    assert await deliver(notified, channel) == []


async def test_credits_exhausted_with_the_absolute_top_up_link_once_per_grant(notified, channel):
    account = await create_user(notified)
    await notified.ledger.grant(account.id, 10, bucket="topup", ref="pack-1", reason="topup")
    await deliver(notified, channel)
    await charge(notified, account.id, 10, "r1")
    (message,) = await deliver(notified, channel)
    arabic_then_english(
        message.text,
        "نفد رصيدك. اشحن للمتابعة: http://127.0.0.1:8080/billing/top-up",
        "You are out of credits. Top up here: http://127.0.0.1:8080/billing/top-up",
    )
    await notified.ledger.grant(account.id, 10, bucket="topup", ref="pack-2", reason="topup")
    await charge(notified, account.id, 10, "r2")
    assert [m.event for m in await deliver(notified, channel)] == ["credits.exhausted"]


async def test_top_up_confirmed_with_credits_added_and_new_balance(notified, channel):
    account = await create_user(notified)
    await deliver(notified, channel)
    for _ in range(2):  # the same order confirmed twice (callback and webhook)
        async with notified.events.transaction() as tx:
            entry = await notified.ledger.grant(
                account.id, 5000, bucket="topup", ref="order-7", reason="topup", conn=tx.conn
            )
            balance = entry.plan_after + entry.topup_after
            await record_topup_confirmed(tx, account.id, 5000, balance, ref="order-7")
    (message,) = await deliver(notified, channel)
    arabic_then_english(message.text, "أُضيف 5000 رصيد إلى حسابك. الرصيد الحالي: 5000.", "5000 credits added.")


async def test_renewal_reminder_three_days_before_expiry_once_per_period(notified, channel, clock):
    account = await create_user(notified)
    await notified.plans.activate(account.id, "basic", ref="order-1", actor="test")
    await deliver(notified, channel)
    clock.advance(days=26)
    assert await send_renewal_reminders(notified.events, notified.settings) == 0
    clock.advance(days=1, hours=1)
    assert await send_renewal_reminders(notified.events, notified.settings) == 1
    assert await send_renewal_reminders(notified.events, notified.settings) == 0
    (message,) = await deliver(notified, channel)
    arabic_then_english(
        message.text, "تنتهي باقة الأساسية خلال 3 أيام (2026-02-14)", "Your Basic plan expires in 3 days (2026-02-14)."
    )
    await notified.plans.activate(account.id, "basic", ref="order-2", actor="test")  # renewed: a new period
    clock.advance(days=30)
    assert await send_renewal_reminders(notified.events, notified.settings) == 1


async def test_cloud_budget_alerts_reach_every_admin_once_a_day(notified, channel):
    await create_user(notified, "boss@example.com", ADMIN_PHONE, "Boss", role="admin")
    await create_user(notified)
    await deliver(notified, channel)
    for _ in range(2):
        await notified.emit(cloud_budget("cloud.budget_warning", 400, 500, "2026-01-15"))
        await notified.emit(cloud_budget("cloud.budget_exhausted", 500, 500, "2026-01-15"))
    sent = await deliver(notified, channel)
    assert sorted((m.event, m.recipient) for m in sent) == [
        ("cloud.budget_exhausted", ADMIN_PHONE),
        ("cloud.budget_exhausted", EXTRA_ADMIN),
        ("cloud.budget_warning", ADMIN_PHONE),
        ("cloud.budget_warning", EXTRA_ADMIN),
    ]
    warning = next(m for m in sent if m.event == "cloud.budget_warning")
    arabic_then_english(
        warning.text, "80% من الحد اليومي (400/500)", "Cloud usage reached 80% of the daily cap (400/500)"
    )
    exhausted = next(m for m in sent if m.event == "cloud.budget_exhausted")
    arabic_then_english(exhausted.text, "وتم إيقافها حتى الغد", "cloud routing is off until tomorrow")


async def test_ip_banned_alert_with_ip_jail_and_reason(notified, channel):
    await create_user(notified, "boss@example.com", ADMIN_PHONE, "Boss", role="admin")
    await deliver(notified, channel)
    await notified.events.bans.report("203.0.113.9", "resayil-auth", "5 failures in 10 min")
    sent = await deliver(notified, channel)
    assert {m.recipient for m in sent} == {ADMIN_PHONE, EXTRA_ADMIN}
    arabic_then_english(
        sent[0].text,
        "تم حظر العنوان 203.0.113.9 في resayil-auth. السبب: 5 failures in 10 min.",
        "Security alert: IP 203.0.113.9 banned by resayil-auth. Reason: 5 failures in 10 min.",
    )


async def test_new_enterprise_customer_alert_with_name_email_and_plan(notified, channel):
    await create_user(notified, "boss@example.com", ADMIN_PHONE, "Boss", role="admin")
    account = await create_user(notified, "ceo@corp.example", USER_PHONE, "Corp CEO")
    await deliver(notified, channel)
    await notified.plans.activate(account.id, "enterprise", ref="order-9", actor="test")
    sent = await deliver(notified, channel)
    assert sorted((m.event, m.recipient) for m in sent) == [
        ("enterprise.customer", ADMIN_PHONE),
        ("enterprise.customer", EXTRA_ADMIN),
        ("plan.activated", USER_PHONE),
    ]
    alert = next(m for m in sent if m.event == "enterprise.customer")
    arabic_then_english(
        alert.text,
        "عميل مؤسسات جديد: Corp CEO (ceo@corp.example، +96550000001) على باقة المؤسسات",
        "New Enterprise customer: Corp CEO (ceo@corp.example, +96550000001) on the Enterprise plan.",
    )
    await notified.plans.activate(account.id, "enterprise", ref="order-10", actor="test")  # an extension
    assert [m.event for m in await deliver(notified, channel)] == ["plan.activated"]


async def test_admins_are_accounts_with_the_admin_role_plus_the_channels_extra_recipients(notified, channel, clock):
    await create_user(notified, "boss@example.com", ADMIN_PHONE, "Boss", role="admin")
    disabled = await create_user(notified, "off@example.com", "+96550000008", "Off", role="admin")
    await notified.accounts.set_status(disabled.id, "disabled", actor="test")
    await create_user(notified)
    await deliver(notified, channel)
    await notified.events.bans.report("198.51.100.7", "", "")
    assert sorted(m.recipient for m in await deliver(notified, channel)) == [ADMIN_PHONE, EXTRA_ADMIN]


def test_templates_dir_setting_is_used(make_gateway, tmp_path, stack):
    if stack != "sqlite":
        pytest.skip("store-independent; proven on SQLite")
    gateway = make_gateway(overrides={"notifications": {"templates_dir": str(tmp_path)}})
    assert gateway.events.templates.override_dir == Path(tmp_path)


async def test_the_reminder_day_count_is_a_setting(make_gateway, clock, channel):
    gateway = make_gateway(
        clock=clock, plugins=[ChannelPlugin(channel)], overrides={"notifications": {"renewal_reminder_days": 7}}
    )
    account = await create_user(gateway)
    await gateway.plans.activate(account.id, "basic", ref="o", actor="test", period=timedelta(days=8))
    clock.advance(days=1, hours=1)
    assert await send_renewal_reminders(gateway.events, gateway.settings) == 1


async def test_a_request_that_spends_the_last_credit_queues_credits_exhausted(make_gateway, clock, aiohttp_client):
    channel = FakeChannel()
    backend = FakeBackend(model_names=("fake-small",))
    catalog = {"models": {"catalog": {"fake-small": {"backend": "local", "size": "small"}}}}
    gateway = make_gateway(clock=clock, plugins=[ChannelPlugin(channel), FakeBackendPlugin(backend)], overrides=catalog)
    client = await aiohttp_client(create_app(gateway))
    account = await seed_account(gateway, credits=1)
    body = {"model": "fake-small", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    response = await client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {account.key}"})
    assert response.status == 200, await response.text()
    await gateway.drain()
    events = [row.event for row in await gateway.events.outbox.list()]
    assert events[0] == "credits.exhausted"
