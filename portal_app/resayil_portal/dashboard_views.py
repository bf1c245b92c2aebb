"""The user dashboard: credits, usage chart, API keys, top-up, plans, usage per request, payments."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from resayil_gateway.auth.accounts import Account
from resayil_gateway.auth.api_keys import KeyRefused, NewKey
from resayil_gateway.billing.orders import Order
from resayil_gateway.gateway import Gateway
from resayil_gateway.routing.catalog import plan_allows
from resayil_gateway.web.billing_pages import TOP_UP_PATH
from resayil_gateway.web.sessions import current_account

from .chart import usage_chart_svg
from .context import Portal
from .i18n import Translator
from .usage_queries import daily_usage, payments, usage_page


def _page_number(request: web.Request) -> int:
    try:
        return max(1, int(request.query.get("page", "1")))
    except ValueError:
        return 1


async def _returned_order(gateway: Gateway, account: Account, order_id: str) -> Order | None:
    """The order named by ``?paid=`` after the payment page sent the browser back: the account's own only."""
    if not order_id or len(order_id) > 64:
        return None
    order = await gateway.orders.get(order_id)
    return order if order is not None and order.account_id == account.id else None


def dashboard_routes(portal: Portal) -> list[web.RouteDef]:
    """The routes of this module."""
    gateway = portal.gateway

    async def _dashboard(
        request: web.Request,
        account: Account,
        *,
        new_key: NewKey | None = None,
        key_error: str = "",
        status: int = 200,
    ) -> web.Response:
        t = Translator(portal.language(request))
        balance = await gateway.ledger.balance(account.id)
        plan_id, plan_end = await gateway.accounts.plan_of(account.id)
        plan = gateway.settings.plan(plan_id)
        keys = await gateway.keys.list(account.id)
        series = await daily_usage(gateway, account.id)
        page = _page_number(request)
        rows, has_older = await usage_page(gateway, account.id, page, portal.settings.usage_page_size)
        chart = usage_chart_svg(series, t("dash.chart_title"), t("dash.requests"), t("dash.credits"))
        models = [m for m in gateway.catalog.all() if plan_allows(plan.models, m)]
        context: dict[str, Any] = {
            "balance": balance,
            "bar_total": max(balance.last_grant_total, balance.total, 1),
            "plan_id": plan_id,
            "plan_end": plan_end,
            "has_plan": plan_end is not None,
            "keys": keys,
            "key_limit": plan.max_api_keys,
            "new_key": new_key,
            "key_error": key_error,
            "chart": chart,
            "totals": {"requests": sum(d.requests for d in series), "credits": sum(d.credits for d in series)},
            "usage_rows": rows,
            "page": page,
            "has_older": has_older,
            "orders": await payments(gateway, account.id),
            "paid_order": await _returned_order(gateway, account, request.query.get("paid", "")),
            "welcome": request.query.get("welcome") == "1",
            "chosen_plan": request.query.get("plan", "") if request.query.get("plan") in gateway.settings.plans else "",
            "models": models,
            "base_url": gateway.settings.gateway.public_url + "/v1",
        }
        return await portal.render(request, "dashboard.html", context, status=status)

    async def dashboard(request: web.Request) -> web.Response:
        account = await portal.require_account(request)
        return await _dashboard(request, account)

    async def create_key(request: web.Request) -> web.Response:
        account = await portal.require_account(request)
        form = await request.post()
        label = str(form.get("label", "")).strip()[:100]
        try:
            new_key = await gateway.keys.create(account.id, label, actor=f"account:{account.id}")
        except KeyRefused:
            return await _dashboard(request, account, key_error="dash.key_limit", status=409)
        # The key is shown on this response only: never stored, never redirected with.
        response = await _dashboard(request, account, new_key=new_key)
        response.headers["Cache-Control"] = "no-store"
        return response

    async def confirm_delete_key(request: web.Request) -> web.Response:
        account = await portal.require_account(request)
        prefix = request.match_info["prefix"]
        key = next((k for k in await gateway.keys.list(account.id) if k.prefix == prefix), None)
        if key is None:
            raise web.HTTPNotFound()
        return await portal.render(request, "key_delete.html", {"key": key})

    async def delete_key(request: web.Request) -> web.Response:
        account = await portal.require_account(request)
        try:
            await gateway.keys.revoke(
                request.match_info["prefix"], account_id=account.id, actor=f"account:{account.id}"
            )
        except KeyRefused:
            raise web.HTTPNotFound() from None
        raise web.HTTPSeeOther("/dashboard#keys")

    async def top_up(request: web.Request) -> web.Response:
        # The link in every 402 and credit message: the dashboard's top-up section, after signing in.
        if await current_account(request) is None:
            raise web.HTTPSeeOther("/login?next=/dashboard%23topup")
        raise web.HTTPSeeOther("/dashboard#topup")

    return [
        web.get(TOP_UP_PATH, top_up),
        web.get("/dashboard", dashboard),
        web.post("/dashboard/keys", create_key),
        web.get("/dashboard/keys/{prefix}/delete", confirm_delete_key),
        web.post("/dashboard/keys/{prefix}/delete", delete_key),
    ]
