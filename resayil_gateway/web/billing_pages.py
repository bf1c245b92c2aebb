"""Buying plans and top-ups in the browser, and the provider's ways back in.

- ``GET /billing/top-up``: plans and packs with KWD prices (the link in every 402); forms for a signed-in user.
- ``POST /billing/checkout`` (``plan=<id>`` or ``pack=<id>``, CSRF-checked by the session middleware): stores
  a pending order, starts the provider's hosted payment and redirects (303) to it.
- ``GET /billing/callback?paymentId=…`` and ``GET /billing/error?paymentId=…``: the browser's return; the
  payment is confirmed with the provider, never from the query string.
- ``POST /billing/webhooks/{provider}``: a signed notice; 401 when the signature does not verify, else the
  payment is confirmed with the provider and 200 is answered (also for a duplicate).
- ``GET /billing/orders``: the signed-in user's orders as JSON.

Pages are plain bilingual HTML (English and Arabic) with no template dependency; the portal may restyle.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from ..billing.orders import Fulfilment, OrderError, OrderKind, format_kwd
from ..billing.payments import Checkout, PaymentError, WebhookRejected
from ..config import Settings
from ..gateway import Gateway
from ..web_keys import GATEWAY
from .sessions import csrf_exempt, csrf_token, current_account

log = logging.getLogger("resayil.billing")

LANGUAGE_COOKIE = "resayil_lang"
TOP_UP_PATH = "/billing/top-up"
Text = tuple[str, str]  # (English, Arabic)


def billing_routes() -> list[web.RouteDef]:
    """The routes of this module (added by :func:`resayil_gateway.app.create_app`)."""
    return [
        web.get(TOP_UP_PATH, top_up_page),
        web.post("/billing/checkout", checkout),
        web.get("/billing/callback", payment_return),
        web.get("/billing/error", payment_error),
        web.post("/billing/webhooks/{provider}", webhook),
        web.get("/billing/orders", orders_json),
    ]


# -- pages -----------------------------------------------------------------------------------------------


def kwd(fils: int) -> str:
    """A price for a page: ``"2.500 KWD"``."""
    return f"{format_kwd(fils)} KWD"


def _page(title: Text, body_en: str, body_ar: str, status: int = 200) -> web.Response:
    """A bilingual page; ``body_en`` and ``body_ar`` are HTML (escape what you put in them)."""
    text = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title[0])} · {html.escape(title[1])}</title>"
        "<style>body{background:#0f1115;color:#e8e6e1;font-family:system-ui,sans-serif;margin:0}"
        "main{max-width:46rem;margin:auto;padding:2rem}h1,h2{color:#d4af37}a{color:#d4af37}"
        "section{margin-bottom:2rem}.items{display:flex;flex-wrap:wrap;gap:1rem}"
        ".item{border:1px solid #333;border-radius:10px;padding:1rem;min-width:11rem}"
        "button{background:#d4af37;border:0;border-radius:6px;padding:.5rem 1rem;cursor:pointer}</style>"
        "</head><body><main>"
        f"<section><h1>{html.escape(title[0])}</h1>{body_en}</section>"
        f"<section lang='ar' dir='rtl'><h1>{html.escape(title[1])}</h1>{body_ar}</section>"
        "<p><a href='/'>Home · الرئيسية</a></p></main></body></html>"
    )
    return web.Response(status=status, text=text, content_type="text/html")


def _message(
    title: Text, english: str, arabic: str, status: int = 200, link: tuple[str, Text] | None = None
) -> web.Response:
    extra_en = extra_ar = ""
    if link is not None:
        href = html.escape(link[0], quote=True)
        extra_en = f"<p><a href='{href}'>{html.escape(link[1][0])}</a></p>"
        extra_ar = f"<p><a href='{href}'>{html.escape(link[1][1])}</a></p>"
    return _page(
        title,
        f"<p>{html.escape(english)}</p>{extra_en}",
        f"<p>{html.escape(arabic)}</p>{extra_ar}",
        status,
    )


def _retry_link(request: web.Request) -> tuple[str, Text]:
    target = "/dashboard#topup" if _has_route(request, "/dashboard") else TOP_UP_PATH
    return target, ("Try again", "حاول مرة أخرى")


def _has_route(request: web.Request, path: str) -> bool:
    return any(resource.canonical == path for resource in request.app.router.resources())


async def _language(request: web.Request, gateway: Gateway) -> str:
    session = await get_session(request)
    for choice in (session.get("language"), request.cookies.get(LANGUAGE_COOKIE)):
        if choice in ("ar", "en"):
            return str(choice)
    return gateway.settings.gateway.default_language


def _provider(gateway: Gateway, name: str | None = None) -> Any:
    providers = gateway.payment_providers
    if name is not None:
        return providers.get(name)
    return providers.get("myfatoorah") or next(iter(providers.values()), None)


def _unavailable(request: web.Request) -> web.Response:
    return _message(
        ("Payments are unavailable", "الدفع غير متاح"),
        "Payments cannot be taken right now. Nothing was charged. Please try again later.",
        "لا يمكن إتمام الدفع حالياً. لم يتم خصم أي مبلغ. يرجى المحاولة لاحقاً.",
        503,
        _retry_link(request),
    )


# -- top-up page -----------------------------------------------------------------------------------------


async def top_up_page(request: web.Request) -> web.Response:
    """Plans and packs with their KWD prices; buy buttons for a signed-in user, else a link to sign in."""
    settings = request.app[GATEWAY].settings
    account = await current_account(request)
    token = csrf_token(request) if account is not None else None
    body = {lang: _offers(settings, lang == "en", token) for lang in ("en", "ar")}
    return _page(("Plans and top-ups", "الباقات والشحن"), body["en"], body["ar"])


def _offers(settings: Settings, english: bool, token: str | None) -> str:
    """Every plan and pack in one language; with a CSRF ``token`` (a signed-in user) each has a buy form."""
    parts = ["<h2>" + ("Plans" if english else "الباقات") + "</h2><div class='items'>"]
    for pid, plan in settings.plans.items():
        if plan.price_fils <= 0:
            continue
        if english:
            label, detail, buy = plan.name.en, f"{plan.credits:,} credits / {plan.period_days} days", "Subscribe"
        else:
            label, detail, buy = plan.name.ar, f"{plan.credits:,} رصيد / {plan.period_days} يوماً", "اشترك"
        parts.append(_offer("plan", pid, label, detail, plan.price_fils, buy, token))
    parts.append("</div><h2>" + ("Top-up packs (never expire)" if english else "باقات الشحن (لا تنتهي)") + "</h2>")
    parts.append("<div class='items'>")
    for pack_id, pack in settings.packs.items():
        label = f"{pack.credits:,} credits" if english else f"{pack.credits:,} رصيد"
        parts.append(_offer("pack", pack_id, label, "", pack.price_fils, "Buy" if english else "اشترِ", token))
    parts.append("</div>")
    if token is None:
        login = html.escape(f"/login?next={TOP_UP_PATH}", quote=True)
        parts.append(f"<p><a href='{login}'>" + ("Sign in to buy" if english else "سجّل الدخول للشراء") + "</a></p>")
    return "".join(parts)


def _offer(field: str, item: str, label: str, detail: str, price_fils: int, buy: str, token: str | None) -> str:
    button = ""
    if token is not None:
        button = (
            "<form method='post' action='/billing/checkout'>"
            f"<input type='hidden' name='csrf_token' value='{html.escape(token, quote=True)}'>"
            f"<input type='hidden' name='{field}' value='{html.escape(item, quote=True)}'>"
            f"<button type='submit'>{html.escape(buy)}</button></form>"
        )
    return (
        f"<div class='item'><h2>{html.escape(label)}</h2><p>{html.escape(detail)}</p>"
        f"<p><strong dir='ltr'>{kwd(price_fils)}</strong></p>{button}</div>"
    )


# -- checkout --------------------------------------------------------------------------------------------


async def checkout(request: web.Request) -> web.StreamResponse:
    """Store a pending order for ``plan`` or ``pack``, start the hosted payment, redirect to it."""
    gateway = request.app[GATEWAY]
    account = await current_account(request)
    if account is None:
        raise web.HTTPSeeOther(f"/login?next={TOP_UP_PATH}")
    form = await request.post()
    plan, pack = form.get("plan"), form.get("pack")
    kind: OrderKind
    if isinstance(plan, str) and plan and not pack:
        kind, item = "plan", plan
    elif isinstance(pack, str) and pack and not plan:
        kind, item = "topup", pack
    else:
        return _unknown_item()
    try:
        amount_fils, credits = gateway.orders.price(kind, item)
    except OrderError:
        return _unknown_item()
    provider = _provider(gateway)
    if provider is None:
        log.error("checkout refused: no payment provider is configured")
        return _unavailable(request)
    order = await gateway.orders.create(account.id, kind, item, provider.name)
    public_url = gateway.settings.gateway.public_url
    if kind == "plan":
        description = f"Resayil {gateway.settings.plans[item].name.en} plan"
    else:
        description = f"Resayil {credits} credits"
    try:
        started = await provider.create_payment(
            Checkout(
                order_id=order.id,
                amount_fils=amount_fils,
                currency=order.currency,
                description=description,
                language="ar" if await _language(request, gateway) == "ar" else "en",
                callback_url=f"{public_url}/billing/callback",
                error_url=f"{public_url}/billing/error",
                customer_name=account.name,
                customer_email=account.email,
                customer_phone=account.phone,
            )
        )
    except PaymentError as exc:
        log.error("checkout of order %s failed at %s: %s", order.id, provider.name, exc)
        await gateway.orders.mark_failed(order.id, str(exc))
        return _unavailable(request)
    await gateway.orders.attach_invoice(order.id, started.invoice_id)
    raise web.HTTPSeeOther(started.payment_url)


def _unknown_item() -> web.Response:
    return _message(
        ("Unknown plan or pack", "باقة غير معروفة"),
        "That plan or pack does not exist. Choose one from the list.",
        "هذه الباقة غير موجودة. اختر واحدة من القائمة.",
        400,
        (TOP_UP_PATH, ("Plans and top-ups", "الباقات والشحن")),
    )


# -- the browser's return --------------------------------------------------------------------------------


async def _confirm_by_payment_id(request: web.Request, source: str) -> Fulfilment | web.Response:
    gateway = request.app[GATEWAY]
    payment_id = request.query.get("paymentId", "").strip()
    provider = _provider(gateway)
    if not payment_id or len(payment_id) > 64:
        return _message(
            ("Missing payment", "دفعة غير معروفة"),
            "This link does not name a payment.",
            "هذا الرابط لا يشير إلى أي دفعة.",
            400,
            _retry_link(request),
        )
    if provider is None:
        return _unavailable(request)
    try:
        status = await provider.payment_status(payment_id=payment_id)
    except PaymentError as exc:
        log.warning("%s: %s could not report payment %s: %s", source, provider.name, payment_id, exc)
        if not exc.transient:
            return _message(
                ("Unknown payment", "دفعة غير معروفة"),
                "The payment provider does not know this payment. Nothing was credited.",
                "مزود الدفع لا يعرف هذه الدفعة. لم تتم إضافة أي رصيد.",
                400,
                _retry_link(request),
            )
        return _message(
            ("Confirming your payment", "جارٍ تأكيد الدفع"),
            "We could not confirm your payment yet. If you paid, your credits will appear within a few minutes.",
            "تعذر تأكيد الدفع حالياً. إذا أتممت الدفع فسيظهر رصيدك خلال دقائق.",
            503,
        )
    return await gateway.orders.fulfil_status(provider.name, status, source)


async def payment_return(request: web.Request) -> web.StreamResponse:
    """``CallBackUrl``: confirm with the provider, fulfil, then show the dashboard (or a confirmation page)."""
    result = await _confirm_by_payment_id(request, "callback")
    if isinstance(result, web.Response):
        return result
    return _after_confirmation(request, result)


async def payment_error(request: web.Request) -> web.StreamResponse:
    """``ErrorUrl``: the order becomes failed unless the provider says it was paid after all."""
    result = await _confirm_by_payment_id(request, "error-return")
    if isinstance(result, web.Response):
        return result
    return _after_confirmation(request, result)


def _after_confirmation(request: web.Request, result: Fulfilment) -> web.StreamResponse:
    order = result.order
    if result.outcome in ("paid", "duplicate") and order is not None and order.status == "paid":
        if _has_route(request, "/dashboard"):
            raise web.HTTPSeeOther(f"/dashboard?paid={order.id}")
        what_en = f"{order.credits:,} credits" if order.kind == "topup" else f"the {order.item} plan"
        what_ar = f"{order.credits:,} رصيد" if order.kind == "topup" else f"باقة {order.item}"
        return _message(
            ("Payment received", "تم استلام الدفع"),
            f"Thank you. Order {order.id}: {what_en} for {kwd(order.amount_fils)} is now on your account.",
            f"شكراً لك. الطلب {order.id}: تمت إضافة {what_ar} مقابل {kwd(order.amount_fils)} إلى حسابك.",
        )
    if result.outcome == "pending":
        return _message(
            ("Confirming your payment", "جارٍ تأكيد الدفع"),
            "Your payment is not confirmed yet. If you paid, your credits will appear within a few minutes.",
            "لم يتم تأكيد الدفع بعد. إذا أتممت الدفع فسيظهر رصيدك خلال دقائق.",
            link=_retry_link(request),
        )
    if result.outcome == "refused":
        return _message(
            ("Payment not accepted", "لم يتم قبول الدفع"),
            "This payment does not match an order of ours. Please contact support; nothing was credited.",
            "هذه الدفعة لا تطابق أي طلب لدينا. يرجى التواصل مع الدعم؛ لم تتم إضافة أي رصيد.",
            400,
        )
    return _message(
        ("Payment not completed", "لم يكتمل الدفع"),
        "The payment was declined or cancelled. Nothing was charged.",
        "تم رفض الدفع أو إلغاؤه. لم يتم خصم أي مبلغ.",
        link=_retry_link(request),
    )


# -- webhooks --------------------------------------------------------------------------------------------


@csrf_exempt
async def webhook(request: web.Request) -> web.Response:
    """A provider's signed notice: verify it, confirm with the provider, fulfil; 200 even for a duplicate."""
    gateway = request.app[GATEWAY]
    name = request.match_info["provider"]
    provider = _provider(gateway, name)
    if provider is None:
        return web.json_response({"error": "unknown payment provider"}, status=404)
    body = await request.read()
    try:
        notice = provider.verify_webhook(request.headers, body)
    except WebhookRejected as exc:
        log.warning("webhook rejected: provider=%s ip=%s reason=%s", name, request.remote or "-", exc)
        return web.json_response({"error": "webhook rejected"}, status=401)
    try:
        status = await provider.payment_status(invoice_id=notice.invoice_id)
    except PaymentError as exc:
        log.warning("webhook: %s could not report invoice %s: %s", name, notice.invoice_id, exc)
        return web.json_response({"error": "payment status unavailable; retry later"}, status=503)
    result = await gateway.orders.fulfil_status(name, status, f"webhook {notice.reference or '-'}")
    return web.json_response({"ok": True, "outcome": result.outcome})


# -- JSON ------------------------------------------------------------------------------------------------


async def orders_json(request: web.Request) -> web.Response:
    """The signed-in user's orders, newest first; 401 JSON when nobody is signed in."""
    account = await current_account(request)
    if account is None:
        return web.json_response({"error": "sign in to see your orders"}, status=401)
    found = await request.app[GATEWAY].orders.list(account_id=account.id, limit=100)
    return web.json_response({"orders": [order.as_json() for order in found]})
