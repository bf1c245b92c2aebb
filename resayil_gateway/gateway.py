"""The gateway: settings, plugins, store, shared state and the services built on them, in one object.

Plugins receive it in every hook. Build one with :meth:`Gateway.build`; the web application
(:func:`resayil_gateway.app.create_app`) and the CLI both start from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pluggy
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from .api.metrics import Metrics
from .auth.accounts import AccountService
from .auth.api_keys import KeyService
from .billing.ledger import Ledger
from .billing.usage import UsageRecorder
from .clock import Clock
from .config import ConfigError, Section, Settings, load_settings
from .domain import Event
from .events.bus import Events
from .plugins import make_plugin_manager
from .routing.admission import Admission
from .routing.backends import Backend
from .routing.catalog import Catalog
from .state import SharedState, make_state
from .store import Store
from .store.tables import audit

log = logging.getLogger("resayil.gateway")


class Gateway:
    """Everything a request or a command needs, wired once."""

    def __init__(
        self,
        settings: Settings,
        pm: pluggy.PluginManager,
        *,
        clock: Clock | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.pm = pm
        self.clock = clock or Clock(settings.gateway.timezone)
        self.instance_id = uuid.uuid4().hex
        self.store = Store(
            settings.gateway.database_url,
            pool_size=settings.gateway.db_pool_size,
            hot_pool_size=settings.gateway.db_hot_pool_size,
        )
        gateway = settings.gateway
        self.state: SharedState = make_state(gateway.redis_url, self.instance_id, gateway.redis_prefix)
        self.metrics = Metrics()
        self.accounts = AccountService(self)
        self.keys = KeyService(self, secret if secret is not None else resolve_secret(settings))
        self.ledger = Ledger(
            self.store,
            self.clock,
            self.instance_id,
            lease=timedelta(seconds=settings.gateway.hold_lease_s),
            settle_window=settings.gateway.settle_batch_ms / 1000,
        )
        self.usage = UsageRecorder(self)
        self.admission = Admission()
        self.backends: dict[str, Backend] = {}
        self.payment_providers: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.catalog = Catalog(settings.models, self.backends)
        self.events = Events(self)
        self._pending: set[asyncio.Future[Any]] = set()
        self.state.on_broadcast(self._on_broadcast)
        pm.hook.register_backends(register=self.register_backend, gateway=self)
        pm.hook.register_payment_providers(register=self._register_named(self.payment_providers), gateway=self)
        pm.hook.register_channels(register=self._register_named(self.channels), gateway=self)
        pm.hook.configure.call_historic(kwargs={"gateway": self})

    @classmethod
    def build(
        cls,
        config_path: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        plugins: Iterable[Any] = (),
        load_entrypoints: bool = True,
        blocked: Iterable[str] = (),
        clock: Clock | None = None,
    ) -> Gateway:
        """Load plugins, read and validate settings, and wire a gateway. Raises ``ConfigError`` or
        ``PluginError`` with a one-line message on any problem."""
        env = dict(os.environ if env is None else env)
        pm = make_plugin_manager(load_entrypoints=load_entrypoints, blocked=blocked, env=env, extra=plugins)
        sections: dict[str, type[Section]] = {}

        def register(name: str, model: type[Section]) -> None:
            if name in sections and sections[name] is not model:
                raise ConfigError(f"settings section [{name}] is registered by two plugins")
            sections[name] = model

        pm.hook.register_settings(register=register)
        settings = load_settings(config_path, env=env, plugin_sections=sections, overrides=overrides)
        return cls(settings, pm, clock=clock)

    # -- registration ------------------------------------------------------------------------------------

    def register_backend(self, backend: Backend) -> None:
        """Add a backend (called by plugins through ``register_backends``)."""
        if not isinstance(backend, Backend):
            raise TypeError(f"{backend!r} does not implement resayil_gateway.routing.backends.Backend")
        if backend.name in self.backends:
            raise ConfigError(f"two backends are named {backend.name!r}")
        if backend.kind not in ("local", "cloud"):
            raise ConfigError(f"backend {backend.name!r}: kind must be 'local' or 'cloud'")
        self.backends[backend.name] = backend
        self.admission.configure(backend.name, backend.max_concurrency)

    @staticmethod
    def _register_named(target: dict[str, Any]) -> Any:
        def register(item: Any) -> None:
            name = getattr(item, "name", None)
            if not name or name in target:
                raise ConfigError(f"{item!r} needs a unique name")
            target[name] = item

        return register

    def track(self, task: asyncio.Future[Any]) -> None:
        """Keep a background task (a settle after the response was sent) until it finishes."""
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for every tracked task: charges settle before shutdown (and before a test reads balances)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- events and audit --------------------------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        """Raise an event no transaction caused: a notification goes to the outbox in its own transaction;
        ``on_event`` hooks see it after the commit (see ``events/bus.py``; inside a transaction use
        ``gateway.events.transaction()`` and ``tx.record``)."""
        await self.events.emit(event)

    async def audit(
        self,
        conn: AsyncConnection,
        actor: str,
        action: str,
        target: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an administrative action in the audit table, inside the caller's transaction."""
        await conn.execute(
            insert(audit).values(
                actor=actor,
                action=action,
                target=target,
                detail=dict(detail or {}),
                created_at=self.clock.now(),
            )
        )

    def _on_broadcast(self, topic: str, value: str) -> None:
        if topic == "account":
            self.keys.forget_account(int(value))

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start_services(self) -> None:
        """Connect shared state and start backends (the store connects lazily)."""
        await self.state.start()
        for backend in self.backends.values():
            await backend.start()

    async def stop_services(self) -> None:
        """Finish pending charges, stop backends, flush batched writes, disconnect."""
        await self.drain()
        await self.ledger.close()
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.close()
        with contextlib.suppress(Exception):
            await self.usage.flush()
            await self.keys.flush_usage()
        with contextlib.suppress(Exception):
            await self.state.close()
        await self.store.dispose()

    async def housekeeping(self, interval: float) -> None:
        """Background upkeep until cancelled: renew this process's hold leases, release holds of dead
        processes, expire ended plan periods."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.ledger.renew_leases()
                await self.ledger.release_stale_holds()
                await self.ledger.expire_due()
            except Exception:
                log.exception("housekeeping failed; retrying in %.0f s", interval)


def resolve_secret(settings: Settings) -> bytes:
    """The server secret that keys API-key hashes: ``secret_key``, else ``secret_key_file``, else (SQLite only)
    a random secret kept in a 0600 file beside the database so keys survive restarts."""
    gateway = settings.gateway
    if gateway.secret_key.get_secret_value():
        return gateway.secret_key.get_secret_value().encode()
    if gateway.secret_key_file:
        path = Path(gateway.secret_key_file).expanduser()
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"gateway.secret_key_file: cannot read {path}: {exc.strerror}") from None
        if len(text) < 16:
            raise ConfigError("gateway.secret_key_file: the secret must be at least 16 characters")
        return text.encode()
    if not gateway.database_url.startswith("sqlite"):
        raise ConfigError("gateway.secret_key: required with PostgreSQL (set RESAYIL_SECRET_KEY)")
    database = make_url(gateway.database_url).database or ""
    folder = Path(database).expanduser().parent if database and database != ":memory:" else Path("var")
    path = folder / "resayil.secret"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            log.warning("no secret_key configured: generated one in %s (set RESAYIL_SECRET_KEY in production)", path)
    return path.read_text().strip().encode()
