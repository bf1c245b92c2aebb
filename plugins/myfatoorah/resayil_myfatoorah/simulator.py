"""A MyFatoorah sandbox look-alike for tests, the demo and manual runs. Nothing here reaches the internet.

API (``Authorization: Bearer <token>``, the ``IsSuccess / Message / ValidationErrors / Data`` envelope):
``POST /v2/InitiatePayment``, ``POST /v2/ExecutePayment`` (validated like the real one: method id, amount
with at most three decimals, items summing to the value, URLs ≤ 254 characters and not ``localhost``, mobile
length) and ``POST /v2/GetPaymentStatus`` (``KeyType`` ``InvoiceId | PaymentId | CustomerReference``).

Hosted payment page: ``GET /En/KWT/PayInvoice/Checkout?invoiceKey=…`` (the ``PaymentURL``), an HTML form
with Pay and Decline buttons that works without JavaScript. Pay marks the invoice paid and redirects (303)
to ``CallBackUrl?paymentId=…&Id=…``; Decline records a failed attempt and redirects to
``ErrorUrl?paymentId=…``. Each attempt sends a signed V2 webhook in the background (see
:class:`~resayil_myfatoorah.sandbox.SimulatorConfig` for duplicates, out-of-order, late delivery, retries).

Control API: ``GET /_sim/stats``, ``GET /_sim/invoices``, ``GET /_sim/webhooks``, ``GET|POST /_sim/config``,
``POST /_sim/fail`` (a :class:`~resayil_myfatoorah.sandbox.FailureRule` as JSON), ``POST /_sim/reset``,
``POST /_sim/invoices/{id}/pay`` and ``/decline`` (answer ``{"redirect": …}``). In-process the state is
``runner.app[SIMULATOR]``, and ``await sim.stats.wait_until(lambda s: s.webhooks_delivered >= 1)`` waits for an
event without sleeping.

Run it with ``resayil myfatoorah-simulator --port 8091 --webhook-url … --webhook-secret …``; in a test,
``runner, url = await start_simulator(webhook_url=…, webhook_secret=…)`` and ``await runner.cleanup()``.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any
from urllib.parse import urlsplit

import click
from aiohttp import web
from yarl import URL

from resayil_gateway.clock import Clock
from resayil_gateway.simulators import run_app, start_app

from .money import decode_json, encode_json, kwd_to_fils
from .payment_page import render_payment_page
from .sandbox import (
    DEFAULT_METHODS,
    FailureRule,
    PaymentOutcome,
    Sandbox,
    SandboxStats,
    SimInvoice,
    SimMethod,
    SimulatorConfig,
    status_data,
    webhook_payload,
)
from .sandbox_webhooks import WebhookSender

INVALID_TOKEN = "The token is not valid or it is expired!"
CURRENCIES = ("KWD", "SAR", "BHD", "AED", "QAR", "OMR", "JOD", "EGP")
MOBILE = re.compile(r"^(?:(\+)|(00)|(\*)|())[0-9]{3,14}((\#)|())$")
MAX_URL = 254


class InvoiceClosed(Exception):
    """The invoice can no longer be paid (expired or canceled)."""


class MyFatoorahSimulator:
    """The simulator's state: switches, invoices, injected failures, webhooks and counters."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        methods: tuple[SimMethod, ...] = DEFAULT_METHODS,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.clock = clock or Clock()
        self.stats = SandboxStats()
        self.sandbox = Sandbox(methods, self.config.invoice_ttl_s)
        self.failures: list[FailureRule] = []
        self.webhooks = WebhookSender(self.config, self.stats)
        self._references = itertools.count(900001)

    def fail_next(self, **rule: Any) -> FailureRule:
        """Make upcoming API calls fail: ``fail_next(mode="status", status=503, endpoint="ExecutePayment")``."""
        failure = FailureRule(**rule)
        if failure.mode not in ("status", "rejected", "timeout", "not_json", "empty"):
            raise ValueError("mode must be status, rejected, timeout, not_json or empty")
        if failure.count < 1 or not 200 <= failure.status <= 599 or failure.delay_s < 0:
            raise ValueError("count must be ≥ 1, status 200-599 and delay_s ≥ 0")
        self.failures.append(failure)
        return failure

    def take_failure(self, endpoint: str) -> FailureRule | None:
        """The failure rule that applies to this call (consuming one of its ``count``), if any."""
        for rule in self.failures:
            if rule.endpoint in ("", endpoint):
                rule.count -= 1
                if rule.count <= 0:
                    self.failures.remove(rule)
                self.stats.injected_failures += 1
                return rule
        return None

    def configure(self, changes: Mapping[str, Any]) -> None:
        """Change switches at run time; :class:`ValueError` for an unknown key or a bad value."""
        known = {item.name: item for item in fields(SimulatorConfig)}
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(f"unknown setting {sorted(unknown)[0]!r}")
        before = asdict(self.config)
        try:
            for name, value in changes.items():
                setattr(self.config, name, _typed(name, value, type(before[name])))
            self.config.validate()
        except ValueError:
            for name, value in before.items():
                setattr(self.config, name, value)
            raise

    def settle(self, invoice: SimInvoice, outcome: PaymentOutcome) -> str:
        """Pay or decline ``invoice`` as the payment page would; return where the browser goes next."""
        paid = invoice.succeeded()
        if paid is not None:  # paying twice shows the same success
            return str(URL(invoice.callback_url).update_query(paymentId=paid.payment_id, Id=paid.payment_id))
        now = self.clock.now()
        if invoice.status == "Canceled" or invoice.expires_at <= now:
            raise InvoiceClosed(f"invoice {invoice.id} is {'canceled' if invoice.status == 'Canceled' else 'expired'}")
        events = []
        if outcome == "paid" and self.config.out_of_order:
            earlier = self.sandbox.attempt(invoice, "declined", now)
            late_failure = webhook_payload(invoice, earlier, self._reference(), now)
        else:
            late_failure = None
        tx = self.sandbox.attempt(invoice, outcome, now)
        events.append(webhook_payload(invoice, tx, self._reference(), now))
        if late_failure is not None:
            events.append(late_failure)
        if outcome == "paid":
            self.stats.paid += 1
        else:
            self.stats.declined += 1
        self.stats.touch()
        self.webhooks.send(invoice.webhook_url or self.config.webhook_url, events)
        if outcome == "paid":
            return str(URL(invoice.callback_url).update_query(paymentId=tx.payment_id, Id=tx.payment_id))
        return str(URL(invoice.error_url).update_query(paymentId=tx.payment_id))

    def invoices(self) -> list[dict[str, Any]]:
        """Every invoice, oldest first, as short summaries."""
        return [invoice.summary() for invoice in self.sandbox.invoices.values()]

    def _reference(self) -> str:
        return f"WH-{next(self._references)}"


def _typed(name: str, value: Any, expected: type) -> Any:
    """``value`` for a switch of type ``expected`` (an int is accepted for a float); ValueError otherwise."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not expected:
        raise ValueError(f"{name} must be a {expected.__name__}")
    return value


SIMULATOR = web.AppKey("myfatoorah_simulator", MyFatoorahSimulator)


def make_simulator_app(simulator: MyFatoorahSimulator | None = None) -> web.Application:
    """The simulator as an aiohttp application; its state is ``app[SIMULATOR]``."""
    app = web.Application()
    app[SIMULATOR] = simulator or MyFatoorahSimulator()
    app.add_routes(
        [
            web.post("/v2/{endpoint}", _api),
            web.get("/{lang}/KWT/PayInvoice/Checkout", _payment_page),
            web.post("/{lang}/KWT/PayInvoice/Checkout", _payment_form),
            web.get("/_sim/stats", _stats),
            web.get("/_sim/invoices", _invoices),
            web.get("/_sim/webhooks", _deliveries),
            web.get("/_sim/config", _config),
            web.post("/_sim/config", _config),
            web.post("/_sim/fail", _fail),
            web.post("/_sim/reset", _reset),
            web.post("/_sim/invoices/{invoice_id:\\d+}/{action:pay|decline}", _settle_by_api),
        ]
    )

    async def stop_webhooks(app: web.Application) -> None:
        await app[SIMULATOR].webhooks.close()

    app.on_cleanup.append(stop_webhooks)
    return app


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
    methods: tuple[SimMethod, ...] = DEFAULT_METHODS,
    **config: Any,
) -> tuple[web.AppRunner, str]:
    """Start the simulator on a real socket (``port=0`` picks a free one) and return ``(runner, base_url)``.

    ``config`` are :class:`SimulatorConfig` fields (``api_token``, ``webhook_url``, ``webhook_secret``,
    ``duplicates``, ``out_of_order``, ``webhook_delay_s`` …). Stop it with ``await runner.cleanup()``; its state
    is ``runner.app[SIMULATOR]``.
    """
    simulator = MyFatoorahSimulator(SimulatorConfig(**config), clock=clock, methods=methods)
    return await start_app(make_simulator_app(simulator), host, port)


# API ---------------------------------------------------------------------------------------------------


def _envelope(
    data: Any, message: str, status: int = 200, errors: list[dict[str, str]] | None = None, *, ok: bool = True
) -> web.Response:
    body = {"IsSuccess": ok and errors is None, "Message": message, "ValidationErrors": errors, "Data": data}
    return web.Response(body=encode_json(body), status=status, content_type="application/json", charset="utf-8")


def _invalid(errors: list[tuple[str, str]]) -> web.Response:
    return _envelope(None, "Invalid data", 400, [{"Name": name, "Error": error} for name, error in errors])


async def _api(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIMULATOR]
    endpoint = request.match_info["endpoint"]
    sim.stats.api_calls += 1
    sim.stats.touch()
    known = API_ENDPOINTS.get(endpoint.lower())
    if known is None:
        detail = f"No action was found on the controller that matches the request '{endpoint}'."
        message = f"No HTTP resource was found that matches the request URI '{request.url}'."
        return web.json_response({"Message": message, "MessageDetail": detail}, status=404)
    if not _authorized(request, sim.config.api_token):
        return _envelope(None, INVALID_TOKEN, 401, ok=False)
    name, handler = known
    rule = sim.take_failure(name)
    if rule is not None:
        injected = await _injected(rule)
        if injected is not None:
            return injected
    try:
        body = decode_json(await request.read() or b"{}")
    except ValueError:
        return _invalid([("request", "The request body is not valid JSON.")])
    if not isinstance(body, dict):
        return _invalid([("request", "The request body must be a JSON object.")])
    return await handler(request, sim, body)


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return not token or hmac.compare_digest(given.strip().encode(), token.encode())


async def _injected(rule: FailureRule) -> web.Response | None:
    """The injected failure's answer; None for a timeout, which answers normally but late."""
    if rule.mode == "timeout":
        await asyncio.sleep(rule.delay_s)  # the "slow upstream" switch: a deliberate delay
        return None
    if rule.mode == "rejected":
        return _envelope(None, "Invalid data", rule.status, [{"Name": "Simulator", "Error": rule.message}])
    if rule.mode == "not_json":
        page = f"<html><body><h1>{rule.status} Error</h1><p>{rule.message}</p></body></html>"
        return web.Response(text=page, status=rule.status, content_type="text/html")
    if rule.mode == "empty":
        return web.Response(body=b"", status=rule.status)
    return _envelope(None, rule.message, rule.status, ok=False)


async def _initiate_payment(request: web.Request, sim: MyFatoorahSimulator, body: dict[str, Any]) -> web.Response:
    currency = str(body.get("CurrencyIso") or "KWD").upper()
    if currency not in CURRENCIES:
        return _invalid([("CurrencyIso", "Invalid currency")])
    try:
        amount = kwd_to_fils(body.get("InvoiceAmount", 0))
    except (ValueError, TypeError):
        return _invalid([("InvoiceAmount", "Invalid amount")])
    methods = [method.initiate_entry(amount, currency) for method in sim.sandbox.methods.values()]
    return _envelope({"PaymentMethods": methods}, "Initiated Successfully!")


async def _execute_payment(request: web.Request, sim: MyFatoorahSimulator, body: dict[str, Any]) -> web.Response:
    errors, value_fils = _execute_errors(sim, body)
    if errors:
        return _invalid(errors)
    language = str(body.get("Language") or "EN").upper()
    invoice = sim.sandbox.create(
        value_fils=value_fils,
        currency=str(body.get("DisplayCurrencyIso") or "KWD").upper(),
        method=sim.sandbox.methods[body["PaymentMethodId"]],
        now=sim.clock.now(),
        customer_reference=str(body.get("CustomerReference") or ""),
        user_defined_field=str(body.get("UserDefinedField") or ""),
        customer_name=str(body.get("CustomerName") or ""),
        customer_mobile=f"{body.get('MobileCountryCode') or ''}{body.get('CustomerMobile') or ''}",
        customer_email=body.get("CustomerEmail") or None,
        callback_url=body["CallBackUrl"],
        error_url=body["ErrorUrl"],
        language=language,
        item_name=str(((body.get("InvoiceItems") or [{}])[0] or {}).get("ItemName") or "Invoice"),
        webhook_url=str(body.get("WebhookUrl") or ""),
    )
    sim.stats.invoices += 1
    sim.stats.touch()
    page = URL(str(request.url.origin())) / ("Ar" if language == "AR" else "En") / "KWT/PayInvoice/Checkout"
    payment_url = page.with_query(invoiceKey=invoice.key, paymentGatewayId=20 + invoice.method.id)
    data = {
        "InvoiceId": invoice.id,
        "IsDirectPayment": False,
        "CustomerReference": invoice.customer_reference,
        "PaymentURL": str(payment_url),
        "UserDefinedField": invoice.user_defined_field,
        "RecurringId": "",
    }
    return _envelope(data, "Invoice Created Successfully!")


def _execute_errors(sim: MyFatoorahSimulator, body: Mapping[str, Any]) -> tuple[list[tuple[str, str]], int]:
    errors: list[tuple[str, str]] = []
    value_fils = 0
    method_id = body.get("PaymentMethodId")
    if not isinstance(method_id, int) or method_id not in sim.sandbox.methods:
        errors.append(("PaymentMethodId", "Invalid PaymentMethodId"))
    try:
        value_fils = kwd_to_fils(body.get("InvoiceValue"))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        errors.append(("InvoiceValue", "Invoice value must be a number with at most 3 decimals"))
    if value_fils <= 0 and not any(name == "InvoiceValue" for name, _ in errors):
        errors.append(("InvoiceValue", "Invoice value must be more than 0"))
    if str(body.get("DisplayCurrencyIso") or "KWD").upper() != "KWD":
        errors.append(("DisplayCurrencyIso", "Only KWD is enabled on this sandbox account"))
    for name in ("CallBackUrl", "ErrorUrl"):
        url = body.get(name)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > MAX_URL:
            errors.append((name, f"{name} must be a valid URL of at most {MAX_URL} characters"))
        elif urlsplit(url).hostname == "localhost":
            errors.append((name, f"{name} can not be localhost"))
    mobile = body.get("CustomerMobile")
    if mobile and (not isinstance(mobile, str) or len(mobile) > 11 or not MOBILE.match(mobile)):
        errors.append(("CustomerMobile", "Invalid mobile number"))
    if len(str(body.get("UserDefinedField") or "")) > 500:
        errors.append(("UserDefinedField", "UserDefinedField must be at most 500 characters"))
    if str(body.get("Language") or "EN").upper() not in ("EN", "AR"):
        errors.append(("Language", "Language must be EN or AR"))
    items = body.get("InvoiceItems")
    if items and value_fils and _items_total(items) != value_fils:
        errors.append(("InvoiceItems", "Invoice items total must equal the invoice value"))
    return errors, value_fils


def _items_total(items: Any) -> int | None:
    try:
        return sum(kwd_to_fils(item["UnitPrice"]) * int(item["Quantity"]) for item in items)
    except (KeyError, TypeError, ValueError):
        return None


async def _get_payment_status(request: web.Request, sim: MyFatoorahSimulator, body: dict[str, Any]) -> web.Response:
    key, key_type = body.get("Key"), str(body.get("KeyType") or "")
    if key in (None, "") or key_type.lower() not in ("invoiceid", "paymentid", "customerreference"):
        return _invalid([("KeyType", "KeyType must be InvoiceId, PaymentId or CustomerReference")])
    invoice = sim.sandbox.lookup(str(key), key_type)
    if invoice is None:
        return _invalid([("Key", "Invalid key")])
    return _envelope(status_data(invoice), "")


API_ENDPOINTS = {
    "initiatepayment": ("InitiatePayment", _initiate_payment),
    "executepayment": ("ExecutePayment", _execute_payment),
    "getpaymentstatus": ("GetPaymentStatus", _get_payment_status),
}


# payment page ------------------------------------------------------------------------------------------


async def _payment_page(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    invoice = sim.sandbox.by_key(request.query.get("invoiceKey", ""))
    if invoice is None:
        return web.Response(text="Invoice not found", status=404)
    return web.Response(text=render_payment_page(invoice, str(request.rel_url)), content_type="text/html")


async def _payment_form(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    invoice = sim.sandbox.by_key(request.query.get("invoiceKey", ""))
    if invoice is None:
        return web.Response(text="Invoice not found", status=404)
    action = (await request.post()).get("action")
    if action not in ("pay", "decline"):
        return web.Response(text="Choose Pay or Decline", status=400)
    try:
        target = sim.settle(invoice, "paid" if action == "pay" else "declined")
    except InvoiceClosed as exc:
        page = render_payment_page(invoice, str(request.rel_url), notice=str(exc))
        return web.Response(text=page, status=410, content_type="text/html")
    raise web.HTTPSeeOther(target)


# control API -------------------------------------------------------------------------------------------


async def _stats(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    return web.json_response({**sim.stats.snapshot(), "failures_pending": sum(r.count for r in sim.failures)})


async def _invoices(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].invoices())


async def _deliveries(request: web.Request) -> web.Response:
    return web.json_response([asdict(item) for item in request.app[SIMULATOR].webhooks.deliveries])


async def _config(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    if request.method == "POST":
        try:
            sim.configure(await _json_object(request))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(sim.config.public())


async def _fail(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    try:
        rule = sim.fail_next(**await _json_object(request))
    except (TypeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(asdict(rule))


async def _reset(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    sim.failures.clear()
    sim.stats.reset()
    return web.json_response(sim.stats.snapshot())


async def _settle_by_api(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    invoice = sim.sandbox.invoices.get(int(request.match_info["invoice_id"]))
    if invoice is None:
        return web.json_response({"error": "no such invoice"}, status=404)
    try:
        target = sim.settle(invoice, "paid" if request.match_info["action"] == "pay" else "declined")
    except InvoiceClosed as exc:
        return web.json_response({"error": str(exc)}, status=410)
    return web.json_response({"redirect": target})


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


# command line ------------------------------------------------------------------------------------------


@click.command("myfatoorah-simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8091, show_default=True, type=int, help="Port to listen on (0: any free port).")
@click.option("--api-token", envvar="RESAYIL_MYFATOORAH__API_TOKEN", default="", help="Bearer token to require.")
@click.option("--webhook-url", default="", help="Where to POST signed V2 webhooks (none: no webhooks).")
@click.option("--webhook-secret", envvar="RESAYIL_MYFATOORAH__WEBHOOK_SECRET", default="", help="Webhook Secret Key.")
@click.option("--duplicates", default=1, show_default=True, type=int, help="Copies of each webhook.")
@click.option("--out-of-order", is_flag=True, help="Send a failed attempt's webhook after the paid one.")
@click.option("--webhook-delay-s", default=0.0, show_default=True, type=float, help="Delay before webhooks.")
@click.option("--webhook-retries", default=5, show_default=True, type=int, help="Retries when not answered 200.")
def simulator_command(
    host: str,
    port: int,
    api_token: str,
    webhook_url: str,
    webhook_secret: str,
    duplicates: int,
    out_of_order: bool,
    webhook_delay_s: float,
    webhook_retries: int,
) -> None:
    """Run a MyFatoorah sandbox simulator in the foreground (API v2, payment page, signed webhooks)."""
    try:
        config = SimulatorConfig(
            api_token=api_token,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            duplicates=duplicates,
            out_of_order=out_of_order,
            webhook_delay_s=webhook_delay_s,
            webhook_retries=webhook_retries,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    hooks = f"webhooks to {webhook_url}" if webhook_url else "no webhooks (set --webhook-url)"
    click.echo(f"MyFatoorah simulator on http://{host}:{port}, {hooks}")
    run_app(make_simulator_app(MyFatoorahSimulator(config)), host, port)


if __name__ == "__main__":
    simulator_command()
