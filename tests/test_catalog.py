"""The model catalog, plan access and pricing: multipliers, size classes, discovery, the restricted list."""

from __future__ import annotations

import pytest

from resayil_gateway.billing.pricing import credits_for
from resayil_gateway.config import ModelsSettings
from resayil_gateway.domain import Caller, ModelInfo, Usage
from resayil_gateway.errors import ModelNotFound, PermissionDenied
from resayil_gateway.routing.catalog import Catalog, base_name, plan_allows
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, build_gateway


def catalog(backends, **settings):
    return Catalog(ModelsSettings(**settings), {backend.name: backend for backend in backends})


@pytest.mark.parametrize("name", ["bge-m3", "bge-m3:latest", "BGE-M3:567m", "library/bge-m3", "GLM-4.7-Flash:q4"])
def test_restricted_models_match_on_every_tag_and_case(name):
    models = catalog([FakeBackend(model_names=(name,))])
    assert models.is_restricted(name)
    assert models.get(name) is None
    assert models.all() == ()


def test_base_name_drops_namespace_tag_and_case():
    assert base_name("Library/BGE-M3:567m") == "bge-m3"


def test_configured_models_keep_their_size_multiplier_and_cloud_equivalent():
    local, cloud = FakeBackend(model_names=()), FakeBackend(name="sky", kind="cloud", model_names=())
    models = catalog(
        [local, cloud],
        catalog={
            "llama3.2:3b": {"backend": "local", "size": "small", "cloud_equivalent": "gpt-oss:20b"},
            "gpt-oss:120b": {"backend": "cloud", "size": "large"},
            "special": {"backend": "local", "multiplier": 3.5},
        },
    )
    small, big, special = models.get("llama3.2:3b"), models.get("gpt-oss:120b"), models.get("special")
    assert (small.backend, small.kind, small.size, small.multiplier, small.cloud_equivalent) == (
        "fake",
        "local",
        "small",
        1.0,
        "gpt-oss:20b",
    )
    assert (big.backend, big.kind, big.multiplier) == ("sky", "cloud", 2.0)
    assert special.multiplier == 3.5


def test_discovered_models_are_added_as_local_medium_and_refreshed_without_a_restart():
    backend = FakeBackend(model_names=("mistral:7b",))
    models = catalog([backend])
    assert (models.get("mistral:7b").size, models.get("mistral:7b").kind) == ("medium", "local")
    backend.set_models(["mistral:7b", "phi4:latest"])
    assert models.get("phi4") is not None  # ":latest" is implied
    assert models.get("PHI4:LATEST") is not None


def test_configured_model_on_a_missing_backend_kind_is_not_listed():
    models = catalog([FakeBackend(model_names=())], catalog={"gpt-oss:120b": {"backend": "cloud"}})
    assert models.get("gpt-oss:120b") is None


@pytest.mark.parametrize(
    ("selectors", "kind", "size", "allowed"),
    [
        (("local:small", "local:medium"), "local", "small", True),
        (("local:small", "local:medium"), "local", "large", False),
        (("local:small", "local:medium"), "cloud", "small", False),
        (("local:*", "cloud:*"), "cloud", "large", True),
        (("*",), "cloud", "large", True),
        (("m1",), "local", "large", True),
    ],
)
def test_plan_selectors(selectors, kind, size, allowed):
    model = ModelInfo(id="m1", backend="b", kind=kind, size=size)
    assert plan_allows(selectors, model) is allowed


@pytest.mark.parametrize(
    ("prompt", "completion", "multiplier", "credits"),
    [
        (0, 0, 1.0, 0),
        (1, 0, 1.0, 1),
        (600, 400, 1.0, 1),
        (600, 401, 1.0, 2),
        (500, 500, 2.0, 2),
        (10, 5, 2.0, 1),
        (1500, 1500, 2.0, 6),
        (333, 0, 3.0, 1),
    ],
)
def test_credits_are_ceil_of_tokens_times_multiplier_per_thousand_at_least_one(prompt, completion, multiplier, credits):
    assert credits_for(Usage(prompt, completion), multiplier) == credits


def test_hook_check_access_default_hides_restricted_and_refuses_by_plan(tmp_path):
    gateway = build_gateway(f"sqlite+aiosqlite:///{tmp_path}/x.db", plugins=[FakeBackendPlugin(FakeBackend())])
    caller = Caller(account_id=1, key_id=1, key_prefix="rsk-x", plan="basic")
    large = ModelInfo(id="big", backend="fake", size="large")
    refusals = [r for r in gateway.pm.hook.check_access(caller=caller, model=large, gateway=gateway) if r]
    assert isinstance(refusals[0], PermissionDenied)
    hidden = ModelInfo(id="bge-m3:latest", backend="fake", size="small")
    refusals = [r for r in gateway.pm.hook.check_access(caller=caller, model=hidden, gateway=gateway) if r]
    assert isinstance(refusals[0], ModelNotFound)
