"""What every portal page shares: the gateway, the templates, the visitor's language and session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from aiohttp import web

from resayil_gateway.auth.accounts import Account
from resayil_gateway.gateway import Gateway
from resayil_gateway.web.sessions import csrf_token, current_account

from .i18n import LANGUAGE_COOKIE, LANGUAGES, Translator, choose_language
from .money import format_count, format_kwd
from .settings import PortalSettings
from .throttle import AttemptThrottle

STATIC_PREFIX = "/static/portal"


class Portal:
    """The portal of one gateway: settings, templates and throttles, shared by every view."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings: PortalSettings = gateway.settings.section("portal")
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("resayil_portal", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        window = self.settings.login_window_s
        self.login_throttle = AttemptThrottle(gateway, "login", self.settings.login_max_failures, window)
        self.signup_throttle = AttemptThrottle(gateway, "signup", self.settings.registrations_per_ip, window)

    def language(self, request: web.Request) -> str:
        """The visitor's language: the remembered cookie, else the deployment's default."""
        return choose_language(request.cookies.get(LANGUAGE_COOKIE), self.gateway.settings.gateway.default_language)

    async def render(
        self, request: web.Request, template: str, context: Mapping[str, Any] | None = None, status: int = 200
    ) -> web.Response:
        """Render ``template`` with the shared context (translator, account, CSRF token, helpers)."""
        language = self.language(request)
        t = Translator(language)
        account: Account | None = await current_account(request)
        values: dict[str, Any] = {
            "t": t,
            "lang": language,
            "dir": t.direction,
            "other_lang": next(code for code in LANGUAGES if code != language),
            "account": account,
            "csrf": csrf_token(request),
            "path": request.path_qs,
            "static": STATIC_PREFIX,
            "kwd": lambda fils: format_kwd(fils, language),
            "num": format_count,
            "public_url": self.gateway.settings.gateway.public_url,
            "plans": self.gateway.settings.plans,
            "packs": self.gateway.settings.packs,
        }
        values.update(context or {})
        body = self.templates.get_template(template).render(values)
        return web.Response(text=body, content_type="text/html", status=status)

    async def require_account(self, request: web.Request) -> Account:
        """The logged-in account, or a redirect to the login page that comes back here afterwards."""
        account = await current_account(request)
        if account is None:
            raise web.HTTPSeeOther(f"/login?next={request.path}")
        return account

    async def require_admin(self, request: web.Request) -> Account:
        """The logged-in admin; a logged-in non-admin gets a 403 page (never a redirect loop)."""
        account = await self.require_account(request)
        if not account.is_admin:
            raise web.HTTPForbidden(
                text=(await self.render(request, "forbidden.html", status=403)).text, content_type="text/html"
            )
        return account
