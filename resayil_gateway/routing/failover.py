"""Cloud failover (SPEC §5.4): a request for a local model runs in the cloud instead when the local line is
deeper than ``failover_queue_depth``, or when the local backend refuses it before producing any output, and
only if the caller's plan allows the cloud, the model has a cloud equivalent that is not restricted, the
client did not opt out (``x-resayil-failover: off``) and today's cloud budget is not spent.

Wherever it runs, the request is billed at the requested model's price (``Route.model`` stays the model the
client asked for).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..domain import ModelInfo
from ..errors import NoCapacity, UpstreamUnavailable
from .admission import QueueWaitExceeded
from .backends import Backend, Route
from .catalog import plan_allows
from .cloud_budget import CloudBudgetExhausted, cloud_budget_exhausted

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..config import Settings
    from ..domain import Caller
    from .admission import Admission
    from .catalog import Catalog
    from .cloud_budget import CloudBudget

FAILOVER_HEADER = "x-resayil-failover"


class Gateway(Protocol):
    """What routing reads from the gateway (``resayil_gateway.gateway.Gateway`` has all of it)."""

    @property
    def settings(self) -> Settings:
        """The gateway's settings (``routing``, ``plans``)."""

    @property
    def backends(self) -> Mapping[str, Backend]:
        """Registered backends by name."""

    @property
    def catalog(self) -> Catalog:
        """The model catalog."""

    @property
    def admission(self) -> Admission:
        """The waiting lines, for queue depths."""

    @property
    def cloud_budget(self) -> CloudBudget:
        """Today's cloud budget."""


@dataclass(frozen=True, slots=True)
class RoutingPreferences:
    """What the client asked of routing for the request being handled."""

    failover: bool = True


_DEFAULT_PREFERENCES = RoutingPreferences()
_preferences: ContextVar[RoutingPreferences] = ContextVar("resayil_routing_preferences", default=_DEFAULT_PREFERENCES)


def prefer_from_headers(headers: Mapping[str, str]) -> None:
    """Record, for the request being handled (this task's context), whether the client opted out of
    failover with ``x-resayil-failover: off``."""
    opted_out = headers.get(FAILOVER_HEADER, "").strip().lower() == "off"
    _preferences.set(RoutingPreferences(failover=False) if opted_out else _DEFAULT_PREFERENCES)


def preferences() -> RoutingPreferences:
    """The routing preferences of the request being handled."""
    return _preferences.get()


def home_route(gateway: Gateway, model: ModelInfo) -> Route | None:
    """Where the catalog says ``model`` lives, or None when that backend is not registered."""
    backend = gateway.backends.get(model.backend)
    if backend is None:
        return None
    return Route(backend, model.name_upstream, model)


def _first_cloud_backend(gateway: Gateway) -> Backend | None:
    for backend in gateway.backends.values():
        if backend.kind == "cloud":
            return backend
    return None


def cloud_route(gateway: Gateway, caller: Caller, model: ModelInfo, reason: str = "failover") -> Route | None:
    """The cloud route a request for the local ``model`` may take, or None when failover is not allowed:
    no cloud equivalent, a restricted one, the plan excludes it, the client opted out, or the budget is
    known to be spent today. No I/O."""
    equivalent = model.cloud_equivalent
    if model.kind != "local" or not equivalent or not preferences().failover:
        return None
    if gateway.catalog.is_restricted(equivalent) or gateway.cloud_budget.known_exhausted():
        return None
    target = gateway.catalog.get(equivalent)
    if target is None:  # not listed by the cloud backend (yet): send the name as configured
        backend = _first_cloud_backend(gateway)
        if backend is None:
            return None
        target = ModelInfo(id=equivalent, backend=backend.name, kind="cloud", size=model.size)
    backend = gateway.backends.get(target.backend)
    if target.kind != "cloud" or backend is None:
        return None
    if not plan_allows(gateway.settings.plan(caller.plan).models, target):
        return None
    return Route(backend, target.name_upstream, model, reason=reason)


async def route_by_depth(gateway: Gateway, home: Route, cloud: Route) -> Route:
    """``cloud`` when the home backend's queue (waiting + running, all workers) is deeper than
    ``failover_queue_depth``, otherwise ``home``."""
    depth = await gateway.admission.depth(home.backend.name)
    return cloud if depth > gateway.settings.routing.failover_queue_depth else home


def refused_before_output(exc: BaseException) -> bool:
    """True for a backend's refusal that a retry elsewhere may fix: connection refused or its own queue full
    (not the gateway's queue-wait limit, not the budget)."""
    if isinstance(exc, QueueWaitExceeded | CloudBudgetExhausted):
        return False
    return isinstance(exc, UpstreamUnavailable | NoCapacity | ConnectionRefusedError)


async def route_after_refusal(gateway: Gateway, caller: Caller, route: Route, exc: BaseException) -> Route | None:
    """The cloud route to retry on once after the local backend refused before output, with one request of
    today's budget spent for it; None when failover is not allowed or the budget is spent."""
    if route.backend.kind != "local" or not refused_before_output(exc):
        return None
    retry = cloud_route(gateway, caller, route.model, reason="local_refused")
    if retry is None or not await gateway.cloud_budget.try_spend():
        return None
    return retry


async def confirm_route(gateway: Gateway, route: Route) -> Route:
    """Spend one request of today's cloud budget for a cloud route. When it is spent, a failover goes back
    home (local) and a cloud-only model answers 503 ``cloud_budget_exhausted``."""
    if route.backend.kind != "cloud" or await gateway.cloud_budget.try_spend():
        return route
    if route.reason == "failover":
        home = home_route(gateway, route.model)
        if home is not None:
            return home
    raise cloud_budget_exhausted()
