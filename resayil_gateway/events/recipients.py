"""Who receives a notification: the account's own phone, or every admin (accounts with the admin role, plus
the numbers each channel adds through ``extra_admin_recipients``, e.g. ``whatsapp.admin_phones``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..store.tables import accounts
from .catalog import Audience


async def account_phone(conn: AsyncConnection, account_id: int | None) -> list[str]:
    """The account's phone (empty when there is no such account)."""
    if account_id is None:
        return []
    phone = await conn.scalar(select(accounts.c.phone).where(accounts.c.id == account_id))
    return [phone] if phone else []


async def admin_phones(conn: AsyncConnection, channels: Iterable[Any]) -> list[str]:
    """Active admins' phones, then every channel's extra admin recipients, each once, in that order."""
    query = select(accounts.c.phone).where(accounts.c.role == "admin", accounts.c.status == "active")
    phones = [phone for phone in (await conn.scalars(query.order_by(accounts.c.id))).all() if phone]
    for channel in channels:
        phones.extend(getattr(channel, "extra_admin_recipients", ()) or ())
    return list(dict.fromkeys(phones))


async def recipients_for(
    conn: AsyncConnection, audience: Audience, account_id: int | None, channels: Mapping[str, Any]
) -> list[str]:
    """The recipients of a notification for ``audience``."""
    if audience == "admin":
        return await admin_phones(conn, channels.values())
    return await account_phone(conn, account_id)
