"""The model catalog: configured models plus what backends discover, minus the restricted list.

Lookups are in-process and never touch the network; the catalog is rebuilt only when a backend's cached
model list changes. Restricted models are matched on every tag and case (``bge-m3``, ``bge-m3:latest`` and
``BGE-M3:567m`` are all restricted) and are invisible: never listed, never served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..config import ModelsSettings, PlanSettings
from ..domain import DiscoveredModel, ModelInfo
from .backends import Backend, Route


def base_name(model: str) -> str:
    """A model name without its tag or namespace, lower-cased: ``Library/BGE-M3:567m`` → ``bge-m3``."""
    name = model.strip().lower().split(":", 1)[0]
    return name.rsplit("/", 1)[-1]


def model_keys(model: str) -> tuple[str, ...]:
    """The names a request may use for ``model``: itself, lower-cased, and with ``:latest`` added or removed."""
    lowered = model.strip().lower()
    keys = [lowered]
    if ":" not in lowered:
        keys.append(f"{lowered}:latest")
    elif lowered.endswith(":latest"):
        keys.append(lowered.removesuffix(":latest"))
    return tuple(keys)


class Catalog:
    """Every servable model, by id, with its backend, size class, multiplier and cloud equivalent."""

    def __init__(self, settings: ModelsSettings, backends: Mapping[str, Backend]) -> None:
        self.settings = settings
        self.backends = backends
        self._restricted = frozenset(base_name(name) for name in settings.restricted)
        self._signature: tuple[int, ...] = ()
        self._models: dict[str, ModelInfo] = {}
        self._ordered: tuple[ModelInfo, ...] = ()

    def is_restricted(self, model: str) -> bool:
        """True when ``model`` is, in any tag or case, on the restricted list."""
        return base_name(model) in self._restricted

    def get(self, model: str) -> ModelInfo | None:
        """The catalog entry a request's ``model`` names, or None (restricted models are never found)."""
        self._refresh_if_changed()
        if self.is_restricted(model):
            return None
        for key in model_keys(model):
            found = self._models.get(key)
            if found is not None:
                return found
        return None

    def all(self) -> Sequence[ModelInfo]:
        """Every listed model, in a stable order (configured first, then discovered)."""
        self._refresh_if_changed()
        return self._ordered

    def _refresh_if_changed(self) -> None:
        lists = [backend.models() for backend in self.backends.values()]
        signature = tuple(id(models) for models in lists)
        if signature != self._signature:
            self._signature = signature
            self._rebuild(zip(self.backends.values(), lists, strict=True))

    def _rebuild(self, discovered: Iterable[tuple[Backend, Sequence[DiscoveredModel]]]) -> None:
        by_kind: dict[str, Backend] = {}
        for backend in self.backends.values():
            by_kind.setdefault(backend.kind, backend)
        models: dict[str, ModelInfo] = {}
        ordered: list[ModelInfo] = []

        def add(info: ModelInfo) -> None:
            restricted = self.is_restricted(info.id) or self.is_restricted(info.name_upstream)
            if restricted or info.id.lower() in models:
                return
            models[info.id.lower()] = info
            ordered.append(info)

        found: dict[str, tuple[Backend, DiscoveredModel]] = {}
        for backend, listed in discovered:
            for item in listed:
                found.setdefault(item.name.lower(), (backend, item))
        for model_id, entry in self.settings.catalog.items():
            owner = by_kind.get(entry.backend)
            if owner is None:
                continue
            default = self.settings.cloud_multiplier if entry.backend == "cloud" else self.settings.local_multiplier
            seen = found.get((entry.upstream_name or model_id).lower())
            add(
                ModelInfo(
                    id=model_id,
                    backend=owner.name,
                    kind=entry.backend,
                    size=entry.size,
                    multiplier=entry.multiplier or default,
                    cloud_equivalent=entry.cloud_equivalent,
                    capabilities=seen[1].capabilities if seen else entry.capabilities,
                    created=seen[1].created if seen else 0,
                    upstream_name=entry.upstream_name,
                )
            )
        for backend, item in found.values():
            multiplier = self.settings.cloud_multiplier if backend.kind == "cloud" else self.settings.local_multiplier
            add(
                ModelInfo(
                    id=item.name,
                    backend=backend.name,
                    kind=backend.kind,
                    size="medium",
                    multiplier=multiplier,
                    capabilities=item.capabilities,
                    created=item.created,
                )
            )
        for key, info in list(models.items()):
            if ":" in key and key.endswith(":latest"):
                models.setdefault(key.removesuffix(":latest"), info)
        self._models = models
        self._ordered = tuple(ordered)


def plan_allows(selectors: Iterable[str], model: ModelInfo) -> bool:
    """True when one of a plan's selectors (``*``, ``local:small``, ``cloud:*``, or an exact id) matches."""
    for selector in selectors:
        if selector == "*":
            return True
        kind, colon, size = selector.partition(":")
        if colon and kind in ("local", "cloud") and (size == "*" or size in ("small", "medium", "large")):
            if model.kind == kind and size in ("*", model.size):
                return True
            continue
        if selector.lower() in model_keys(model.id):
            return True
    return False


# -- access rules every path applies (check_access, GET /v1/models, failover, the final route check) ---------


def is_restricted_model(catalog: Catalog, model: ModelInfo) -> bool:
    """True when the model, by its id or by the name its backend knows it by, is on the restricted list."""
    return catalog.is_restricted(model.id) or catalog.is_restricted(model.name_upstream)


def may_serve(catalog: Catalog, plan: PlanSettings, model: ModelInfo) -> bool:
    """True when ``model`` is not restricted and ``plan`` includes it. No I/O: call it per request."""
    return not is_restricted_model(catalog, model) and plan_allows(plan.models, model)


def allowed_cloud_equivalent(catalog: Catalog, plan: PlanSettings, model: ModelInfo) -> ModelInfo | None:
    """The failover target for ``model``: its configured cloud equivalent, when that is in the catalog, not
    restricted and included in ``plan`` (so a plan without cloud access never fails over); else None."""
    if not model.cloud_equivalent:
        return None
    target = catalog.get(model.cloud_equivalent)
    if target is None or not may_serve(catalog, plan, target):
        return None
    return target


def route_allowed(catalog: Catalog, plan: PlanSettings, route: Route) -> bool:
    """True unless a route would run a restricted model (by the name sent upstream or the model billed) or a
    model outside ``plan``: the guard behind every ``choose_backend`` answer, failover included."""
    if catalog.is_restricted(route.upstream_model) or not may_serve(catalog, plan, route.model):
        return False
    target = catalog.get(route.upstream_model)
    return target is None or target is route.model or may_serve(catalog, plan, target)


def unlocking_plan(plans: Mapping[str, PlanSettings], model: ModelInfo) -> str | None:
    """The id of the cheapest plan that includes ``model`` (the one a refusal names), or None."""
    including = [(plan.price_fils, pid) for pid, plan in plans.items() if plan_allows(plan.models, model)]
    return min(including)[1] if including else None
