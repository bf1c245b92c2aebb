"""The gateway: settings, plugins and the services built on them, in one object.

Plugins receive it in every hook, as datasette's hooks receive ``datasette``. Inside the core, services are
given only what they use (store, clock, settings, shared state, an event emitter, metrics), never the
gateway, so each can be built and tested alone. Constructing a gateway opens nothing and calls no hook;
:meth:`Gateway.prepare` runs the registration hooks, and the application's cleanup contexts
(:mod:`resayil_gateway.app`) start and stop each resource. Build one from configuration with
:func:`resayil_gateway.bootstrap.gateway_from_config`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pluggy
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from .auth.account_changes import AccountChanges
from .auth.accounts import AccountService
from .auth.api_keys import KeyService
from .background import BackgroundTasks
from .billing.ledger import Ledger
from .billing.metering import Metering
from .billing.orders import OrderService
from .billing.plans import PlanService
from .billing.usage import UsageRecorder
from .clock import Clock
from .config import ConfigError, Settings
from .domain import Caller, Event, ModelInfo, Usage
from .events.bus import Events
from .hookcalls import all_results, first_result, notify_each
from .limits import RateLimiter, make_limiter
from .logs import remember_secrets
from .metrics import Metrics
from .routing.admission_setup import make_admission
from .routing.backends import Backend
from .routing.catalog import Catalog
from .routing.cloud_budget import make_cloud_budget
from .state import SharedState, make_state
from .store import Store
from .store.audit import record_audit

log = logging.getLogger("resayil.gateway")


class Gateway:
    """Everything a request or a command needs, assembled once per process."""

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
        config = settings.gateway
        self.store = Store(config.database_url, pool_size=config.db_pool_size, hot_pool_size=config.db_hot_pool_size)
        self.state: SharedState = make_state(config.redis_url, self.instance_id, config.redis_prefix)
        self.limiter: RateLimiter = make_limiter(settings.limits, self.state, self.clock)
        self.metrics = Metrics()
        self.tasks = BackgroundTasks()
        self.account_changes = AccountChanges(self.state)
        self.channels: dict[str, Any] = {}
        self.events = Events(self.store, self.clock, settings, self.state, self.channels, self._observe, self.track)
        self.ledger = Ledger(
            self.store,
            self.clock,
            self.instance_id,
            lease=timedelta(seconds=config.hold_lease_s),
            settle_window=config.settle_batch_ms / 1000,
        )
        self.accounts = AccountService(
            self.store, self.clock, settings, self.ledger, self.account_changes, self.emit, record=self.events.record
        )
        self.keys = KeyService(
            self.store,
            self.clock,
            settings,
            secret if secret is not None else resolve_secret(settings),
            self.accounts,
            self.account_changes,
            self.emit,
        )
        self.plans = PlanService(
            self.store, self.clock, settings, self.ledger, self.account_changes, self.emit, record=self.events.record
        )
        self.usage = UsageRecorder(self.store, self.clock)
        self.metering = Metering(
            self.ledger,
            self.usage,
            self.metrics,
            settings,
            self.price,
            self.emit,
            self.account_changes,
            self.tasks,
        )
        self.admission = make_admission(self.state, settings.routing.queue_lease_s)
        self.cloud_budget = make_cloud_budget(self.state, self.clock, self.emit)
        self.backends: dict[str, Backend] = {}
        self.payment_providers: dict[str, Any] = {}
        self.orders = OrderService(
            self.store,
            self.clock,
            settings,
            self.ledger,
            self.plans,
            self.emit,
            self.payment_providers,
            record=self.events.record,
        )
        self.catalog = Catalog(settings.models, self.backends)
        self._prepared = False

    # -- registration ------------------------------------------------------------------------------------

    def prepare(self) -> Gateway:
        """Run the registration hooks once (backends, payment providers, channels, then ``configure``).
        Opens nothing: backends and providers connect when the application starts. Returns the gateway."""
        if not self._prepared:
            self._prepared = True
            self.pm.hook.register_backends(register=self.register_backend, gateway=self)
            self.pm.hook.register_payment_providers(
                register=_register_named(self.payment_providers, "payment provider"), gateway=self
            )
            self.pm.hook.register_channels(register=_register_named(self.channels, "channel"), gateway=self)
            self.pm.hook.configure.call_historic(kwargs={"gateway": self})
        return self

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
        if backend.kind == "cloud":
            self.cloud_budget.configure_from(backend)

    # -- hooks the services call -------------------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        """Raise an event after its change committed (or one no transaction caused): a notification goes to the
        outbox (once per key; see :mod:`resayil_gateway.events.bus`), then ``on_event`` hooks see it."""
        await self.events.emit(event)

    async def _observe(self, event: Event) -> None:
        """Tell every ``on_event`` implementation (sync or async); their failures are logged, never raised."""
        failures = await notify_each(self.pm.hook.on_event, event=event, gateway=self)
        for failure in failures:
            log.error("an on_event hook failed for %s", event.name, exc_info=failure)

    async def price(self, caller: Caller, model: ModelInfo, backend: str, usage: Usage) -> int:
        """Credits for ``usage`` from the first ``price_usage`` implementation that answers."""
        credits = await first_result(
            self.pm.hook.price_usage, caller=caller, model=model, backend=backend, usage=usage, gateway=self
        )
        if credits is None or not isinstance(credits, int) or credits < 0:
            raise TypeError(f"price_usage must return a non-negative int, got {credits!r}")
        return int(credits)

    async def refusals(self, caller: Caller, model: ModelInfo) -> list[Any]:
        """Every ``check_access`` veto for ``caller`` on ``model`` (empty: allowed)."""
        return await all_results(self.pm.hook.check_access, caller=caller, model=model, gateway=self)

    async def audit(
        self,
        conn: AsyncConnection,
        actor: str,
        action: str,
        target: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an administrative action in the audit table, inside the caller's transaction."""
        await record_audit(conn, self.clock.now(), actor, action, target, detail)

    # -- background work ---------------------------------------------------------------------------------

    def track(self, task: Any) -> None:
        """Keep a background task (a settle after the response was sent) until it finishes."""
        self.tasks.track(task)

    async def drain(self) -> None:
        """Wait for every tracked task: charges settle before shutdown (and before a test reads balances)."""
        await self.tasks.drain()

    async def close(self) -> None:
        """Release everything a command opened (the application's cleanup contexts do this for a server)."""
        await self.drain()
        await self.ledger.close()
        with contextlib.suppress(Exception):
            await self.usage.flush()
            await self.keys.flush_usage()
        with contextlib.suppress(Exception):
            await self.limiter.close()
        with contextlib.suppress(Exception):
            await self.admission.close()
        with contextlib.suppress(Exception):
            await self.state.close()
        await self.store.dispose()


def _register_named(target: dict[str, Any], what: str) -> Callable[[Any], None]:
    def register(item: Any) -> None:
        name = getattr(item, "name", None)
        if not name or name in target:
            raise ConfigError(f"{what} {item!r} needs a unique name")
        target[name] = item

    return register


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
        remember_secrets([text])
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
