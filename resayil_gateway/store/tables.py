"""The schema, as SQLAlchemy Core tables. Alembic migrations in ``migrations/`` are the only way it changes.

Money is integer fils; credits are integers. Balances live in ``balances`` and always equal the sum of the
account's ``ledger`` rows per bucket (``resayil ledger check`` proves it). Holds taken before a request runs
live in ``holds`` so a crash never loses track of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = UTCDateTime()

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("phone", String(20), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("name", String(200), nullable=False, server_default=""),
    Column("role", String(16), nullable=False, server_default="user"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("language", String(2), nullable=True),
    Column("created_at", Timestamp, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("label", String(100), nullable=False, server_default=""),
    Column("prefix", String(12), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", Id, nullable=True),
    Column("revoked_at", Timestamp, nullable=True),
    Column("last_used_at", Timestamp, nullable=True),
    Column("request_count", BigInteger, nullable=False, server_default="0"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("plan", String(50), nullable=False),
    Column("period_start", Timestamp, nullable=False),
    Column("period_end", Timestamp, nullable=False),
    Column("reminded_for", Timestamp, nullable=True),
    Column("updated_at", Timestamp, nullable=False),
)

balances = Table(
    "balances",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("plan_credits", BigInteger, nullable=False, server_default="0"),
    Column("plan_expires_at", Timestamp, nullable=True),
    Column("topup_credits", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    Column("last_grant_total", BigInteger, nullable=False, server_default="0"),
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("key_id", Id, nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("lease_until", Timestamp, nullable=False, index=True),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("ref", String(200), nullable=False, unique=True),
    Column("reason", String(32), nullable=False),
    Column("actor", String(200), nullable=False, server_default="system"),
    Column("plan_delta", BigInteger, nullable=False, server_default="0"),
    Column("topup_delta", BigInteger, nullable=False, server_default="0"),
    Column("uncollected", BigInteger, nullable=False, server_default="0"),
    Column("plan_after", BigInteger, nullable=False),
    Column("topup_after", BigInteger, nullable=False),
    Column("memo", Text, nullable=False, server_default=""),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_ledger_account_id_id", "account_id", "id"),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("item", String(50), nullable=False),
    Column("amount_fils", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False, server_default="KWD"),
    Column("credits", BigInteger, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False, server_default="pending", index=True),
    Column("provider", String(32), nullable=False),
    Column("provider_invoice_id", String(64), nullable=True, index=True),
    Column("provider_payment_id", String(64), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("paid_at", Timestamp, nullable=True),
    Column("detail", JSON, nullable=True),
)

usage = Table(
    "usage",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("key_id", Id, nullable=True),
    Column("model", String(200), nullable=False),
    Column("backend", String(50), nullable=False),
    Column("endpoint", String(32), nullable=False, server_default="chat"),
    Column("stream", Boolean, nullable=False, server_default="0"),
    Column("prompt_tokens", Integer, nullable=False, server_default="0"),
    Column("completion_tokens", Integer, nullable=False, server_default="0"),
    Column("credits", BigInteger, nullable=False, server_default="0"),
    Column("status", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_usage_account_id_created_at", "account_id", "created_at"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("requests", BigInteger, nullable=False, server_default="0"),
    Column("errors", BigInteger, nullable=False, server_default="0"),
    Column("prompt_tokens", BigInteger, nullable=False, server_default="0"),
    Column("completion_tokens", BigInteger, nullable=False, server_default="0"),
    Column("credits", BigInteger, nullable=False, server_default="0"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event", String(64), nullable=False),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("account_id", Id, nullable=True),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Timestamp, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("sent_at", Timestamp, nullable=True),
    Column("recipient", String(40), nullable=False, server_default=""),
    Column("channel", String(50), nullable=True),
    Column("provider_id", String(200), nullable=True),
    Column("lease_until", Timestamp, nullable=True),
    Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_outbox_created_at", "created_at"),
)

bans = Table(
    "bans",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ip", String(64), nullable=False, index=True),
    Column("jail", String(64), nullable=False, server_default=""),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=True),
    Column("lifted_at", Timestamp, nullable=True),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False, server_default=""),
    Column("detail", JSON, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_audit_created_at", "created_at"),
)

__all__ = [
    "accounts",
    "api_keys",
    "audit",
    "balances",
    "bans",
    "holds",
    "ledger",
    "metadata",
    "orders",
    "outbox",
    "subscriptions",
    "usage",
    "usage_daily",
]
