"""The portal's pages as a browser without JavaScript sees them (SPEC §1, §2, §8)."""

from __future__ import annotations

import logging
import re

import pytest
from portal_helpers import PASSWORD, csrf_of, log_in, post_form, register
from sqlalchemy import insert

from resayil_gateway.store.tables import orders

one_stack = pytest.mark.parametrize("stack", ["sqlite"])


@one_stack
async def test_landing_shows_pricing_from_configuration_in_kwd_with_three_decimals(portal):
    html = await (await portal.get("/", cookies={"resayil_lang": "en"})).text()
    assert "2.500 KWD" in html and "7.500 KWD" in html and "25.000 KWD" in html
    assert "12.000 KWD" in html
    assert "http://127.0.0.1:8080/v1" in html
    for snippet in ("curl", "from openai import OpenAI", 'import OpenAI from "openai"', "/register"):
        assert snippet in html


@one_stack
async def test_landing_lists_catalog_models_never_restricted_ones(portal):
    portal.gateway.backends["fake"].set_models(["fake-small", "bge-m3", "glm-4.7-flash:latest"])
    html = await (await portal.get("/")).text()
    assert "fake-small" in html
    assert "bge-m3" not in html and "glm-4.7-flash" not in html


@one_stack
async def test_arabic_is_the_default_right_to_left(portal):
    html = await (await portal.get("/")).text()
    assert '<html lang="ar" dir="rtl">' in html
    assert "د.ك" in html


@one_stack
async def test_language_switch_is_remembered_in_a_cookie(portal):
    response = await portal.get("/locale/en?next=/login", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login"
    assert response.cookies["resayil_lang"].value == "en"
    html = await (await portal.get("/login")).text()
    assert '<html lang="en" dir="ltr">' in html


@one_stack
async def test_language_switch_never_redirects_to_another_site(portal):
    response = await portal.get("/locale/en?next=//evil.example/", allow_redirects=False)
    assert response.headers["Location"] == "/dashboard"


@one_stack
async def test_default_language_is_configurable(make_gateway, aiohttp_client):
    from resayil_portal import plugin

    from resayil_gateway.app import create_app

    gateway = make_gateway(plugins=[plugin], overrides={"gateway": {"default_language": "en"}})
    client = await aiohttp_client(create_app(gateway))
    assert '<html lang="en" dir="ltr">' in await (await client.get("/")).text()


async def test_register_logs_in_and_lands_on_the_dashboard_with_a_kuwaiti_phone(portal):
    response = await register(portal)
    assert response.status == 303 and response.headers["Location"].startswith("/dashboard")
    account = await portal.gateway.accounts.find("sara@example.com")
    assert account.phone == "+96551234567"
    dashboard = await portal.get("/dashboard")
    assert dashboard.status == 200


@one_stack
async def test_register_errors_rerender_the_form_with_the_values_kept(portal):
    await register(portal)
    await portal.post("/logout", data={"csrf_token": csrf_of(await (await portal.get("/dashboard")).text())})
    response = await register(portal, email="sara@example.com", phone="55554444", password="short")
    html = await response.text()
    assert response.status == 400
    assert 'value="sara@example.com"' in html and 'value="55554444"' in html
    assert 'aria-invalid="true"' in html


@one_stack
async def test_duplicate_email_is_a_field_error(portal):
    await portal.gateway.accounts.create("taken@example.com", "+96560000000", PASSWORD)
    response = await register(portal, email="taken@example.com", cookies=None) if False else None
    response = await register(portal, email="taken@example.com")
    assert response.status == 400
    assert 'id="email-error"' in await response.text()


@one_stack
async def test_register_with_a_plan_offers_to_pay_for_it(portal):
    response = await register(portal, plan="pro")
    assert response.headers["Location"] == "/dashboard?welcome=1&plan=pro"
    html = await (await portal.get(response.headers["Location"])).text()
    assert 'action="/billing/checkout"' in html and 'name="plan" value="pro"' in html


async def test_login_with_email_or_phone(portal):
    await portal.gateway.accounts.create("ali@example.com", "+96550001111", PASSWORD)
    assert (await log_in(portal, "ali@example.com")).status == 303
    portal.session.cookie_jar.clear()
    assert (await log_in(portal, "50001111")).status == 303


@one_stack
async def test_bad_login_says_so_and_logs_the_fail2ban_line(portal, caplog):
    caplog.set_level(logging.WARNING, logger="resayil.auth")
    response = await log_in(portal, "nobody@example.com", "wrong-password")
    assert response.status == 400
    assert "AUTH_FAILURE ip=127.0.0.1 kind=password reason=bad_credentials path=/login" in caplog.text


async def test_login_is_throttled_per_account_after_five_failures_however_it_is_typed(portal):
    await portal.gateway.accounts.create("ali@example.com", "+96550001111", PASSWORD)
    for login in ("ali@example.com", "ALI@example.com", "50001111", "+96550001111", "+965 5000 1111"):
        assert (await log_in(portal, login, "wrong-password")).status == 400
    blocked = await log_in(portal, "50001111", PASSWORD)
    assert blocked.status == 429
    assert "15" in await blocked.text()


@one_stack
async def test_login_is_throttled_per_ip_across_accounts(portal):
    for number in range(5):
        await log_in(portal, f"nobody{number}@example.com", "wrong-password")
    assert (await log_in(portal, "someone-else@example.com", "wrong-password")).status == 429


@one_stack
async def test_login_throttle_lifts_after_the_window(portal, clock):
    await portal.gateway.accounts.create("ali@example.com", "+96550001111", PASSWORD)
    for _ in range(5):
        await log_in(portal, "ali@example.com", "wrong-password")
    clock.advance(seconds=901)
    assert (await log_in(portal, "ali@example.com")).status == 303


@one_stack
async def test_login_page_redirects_back_only_to_local_paths(portal):
    await portal.gateway.accounts.create("ali@example.com", "+96550001111", PASSWORD)
    page = await (await portal.get("/login?next=https://evil.example")).text()
    response = await portal.post(
        "/login",
        data={"csrf_token": csrf_of(page), "login": "ali@example.com", "password": PASSWORD, "next": "//evil"},
        allow_redirects=False,
    )
    assert response.headers["Location"] == "/dashboard"


@one_stack
async def test_dashboard_requires_login(portal):
    response = await portal.get("/dashboard", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login?next=/dashboard"


@one_stack
async def test_every_form_carries_a_csrf_token_and_posts_without_it_are_refused(portal):
    await register(portal)
    html = await (await portal.get("/dashboard")).text()
    assert html.count("<form") == html.count('name="csrf_token"')
    assert (await portal.post("/dashboard/keys", data={"label": "x"})).status == 403


async def test_key_is_shown_once_and_listed_by_prefix(portal):
    await register(portal)
    response = await post_form(portal, "/dashboard", "/dashboard/keys", {"label": "my app"})
    html = await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    secret = html.split('data-testid="new-key">')[1].split("<")[0]
    assert secret.startswith("rsk-") and len(secret) == 47
    again = await (await portal.get("/dashboard")).text()
    assert secret not in again and secret[:12] in again and "my app" in again


@one_stack
async def test_plan_key_limit_is_enforced_with_a_clear_message(portal):
    await register(portal)
    await post_form(portal, "/dashboard", "/dashboard/keys", {"label": "one"})
    response = await post_form(portal, "/dashboard", "/dashboard/keys", {"label": "two"})
    assert response.status == 409
    assert 'role="alert"' in await response.text()


@one_stack
async def test_deleting_a_key_asks_for_confirmation_then_revokes_it(portal):
    await register(portal)
    await post_form(portal, "/dashboard", "/dashboard/keys", {"label": "one"})
    account = await portal.gateway.accounts.find("sara@example.com")
    (key,) = await portal.gateway.keys.list(account.id)
    confirm = f"/dashboard/keys/{key.prefix}/delete"
    assert "rsk-" in await (await portal.get(confirm)).text()
    response = await post_form(portal, confirm, confirm, {})
    assert response.status == 303
    assert await portal.gateway.keys.list(account.id) == []


@one_stack
async def test_dashboard_shows_balance_plan_usage_chart_and_payments(portal, clock):
    await register(portal)
    account = await portal.gateway.accounts.find("sara@example.com")
    await portal.gateway.plans.activate(account.id, "pro", ref="t-plan", actor="test")
    now = clock.now()
    async with portal.gateway.store.begin() as conn:
        await conn.execute(
            insert(orders).values(
                id="ord_1",
                account_id=account.id,
                kind="pack",
                item="5k",
                amount_fils=5000,
                credits=5000,
                status="paid",
                provider="test",
                created_at=now,
                updated_at=now,
                paid_at=now,
            )
        )
    html = await (await portal.get("/dashboard", cookies={"resayil_lang": "en"})).text()
    assert 'data-testid="balance">500<' in html
    assert "Pro" in html and "Active" in html
    assert "<svg" in html and 'role="img"' in html
    assert "5.000 KWD" in html and "Paid" in html


@one_stack
async def test_the_dashboard_confirms_a_returning_payment_only_for_the_users_own_order(portal, clock):
    await register(portal)
    mine = await portal.gateway.accounts.find("sara@example.com")
    theirs = await portal.gateway.accounts.create("other@example.com", "+96550004444", PASSWORD)
    now = clock.now()
    rows = [("ord_paid", mine.id, "paid"), ("ord_wait", mine.id, "pending"), ("ord_theirs", theirs.id, "paid")]
    async with portal.gateway.store.begin() as conn:
        for order_id, account_id, status in rows:
            await conn.execute(
                insert(orders).values(
                    id=order_id,
                    account_id=account_id,
                    kind="topup",
                    item="5k",
                    amount_fils=5000,
                    credits=5000,
                    status=status,
                    provider="test",
                    created_at=now,
                    updated_at=now,
                    paid_at=now if status == "paid" else None,
                )
            )

    async def notice(order_id: str) -> str:
        html = await (await portal.get(f"/dashboard?paid={order_id}", cookies={"resayil_lang": "en"})).text()
        found = re.search(r'data-testid="paid-notice">(.*?)</div>', html, re.S)
        return " ".join(re.sub(r"<[^>]+>", "", found.group(1)).split()) if found else ""

    assert "Payment received. 5,000 credits were added to your balance (5.000 KWD)." in await notice("ord_paid")
    assert "We are confirming your payment." in await notice("ord_wait")
    assert await notice("ord_theirs") == ""  # another account's order says nothing, not even that it exists
    assert await notice("ord_nope") == ""


@one_stack
async def test_admin_pages_answer_non_admins_403_not_a_redirect(portal):
    await register(portal)
    for path in ("/admin", "/admin/users", "/admin/notifications", "/admin/bans", "/admin/models"):
        response = await portal.get(path, allow_redirects=False)
        assert response.status == 403, path


async def test_admin_adjusts_credits_with_a_signed_delta_audited(portal):
    from sqlalchemy import select

    from resayil_gateway.store.tables import audit

    user = await portal.gateway.accounts.create("user@example.com", "+96550002222", PASSWORD)
    await portal.gateway.ledger.grant(user.id, 100, bucket="topup", ref="g1", reason="topup")
    await portal.gateway.accounts.create("boss@example.com", "+96550003333", PASSWORD, role="admin")
    await log_in(portal, "boss@example.com")
    page = f"/admin/users/{user.id}"
    response = await post_form(portal, page, f"{page}/credits", {"delta": "+250", "reason": "goodwill"})
    assert response.status == 303
    response = await post_form(portal, page, f"{page}/credits", {"delta": "-50", "reason": "correction"})
    assert (await portal.gateway.ledger.balance(user.id)).total == 300
    refused = await post_form(portal, page, f"{page}/credits", {"delta": "-1000", "reason": "too much"})
    assert refused.status == 400
    async with portal.gateway.store.connect() as conn:
        actions = [row.action for row in await conn.execute(select(audit.c.action))]
    assert actions.count("credits.adjusted") == 2


@one_stack
async def test_admin_changes_a_plan_and_revokes_a_key(portal):
    user = await portal.gateway.accounts.create("user@example.com", "+96550002222", PASSWORD)
    key = await portal.gateway.keys.create(user.id, "k")
    await portal.gateway.accounts.create("boss@example.com", "+96550003333", PASSWORD, role="admin")
    await log_in(portal, "boss@example.com")
    page = f"/admin/users/{user.id}"
    assert (await post_form(portal, page, f"{page}/plan", {"plan": "enterprise"})).status == 303
    assert (await portal.gateway.accounts.plan_of(user.id))[0] == "enterprise"
    revoke = f"{page}/keys/{key.key.prefix}/revoke"
    assert (await post_form(portal, page, revoke, {})).status == 303
    assert await portal.gateway.keys.list(user.id) == []


@one_stack
async def test_admin_overview_users_search_and_logs_render(portal):
    await portal.gateway.accounts.create("user@example.com", "+96550002222", PASSWORD)
    await portal.gateway.accounts.create("boss@example.com", "+96550003333", PASSWORD, role="admin")
    await log_in(portal, "boss@example.com")
    for path in ("/admin", "/admin/notifications", "/admin/bans", "/admin/models"):
        assert (await portal.get(path)).status == 200, path
    found = await (await portal.get("/admin/users?q=user@")).text()
    assert "user@example.com" in found and "boss@example.com" not in found


async def test_logout_from_any_page_ends_the_session(portal):
    await register(portal)
    html = await (await portal.get("/")).text()
    assert 'action="/logout"' in html
    response = await portal.post("/logout", data={"csrf_token": csrf_of(html)}, allow_redirects=False)
    assert response.status == 303
    assert (await portal.get("/dashboard", allow_redirects=False)).status == 303


@one_stack
async def test_admin_overview_shows_paid_revenue_today_and_by_plan(portal, clock):
    from datetime import timedelta

    user = await portal.gateway.accounts.create("user@example.com", "+96550002222", PASSWORD)
    await portal.gateway.accounts.create("boss@example.com", "+96550003333", PASSWORD, role="admin")
    now = clock.now()
    rows = [
        ("o1", "plan", "pro", 7500, "paid", now),
        ("o2", "pack", "5k", 5000, "paid", now),
        ("o3", "pack", "15k", 12000, "pending", None),
        ("o4", "plan", "basic", 2500, "paid", now - timedelta(days=40)),
    ]
    async with portal.gateway.store.begin() as conn:
        for order_id, kind, item, fils, status, paid_at in rows:
            await conn.execute(
                insert(orders).values(
                    id=order_id,
                    account_id=user.id,
                    kind=kind,
                    item=item,
                    amount_fils=fils,
                    status=status,
                    provider="test",
                    created_at=now,
                    updated_at=now,
                    paid_at=paid_at,
                )
            )
    await log_in(portal, "boss@example.com")
    html = await (await portal.get("/admin", cookies={"resayil_lang": "en"})).text()
    assert "12.500 KWD" in html  # today: the paid plan and the paid pack, not the pending one
    assert "All time 15.000 KWD" in html
    assert "7.500 KWD" in html and "5.000 KWD" in html


@one_stack
async def test_the_top_up_link_of_every_402_opens_the_dashboards_top_up_after_signing_in(portal):
    response = await portal.get("/billing/top-up", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login?next=/dashboard%23topup"
    login_page = await (await portal.get(response.headers["Location"])).text()
    assert 'value="/dashboard#topup"' in login_page  # where the login form goes afterwards
    await register(portal)
    response = await portal.get("/billing/top-up", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/dashboard#topup"
    dashboard = await (await portal.get("/dashboard")).text()
    assert 'id="topup"' in dashboard
