"""The whole journey in a real browser (Chromium through Playwright), once in English and once in Arabic:
land → register → log in → create a key → call the API with the ``openai`` SDK and that key → see the usage
and the new balance → the admin adjusts the credits → the user sees it. Each page is photographed at desktop
and at phone width under ``portal_app/test-artifacts/`` (not committed)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI
from portal_helpers import PASSWORD
from resayil_portal import plugin as portal_plugin

from resayil_gateway.app import create_app
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SIGNUP_CREDITS = 1000

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs the Debian package chromium"),
    pytest.mark.parametrize("stack", ["sqlite"]),
]


@pytest.fixture
async def live(make_gateway, clock) -> AsyncIterator[tuple[Any, str]]:
    """The gateway with the portal on a real socket (its public URL, so the pages show the real base URL);
    the user gets welcome credits to spend."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    gateway = make_gateway(
        plugins=[portal_plugin, FakeBackendPlugin(FakeBackend())],
        overrides={"billing": {"signup_credits": SIGNUP_CREDITS}, "gateway": {"public_url": base}},
    )
    runner = web.AppRunner(create_app(gateway), access_log=None)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    await gateway.accounts.create("admin@resayil.test", "+96590000001", PASSWORD, name="Admin", role="admin")
    yield gateway, base
    await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    async with playwright_api.async_playwright() as driver:
        chromium = await driver.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield chromium
        await chromium.close()


async def _shoot(page: Any, language: str, name: str) -> None:
    """Photograph the page at desktop width, then at phone width, then return to desktop."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(size)
        await page.screenshot(path=str(ARTIFACTS / f"{language}-{name}-{label}.png"), full_page=True)
    await page.set_viewport_size(DESKTOP)


async def _no_horizontal_scroll_on_a_phone(page: Any) -> bool:
    await page.set_viewport_size(PHONE)
    width = await page.evaluate("document.documentElement.scrollWidth")
    await page.set_viewport_size(DESKTOP)
    return bool(width <= PHONE["width"] + 1)


@pytest.mark.parametrize("language", ["en", "ar"])
async def test_user_journey_from_landing_page_to_adjusted_credits(live, browser, language):
    gateway, base = live
    email, phone = f"{language}-user@example.com", "6" + ("1111111" if language == "en" else "2222222")
    context = await browser.new_context(viewport=DESKTOP, locale="en-US")
    page = await context.new_page()

    await page.goto(f"{base}/")
    if language == "en":
        await page.click("a.lang-switch")
    expected_dir = "rtl" if language == "ar" else "ltr"
    assert await page.get_attribute("html", "dir") == expected_dir
    assert f"{base}/v1" in await page.text_content("#code")
    assert await _no_horizontal_scroll_on_a_phone(page)
    await _shoot(page, language, "1-landing")

    await page.click(".hero a.btn")
    await page.fill("#name", "Sara")
    await page.fill("#email", email)
    await page.fill("#phone", phone)
    await page.fill("#password", "short")
    await page.click("form button[type=submit]")
    assert await page.is_visible("#password-error")
    assert await page.input_value("#email") == email
    await _shoot(page, language, "2-register-error")
    await page.fill("#password", PASSWORD)
    await page.click("form button[type=submit]")
    await page.wait_for_url(f"{base}/dashboard*")

    await page.click("nav .link")  # log out from the top bar
    await page.goto(f"{base}/login")
    await page.fill("#login", phone)
    await page.fill("#password", PASSWORD)
    await page.check("#remember")
    await _shoot(page, language, "3-login")
    await page.click("form button[type=submit]")
    await page.wait_for_url(f"{base}/dashboard")
    assert (await page.text_content("[data-testid=balance]")).strip() == f"{SIGNUP_CREDITS:,}"

    await page.fill("#label", "journey")
    await page.click("#keys form button[type=submit]")
    secret = (await page.text_content("[data-testid=new-key]")).strip()
    assert secret.startswith("rsk-")
    await _shoot(page, language, "4-new-key")

    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
    reply = await client.chat.completions.create(
        model="fake-small", messages=[{"role": "user", "content": "مرحبا"}], max_tokens=20
    )
    await client.close()
    assert reply.choices[0].message.content
    await gateway.drain()
    spent = reply.usage.total_tokens  # credits = ceil(tokens x 1 / 1000) → at least 1
    assert spent > 0

    await page.goto(f"{base}/dashboard")
    after_call = SIGNUP_CREDITS - 1
    assert (await page.text_content("[data-testid=balance]")).strip() == f"{after_call:,}"
    assert "fake-small" in await page.text_content("#usage")
    assert await _no_horizontal_scroll_on_a_phone(page)
    await _shoot(page, language, "5-dashboard-after-call")

    admin_context = await browser.new_context(viewport=DESKTOP)
    admin = await admin_context.new_page()
    await admin.goto(f"{base}/locale/{language}?next=/login")
    await admin.fill("#login", "admin@resayil.test")
    await admin.fill("#password", PASSWORD)
    await admin.click("form button[type=submit]")
    await admin.goto(f"{base}/admin")
    await _shoot(admin, language, "6-admin-overview")
    await admin.goto(f"{base}/admin/users?q={email}")
    await admin.click(f"text={email}")
    await admin.fill("#delta", "+500")
    await admin.fill("#reason", "journey bonus")
    await admin.click("form[action$='/credits'] button")
    await admin.wait_for_url("**done=adjusted")
    assert (await admin.text_content("[data-testid=admin-balance]")).strip() == f"{after_call + 500:,}"
    await _shoot(admin, language, "7-admin-user")
    await admin_context.close()

    await page.reload()
    assert (await page.text_content("[data-testid=balance]")).strip() == f"{after_call + 500:,}"
    with contextlib.suppress(Exception):
        await page.click("nav .link")
    await context.close()
