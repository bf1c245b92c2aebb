"""Web sessions for browser pages: who is logged in, remember-me, logout that ends the session on the server,
and CSRF protection for every form.

Two storages, one behaviour:

- **Redis** (when ``gateway.redis_url`` is set): the cookie carries a random id; the session lives in Redis under
  ``<redis_prefix>:session:<id>`` with a TTL equal to its server-side lifetime. Logout deletes the key, so a
  copied cookie is dead on every worker at once.
- **Encrypted cookie** (one process, no Redis): the session is in the cookie, encrypted and signed with
  Fernet under a key derived from the server secret (never a new secret). Each session carries a random
  ``sid``; logout records the sid as ended (in memory and as an ``audit`` row, reloaded after a restart), so
  a copied cookie is refused after logout.

A session lasts ``gateway.session_remember_days`` with "remember me" (a persistent cookie) or
``gateway.session_hours`` without (a browser-session cookie). The server checks that lifetime itself on the
gateway's clock; it never trusts the cookie's expiry. Cookies are HttpOnly, SameSite=Lax and Secure when
``gateway.public_url`` is https.

CSRF: each session holds a random token (:func:`csrf_token`). Every unsafe request (POST, PUT, PATCH,
DELETE) to a web path (anything outside the API prefixes) must carry it in the ``csrf_token`` form field or
the ``X-CSRF-Token`` header, compared in constant time, or it gets a 403 page. Requests with a JSON body
(payment webhooks) are not form posts a foreign page can forge without a CORS preflight, so they are left
alone; a handler that must accept other cross-site posts is marked with :func:`csrf_exempt`.

Handlers use :func:`current_account`, :func:`login`, :func:`logout`, :func:`csrf_token` and
:func:`check_csrf`; :func:`setup_sessions` is called once by :func:`resayil_gateway.app.create_app`.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import html
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web
from aiohttp_session import SESSION_KEY, AbstractStorage, Session, get_session, new_session, session_middleware
from sqlalchemy import select

from ..api.paths import API_PREFIXES, OPERATIONS_PATHS
from ..auth.accounts import Account
from ..store.tables import audit

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..gateway import Gateway

__all__ = [
    "COOKIE_NAME",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSIONS",
    "WebSessions",
    "check_csrf",
    "csrf_exempt",
    "csrf_token",
    "current_account",
    "login",
    "logout",
    "setup_sessions",
]

log = logging.getLogger("resayil.sessions")

COOKIE_NAME = "resayil_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_KEY_LABEL = "resayil-web-session-cookie-key-v1"
_ACCOUNT_KEY: web.RequestKey[Account | None] = web.RequestKey("resayil_current_account")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])


def csrf_exempt(handler: H) -> H:
    """Mark a web handler that accepts cross-site form posts (it must authenticate them another way, e.g. a
    signature). JSON-bodied posts such as payment webhooks need no mark."""
    handler.__resayil_csrf_exempt__ = True  # type: ignore[attr-defined]
    return handler


class _CookieStorage(AbstractStorage):
    """Fernet-encrypted cookie; a browser-session cookie unless the session was remembered.

    The encrypting storage (and with it ``cryptography``, ~6 MB of resident memory) is built at the first
    web request, so a worker that only serves the API never loads it."""

    def __init__(self, key: bytes, remember_seconds: int, **cookie: Any) -> None:
        super().__init__(cookie_name=COOKIE_NAME, **cookie)
        self._key = key
        self._cookie = cookie
        self._remember = remember_seconds
        self._encrypted: AbstractStorage | None = None

    def _storage(self) -> AbstractStorage:
        if self._encrypted is None:
            from aiohttp_session.cookie_storage import EncryptedCookieStorage
            from cryptography.fernet import Fernet

            self._encrypted = EncryptedCookieStorage(Fernet(self._key), cookie_name=COOKIE_NAME, **self._cookie)
        return self._encrypted

    async def load_session(self, request: web.Request) -> Session:
        session = await self._storage().load_session(request)
        session.max_age = self._remember if session.get("remember") else None
        return session

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        await self._storage().save_session(request, response, session)


class _RedisStorage(AbstractStorage):
    """The cookie holds a random id; the data lives in Redis with the session's server-side lifetime as TTL."""

    def __init__(
        self, redis: Redis, prefix: str, lifetime: Callable[[Session], int], remember_seconds: int, **cookie: Any
    ) -> None:
        super().__init__(cookie_name=COOKIE_NAME, **cookie)
        self._remember = remember_seconds
        self._redis = redis
        self._prefix = prefix
        self._lifetime = lifetime

    def _key(self, identity: str) -> str:
        return f"{self._prefix}:session:{identity}"

    async def load_session(self, request: web.Request) -> Session:
        identity = self.load_cookie(request)
        raw = await self._redis.get(self._key(identity)) if identity and len(identity) <= 64 else None
        if raw is None:
            return Session(None, data=None, new=True, max_age=None)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        session = Session(identity, data=data, new=False, max_age=None)
        session.max_age = self._remember if session.get("remember") else None
        return session

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        identity = session.identity
        if session.empty:
            if identity is not None:
                await self.forget(str(identity))
            self.save_cookie(response, "", max_age=None)
            return
        if identity is None:
            identity = secrets.token_urlsafe(32)
        ttl = self._lifetime(session)
        await self._redis.set(self._key(str(identity)), orjson.dumps(self._get_session_data(session)), ex=ttl)
        self.save_cookie(response, str(identity), max_age=session.max_age)

    async def forget(self, identity: str) -> None:
        """Delete a session on the server (logout, or the anonymous session replaced at login)."""
        await self._redis.delete(self._key(identity))


class _EndedSessions:
    """Session ids ended by logout (cookie storage only): kept in memory, recorded as audit rows, and read
    back from the audit table the first time they are needed after a start."""

    def __init__(self, gateway: Gateway, keep: timedelta) -> None:
        self._gateway = gateway
        self._keep = keep
        self._ended: dict[str, float] = {}
        self._loaded = False

    async def _load(self) -> None:
        since = self._gateway.clock.now() - self._keep
        query = select(audit.c.target, audit.c.detail).where(
            audit.c.action == "session.ended", audit.c.created_at >= since
        )
        async with self._gateway.store.connect() as conn:
            for row in await conn.execute(query):
                until = (row.detail or {}).get("until", 0)
                self._ended[row.target.removeprefix("session:")] = float(until)
        self._loaded = True

    async def is_ended(self, sid: str) -> bool:
        """True when this session id was logged out."""
        if not self._loaded:
            await self._load()
        return sid in self._ended

    async def end(self, sid: str, until: float, actor: str) -> None:
        """Record that the session ended (kept until its own expiry would have ended it anyway)."""
        now = self._gateway.clock.now().timestamp()
        self._ended = {key: value for key, value in self._ended.items() if value > now}
        self._ended[sid] = until
        async with self._gateway.store.begin() as conn:
            await self._gateway.audit(conn, actor, "session.ended", f"session:{sid}", {"until": until})


class WebSessions:
    """The session machinery of one application: storage, lifetimes and ended sessions."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        settings = gateway.settings.gateway
        self.remember_seconds = int(timedelta(days=settings.session_remember_days).total_seconds())
        self.browser_seconds = int(timedelta(hours=settings.session_hours).total_seconds())
        # No max_age here: each session sets its own (persistent when remembered, else a browser cookie).
        cookie: dict[str, Any] = {
            "httponly": True,
            "samesite": "Lax",
            "secure": settings.public_url.startswith("https://"),
        }
        redis = getattr(gateway.state, "redis", None)
        self.ended: _EndedSessions | None = None
        self.redis_storage: _RedisStorage | None = None
        if redis is not None:
            self.redis_storage = _RedisStorage(
                redis, gateway.state.prefix, self.server_lifetime, self.remember_seconds, **cookie
            )
            self.storage: AbstractStorage = self.redis_storage
        else:
            self.storage = _CookieStorage(self._cookie_key(gateway), self.remember_seconds, **cookie)
            self.ended = _EndedSessions(gateway, timedelta(seconds=self.remember_seconds))

    @staticmethod
    def _cookie_key(gateway: Gateway) -> bytes:
        # A Fernet key derived from the server secret with HMAC-SHA256 under a fixed label: no new secret to keep.
        derived = bytes.fromhex(gateway.keys.hash_key(_KEY_LABEL))
        return base64.urlsafe_b64encode(derived)

    def server_lifetime(self, session: Session) -> int:
        """Seconds the server keeps ``session``: until its login expires, or ``session_hours`` for a visitor
        who has not logged in (whose session holds only the CSRF token of the forms they are filling in)."""
        if "expires" not in session:
            return self.browser_seconds
        return max(1, int(float(session["expires"]) - self.now()) + 60)

    def now(self) -> float:
        """The gateway clock's time as a Unix timestamp."""
        return self.gateway.clock.now().timestamp()


SESSIONS = web.AppKey("resayil_web_sessions", WebSessions)


def _is_web(request: web.Request) -> bool:
    return not request.path.startswith(API_PREFIXES) and request.path not in OPERATIONS_PATHS


def setup_sessions(app: web.Application, gateway: Gateway) -> WebSessions:
    """Install sessions and CSRF checking on ``app`` (web paths only; the API never sees them)."""
    sessions = WebSessions(gateway)
    app[SESSIONS] = sessions
    with_session = session_middleware(sessions.storage)

    @web.middleware
    async def web_session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _is_web(request):
            return await handler(request)

        async def checked(request: web.Request) -> web.StreamResponse:
            await get_session(request)
            if request.method in UNSAFE_METHODS and _needs_csrf(request):
                form = await request.post() if _has_form(request) else {}
                await check_csrf(request, form)
            return await handler(request)

        try:
            return await with_session(request, checked)
        except web.HTTPNotFound as exc:
            if exc.text != "404: Not Found":  # a handler's own answer stays as it is
                raise
            raise _not_found_page() from None
        except (web.HTTPException, asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            # A browser gets a page, never the API's JSON error (and never a traceback).
            log.exception("unhandled error on %s %s", request.method, request.path)
            return _error_page()

    app.middlewares.append(web_session_middleware)
    return sessions


def _needs_csrf(request: web.Request) -> bool:
    handler = request.match_info.handler
    if getattr(handler, "__resayil_csrf_exempt__", False):
        return False
    # A foreign page cannot send a JSON body without a CORS preflight (never granted): such posts (payment
    # webhooks) need no token. Every other body, or none, must carry it.
    if request.headers.get("Content-Type") is None:
        return True
    return not (request.content_type == "application/json" or request.content_type.endswith("+json"))


def _has_form(request: web.Request) -> bool:
    return request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")


def _loaded_session(request: web.Request) -> Session:
    session = request.get(SESSION_KEY)
    if session is None:
        raise RuntimeError("no web session on this request: is it an API path, or setup_sessions missing?")
    return session


def csrf_token(request: web.Request) -> str:
    """The CSRF token of the request's session (made on first use); put it in every form as ``csrf_token``."""
    session = _loaded_session(request)
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return str(token)


async def check_csrf(request: web.Request, form: Mapping[str, Any]) -> None:
    """Raise a 403 page unless ``form`` (or the ``X-CSRF-Token`` header) carries the session's CSRF token.
    The middleware already calls this for every unsafe web request; call it yourself only for a body the
    middleware did not read."""
    session = await get_session(request)
    expected = str(session.get("csrf") or "")
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD) or ""
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise _forbidden_page()


def _error_page() -> web.Response:
    body = _bilingual_page(
        ("Something went wrong", "The page could not be shown. Please try again in a moment."),
        ("حدث خطأ", "تعذر عرض الصفحة. يرجى المحاولة بعد قليل."),
    )
    return web.Response(status=500, text=body, content_type="text/html")


def _not_found_page() -> web.HTTPNotFound:
    body = _bilingual_page(
        ("Page not found", "There is nothing at this address. Check the link or start from the home page."),
        ("الصفحة غير موجودة", "لا يوجد شيء على هذا العنوان. تحقق من الرابط أو ابدأ من الصفحة الرئيسية."),
    )
    return web.HTTPNotFound(text=body, content_type="text/html")


def _bilingual_page(english: tuple[str, str], arabic: tuple[str, str]) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(english[0])} · {html.escape(arabic[0])}</title>"
        "<style>body{background:#0f1115;color:#e8e6e1;font-family:system-ui,sans-serif;display:grid;"
        "place-items:center;min-height:100vh;margin:0}main{max-width:32rem;padding:2rem;text-align:center}"
        "h1{color:#d4af37;font-size:1.4rem}a{color:#d4af37}</style></head><body><main>"
        f"<h1>{html.escape(english[0])}</h1><p>{html.escape(english[1])}</p>"
        f"<h1 lang='ar' dir='rtl'>{html.escape(arabic[0])}</h1><p lang='ar' dir='rtl'>{html.escape(arabic[1])}</p>"
        "<p><a href='/'>Home · الرئيسية</a></p></main></body></html>"
    )


def _forbidden_page() -> web.HTTPForbidden:
    # Both languages: this page can appear before any language choice is known.
    body = _bilingual_page(
        (
            "This form has expired",
            "For your security the page must be reloaded before it can be sent. "
            "Go back, reload the page and try again.",
        ),
        (
            "انتهت صلاحية هذا النموذج",
            "لحمايتك، يجب إعادة تحميل الصفحة قبل الإرسال. ارجع وأعد تحميل الصفحة ثم حاول مجدداً.",
        ),
    )
    return web.HTTPForbidden(text=body, content_type="text/html")


async def current_account(request: web.Request) -> Account | None:
    """The logged-in, active account of this browser request, or None (anonymous, expired, logged out or
    disabled). Looked up once per request."""
    if _ACCOUNT_KEY in request:
        return request[_ACCOUNT_KEY]
    account = await _lookup_account(request)
    request[_ACCOUNT_KEY] = account
    return account


async def _lookup_account(request: web.Request) -> Account | None:
    sessions = request.app[SESSIONS]
    session = await get_session(request)
    account_id = session.get("account_id")
    if account_id is None:
        return None
    sid = str(session.get("sid", ""))
    if float(session.get("expires", 0)) <= sessions.now() or (
        sessions.ended is not None and await sessions.ended.is_ended(sid)
    ):
        session.invalidate()
        return None
    account = await sessions.gateway.accounts.get(int(account_id))
    if account is None or not account.is_active:
        return None
    return account


async def login(request: web.Request, account: Account, remember: bool) -> None:
    """Start a fresh session for ``account`` (a new id, so an id planted before login is worthless).
    ``remember`` keeps it ``session_remember_days`` in a persistent cookie; otherwise the cookie ends with
    the browser and the server ends it after ``session_hours``."""
    sessions = request.app[SESSIONS]
    old = await get_session(request)
    keep = {name: old[name] for name in ("language",) if name in old}
    if sessions.redis_storage is not None and old.identity is not None:
        await sessions.redis_storage.forget(str(old.identity))
    session = await new_session(request)
    lifetime = sessions.remember_seconds if remember else sessions.browser_seconds
    session.update(keep)
    session.update(
        {
            "account_id": account.id,
            "sid": secrets.token_urlsafe(16),
            "expires": sessions.now() + lifetime,
            "remember": remember,
            "csrf": secrets.token_urlsafe(32),
        }
    )
    session.max_age = sessions.remember_seconds if remember else None
    request[_ACCOUNT_KEY] = account


async def logout(request: web.Request) -> None:
    """End the session on the server and clear the cookie; a copy of the cookie no longer logs anyone in."""
    sessions = request.app[SESSIONS]
    session = await get_session(request)
    sid = session.get("sid")
    if sessions.ended is not None and sid:
        actor = f"account:{session.get('account_id', '-')}"
        await sessions.ended.end(str(sid), float(session.get("expires", 0)), actor)
    if sessions.redis_storage is not None and session.identity is not None:
        await sessions.redis_storage.forget(str(session.identity))
    session.invalidate()
    request[_ACCOUNT_KEY] = None
