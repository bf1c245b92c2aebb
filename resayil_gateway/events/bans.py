"""Bans reported by fail2ban (``resayil bans report``): recorded, shown to admins, told to admins (NOTIF-09)
and, with ``gateway.refuse_banned_ips``, refused by the gateway itself with 403 until unbanned.

Each process keeps the set of banned addresses in memory; a report or an unban broadcasts ``bans`` so every
worker reloads it, and it is reloaded at least every ``REFRESH_S`` (a CLI on SQLite cannot broadcast).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware
from sqlalchemy import insert, or_, select, update

from ..errors import PermissionDenied
from ..store.audit import record_audit
from ..store.tables import bans
from .auth_failures import client_ip
from .notifications import ip_banned

if TYPE_CHECKING:
    from ..clock import Clock
    from ..state import SharedState
    from ..store import Store
    from .unit_of_work import UnitOfWork

REFRESH_S = 30.0
TOPIC = "bans"


class BanError(ValueError):
    """A ban report that cannot be recorded (not an IP address)."""


@dataclass(frozen=True, slots=True)
class Ban:
    """One reported ban."""

    id: int
    ip: str
    jail: str
    reason: str
    created_at: datetime
    lifted_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly view."""
        return {
            "id": self.id,
            "ip": self.ip,
            "jail": self.jail,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "lifted_at": self.lifted_at.isoformat() if self.lifted_at else None,
        }


def _address(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        raise BanError(f"{ip!r} is not an IP address") from None


class BanList:
    """The bans of one gateway, with this process's cache of banned addresses."""

    def __init__(self, unit_of_work: UnitOfWork, store: Store, clock: Clock, state: SharedState) -> None:
        self._unit_of_work = unit_of_work
        self._store = store
        self._clock = clock
        self._banned: frozenset[str] = frozenset()
        self._loaded_at: float | None = None
        state.on_broadcast(self._on_broadcast)

    def _on_broadcast(self, topic: str, value: str) -> None:
        if topic == TOPIC:
            self.forget()

    def forget(self) -> None:
        """Reload the banned addresses on the next check."""
        self._loaded_at = None

    async def report(self, ip: str, jail: str = "", reason: str = "", actor: str = "fail2ban") -> Ban:
        """Record a ban, audit it and queue the admin alert, in one transaction; then tell every worker."""
        address = _address(ip)
        now = self._clock.now()
        async with self._unit_of_work.transaction() as tx:
            row = (
                await tx.conn.execute(
                    insert(bans)
                    .values(ip=address, jail=jail[:64], reason=reason, created_at=now)
                    .returning(bans.c.id, bans.c.ip, bans.c.jail, bans.c.reason, bans.c.created_at, bans.c.lifted_at)
                )
            ).one()
            ban = Ban(*row)
            await record_audit(tx.conn, now, actor, "ip.banned", address, {"jail": jail, "reason": reason})
            await tx.record(ip_banned(ban.id, address, jail, reason))
            tx.broadcast(TOPIC, address)
            tx.after_commit(self._forget_now)
        return ban

    async def _forget_now(self) -> None:
        self.forget()

    async def unban(self, ip: str, actor: str = "cli") -> int:
        """Lift every active ban of ``ip``; returns how many were lifted."""
        address = _address(ip)
        now = self._clock.now()
        async with self._unit_of_work.transaction() as tx:
            lifted = await tx.conn.execute(
                update(bans)
                .where(bans.c.ip == address, bans.c.lifted_at.is_(None))
                .values(lifted_at=now)
                .returning(bans.c.id)
            )
            count = len(lifted.all())
            if count:
                await record_audit(tx.conn, now, actor, "ip.unbanned", address)
                tx.broadcast(TOPIC, address)
                tx.after_commit(self._forget_now)
        return count

    async def list(self, include_lifted: bool = False, limit: int = 500) -> list[Ban]:
        """Bans, newest first (active ones only unless ``include_lifted``)."""
        query = select(bans.c.id, bans.c.ip, bans.c.jail, bans.c.reason, bans.c.created_at, bans.c.lifted_at)
        if not include_lifted:
            query = query.where(bans.c.lifted_at.is_(None))
        async with self._store.connect() as conn:
            return [Ban(*row) for row in await conn.execute(query.order_by(bans.c.id.desc()).limit(limit))]

    async def is_banned(self, ip: str) -> bool:
        """True when ``ip`` has an active ban (from this process's cache, reloaded when stale)."""
        clock = self._clock
        if self._loaded_at is None or clock.monotonic() - self._loaded_at >= REFRESH_S:
            now = clock.now()
            active = select(bans.c.ip).where(
                bans.c.lifted_at.is_(None), or_(bans.c.expires_at.is_(None), bans.c.expires_at > now)
            )
            async with self._store.connect() as conn:
                self._banned = frozenset((await conn.scalars(active.distinct())).all())
            self._loaded_at = clock.monotonic()
        return ip in self._banned


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ban_middleware(bans: BanList, trusted_proxies: tuple[str, ...]) -> Middleware:
    """A middleware answering 403 to an address fail2ban banned, until it is unbanned (install it only with
    ``gateway.refuse_banned_ips``)."""

    @web.middleware
    async def refuse_banned(request: web.Request, handler: Handler) -> web.StreamResponse:
        if await bans.is_banned(client_ip(request, trusted_proxies)):
            raise PermissionDenied("Access from your address is blocked.", code="ip_banned")
        return await handler(request)

    return refuse_banned
