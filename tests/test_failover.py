"""Cloud failover (SPEC §5.4): local unless the local line is deeper than ``failover_queue_depth`` (or the
local backend refuses before output), and only when the plan allows the cloud, the model has a cloud
equivalent (never a restricted one), the client did not opt out and today's cloud budget is not spent.
Billed at the requested model's price; ``x-resayil-backend`` says where it ran."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from resayil_gateway.app import create_app
from resayil_gateway.domain import Caller, ChatRequest
from resayil_gateway.errors import NoCapacity, UpstreamUnavailable
from resayil_gateway.gateway import Gateway
from resayil_gateway.plugins import await_me_maybe
from resayil_gateway.routing.failover import prefer_from_headers
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, build_gateway, seed_account

OVERRIDES = {
    "models": {
        "catalog": {
            "chat-small": {"backend": "local", "size": "small", "cloud_equivalent": "cloud-big"},
            "chat-plain": {"backend": "local", "size": "small"},
            "chat-sly": {"backend": "local", "size": "small", "cloud_equivalent": "glm-4.7-flash:cloud"},
            "embed-small": {
                "backend": "local",
                "size": "small",
                "cloud_equivalent": "cloud-embed",
                "capabilities": ["embedding"],
            },
            "cloud-big": {"backend": "cloud", "size": "large"},
            "cloud-embed": {"backend": "cloud", "size": "small", "capabilities": ["embedding"]},
        }
    }
}


def local_backend(**kwargs: Any) -> FakeBackend:
    return FakeBackend(
        name="ollama",
        kind="local",
        max_concurrency=1,
        model_names=("chat-small", "chat-plain", "embed-small"),
        **kwargs,
    )


def cloud_backend(budget: int = 500) -> FakeBackend:
    cloud = FakeBackend(name="cloud", kind="cloud", model_names=("cloud-big", "cloud-embed"), reply="From the cloud")
    cloud.daily_request_budget = budget  # type: ignore[attr-defined]
    return cloud


def caller(plan: str) -> Caller:
    return Caller(account_id=1, key_id=1, key_prefix="rsk-test", plan=plan)


async def route_kind(gateway: Gateway, plan: str = "pro", model: str = "chat-small") -> str:
    info = gateway.catalog.get(model)
    assert info is not None
    chat = ChatRequest(model=model, messages=({"role": "user", "content": "hi"},))
    route = await await_me_maybe(
        gateway.pm.hook.choose_backend(caller=caller(plan), chat_request=chat, model=info, gateway=gateway)
    )
    return str(route.backend.kind)


class Line:
    """Requests holding or waiting for the local backend's slots, to make its queue ``depth`` deep."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.gate = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def fill(self, depth: int) -> None:
        async def hold() -> None:
            async with self.gateway.admission.slot("ollama", timeout=30):
                await self.gate.wait()

        self.tasks += [asyncio.create_task(hold()) for _ in range(depth)]
        while await self.gateway.admission.depth("ollama") < depth:
            await asyncio.sleep(0.001)

    async def drain(self) -> None:
        self.gate.set()
        await asyncio.gather(*self.tasks)
        await self.gateway.admission.drain()


@pytest.fixture
async def routing(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Line]]:
    """An in-process gateway with a local and a cloud backend (routing needs no database)."""
    gateway = build_gateway(
        f"sqlite+aiosqlite:///{tmp_path}/unused.db",
        plugins=[FakeBackendPlugin(local_backend(), cloud_backend())],
        overrides=OVERRIDES,
    )
    line = Line(gateway)
    yield gateway, line
    await line.drain()
    await gateway.store.dispose()


@pytest.mark.parametrize(
    ("depth", "plan", "model", "expected"),
    [
        (0, "pro", "chat-small", "local"),
        (3, "pro", "chat-small", "local"),  # at the threshold: not above it
        (4, "pro", "chat-small", "cloud"),
        (4, "enterprise", "chat-small", "cloud"),
        (4, "basic", "chat-small", "local"),  # the plan does not include the cloud
        (4, "pro", "chat-plain", "local"),  # no cloud equivalent
        (4, "pro", "chat-sly", "local"),  # a restricted model is never a failover target
        (4, "pro", "cloud-big", "cloud"),  # a cloud model simply runs in the cloud
    ],
)
async def test_failover_decision_table(routing: Any, depth: int, plan: str, model: str, expected: str) -> None:
    gateway, line = routing
    await line.fill(depth)
    assert await route_kind(gateway, plan, model) == expected


async def test_the_client_can_opt_out_with_the_failover_header(routing: Any) -> None:
    gateway, line = routing
    await line.fill(4)
    prefer_from_headers({"x-resayil-failover": "OFF"})
    assert await route_kind(gateway) == "local"
    prefer_from_headers({})
    assert await route_kind(gateway) == "cloud"


async def test_no_failover_once_todays_cloud_budget_is_spent(routing: Any) -> None:
    gateway, line = routing
    await line.fill(4)
    gateway.cloud_budget.configure(1)
    assert await gateway.cloud_budget.try_spend()
    assert not await gateway.cloud_budget.try_spend()
    assert await route_kind(gateway) == "local"


# -- through the API, on both stacks ----------------------------------------------------------------------


async def client_for(make_gateway: Any, aiohttp_client: Any, clock: Any, *backends: FakeBackend, plan: str = "pro"):
    gateway = make_gateway(plugins=[FakeBackendPlugin(*backends)], overrides=OVERRIDES, clock=clock)
    client = await aiohttp_client(create_app(gateway), server_kwargs={"handler_cancellation": True})
    account = await seed_account(gateway, plan=plan)
    client.gateway = gateway
    client.account = account
    client.auth = {"Authorization": f"Bearer {account.key}"}
    return client


async def balance(api: Any) -> int:
    await api.gateway.drain()
    return int((await api.gateway.ledger.balance(api.account.id)).total)


def chat(model: str = "chat-small", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], **extra}


@pytest.mark.parametrize("refusal", [UpstreamUnavailable("connection refused"), NoCapacity("maximum pending")])
async def test_a_local_refusal_before_output_retries_once_in_the_cloud_at_the_local_price(
    make_gateway: Any, aiohttp_client: Any, clock: Any, refusal: Exception
) -> None:
    cloud = cloud_backend()
    api = await client_for(make_gateway, aiohttp_client, clock, local_backend(error=refusal), cloud)
    before = await balance(api)
    response = await api.post("/v1/chat/completions", json=chat(), headers=api.auth)
    assert response.status == 200, await response.text()
    assert response.headers["x-resayil-backend"] == "cloud"
    body = await response.json()
    assert body["model"] == "chat-small"
    assert body["choices"][0]["message"]["content"] == "From the cloud"
    assert before - await balance(api) == 1  # local multiplier 1, not the cloud's 2
    assert (await api.gateway.cloud_budget.status()).used == 1


async def test_a_streamed_request_refused_locally_streams_from_the_cloud(
    make_gateway: Any, aiohttp_client: Any, clock: Any
) -> None:
    refusing = local_backend(error=UpstreamUnavailable("connection refused"))
    api = await client_for(make_gateway, aiohttp_client, clock, refusing, cloud_backend())
    response = await api.post("/v1/chat/completions", json=chat(stream=True), headers=api.auth)
    assert response.status == 200
    assert response.headers["x-resayil-backend"] == "cloud"
    text = await response.text()
    assert '"From"' in text and text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(
    ("plan", "headers"), [("pro", {"x-resayil-failover": "off"}), ("basic", {})], ids=["opted-out", "basic-plan"]
)
async def test_without_failover_a_local_refusal_reaches_the_client_uncharged(
    make_gateway: Any, aiohttp_client: Any, clock: Any, plan: str, headers: dict[str, str]
) -> None:
    cloud = cloud_backend()
    refusing = local_backend(error=UpstreamUnavailable("connection refused"))
    api = await client_for(make_gateway, aiohttp_client, clock, refusing, cloud, plan=plan)
    before = await balance(api)
    response = await api.post("/v1/chat/completions", json=chat(), headers={**api.auth, **headers})
    assert response.status == 502
    assert cloud.started == 0
    assert await balance(api) == before


async def test_a_deep_local_queue_sends_the_request_to_the_cloud(
    make_gateway: Any, aiohttp_client: Any, clock: Any
) -> None:
    api = await client_for(make_gateway, aiohttp_client, clock, local_backend(), cloud_backend())
    line = Line(api.gateway)
    await line.fill(4)
    try:
        response = await api.post("/v1/chat/completions", json=chat(), headers=api.auth)
        assert response.status == 200
        assert response.headers["x-resayil-backend"] == "cloud"
    finally:
        await line.drain()
    response = await api.post("/v1/chat/completions", json=chat(), headers=api.auth)
    assert response.headers["x-resayil-backend"] == "local"


async def test_embeddings_fail_over_too(make_gateway: Any, aiohttp_client: Any, clock: Any) -> None:
    refusing = local_backend(error=UpstreamUnavailable("connection refused"))
    api = await client_for(make_gateway, aiohttp_client, clock, refusing, cloud_backend())
    response = await api.post("/v1/embeddings", json={"model": "embed-small", "input": "hello"}, headers=api.auth)
    assert response.status == 200, await response.text()
    assert response.headers["x-resayil-backend"] == "cloud"


async def test_cloud_only_models_answer_503_cloud_budget_exhausted_once_it_is_spent(
    make_gateway: Any, aiohttp_client: Any, clock: Any
) -> None:
    api = await client_for(make_gateway, aiohttp_client, clock, local_backend(), cloud_backend(budget=1))
    assert (await api.post("/v1/chat/completions", json=chat("cloud-big"), headers=api.auth)).status == 200
    before = await balance(api)
    response = await api.post("/v1/chat/completions", json=chat("cloud-big"), headers=api.auth)
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "cloud_budget_exhausted"
    assert await balance(api) == before
    clock.advance(days=1)
    assert (await api.post("/v1/chat/completions", json=chat("cloud-big"), headers=api.auth)).status == 200


async def test_failover_reads_the_queue_depth_of_every_worker(
    make_gateway: Any, stack: str, clock: Any, aiohttp_client: Any
) -> None:
    if stack != "postgres":
        pytest.skip("one process: there is no other worker")
    busy = make_gateway(plugins=[FakeBackendPlugin(local_backend(), cloud_backend())], overrides=OVERRIDES)
    await busy.state.start()
    await busy.admission.start()
    line = Line(busy)
    await line.fill(4)
    try:
        api = await client_for(make_gateway, aiohttp_client, clock, local_backend(), cloud_backend())
        response = await api.post("/v1/chat/completions", json=chat(), headers=api.auth)
        assert response.headers["x-resayil-backend"] == "cloud"
    finally:
        await line.drain()
        await busy.admission.close()
        await busy.state.close()
