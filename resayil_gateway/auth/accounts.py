"""Accounts: create, find, list, disable. E-mail is lower-cased, the phone is E.164, the password argon2id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..events.notifications import welcome
from ..store.audit import record_audit
from ..store.tables import accounts, balances, subscriptions
from .emails import normalize_email
from .passwords import hash_password, verify_password
from .phones import normalize_phone

if TYPE_CHECKING:
    from ..billing.ledger import Ledger
    from ..clock import Clock
    from ..config import Settings
    from ..domain import Emit
    from ..events.unit_of_work import RecordEvent
    from ..store import Store
    from .account_changes import AccountChanges

ROLES = ("user", "admin")


class AccountError(ValueError):
    """An account cannot be created or changed as asked; the message says why, naming the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Account:
    """A person or business that owns API keys and credits."""

    id: int
    email: str
    phone: str
    name: str
    role: str
    status: str
    language: str | None
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == "admin"

    @property
    def is_active(self) -> bool:
        """False once the account is disabled."""
        return self.status == "active"


_COLUMNS = (
    accounts.c.id,
    accounts.c.email,
    accounts.c.phone,
    accounts.c.name,
    accounts.c.role,
    accounts.c.status,
    accounts.c.language,
    accounts.c.created_at,
)


def _account(row: Any) -> Account:
    return Account(*row)


class AccountService:
    """Creates and reads accounts; every change commits with its balance row and emits an event."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        ledger: Ledger,
        changes: AccountChanges,
        emit: Emit,
        *,
        record: RecordEvent | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._ledger = ledger
        self._changes = changes
        self._emit = emit
        self._record = record

    async def create(
        self,
        email: str,
        phone: str,
        password: str,
        *,
        name: str = "",
        role: str = "user",
        language: str | None = None,
    ) -> Account:
        """Create an account and its empty balance; raises :class:`AccountError` naming the bad field."""
        try:
            email = normalize_email(email)
        except ValueError as exc:
            raise AccountError(str(exc), "email") from None
        try:
            phone = normalize_phone(phone)
        except ValueError as exc:
            raise AccountError(str(exc), "phone") from None
        try:
            password_hash = hash_password(password)
        except ValueError as exc:
            raise AccountError(str(exc), "password") from None
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}", "role")
        now = self._clock.now()
        signup = self._settings.billing.signup_credits
        try:
            async with self._store.begin() as conn:
                taken = await conn.execute(
                    select(accounts.c.email, accounts.c.phone).where(
                        or_(accounts.c.email == email, accounts.c.phone == phone)
                    )
                )
                for row in taken:
                    field = "email" if row.email == email else "phone"
                    raise AccountError(f"{field} is already registered", field)
                result = await conn.execute(
                    insert(accounts)
                    .values(
                        email=email,
                        phone=phone,
                        password_hash=password_hash,
                        name=name.strip(),
                        role=role,
                        status="active",
                        language=language,
                        created_at=now,
                    )
                    .returning(*_COLUMNS)
                )
                account = _account(result.one())
                await conn.execute(insert(balances).values(account_id=account.id))
                if signup:
                    await self._ledger.grant(
                        account.id,
                        signup,
                        bucket="topup",
                        ref=f"signup:{account.id}",
                        reason="signup",
                        actor="system",
                        conn=conn,
                    )
                created = welcome(account.id, account.name, email, role, signup)
                if self._record is not None:
                    await self._record(conn, created)  # the welcome message commits with the account
        except IntegrityError:
            raise AccountError("email or phone is already registered", "email") from None
        await self._emit(created)
        return account

    async def get(self, account_id: int) -> Account | None:
        """The account with this id, or None."""
        async with self._store.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(accounts.c.id == account_id))).first()
        return _account(row) if row else None

    async def find(self, login: str) -> Account | None:
        """The account whose e-mail or phone is ``login``, or None."""
        text = (login or "").strip()
        if "@" in text:
            condition = accounts.c.email == text.lower()
        else:
            try:
                condition = accounts.c.phone == normalize_phone(text)
            except ValueError:
                return None
        async with self._store.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(condition))).first()
        return _account(row) if row else None

    async def require(self, login: str) -> Account:
        """Like :meth:`find` but raises :class:`AccountError` when there is no such account."""
        account = await self.find(login)
        if account is None:
            raise AccountError(f"no account with e-mail or phone {login!r}", "email")
        return account

    async def verify_login(self, login: str, password: str) -> Account | None:
        """The active account when ``password`` is right, else None (same answer for every failure)."""
        text = (login or "").strip()
        condition = accounts.c.email == text.lower()
        if "@" not in text:
            try:
                condition = accounts.c.phone == normalize_phone(text)
            except ValueError:
                return None
        async with self._store.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS, accounts.c.password_hash).where(condition))).first()
        if row is None or not verify_password(row.password_hash, password):
            return None
        account = _account(row[: len(_COLUMNS)])
        return account if account.is_active else None

    async def list(self, search: str = "", limit: int = 100, offset: int = 0) -> Sequence[Account]:
        """Accounts, newest first, optionally filtered by a fragment of e-mail, phone or name."""
        query = select(*_COLUMNS).order_by(accounts.c.id.desc()).limit(limit).offset(offset)
        if search:
            pattern = f"%{search.strip().lower()}%"
            query = query.where(
                or_(
                    func.lower(accounts.c.email).like(pattern),
                    accounts.c.phone.like(pattern),
                    func.lower(accounts.c.name).like(pattern),
                )
            )
        async with self._store.connect() as conn:
            return [_account(row) for row in await conn.execute(query)]

    async def set_status(self, account_id: int, status: str, actor: str) -> None:
        """Disable or re-enable an account; its keys stop working on the next request."""
        if status not in ("active", "disabled"):
            raise AccountError("status must be active or disabled", "status")
        async with self._store.begin() as conn:
            await conn.execute(update(accounts).where(accounts.c.id == account_id).values(status=status))
            await record_audit(conn, self._clock.now(), actor, f"account.{status}", f"account:{account_id}")
        await self._changes.announce(account_id)

    async def plan_of(self, account_id: int) -> tuple[str, datetime | None]:
        """The plan whose rules apply now and when it ends (None for the default plan)."""
        async with self._store.connect() as conn:
            row = (
                await conn.execute(
                    select(subscriptions.c.plan, subscriptions.c.period_end).where(
                        subscriptions.c.account_id == account_id
                    )
                )
            ).first()
        return effective_plan(row, self._clock.now(), self._settings.plans)


def effective_plan(row: Any, now: datetime, plans: Any) -> tuple[str, datetime | None]:
    """The plan in force for a subscription row (``plan``, ``period_end``) at ``now``."""
    from ..config import DEFAULT_PLAN

    if row is None or row.period_end is None or row.period_end <= now or row.plan not in plans:
        return DEFAULT_PLAN, None
    return row.plan, row.period_end
