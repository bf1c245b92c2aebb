"""Web sessions (SPEC §1.2, §7.3): login, remember-me, logout that ends the session on the server, cookie
flags and CSRF on every unsafe web request. Run on SQLite (encrypted cookie) and PostgreSQL + Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp_session import Session
from yarl import URL

from resayil_gateway.app import create_app
from resayil_gateway.gateway import Gateway
from resayil_gateway.plugins import hookimpl
from resayil_gateway.web.sessions import (
    COOKIE_NAME,
    SESSIONS,
    check_csrf,
    csrf_exempt,
    csrf_token,
    current_account,
    login,
    logout,
)

GW = web.AppKey("test_gateway", Gateway)
# Behaviour that does not depend on where sessions are kept runs on one stack only.
one_stack = pytest.mark.parametrize("stack", ["sqlite"])
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")


class SessionPages:
    """A minimal web plugin exercising the public session functions."""

    @hookimpl
    def register_routes(self, gateway):
        """Tiny pages: who am I, a form token, log in, log out, a form post and a webhook-like post."""
        routes = web.RouteTableDef()

        @routes.get("/whoami")
        async def whoami(request):
            account = await current_account(request)
            return web.Response(text=account.email if account else "anonymous")

        @routes.get("/token")
        async def token(request):
            return web.Response(text=csrf_token(request))

        @routes.post("/login")
        async def do_login(request):
            form = await request.post()
            account = await request.app[GW].accounts.verify_login(form["login"], form["password"])
            if account is None:
                return web.Response(status=401, text="bad")
            await login(request, account, remember=form.get("remember") == "1")
            return web.Response(text="ok")

        @routes.post("/logout")
        async def do_logout(request):
            await logout(request)
            return web.Response(text="bye")

        @routes.post("/change")
        async def change(request):
            return web.Response(text="changed")

        @routes.post("/hook")
        async def hook(request):
            return web.Response(text="hooked")

        @routes.post("/signed")
        @csrf_exempt
        async def signed(request):
            return web.Response(text="signed")

        @routes.get("/boom")
        async def boom(request):
            raise RuntimeError("a bug")

        @routes.post("/explicit")
        async def explicit(request):
            await check_csrf(request, {"csrf_token": request.query.get("t", "")})
            return web.Response(text="fine")

        return routes


@pytest.fixture
async def web_client(make_gateway, clock, aiohttp_client):
    gateway = make_gateway(clock=clock, plugins=[SessionPages()])
    app = create_app(gateway)
    app[GW] = gateway
    client = await aiohttp_client(app)
    await gateway.accounts.create("user@example.com", "+96551112222", "correct horse battery")
    client.gateway = gateway
    return client


async def _token(client) -> str:
    response = await client.get("/token")
    return await response.text()


async def _login(client, remember: bool = False):
    token = await _token(client)
    data = {"login": "user@example.com", "password": "correct horse battery", "csrf_token": token}
    if remember:
        data["remember"] = "1"
    return await client.post("/login", data=data)


def _session_cookie(response):
    return response.cookies.get(COOKIE_NAME)


async def test_login_then_the_session_knows_the_account(web_client):
    assert await (await web_client.get("/whoami")).text() == "anonymous"
    response = await _login(web_client)
    assert response.status == 200
    assert await (await web_client.get("/whoami")).text() == "user@example.com"


@one_stack
async def test_cookie_is_httponly_and_samesite_lax_and_a_browser_session_without_remember(web_client):
    response = await _login(web_client)
    morsel = _session_cookie(response)
    assert morsel is not None
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert not morsel["max-age"] and not morsel["expires"]
    assert not morsel["secure"]


@one_stack
async def test_remember_me_sets_a_thirty_day_cookie(web_client):
    response = await _login(web_client, remember=True)
    assert int(_session_cookie(response)["max-age"]) == 30 * 24 * 3600


@one_stack
async def test_cookie_is_secure_behind_https(make_gateway, aiohttp_client):
    gateway = make_gateway(plugins=[SessionPages()], overrides={"gateway": {"public_url": "https://gw.example"}})
    client = await aiohttp_client(create_app(gateway))
    response = await client.get("/token")
    assert _session_cookie(response)["secure"] is True


async def test_logout_ends_the_session_on_the_server_so_a_copied_cookie_is_dead(web_client, aiohttp_client):
    await _login(web_client)
    stolen = web_client.session.cookie_jar.filter_cookies(URL(str(web_client.make_url("/"))))[COOKIE_NAME].value
    token = await _token(web_client)
    assert (await web_client.post("/logout", data={"csrf_token": token})).status == 200
    assert await (await web_client.get("/whoami")).text() == "anonymous"

    replay = await web_client.get("/whoami", cookies={COOKIE_NAME: stolen})
    assert await replay.text() == "anonymous"


async def test_logout_survives_a_restart_of_the_cookie_store(web_client, make_gateway, clock, aiohttp_client):
    await _login(web_client)
    stolen = web_client.session.cookie_jar.filter_cookies(URL(str(web_client.make_url("/"))))[COOKIE_NAME].value
    await web_client.post("/logout", data={"csrf_token": await _token(web_client)})

    restarted = make_gateway(clock=clock, plugins=[SessionPages()])
    other = await aiohttp_client(create_app(restarted))
    assert await (await other.get("/whoami", cookies={COOKIE_NAME: stolen})).text() == "anonymous"


async def test_browser_session_ends_on_the_server_after_its_hours(web_client, clock):
    await _login(web_client)
    clock.advance(hours=11)
    assert await (await web_client.get("/whoami")).text() == "user@example.com"
    clock.advance(hours=2)
    assert await (await web_client.get("/whoami")).text() == "anonymous"


async def test_remembered_session_lasts_thirty_days(web_client, clock):
    await _login(web_client, remember=True)
    clock.advance(days=29)
    assert await (await web_client.get("/whoami")).text() == "user@example.com"
    clock.advance(days=2)
    assert await (await web_client.get("/whoami")).text() == "anonymous"


async def test_a_disabled_account_is_logged_out(web_client):
    await _login(web_client)
    account = await web_client.gateway.accounts.find("user@example.com")
    await web_client.gateway.accounts.set_status(account.id, "disabled", actor="admin:test")
    assert await (await web_client.get("/whoami")).text() == "anonymous"


async def test_login_starts_a_new_session_id(web_client):
    await _token(web_client)
    before = dict(web_client.session.cookie_jar.filter_cookies(URL(str(web_client.make_url("/")))))
    await _login(web_client)
    after = web_client.session.cookie_jar.filter_cookies(URL(str(web_client.make_url("/"))))
    assert before[COOKIE_NAME].value != after[COOKIE_NAME].value


@one_stack
async def test_form_post_without_the_csrf_token_gets_a_clear_403_page(web_client):
    await _login(web_client)
    response = await web_client.post("/change", data={"anything": "1"})
    assert response.status == 403
    assert "text/html" in response.headers["Content-Type"]
    assert "This form has expired" in await response.text()


@one_stack
async def test_form_post_with_a_wrong_token_is_refused(web_client):
    await _login(web_client)
    response = await web_client.post("/change", data={"csrf_token": "x" * 43})
    assert response.status == 403


@one_stack
async def test_a_post_without_any_body_still_needs_the_token(web_client):
    await _login(web_client)
    assert (await web_client.post("/change")).status == 403


@one_stack
async def test_form_post_with_the_token_in_field_or_header_passes(web_client):
    await _login(web_client)
    token = await _token(web_client)
    assert (await web_client.post("/change", data={"csrf_token": token})).status == 200
    assert (await web_client.post("/change", headers={"X-CSRF-Token": token})).status == 200


@one_stack
async def test_login_form_itself_needs_the_token(web_client):
    response = await web_client.post("/login", data={"login": "user@example.com", "password": "x"})
    assert response.status == 403


@one_stack
async def test_json_posts_such_as_webhooks_and_exempt_handlers_skip_the_check(web_client):
    assert (await web_client.post("/hook", json={"Data": {}})).status == 200
    assert (await web_client.post("/signed", data={"a": "b"})).status == 200


@one_stack
async def test_check_csrf_can_be_called_explicitly(web_client):
    token = await _token(web_client)
    response = await web_client.post(f"/explicit?t={token}", headers={"X-CSRF-Token": token})
    assert response.status == 200


@one_stack
async def test_api_paths_are_untouched_by_sessions(web_client):
    response = await web_client.post("/v1/chat/completions", json={"model": "x", "messages": []})
    assert response.status == 401
    assert COOKIE_NAME not in response.cookies


@one_stack
def test_session_lifetimes_are_settings(make_gateway):
    gateway = make_gateway(overrides={"gateway": {"session_remember_days": 7, "session_hours": 2}})
    assert gateway.settings.gateway.session_remember_days == 7
    assert timedelta(hours=gateway.settings.gateway.session_hours) == timedelta(hours=2)


async def test_a_visitors_form_session_lasts_as_long_as_a_browser_session(web_client):
    """A visitor who has not logged in keeps the CSRF token of the login form long enough to type into it."""
    response = await web_client.get("/token")
    sessions = web_client.server.app[SESSIONS]
    visitor = Session(None, data={"created": 0, "session": {"csrf": await response.text()}}, new=False)
    assert sessions.server_lifetime(visitor) == 12 * 3600
    await _login(web_client)
    logged_in = Session(None, data={"created": 0, "session": {"expires": sessions.now() + 3600}}, new=False)
    assert 3600 <= sessions.server_lifetime(logged_in) <= 3600 + 60
    if sessions.redis_storage is not None:
        identity = web_client.session.cookie_jar.filter_cookies(URL(str(web_client.make_url("/"))))[COOKIE_NAME]
        ttl = await web_client.gateway.state.redis.ttl(web_client.gateway.state.key("session", identity.value))
        assert ttl > 11 * 3600


@one_stack
async def test_an_unknown_web_page_is_an_html_page_and_an_unknown_api_path_stays_json(web_client):
    page = await web_client.get("/no-such-page")
    assert page.status == 404 and "text/html" in page.headers["Content-Type"]
    assert "Page not found" in await page.text()
    api = await web_client.get("/v1/no-such-thing")
    assert api.status == 404 and api.headers["Content-Type"].startswith("application/json")


@one_stack
async def test_a_failing_web_page_answers_an_html_error_page_not_json(web_client):
    response = await web_client.get("/boom")
    assert response.status == 500 and "text/html" in response.headers["Content-Type"]
    assert "a bug" not in await response.text()
