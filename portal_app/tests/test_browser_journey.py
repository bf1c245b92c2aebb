"""The whole journey in a real browser (Chromium through Playwright), once in English and once in Arabic:
land → register → log in → create a key → buy a top-up on the MyFatoorah sandbox page → call the API with the
``openai`` SDK and that key → see the usage and the new balance → the admin adjusts the credits → the user sees
it. Each page is photographed at desktop and at phone width under ``portal_app/test-artifacts/`` (not
committed), and at phone width no page may be wider than the screen."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI
from portal_helpers import PASSWORD
from resayil_myfatoorah import plugin as myfatoorah_plugin
from resayil_myfatoorah.simulator import SIMULATOR, MyFatoorahSimulator, start_simulator
from resayil_portal import plugin as portal_plugin

from resayil_gateway.app import create_app
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SIGNUP_CREDITS = 1000
PACK, PACK_CREDITS = "5k", 5000  # the default pack bought in the journey

# Elements wider than the screen at phone width, unless they sit in a box that scrolls sideways; tables never
# (each reflows into labelled cards on a phone rather than hiding columns behind a sideways scroll).
OVERFLOWING = """() => {
  const width = window.innerWidth, found = [];
  const root = document.documentElement;
  if (root.scrollWidth > width) found.push(`the page is ${root.scrollWidth}px wide`);
  const scrolls = (el) => {
    for (let box = el.parentElement; box && box !== document.body; box = box.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) return true;
    }
    return false;
  };
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0 || (box.left >= -1 && box.right <= width + 1)) continue;
    if (el.tagName !== 'TABLE' && scrolls(el)) continue;
    found.push(`${el.tagName.toLowerCase()}.${el.className} ${box.left}..${box.right}`);
  }
  return found;
}"""

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs the Debian package chromium"),
    pytest.mark.parametrize("stack", ["sqlite"]),
]


@pytest.fixture
async def live(make_gateway, clock) -> AsyncIterator[tuple[Any, str, MyFatoorahSimulator, str]]:
    """The gateway with the portal and MyFatoorah on a real socket (its public URL, so the pages show the real
    base URL and the payment page returns to it) and the MyFatoorah simulator, which sends every webhook twice;
    the user gets welcome credits to spend."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    secret, token = secrets.token_urlsafe(24), secrets.token_urlsafe(16)
    sim_runner, sim_url = await start_simulator(
        webhook_url=f"{base}/billing/webhooks/myfatoorah", webhook_secret=secret, api_token=token, duplicates=2
    )
    gateway = make_gateway(
        plugins=[myfatoorah_plugin, portal_plugin, FakeBackendPlugin(FakeBackend())],
        overrides={
            "billing": {"signup_credits": SIGNUP_CREDITS},
            "gateway": {"public_url": base},
            "myfatoorah": {"enabled": True, "base_url": sim_url, "webhook_secret": secret, "api_token": token},
        },
    )
    runner = web.AppRunner(create_app(gateway), access_log=None)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    await gateway.accounts.create("admin@resayil.test", "+96590000001", PASSWORD, name="Admin", role="admin")
    yield gateway, base, sim_runner.app[SIMULATOR], sim_url
    await runner.cleanup()
    await sim_runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    async with playwright_api.async_playwright() as driver:
        chromium = await driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield chromium
        await chromium.close()


async def _shoot(page: Any, language: str, name: str, section: str = "") -> None:
    """Photograph the page (or one ``section`` of it) at desktop width, then at phone width, where nothing may
    be wider than the screen; then return to desktop."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)
        path = str(ARTIFACTS / f"{language}-{name}-{label}.png")
        clip = None
        if section:  # clipped from the whole page, where the sticky top bar cannot cover it
            box = await page.locator(section).bounding_box()
            left, top = await page.evaluate("[window.scrollX, window.scrollY]")
            clip = {"x": box["x"] + left, "y": box["y"] + top, "width": box["width"], "height": box["height"]}
        await page.screenshot(path=path, full_page=True, clip=clip)
        if label == "phone":
            assert await page.evaluate(OVERFLOWING) == [], f"{name} overflows a phone screen"
    await page.set_viewport_size(DESKTOP)


async def _inside(page: Any, inner: str, outer: str) -> bool:
    """Whether ``inner``'s box lies within ``outer``'s box (the first of each)."""
    a = await page.locator(inner).first.bounding_box()
    b = await page.locator(outer).first.bounding_box()
    return bool(a and b and a["x"] >= b["x"] - 1 and a["x"] + a["width"] <= b["x"] + b["width"] + 1)


async def _balance(page: Any) -> str:
    return (await page.text_content("[data-testid=balance]") or "").strip()


@pytest.mark.parametrize("language", ["en", "ar"])
async def test_user_journey_from_landing_page_to_adjusted_credits(live, browser, language):
    gateway, base, sim, sim_url = live
    email, phone = f"{language}-user@example.com", "6" + ("1111111" if language == "en" else "2222222")
    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    page = await context.new_page()

    await page.goto(f"{base}/")
    if language == "en":
        await page.click("a.lang-switch")
    expected_dir = "rtl" if language == "ar" else "ltr"
    assert await page.get_attribute("html", "dir") == expected_dir
    assert f"{base}/v1" in await page.text_content("#code")
    await _shoot(page, language, "01-landing")

    await page.click(".hero a.btn")
    await page.fill("#name", "Sara")
    await page.fill("#email", email)
    await page.fill("#phone", phone)
    await page.fill("#password", "short")
    await page.click("form button[type=submit]")
    assert await page.is_visible("#password-error")
    assert await page.input_value("#email") == email
    await _shoot(page, language, "02-register-error")
    await page.fill("#password", PASSWORD)
    await page.click("form button[type=submit]")
    await page.wait_for_url(f"{base}/dashboard*")

    await page.click("nav .link")  # log out from the top bar
    await page.goto(f"{base}/login")
    await page.fill("#login", phone)
    await page.fill("#password", PASSWORD)
    await page.check("#remember")
    await _shoot(page, language, "03-login")
    await page.click("form button[type=submit]")
    await page.wait_for_url(f"{base}/dashboard")
    assert await _balance(page) == f"{SIGNUP_CREDITS:,}"

    await page.fill("#label", "journey")
    await page.click("#keys form button[type=submit]")
    secret = (await page.text_content("[data-testid=new-key]")).strip()
    assert secret.startswith("rsk-")
    await _shoot(page, language, "04-new-key")
    await page.set_viewport_size(PHONE)
    assert await _inside(page, "[data-testid=keys-table]", "#keys"), "the keys table spills out of its card"
    await page.set_viewport_size(DESKTOP)

    # Buy a top-up: the dashboard's quick top-up → MyFatoorah's hosted page → Pay → back to the dashboard.
    await page.goto(f"{base}/dashboard")
    await page.click(".dash-head a.btn")
    await _shoot(page, language, "05-top-up", section="#topup")
    await page.click(f"#topup form:has(input[name=pack][value='{PACK}']) button[type=submit]")
    await page.wait_for_url(f"{sim_url}/*/KWT/PayInvoice/Checkout?*")
    assert await page.get_attribute("html", "dir") == expected_dir
    await _shoot(page, language, "06-payment-page")
    await page.click("button[name=action][value=pay]")
    await page.wait_for_url(f"{base}/dashboard?paid=*")
    order_id = page.url.split("paid=", 1)[1]
    notice = await page.text_content("[data-testid=paid-notice]")
    assert f"{PACK_CREDITS:,}" in notice
    topped_up = SIGNUP_CREDITS + PACK_CREDITS
    assert await _balance(page) == f"{topped_up:,}"
    await _shoot(page, language, "07-payment-received")
    # Both copies of the signed webhook arrive too; the top-up is still credited exactly once.
    await asyncio.wait_for(sim.stats.wait_until(lambda s: s.webhooks_delivered >= 2), 20)
    assert [item.status for item in sim.webhooks.deliveries] == [200, 200]
    (order,) = await gateway.orders.list(account_id=(await gateway.accounts.require(email)).id)
    assert (order.id, order.status, order.credits) == (order_id, "paid", PACK_CREDITS)
    assert await gateway.ledger.check() == []
    await page.reload()
    assert await _balance(page) == f"{topped_up:,}"

    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
    reply = await client.chat.completions.create(
        model="fake-small", messages=[{"role": "user", "content": "مرحبا"}], max_tokens=20
    )
    await client.close()
    assert reply.choices[0].message.content
    await gateway.drain()
    assert reply.usage.total_tokens > 0  # credits = ceil(tokens x 1 / 1000) → 1

    await page.goto(f"{base}/dashboard")
    after_call = topped_up - 1
    assert await _balance(page) == f"{after_call:,}"
    assert "fake-small" in await page.text_content("#usage")
    paid_row = page.locator(f"[data-testid=payments-table] tr[data-order='{order_id}']")
    assert f"{PACK_CREDITS:,}" in await paid_row.text_content()
    assert await paid_row.locator(".tag-ok").count() == 1
    await _shoot(page, language, "08-dashboard-after-call")

    admin_context = await browser.new_context(viewport=DESKTOP)
    admin = await admin_context.new_page()
    await admin.goto(f"{base}/locale/{language}?next=/login")
    await admin.fill("#login", "admin@resayil.test")
    await admin.fill("#password", PASSWORD)
    await admin.click("form button[type=submit]")
    await admin.goto(f"{base}/admin")
    await _shoot(admin, language, "09-admin-overview")
    await admin.goto(f"{base}/admin/users?q={email}")
    await admin.click(f"text={email}")
    await admin.fill("#delta", "+500")
    await admin.fill("#reason", "journey bonus")
    await admin.click("form[action$='/credits'] button")
    await admin.wait_for_url("**done=adjusted")
    assert (await admin.text_content("[data-testid=admin-balance]")).strip() == f"{after_call + 500:,}"
    await _shoot(admin, language, "10-admin-user")
    await admin_context.close()

    await page.reload()
    assert await _balance(page) == f"{after_call + 500:,}"
    with contextlib.suppress(Exception):
        await page.click("nav .link")
    await context.close()
