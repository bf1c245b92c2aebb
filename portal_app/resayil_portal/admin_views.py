"""The admin dashboard: overview, users and search, one user's credits, plan and keys, notifications, bans
and the model catalog. Every page answers non-admins 403; every change is audited."""

from __future__ import annotations

import uuid

from aiohttp import web

from resayil_gateway.auth.api_keys import KeyRefused
from resayil_gateway.billing.ledger import LedgerError

from .admin_queries import ban_list, notification_log, overview
from .context import Portal

USERS_PER_PAGE = 50
# What a redirect after a change may announce (the query names one of these, never free text).
DONE_MESSAGES = {"adjusted": "admin.adjusted", "plan": "admin.plan_changed", "revoked": "admin.key_revoked"}


def admin_routes(portal: Portal) -> list[web.RouteDef]:
    """The routes of this module."""
    gateway = portal.gateway

    async def home(request: web.Request) -> web.Response:
        await portal.require_admin(request)
        return await portal.render(request, "admin/overview.html", {"o": await overview(gateway)})

    async def users(request: web.Request) -> web.Response:
        await portal.require_admin(request)
        search = request.query.get("q", "").strip()[:100]
        found = await gateway.accounts.list(search, limit=USERS_PER_PAGE)
        return await portal.render(request, "admin/users.html", {"users": found, "q": search})

    async def _user_page(request: web.Request, account_id: int, message: str = "", status: int = 200) -> web.Response:
        account = await gateway.accounts.get(account_id)
        if account is None:
            raise web.HTTPNotFound()
        plan_id, plan_end = await gateway.accounts.plan_of(account_id)
        context = {
            "user": account,
            "balance": await gateway.ledger.balance(account_id),
            "plan_id": plan_id,
            "plan_end": plan_end,
            "keys": await gateway.keys.list(account_id),
            "entries": await gateway.ledger.entries(account_id, limit=15),
            "message": message,
        }
        return await portal.render(request, "admin/user.html", context, status=status)

    def _account_id(request: web.Request) -> int:
        try:
            return int(request.match_info["account_id"])
        except ValueError:
            raise web.HTTPNotFound() from None

    async def user(request: web.Request) -> web.Response:
        await portal.require_admin(request)
        return await _user_page(request, _account_id(request), DONE_MESSAGES.get(request.query.get("done", ""), ""))

    async def adjust(request: web.Request) -> web.Response:
        admin = await portal.require_admin(request)
        account_id = _account_id(request)
        form = await request.post()
        reason = str(form.get("reason", "")).strip()[:200]
        try:
            delta = int(str(form.get("delta", "")).strip())
        except ValueError:
            return await _user_page(request, account_id, "admin.error_delta", status=400)
        if delta == 0 or not reason:
            return await _user_page(request, account_id, "admin.error_delta", status=400)
        try:
            await gateway.ledger.adjust(
                account_id, delta, reason=reason, actor=f"admin:{admin.id}", ref=f"admin-adjust:{uuid.uuid4().hex}"
            )
        except LedgerError:
            return await _user_page(request, account_id, "admin.error_below_zero", status=400)
        # The ledger writes the audit row (credits.adjusted) in the same transaction as the change.
        raise web.HTTPSeeOther(f"/admin/users/{account_id}?done=adjusted")

    async def change_plan(request: web.Request) -> web.Response:
        admin = await portal.require_admin(request)
        account_id = _account_id(request)
        form = await request.post()
        plan_id = str(form.get("plan", ""))
        if plan_id not in gateway.settings.plans:
            return await _user_page(request, account_id, "admin.error_plan", status=400)
        await gateway.plans.activate(
            account_id, plan_id, ref=f"admin-plan:{uuid.uuid4().hex}", actor=f"admin:{admin.id}"
        )
        raise web.HTTPSeeOther(f"/admin/users/{account_id}?done=plan")

    async def revoke_key(request: web.Request) -> web.Response:
        admin = await portal.require_admin(request)
        account_id = _account_id(request)
        try:
            await gateway.keys.revoke(request.match_info["prefix"], account_id=account_id, actor=f"admin:{admin.id}")
        except KeyRefused:
            raise web.HTTPNotFound() from None
        raise web.HTTPSeeOther(f"/admin/users/{account_id}?done=revoked")

    async def notifications(request: web.Request) -> web.Response:
        await portal.require_admin(request)
        return await portal.render(request, "admin/notifications.html", {"rows": await notification_log(gateway)})

    async def ban_page(request: web.Request) -> web.Response:
        await portal.require_admin(request)
        return await portal.render(request, "admin/bans.html", {"rows": await ban_list(gateway)})

    async def models(request: web.Request) -> web.Response:
        await portal.require_admin(request)
        context = {"models": gateway.catalog.all(), "restricted": gateway.settings.models.restricted}
        return await portal.render(request, "admin/models.html", context)

    return [
        web.get("/admin", home),
        web.get("/admin/users", users),
        web.get("/admin/users/{account_id}", user),
        web.post("/admin/users/{account_id}/credits", adjust),
        web.post("/admin/users/{account_id}/plan", change_plan),
        web.post("/admin/users/{account_id}/keys/{prefix}/revoke", revoke_key),
        web.get("/admin/notifications", notifications),
        web.get("/admin/bans", ban_page),
        web.get("/admin/models", models),
    ]
