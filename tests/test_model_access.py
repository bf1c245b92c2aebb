"""Model access per plan (SPEC §5.7): /v1/models lists exactly what the plan allows without revealing where a
model runs, a model outside the plan gets 403 naming the plan that unlocks it, and restricted models are never
served on any path, failover targets included."""

from __future__ import annotations

import orjson
import pytest

from resayil_gateway.app import create_app
from resayil_gateway.hookspecs import hookimpl
from resayil_gateway.routing.backends import Route
from resayil_gateway.routing.catalog import allowed_cloud_equivalent, may_serve, route_allowed, unlocking_plan
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, seed_account

CATALOG = {
    "fake-small": {"backend": "local", "size": "small", "cloud_equivalent": "sky-large"},
    "fake-medium": {"backend": "local", "size": "medium", "cloud_equivalent": "glm-4.7-flash:cloud"},
    "fake-large": {"backend": "local", "size": "large", "cloud_equivalent": "no-such-model"},
    "sky-large": {"backend": "cloud", "size": "large"},
    "friendly-embed": {"backend": "local", "size": "small", "upstream_name": "bge-m3:latest"},
}
LISTED = {
    "basic": ["fake-small", "fake-medium"],
    "pro": ["fake-small", "fake-medium", "fake-large", "sky-large"],
    "enterprise": ["fake-small", "fake-medium", "fake-large", "sky-large"],
}


@pytest.fixture
def local():
    return FakeBackend(model_names=("fake-small", "fake-medium", "fake-large", "bge-m3:latest", "nomic-embed-text"))


@pytest.fixture
def cloud():
    return FakeBackend(name="sky", kind="cloud", model_names=("sky-large", "glm-4.7-flash:cloud"))


@pytest.fixture
def build(make_gateway, aiohttp_client, clock, local, cloud):
    async def client_for(plan=None, plugins=(), email="dev@example.com", phone="+96550000000", **overrides):
        gateway = make_gateway(
            plugins=[FakeBackendPlugin(local, cloud), *plugins],
            overrides={"models": {"catalog": CATALOG}, **overrides},
            clock=clock,
        )
        client = await aiohttp_client(create_app(gateway))
        account = await seed_account(gateway, credits=1000, plan=plan, email=email, phone=phone)
        client.gateway = gateway
        client.auth = {"Authorization": f"Bearer {account.key}"}
        client.plan = gateway.settings.plan(plan or "basic")
        return client

    return client_for


def chat_body(model):
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize("plan", [None, "pro", "enterprise"])
async def test_models_lists_exactly_what_the_plan_allows_and_never_where_it_runs(build, plan):
    client = await build(plan)
    response = await client.get("/v1/models", headers=client.auth)
    body = await response.json()
    assert [model["id"] for model in body["data"]] == LISTED[plan or "basic"]
    assert {model["owned_by"] for model in body["data"]} == {"resayil"}
    text = orjson.dumps(body).decode()
    assert "local" not in text and "cloud" not in text and "sky" not in text.replace("sky-large", "")
    assert "x-resayil-backend" not in response.headers
    for model in body["data"]:
        one = await client.get(f"/v1/models/{model['id']}", headers=client.auth)
        assert await one.json() == model


async def test_a_model_outside_the_plan_gets_403_naming_the_plan_that_unlocks_it(build):
    client = await build()
    for response in (
        await client.post("/v1/chat/completions", json=chat_body("sky-large"), headers=client.auth),
        await client.get("/v1/models/sky-large", headers=client.auth),
        await client.post("/v1/embeddings", json={"model": "fake-large", "input": "x"}, headers=client.auth),
    ):
        assert response.status == 403
        error = (await response.json())["error"]
        assert error["code"] == "model_not_allowed"
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "model"
        assert "Basic plan" in error["message"] and "Upgrade to the Pro plan" in error["message"]
        assert error["required_plan"] == "pro"


async def test_the_cheapest_plan_that_includes_the_model_is_the_one_named(build):
    client = await build(plans={"pro": {"models": ["local:*"]}})
    response = await client.post("/v1/chat/completions", json=chat_body("sky-large"), headers=client.auth)
    error = (await response.json())["error"]
    assert "Upgrade to the Enterprise plan" in error["message"]
    assert error["required_plan"] == "enterprise"
    assert unlocking_plan(client.gateway.settings.plans, client.gateway.catalog.get("fake-large")) == "pro"


RESTRICTED = ("bge-m3", "bge-m3:latest", "nomic-embed-text", "glm-4.7-flash:cloud", "friendly-embed", "GLM-4.7-Flash")


async def test_restricted_models_are_never_served_even_on_enterprise_or_under_an_alias(build, local, cloud):
    client = await build("enterprise", plans={"enterprise": {"requests_per_minute": 100}})
    for model in RESTRICTED:
        for response in (
            await client.post("/v1/chat/completions", json=chat_body(model), headers=client.auth),
            await client.post("/v1/embeddings", json={"model": model, "input": "x"}, headers=client.auth),
            await client.get(f"/v1/models/{model}", headers=client.auth),
        ):
            assert response.status == 404, model
            assert (await response.json())["error"]["code"] == "model_not_found"
    assert local.requests == [] and cloud.requests == []


async def test_failover_targets_are_the_cloud_equivalent_only_when_allowed_and_never_restricted(build):
    basic, pro = await build(), await build("pro", email="pro@example.com", phone="+96550000001")
    catalog = pro.gateway.catalog
    small, medium, large = catalog.get("fake-small"), catalog.get("fake-medium"), catalog.get("fake-large")
    assert allowed_cloud_equivalent(catalog, pro.plan, small) is catalog.get("sky-large")
    assert allowed_cloud_equivalent(catalog, basic.plan, small) is None  # Basic has no cloud
    assert allowed_cloud_equivalent(catalog, pro.plan, medium) is None  # restricted equivalent
    assert allowed_cloud_equivalent(catalog, pro.plan, large) is None  # not in the catalog
    assert may_serve(catalog, pro.plan, small) and not may_serve(catalog, basic.plan, large)


class FailoverTo:
    """A ``choose_backend`` plugin that sends every request to the cloud under ``upstream`` (as a careless
    failover would)."""

    def __init__(self, upstream):
        self.upstream = upstream

    @hookimpl
    def choose_backend(self, caller, chat_request, model, gateway):
        return Route(gateway.backends["sky"], self.upstream, model, reason="failover")


@pytest.mark.parametrize(
    ("plan", "upstream"),
    [("enterprise", "glm-4.7-flash:cloud"), ("enterprise", "BGE-M3"), (None, "sky-large")],
)
async def test_a_route_to_a_restricted_or_unpaid_model_is_refused_whatever_chose_it(build, cloud, plan, upstream):
    client = await build(plan, plugins=[FailoverTo(upstream)])
    response = await client.post("/v1/chat/completions", json=chat_body("fake-small"), headers=client.auth)
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "no_capacity"
    assert cloud.requests == []
    await client.gateway.drain()


async def test_an_allowed_failover_route_is_served(build, cloud):
    client = await build("pro", plugins=[FailoverTo("sky-large")])
    response = await client.post("/v1/chat/completions", json=chat_body("fake-small"), headers=client.auth)
    assert response.status == 200
    assert response.headers["x-resayil-backend"] == "cloud"
    catalog = client.gateway.catalog
    assert route_allowed(catalog, client.plan, Route(cloud, "sky-large", catalog.get("fake-small")))
    await client.gateway.drain()
