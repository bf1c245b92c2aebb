"""Sign-up, login, logout and the language switch."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from resayil_gateway.app import client_ip
from resayil_gateway.auth.accounts import AccountError
from resayil_gateway.auth.passwords import MIN_PASSWORD_LENGTH
from resayil_gateway.web.sessions import current_account, login, logout

from .context import Portal
from .i18n import LANGUAGE_COOKIE, LANGUAGES

auth_log = logging.getLogger("resayil.auth")

COUNTRY_CODES = ("+965", "+966", "+971", "+973", "+974", "+968", "+962", "+20", "+1", "+44")
ONE_YEAR_S = 365 * 24 * 3600


def _safe_next(target: str | None) -> str:
    """Only a local path is a redirect target after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/dashboard"
    return target


def _full_phone(code: str, number: str) -> str:
    number = number.strip()
    if number.startswith(("+", "00")):
        return number
    return f"{code}{number.lstrip('0')}" if code in COUNTRY_CODES else number


def _field_error(error: AccountError) -> tuple[str, str]:
    """The form field and the message key for an error from the account service."""
    field = error.field or "email"
    if "already" in str(error):
        return field, f"error.{field}_taken"
    return field, f"error.{field}_invalid"


def _log_failure(request: web.Request, reason: str) -> None:
    # The fixed line fail2ban matches (examples/fail2ban), the same shape the API's key failures use.
    auth_log.warning("AUTH_FAILURE ip=%s kind=password reason=%s path=%s", client_ip(request), reason, request.path)


def auth_routes(portal: Portal) -> list[web.RouteDef]:
    """The routes of this module."""

    async def register_form(request: web.Request) -> web.Response:
        if await current_account(request):
            raise web.HTTPSeeOther("/dashboard")
        chosen = request.query.get("plan", "")
        values = {"name": "", "email": "", "phone": "", "country": portal.settings.default_country_code, "plan": chosen}
        return await _register_page(request, values, {})

    async def _register_page(
        request: web.Request, values: dict[str, Any], errors: dict[str, str], status: int = 200
    ) -> web.Response:
        context = {
            "values": values,
            "errors": errors,
            "country_codes": COUNTRY_CODES,
            "min_password": MIN_PASSWORD_LENGTH,
        }
        return await portal.render(request, "register.html", context, status=status)

    async def register_submit(request: web.Request) -> web.Response:
        form = await request.post()
        values = {name: str(form.get(name, "")) for name in ("name", "email", "country", "phone", "plan")}
        ip = client_ip(request)
        if await portal.signup_throttle.blocked(f"ip:{ip}"):
            return await portal.render(request, "throttled.html", status=429)
        await portal.signup_throttle.record(f"ip:{ip}")
        errors: dict[str, str] = {}
        password = str(form.get("password", ""))
        if len(password) < MIN_PASSWORD_LENGTH:
            errors["password"] = "error.password_short"
        if not values["email"].strip():
            errors["email"] = "error.email_invalid"
        if not values["phone"].strip():
            errors["phone"] = "error.phone_invalid"
        if values["plan"] and values["plan"] not in portal.gateway.settings.plans:
            values["plan"] = ""
        if not errors:
            try:
                account = await portal.gateway.accounts.create(
                    values["email"],
                    _full_phone(values["country"], values["phone"]),
                    password,
                    name=values["name"][:200],
                    language=portal.language(request),
                )
            except AccountError as error:
                field, key = _field_error(error)
                errors[field] = key
            else:
                await login(request, account, remember=False)
                target = "/dashboard?welcome=1" + (f"&plan={values['plan']}" if values["plan"] else "")
                raise web.HTTPSeeOther(target)
        return await _register_page(request, values, errors, status=400)

    async def login_form(request: web.Request) -> web.Response:
        if await current_account(request):
            raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
        values = {"login": "", "next": request.query.get("next", "")}
        return await portal.render(request, "login.html", {"values": values, "error": ""})

    async def login_submit(request: web.Request) -> web.Response:
        form = await request.post()
        identifier = str(form.get("login", "")).strip()
        values = {"login": identifier, "next": str(form.get("next", ""))}
        # One counter per account however its e-mail or phone is typed ("51234567", "+965 5123 4567").
        known = await portal.gateway.accounts.find(identifier)
        keys = (f"ip:{client_ip(request)}", f"account:{known.id}" if known else f"login:{identifier.lower()}")
        if await portal.login_throttle.blocked(*keys):
            _log_failure(request, "throttled")
            return await portal.render(request, "throttled.html", status=429)
        account = await portal.gateway.accounts.verify_login(identifier, str(form.get("password", "")))
        if account is None:
            await portal.login_throttle.record(*keys)
            _log_failure(request, "bad_credentials")
            context = {"values": values, "error": "error.bad_login"}
            return await portal.render(request, "login.html", context, status=400)
        await portal.login_throttle.clear(keys[1])
        await login(request, account, remember=form.get("remember") == "on")
        raise web.HTTPSeeOther(_safe_next(values["next"]))

    async def logout_submit(request: web.Request) -> web.Response:
        await logout(request)
        raise web.HTTPSeeOther("/")

    async def switch_language(request: web.Request) -> web.Response:
        language = request.match_info["language"]
        if language not in LANGUAGES:
            raise web.HTTPNotFound()
        target = _safe_next(request.query.get("next")) if request.query.get("next") else "/"
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            LANGUAGE_COOKIE,
            language,
            max_age=ONE_YEAR_S,
            httponly=True,
            samesite="Lax",
            secure=portal.gateway.settings.gateway.public_url.startswith("https://"),
        )
        raise response

    return [
        web.get("/register", register_form),
        web.post("/register", register_submit),
        web.get("/login", login_form),
        web.post("/login", login_submit),
        web.post("/logout", logout_submit),
        web.get("/locale/{language}", switch_language),
    ]
