"""API keys: ``rsk-`` + 43 url-safe characters, stored only as an HMAC-SHA256 keyed hash.

Authentication goes key → hash → in-process cache → store. The cache holds callers for
``gateway.auth_cache_ttl_s`` at most (never past the plan's end); revoking a key or disabling an account
drops the entries on this worker at once and on every other worker through the shared state. The store stays
the authority: the hold taken before any billed request re-checks, in the same statement, that the key is
not revoked and the account active, so a revocation holds on the very next billed request everywhere.
``last_used_at`` and the request count are written in batches, never per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, insert, select, update

from ..domain import Caller, Event
from ..errors import AuthenticationFailed
from ..store.audit import record_audit
from ..store.tables import accounts, api_keys, subscriptions
from .accounts import effective_plan

if TYPE_CHECKING:
    from ..clock import Clock
    from ..config import Settings
    from ..domain import Emit
    from ..store import Store
    from .account_changes import AccountChanges
    from .accounts import AccountService

log = logging.getLogger("resayil.auth")

KEY_PREFIX = "rsk-"
KEY_RANDOM_CHARS = 43
KEY_LENGTH = len(KEY_PREFIX) + KEY_RANDOM_CHARS
DISPLAY_PREFIX_LENGTH = 12
_KEY_SHAPE = re.compile(r"^rsk-[A-Za-z0-9_-]{43}$")
_CACHE_LIMIT = 100_000


class KeyRefused(ValueError):
    """A key operation was refused (limit reached, unknown prefix, ...)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as listed: never the key itself, only its 12-character prefix."""

    id: int
    account_id: int
    label: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    request_count: int

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly created key: ``secret`` is shown once and never stored."""

    key: ApiKey
    secret: str


def generate_key() -> str:
    """A new random key in the ``rsk-`` format."""
    return KEY_PREFIX + secrets.token_urlsafe(32)[:KEY_RANDOM_CHARS]


def mask_key(key: str) -> str:
    """A key shortened for messages: the display prefix and the last four characters."""
    if len(key) <= 16:
        return key[:4] + "****"
    return f"{key[:DISPLAY_PREFIX_LENGTH]}****{key[-4:]}"


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.account_id,
    api_keys.c.label,
    api_keys.c.prefix,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
    api_keys.c.request_count,
)

_LOOKUP = (
    select(
        api_keys.c.id,
        api_keys.c.account_id,
        api_keys.c.prefix,
        api_keys.c.revoked_at,
        accounts.c.status,
        accounts.c.role,
        accounts.c.email,
        subscriptions.c.plan,
        subscriptions.c.period_end,
    )
    .select_from(
        api_keys.join(accounts, accounts.c.id == api_keys.c.account_id).outerjoin(
            subscriptions, subscriptions.c.account_id == api_keys.c.account_id
        )
    )
    .where(api_keys.c.key_hash == bindparam("key_hash"))
)


@dataclass(slots=True)
class _Entry:
    caller: Caller | None
    failure: str | None
    expires: float


class KeyService:
    """Creates, lists, revokes and authenticates API keys."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        secret: bytes,
        accounts: AccountService,
        changes: AccountChanges,
        emit: Emit,
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._secret = secret
        self._accounts = accounts
        self._changes = changes
        self._emit = emit
        changes.subscribe(self.forget_account)
        self._cache: dict[str, _Entry] = {}
        self._by_account: dict[int, set[str]] = {}
        self._usage: dict[int, tuple[int, datetime]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.last_announced = True  # whether the last revocation reached the other workers at once

    def hash_key(self, key: str) -> str:
        """The keyed hash stored for ``key`` (HMAC-SHA256 with the server secret, hex)."""
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    async def create(
        self, account_id: int, label: str = "", *, actor: str = "self", enforce_limit: bool = True
    ) -> NewKey:
        """Create a key for the account, within its plan's key allowance; the secret is returned once."""
        label = label.strip()[:100]
        plan_id, _ = await self._accounts.plan_of(account_id)
        allowance = self._settings.plan(plan_id).max_api_keys
        secret = generate_key()
        now = self._clock.now()
        async with self._store.begin() as conn:
            if enforce_limit:
                active = await conn.scalar(
                    select(func.count())
                    .select_from(api_keys)
                    .where(api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
                )
                if (active or 0) >= allowance:
                    raise KeyRefused(
                        f"the {plan_id} plan allows {allowance} active key(s); revoke one or upgrade the plan"
                    )
            row = (
                await conn.execute(
                    insert(api_keys)
                    .values(
                        account_id=account_id,
                        label=label,
                        prefix=secret[:DISPLAY_PREFIX_LENGTH],
                        key_hash=self.hash_key(secret),
                        created_at=now,
                    )
                    .returning(*_KEY_COLUMNS)
                )
            ).one()
            await record_audit(conn, now, actor, "key.created", f"account:{account_id}", {"prefix": row.prefix})
        key = ApiKey(*row)
        await self._emit(Event("key.created", {"prefix": key.prefix, "label": label}, account_id))
        return NewKey(key, secret)

    async def list(self, account_id: int, include_revoked: bool = False) -> Sequence[ApiKey]:
        """The account's keys, newest first, with last-used time and request count."""
        await self.flush_usage()
        query = select(*_KEY_COLUMNS).where(api_keys.c.account_id == account_id).order_by(api_keys.c.id.desc())
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._store.connect() as conn:
            return [ApiKey(*row) for row in await conn.execute(query)]

    async def revoke(self, prefix: str, *, account_id: int | None = None, actor: str = "self") -> ApiKey:
        """Revoke the active key with this prefix (of this account, when given); refused on every worker
        from the next request on."""
        query = select(*_KEY_COLUMNS).where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
        if account_id is not None:
            query = query.where(api_keys.c.account_id == account_id)
        now = self._clock.now()
        async with self._store.begin() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                raise KeyRefused(f"no active key with prefix {prefix!r}")
            if len(rows) > 1:
                raise KeyRefused(f"prefix {prefix!r} matches {len(rows)} keys; give more characters")
            key = ApiKey(*rows[0])
            await conn.execute(update(api_keys).where(api_keys.c.id == key.id).values(revoked_at=now))
            await record_audit(conn, now, actor, "key.revoked", f"account:{key.account_id}", {"prefix": prefix})
        self.last_announced = await self.invalidate_account(key.account_id)
        await self._emit(Event("key.revoked", {"prefix": key.prefix}, key.account_id))
        return key

    async def invalidate_account(self, account_id: int) -> bool:
        """Forget cached callers of this account here and on every other worker (False: the other workers
        could not be told now; see :meth:`AccountChanges.announce`)."""
        return await self._changes.announce(account_id)

    def forget_account(self, account_id: int) -> None:
        """Drop this worker's cached callers of the account (called on a broadcast from another worker)."""
        for key_hash in self._by_account.pop(account_id, ()):
            self._cache.pop(key_hash, None)

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller for an ``Authorization`` header, or :class:`AuthenticationFailed` with a message that
        tells missing, malformed, unknown, revoked and disabled apart."""
        if not authorization:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it in the Authorization header: 'Bearer rsk-...'.",
                code="missing_api_key",
            )
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        # aiohttp hands over bytes that are not UTF-8 as surrogates, which no message can carry: refuse
        # anything but ASCII (keys are ASCII) before the header is quoted anywhere.
        if not authorization.isascii() or scheme.lower() != "bearer" or not key:
            raise AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer rsk-...'.", code="malformed_authorization"
            )
        if not _KEY_SHAPE.match(key):
            raise AuthenticationFailed(
                f"Malformed API key {mask_key(key)}: keys start with 'rsk-' and are {KEY_LENGTH} characters long.",
                code="malformed_api_key",
            )
        key_hash = self.hash_key(key)
        now = self._clock.monotonic()
        entry = self._cache.get(key_hash)
        if entry is None or entry.expires <= now or not self._changes.trustworthy:
            # With the invalidation channel down a revocation elsewhere would go unheard: ask the store.
            entry = await self._lookup(key_hash)
        if entry.caller is None:
            if entry.failure == "revoked":
                raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
            if entry.failure == "disabled":
                raise AuthenticationFailed("This account is disabled.", code="account_disabled")
            raise AuthenticationFailed(f"Incorrect API key provided: {mask_key(key)}.")
        self._note_use(entry.caller)
        return entry.caller

    async def _lookup(self, key_hash: str) -> _Entry:
        async with self._store.connect() as conn:
            row = (await conn.execute(_LOOKUP, {"key_hash": key_hash})).first()
        ttl = self._settings.gateway.auth_cache_ttl_s
        monotonic = self._clock.monotonic()
        if row is None:
            entry = _Entry(None, "unknown", monotonic + ttl)
        elif row.revoked_at is not None:
            entry = _Entry(None, "revoked", monotonic + ttl)
        elif row.status != "active":
            entry = _Entry(None, "disabled", monotonic + ttl)
        else:
            now = self._clock.now()
            plan, ends = effective_plan(row, now, self._settings.plans)
            if ends is not None:
                ttl = min(ttl, max(0.0, (ends - now).total_seconds()))
            caller = Caller(row.account_id, row.id, row.prefix, plan, row.role, row.email)
            entry = _Entry(caller, None, monotonic + ttl)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
            self._by_account.clear()
        self._cache[key_hash] = entry
        if row is not None:
            self._by_account.setdefault(row.account_id, set()).add(key_hash)
        return entry

    def _note_use(self, caller: Caller) -> None:
        if caller.key_id is None:
            return
        count, _ = self._usage.get(caller.key_id, (0, self._clock.now()))
        self._usage[caller.key_id] = (count + 1, self._clock.now())

    async def flush_usage(self) -> None:
        """Write the batched request counts and last-used times of keys."""
        if not self._usage:
            return
        batch, self._usage = self._usage, {}
        statement = (
            update(api_keys)
            .where(api_keys.c.id == bindparam("key_id"))
            .values(
                request_count=api_keys.c.request_count + bindparam("count"),
                last_used_at=bindparam("used_at"),
            )
        )
        params = [{"key_id": key_id, "count": count, "used_at": used} for key_id, (count, used) in batch.items()]
        try:
            async with self._store.begin_fast() as conn:
                await conn.execute(statement, params)
        except Exception:
            log.exception("could not record key usage; will retry")
            for key_id, (count, used) in batch.items():
                old, _ = self._usage.get(key_id, (0, used))
                self._usage[key_id] = (old + count, used)

    async def run_usage_flusher(self, interval: float = 5.0) -> None:
        """Flush key usage every ``interval`` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(interval)
                await self.flush_usage()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush_usage())


__all__ = ["ApiKey", "KeyRefused", "KeyService", "NewKey", "generate_key", "mask_key"]
