"""A WhatsApp message sink: stands in for the Resayil API and Meta's Cloud API in tests, demos and end-to-end runs.

It speaks both providers' send endpoints as wire-formats.md §2 describes them, checks the token, records every
accepted message and shows them:

- ``POST /v1/messages`` (Resayil): header ``Token``, ``{"phone": "+965…", "message": "…"}`` → 201
  ``{"id", "phone", "status": "queued", …}``; a phone that is not E.164 with '+' → 400 with Resayil's text.
  ``GET /v1/messages?phone=…`` lists what was sent, as Resayil's delivery lookup does.
- ``POST /{version}/{phone_number_id}/messages`` (Meta): ``Authorization: Bearer``, text or template messages →
  200 ``{"messaging_product", "contacts", "messages": [{"id": "wamid.…"}]}``; errors in Meta's envelope.
- ``GET /``: an HTML page (newest first, phone, time, text; Arabic right-to-left; no JavaScript needed), with a
  phone filter (``?phone=``) and a clear button.
- ``GET /_sink/messages[?phone=…]``: the recorded messages as a JSON array, oldest first.
- ``POST /_sink/clear`` or ``DELETE /_sink/messages``: forget them.
- ``POST /_sink/fail`` ``{"count": N, "status": 503, "retry_after": 2}`` or ``{"count": N, "timeout": true}``: the
  next N send requests fail with that status (and ``Retry-After``), or hang until the client gives up;
  ``"after": M`` lets M requests through first.

With no ``token`` configured any token is accepted. In a test: ``runner, url = await start_sink(token="t")``,
``sink = runner.app[SINK]``, ``await sink.wait_for(2)``, ``await runner.cleanup()``. From the command line:
``resayil whatsapp-sink --port 8026 --token t`` or ``python -m resayil_whatsapp.sink``.
"""

from __future__ import annotations

import asyncio
import html
import re
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import click
import orjson
from aiohttp import web

from resayil_gateway.simulators import Changes, json_response, run_app, start_app

Api = Literal["resayil", "meta"]
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
META_TO = re.compile(r"^\+?[1-9][0-9]{6,14}$")
NON_DIGITS = re.compile(r"[^0-9]")
RESAYIL_PHONE_ERROR = (
    "Phone number is not a valid international mobile number ({phone}). Number must be in E164 format, "
    "including the country code with no spaces (e.g: +1234567890)"
)
META_CODE_FOR_STATUS = {400: 100, 401: 190, 403: 200, 429: 130429}
DEFAULT_HANG_S = 120.0
PAGE_REFRESH_S = 5


@dataclass(frozen=True, slots=True)
class SinkMessage:
    """One accepted message: which API took it, the phone (E.164 with '+'), the text and when it came."""

    id: str
    api: Api
    phone: str
    text: str
    received_at: datetime
    template: str | None = None
    language: str | None = None

    def to_json(self) -> dict[str, Any]:
        """This message as an item of ``/_sink/messages``."""
        return {
            "id": self.id,
            "api": self.api,
            "phone": self.phone,
            "text": self.text,
            "received_at": self.received_at.isoformat(),
            "template": self.template,
            "language": self.language,
        }


@dataclass(frozen=True, slots=True)
class Failure:
    """How one send request fails: an HTTP ``status`` (with ``Retry-After``), or a hang when ``status`` is None."""

    status: int | None
    retry_after: float | None = None


class Sink:
    """The sink's state: the token, the recorded messages, counters and the failures still to inject."""

    def __init__(
        self,
        token: str = "",
        *,
        fail_next: int = 0,
        fail_status: int = 503,
        fail_timeout: bool = False,
        retry_after: float | None = None,
        hang_s: float = DEFAULT_HANG_S,
    ) -> None:
        self.token = token
        self.hang_s = hang_s
        self.messages: list[SinkMessage] = []
        self.requests = 0
        self.failed = 0
        self.held = 0
        self._failures: deque[Failure | None] = deque()
        self._changes = Changes()
        self._released = asyncio.Event()
        self.fail_next(fail_next, fail_status, timeout=fail_timeout, retry_after=retry_after)

    def fail_next(
        self,
        count: int,
        status: int = 503,
        *,
        timeout: bool = False,
        retry_after: float | None = None,
        after: int = 0,
    ) -> None:
        """Make the next ``count`` send requests fail with ``status`` (4xx/5xx), or hang when ``timeout``;
        ``after`` lets that many requests through first (counted after the failures already planned)."""
        if count < 0 or after < 0 or not 400 <= status <= 599 or (retry_after is not None and retry_after < 0):
            raise ValueError("count and after must be ≥ 0, status 400–599 and retry_after ≥ 0")
        failure = Failure(None if timeout else status, retry_after)
        self._failures.extend([None] * after + [failure] * count)

    @property
    def pending_failures(self) -> int:
        """How many of the next send requests will fail."""
        return sum(1 for failure in self._failures if failure is not None)

    def next_failure(self) -> Failure | None:
        """The failure the current send request must answer with, if one is pending."""
        if not self._failures:
            return None
        failure = self._failures.popleft()
        if failure is not None:
            self.failed += 1
        return failure

    def accepts(self, token: str | None) -> bool:
        """True when ``token`` is the configured one (any token when none is configured)."""
        return not self.token or (token is not None and secrets.compare_digest(token.encode(), self.token.encode()))

    def record(
        self, api: Api, phone: str, text: str, template: str | None = None, language: str | None = None
    ) -> SinkMessage:
        """Keep an accepted message and wake whoever waits in :meth:`wait_for`."""
        prefix = "wamid.HBgL" if api == "meta" else ""
        message = SinkMessage(prefix + secrets.token_hex(12), api, phone, text, datetime.now(UTC), template, language)
        self.messages.append(message)
        self._touch()
        return message

    def clear(self) -> int:
        """Forget every recorded message; returns how many there were."""
        count = len(self.messages)
        self.messages.clear()
        self._touch()
        return count

    def for_phone(self, phone: str | None) -> list[SinkMessage]:
        """The messages sent to ``phone`` (compared by digits, so '+' may be missing), oldest first; all if None."""
        digits = NON_DIGITS.sub("", phone or "")
        if not digits:
            return list(self.messages)
        return [message for message in self.messages if NON_DIGITS.sub("", message.phone) == digits]

    async def wait_for(self, condition: int | Callable[[Sequence[SinkMessage]], bool]) -> list[SinkMessage]:
        """Wait until ``condition`` holds: a message count reached, or a predicate over the messages. Returns the
        messages then. Checked on every change, never by polling; bound it with ``asyncio.timeout``."""

        def done() -> bool:
            return len(self.messages) >= condition if isinstance(condition, int) else condition(self.messages)

        await self._changes.wait_until(done)
        return list(self.messages)

    async def hang(self) -> None:
        """Hold a request until the client gives up, the sink stops, or ``hang_s`` passes (``held`` counts the
        requests held so far, and :meth:`wait_for` wakes when one starts)."""
        self.held += 1
        self._touch()
        try:
            async with asyncio.timeout(self.hang_s):
                await self._released.wait()
        except TimeoutError:
            return

    def release(self) -> None:
        """Let every hanging request finish (on shutdown)."""
        self._released.set()

    def _touch(self) -> None:
        self._changes.touch()


SINK = web.AppKey("whatsapp_sink", Sink)


def make_sink_app(sink: Sink | None = None) -> web.Application:
    """The sink as an aiohttp application; its state is ``app[SINK]``."""
    app = web.Application()
    app[SINK] = sink or Sink()
    app.add_routes(
        [
            web.get("/", _page),
            web.post("/v1/messages", _resayil_send),
            web.get("/v1/messages", _resayil_lookup),
            web.post(r"/{version:v[0-9]+\.[0-9]+}/{phone_number_id:[0-9]+}/messages", _meta_send),
            web.get("/_sink/messages", _list),
            web.delete("/_sink/messages", _clear),
            web.post("/_sink/clear", _clear),
            web.post("/_sink/fail", _fail),
        ]
    )

    async def release_hanging(app: web.Application) -> None:
        app[SINK].release()

    app.on_shutdown.append(release_hanging)
    return app


async def start_sink(host: str = "127.0.0.1", port: int = 0, **config: Any) -> tuple[web.AppRunner, str]:
    """Start the sink on a real socket (``port=0`` picks a free one) and return ``(runner, base_url)``.

    ``config`` are :class:`Sink` arguments (``token``, ``fail_next``, ``fail_status``, ``fail_timeout``,
    ``retry_after``, ``hang_s``). Stop it with ``await runner.cleanup()``; its state is ``runner.app[SINK]``.
    """
    return await start_app(make_sink_app(Sink(**config)), host, port)


# provider endpoints -----------------------------------------------------------------------------------------


async def _read_json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None


async def _injected(sink: Sink, api: Api) -> web.Response | None:
    failure = sink.next_failure()
    if failure is None:
        return None
    if failure.status is None:
        await sink.hang()
        return json_response({"status": 504, "message": "Simulated timeout (whatsapp sink)"}, 504)
    headers = {"Retry-After": f"{failure.retry_after:g}"} if failure.retry_after is not None else None
    if api == "meta":
        code = META_CODE_FOR_STATUS.get(failure.status, 2 if failure.status >= 500 else 100)
        return json_response(_meta_error(code, "Simulated failure (whatsapp sink)"), failure.status, headers)
    return json_response(
        {"status": failure.status, "message": "Simulated failure (whatsapp sink)"}, failure.status, headers
    )


async def _resayil_send(request: web.Request) -> web.Response:
    sink = request.app[SINK]
    sink.requests += 1
    if (failed := await _injected(sink, "resayil")) is not None:
        return failed
    if not sink.accepts(request.headers.get("Token")):
        return json_response({"status": 401, "message": "Invalid or missing API token"}, 401)
    body = await _read_json(request)
    if not isinstance(body, dict):
        return json_response({"status": 400, "message": "Invalid JSON body"}, 400)
    phone, text = body.get("phone"), body.get("message")
    if not isinstance(phone, str) or not E164.match(phone):
        return json_response({"status": 400, "message": RESAYIL_PHONE_ERROR.format(phone=phone)}, 400)
    if not isinstance(text, str) or not text.strip():
        return json_response({"status": 400, "message": "message: must be a non-empty string"}, 400)
    message = sink.record("resayil", phone, text)
    created = message.received_at.isoformat()
    return json_response(
        {
            "id": message.id,
            "waId": phone.removeprefix("+"),
            "phone": phone,
            "status": "queued",
            "deliveryStatus": "queued",
            "message": text,
            "createdAt": created,
            "deliverAt": created,
        },
        201,
    )


async def _resayil_lookup(request: web.Request) -> web.Response:
    sink = request.app[SINK]
    if not sink.accepts(request.headers.get("Token")):
        return json_response({"status": 401, "message": "Invalid or missing API token"}, 401)
    items = [
        {
            "message_id": m.id,
            "waId": m.phone.removeprefix("+"),
            "phone": m.phone,
            "status": "processed",
            "deliveryStatus": "delivered",
            "sentAt": m.received_at.isoformat(),
            "deliverAt": m.received_at.isoformat(),
            "message": m.text,
        }
        for m in sink.for_phone(request.query.get("phone"))
        if m.api == "resayil"
    ]
    return json_response(items)


def _meta_error(code: int, message: str, details: str = "") -> dict[str, Any]:
    return {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details or message},
            "fbtrace_id": secrets.token_urlsafe(9),
        }
    }


async def _meta_send(request: web.Request) -> web.Response:
    sink = request.app[SINK]
    sink.requests += 1
    if (failed := await _injected(sink, "meta")) is not None:
        return failed
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not sink.accepts(token if scheme == "Bearer" else None):
        return json_response(_meta_error(190, "Invalid OAuth access token - Cannot parse access token"), 401)
    body = await _read_json(request)
    if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
        return json_response(_meta_error(100, "Invalid parameter", "messaging_product must be 'whatsapp'"), 400)
    to = body.get("to")
    if not isinstance(to, str) or not META_TO.match(to):
        return json_response(_meta_error(100, "Invalid parameter", f"Invalid 'to' parameter: {to!r}"), 400)
    read = _meta_text(body)
    if isinstance(read, web.Response):
        return read
    text, template, language = read
    message = sink.record("meta", "+" + to.removeprefix("+"), text, template, language)
    return json_response(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to.removeprefix("+")}],
            "messages": [{"id": message.id}],
        }
    )


def _meta_text(body: dict[str, Any]) -> tuple[str, str | None, str | None] | web.Response:
    """The text of a text message, or the body parameters of a template message, with its name and language."""
    kind = body.get("type", "text")
    if kind == "text":
        text = body.get("text", {}).get("body") if isinstance(body.get("text"), dict) else None
        if not isinstance(text, str) or not text.strip():
            return json_response(_meta_error(100, "Invalid parameter", "text.body is required"), 400)
        return text, None, None
    if kind == "template":
        template = body.get("template")
        if not isinstance(template, dict) or not template.get("name"):
            return json_response(_meta_error(100, "Invalid parameter", "template.name is required"), 400)
        language = template.get("language", {}).get("code") if isinstance(template.get("language"), dict) else None
        if not isinstance(language, str) or not language:
            return json_response(_meta_error(100, "Invalid parameter", "template.language.code is required"), 400)
        parameters = [
            str(parameter.get("text", ""))
            for component in template.get("components") or []
            if isinstance(component, dict) and component.get("type") == "body"
            for parameter in component.get("parameters") or []
            if isinstance(parameter, dict)
        ]
        if any("\n" in value or "\t" in value or "     " in value for value in parameters):
            details = "Param text cannot have new-line/tab characters or more than 4 consecutive spaces"
            return json_response(
                _meta_error(132018, "There was an issue with the parameters in your template.", details), 400
            )
        return "\n".join(parameters), str(template["name"]), language
    return json_response(_meta_error(131051, "Unsupported message type", f"type {kind!r} is not supported"), 400)


# control API and page ---------------------------------------------------------------------------------------


async def _list(request: web.Request) -> web.Response:
    return json_response([message.to_json() for message in request.app[SINK].for_phone(request.query.get("phone"))])


async def _clear(request: web.Request) -> web.Response:
    cleared = request.app[SINK].clear()
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        raise web.HTTPSeeOther("/")
    return json_response({"cleared": cleared})


async def _fail(request: web.Request) -> web.Response:
    sink = request.app[SINK]
    body = await _read_json(request)
    if not isinstance(body, dict):
        return json_response({"error": "expected a JSON object"}, 400)
    try:
        count = int(body.get("count", 1))
        status = int(body.get("status", 503))
        retry_after = float(body["retry_after"]) if body.get("retry_after") is not None else None
        after = int(body.get("after", 0))
        sink.fail_next(count, status, timeout=bool(body.get("timeout", False)), retry_after=retry_after, after=after)
    except (TypeError, ValueError) as exc:
        return json_response({"error": str(exc)}, 400)
    return json_response({"pending_failures": sink.pending_failures})


PAGE_STYLE = """
body{font-family:system-ui,"Tajawal","Segoe UI",sans-serif;margin:0 auto;max-width:52rem;padding:1rem;
background:#0f1115;color:#e8e6e1}
h1{font-size:1.4rem;color:#d4af37}a{color:#d4af37}
form{display:inline-block;margin:0 .5rem .5rem 0}
input,button{font:inherit;padding:.3rem .6rem}
ol{list-style:none;padding:0}
li{border:1px solid #2a2e36;border-radius:.5rem;padding:.6rem .8rem;margin:.6rem 0;background:#161a21}
.meta{font-size:.85rem;color:#9a9890;margin-bottom:.3rem}
.text p{margin:.15rem 0;white-space:pre-wrap;unicode-bidi:plaintext}
.template{color:#d4af37}
"""


async def _page(request: web.Request) -> web.Response:
    sink = request.app[SINK]
    phone = request.query.get("phone", "").strip()
    messages = list(reversed(sink.for_phone(phone)))
    items = "\n".join(_page_item(message) for message in messages) or "<li>No messages yet.</li>"
    shown = f"{len(messages)} message{'s' if len(messages) != 1 else ''}"
    if phone:
        shown += f" to <span dir='ltr'>{html.escape(phone)}</span> · <a href='/'>all</a>"
    document = f"""<!doctype html>
<html lang="en" dir="ltr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{PAGE_REFRESH_S}">
<title>WhatsApp sink</title>
<style>{PAGE_STYLE}</style>
</head>
<body>
<h1>WhatsApp sink</h1>
<p>{shown} (newest first; this page refreshes itself every {PAGE_REFRESH_S} s)</p>
<form method="get" action="/"><label>Phone <input name="phone" value="{html.escape(phone)}" dir="ltr"
placeholder="+96550000000"></label> <button type="submit">Filter</button></form>
<form method="post" action="/_sink/clear"><button type="submit">Clear all</button></form>
<ol class="messages">
{items}
</ol>
</body>
</html>
"""
    return web.Response(text=document, content_type="text/html", charset="utf-8")


def _page_item(message: SinkMessage) -> str:
    lines = "".join(f'<p dir="auto">{html.escape(line)}</p>' for line in message.text.splitlines() if line.strip())
    template = ""
    if message.template:
        name, language = html.escape(message.template), html.escape(message.language or "")
        template = f' · <span class="template">template {name} ({language})</span>'

    when = message.received_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f'<li class="message" id="{html.escape(message.id)}">'
        f'<div class="meta"><span class="phone" dir="ltr">{html.escape(message.phone)}</span> · '
        f'<time datetime="{message.received_at.isoformat()}">{when}</time> · {message.api}{template}</div>'
        f'<div class="text" dir="auto">{lines}</div></li>'
    )


# command line -----------------------------------------------------------------------------------------------


@click.command("whatsapp-sink")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8026, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--token",
    default="",
    envvar="RESAYIL_WHATSAPP_SINK_TOKEN",
    help="Token the senders must present (Resayil 'Token' header or Meta Bearer); empty accepts any.",
)
@click.option("--fail-next", default=0, show_default=True, type=int, help="Fail this many first send requests.")
@click.option("--fail-status", default=503, show_default=True, type=int, help="HTTP status of those failures.")
def sink_command(host: str, port: int, token: str, fail_next: int, fail_status: int) -> None:
    """Run the WhatsApp message sink in the foreground (Resayil and Meta send endpoints, a page of messages)."""
    try:
        sink = Sink(token, fail_next=fail_next, fail_status=fail_status)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(
        f"WhatsApp sink on http://{host}:{port}  (Resayil: POST /v1/messages, Meta: POST /vNN.N/<id>/messages); "
        f"messages at http://{host}:{port}/"
    )
    run_app(make_sink_app(sink), host, port)


if __name__ == "__main__":
    sink_command()
