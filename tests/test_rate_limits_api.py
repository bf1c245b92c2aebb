"""Rate limits on the API: plans' requests per minute, 429 in OpenAI's shape, the x-ratelimit-* headers on every
response after authentication, one limit across gateways sharing Redis, and Redis being unreachable."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from resayil_gateway.app import create_app
from resayil_gateway.limits import RedisRateLimiter
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, seed_account

CATALOG = {
    "models": {
        "catalog": {
            "fake-small": {"backend": "local", "size": "small"},
            "fake-medium": {"backend": "local", "size": "medium"},
            "fake-large": {"backend": "local", "size": "large"},
        }
    }
}
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


def chat_body(**extra):
    return {"model": "fake-small", "messages": [{"role": "user", "content": "Hi"}], **extra}


async def client_for(aiohttp_client, gateway, plan=None, credits=100, email="dev@example.com", phone="+96550000000"):
    client = await aiohttp_client(create_app(gateway))
    account = await seed_account(gateway, credits=credits, plan=plan, email=email, phone=phone)
    client.gateway = gateway
    client.account = account
    client.auth = {"Authorization": f"Bearer {account.key}"}
    return client


@pytest.fixture
async def api(make_gateway, aiohttp_client, clock):
    gateway = make_gateway(plugins=[FakeBackendPlugin(FakeBackend())], overrides=CATALOG, clock=clock)
    return await client_for(aiohttp_client, gateway)


def limits_of(response):
    return tuple(response.headers.get(name) for name in HEADERS)


async def test_basic_plan_gets_ten_requests_a_minute_then_429_in_openai_shape(api, clock):
    for sent in range(10):
        response = await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)
        assert response.status == 200
        assert limits_of(response) == ("10", str(9 - sent), "1m0s")
    clock.advance(15)
    response = await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)
    assert response.status == 429
    error = (await response.json())["error"]
    assert error["type"] == "requests"
    assert error["code"] == "rate_limit_exceeded"
    assert error["param"] is None
    assert "10 requests per minute" in error["message"]
    assert response.headers["Retry-After"] == "45"
    assert response.headers["retry-after-ms"] == "45000"
    assert limits_of(response) == ("10", "0", "45s")
    await api.gateway.drain()
    assert (await api.gateway.ledger.balance(api.account.id)).total == 90  # the refused request cost nothing
    clock.advance(45)
    assert (await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)).status == 200


@pytest.mark.parametrize(("plan", "limit"), [("pro", 30), ("enterprise", 60)])
async def test_each_plan_gets_its_configured_requests_per_minute(make_gateway, aiohttp_client, clock, plan, limit):
    gateway = make_gateway(plugins=[FakeBackendPlugin(FakeBackend())], overrides=CATALOG, clock=clock)
    client = await client_for(aiohttp_client, gateway, plan=plan)
    statuses = [(await client.get("/v1/models", headers=client.auth)).status for _ in range(limit + 1)]
    assert statuses == [200] * limit + [429]


async def test_the_limit_comes_from_the_plans_settings(make_gateway, aiohttp_client, clock):
    overrides = {**CATALOG, "plans": {"basic": {"requests_per_minute": 2}}}
    gateway = make_gateway(plugins=[FakeBackendPlugin(FakeBackend())], overrides=overrides, clock=clock)
    client = await client_for(aiohttp_client, gateway)
    statuses = [(await client.get("/v1/models", headers=client.auth)).status for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_every_authenticated_response_carries_the_headers_whatever_its_status(api):
    responses = {
        "200 stream": await api.post("/v1/chat/completions", json=chat_body(stream=True), headers=api.auth),
        "400": await api.post("/v1/chat/completions", json={"model": "fake-small"}, headers=api.auth),
        "402": await api.post("/v1/chat/completions", json=chat_body(max_tokens=500_000), headers=api.auth),
        "403": await api.post("/v1/chat/completions", json=chat_body(model="fake-large"), headers=api.auth),
        "404": await api.get("/v1/models/no-such-model", headers=api.auth),
        "embeddings": await api.post("/v1/embeddings", json={"model": "fake-small", "input": "x"}, headers=api.auth),
        "api prefix": await api.get("/api/v1/models", headers=api.auth),
    }
    for name, response in responses.items():
        await response.read()
        assert response.headers["x-ratelimit-limit-requests"] == "10", name
    assert [limits_of(response)[1] for response in responses.values()] == ["9", "8", "7", "6", "5", "4", "3"]


async def test_unauthenticated_401s_carry_no_rate_limit_headers_and_use_no_allowance(api):
    for _ in range(12):
        response = await api.get("/v1/models", headers={"Authorization": "Bearer rsk-" + "A" * 43})
        assert response.status == 401
        assert limits_of(response) == (None, None, None)
    assert limits_of(await api.get("/v1/models", headers=api.auth)) == ("10", "9", "1m0s")


async def test_two_gateways_sharing_redis_enforce_one_limit(make_gateway, aiohttp_client, clock, stack):
    if stack != "postgres":
        pytest.skip("one limit across gateways needs the shared Redis")
    first = make_gateway(plugins=[FakeBackendPlugin(FakeBackend())], overrides=CATALOG, clock=clock)
    second = make_gateway(plugins=[FakeBackendPlugin(FakeBackend())], overrides=CATALOG, clock=clock)
    one = await client_for(aiohttp_client, first)
    other = await aiohttp_client(create_app(second))
    statuses = []
    for sent in range(12):
        client = one if sent % 2 == 0 else other
        statuses.append((await client.get("/v1/models", headers=one.auth)).status)
    assert statuses == [200] * 10 + [429, 429]


@pytest.mark.parametrize(("choice", "status"), [("open", 200), ("closed", 503)])
async def test_redis_unreachable_takes_the_configured_choice_logs_once_and_never_500s(
    make_gateway, aiohttp_client, clock, stack, caplog, choice, status
):
    if stack != "postgres":
        pytest.skip("only a Redis limiter can lose Redis")
    overrides = {**CATALOG, "limits": {"on_redis_error": choice}}
    gateway = make_gateway(plugins=[FakeBackendPlugin(FakeBackend())], overrides=overrides, clock=clock)
    configured = gateway.limiter
    assert isinstance(configured, RedisRateLimiter) and configured.on_redis_error == choice
    gateway.limiter = RedisRateLimiter(
        Redis.from_url(UNREACHABLE_REDIS, decode_responses=True), configured.key, clock, choice
    )
    client = await client_for(aiohttp_client, gateway)
    caplog.set_level(logging.WARNING, "resayil.limits")
    responses = [await client.get("/v1/models", headers=client.auth) for _ in range(3)]
    assert [response.status for response in responses] == [status] * 3
    if choice == "closed":
        error = (await responses[0].json())["error"]
        assert error["code"] == "service_unavailable"
        assert responses[0].headers["Retry-After"] == "2"
    else:
        assert limits_of(responses[-1]) == ("10", "7", "1m0s")  # this worker's own window meanwhile
    lost = [record for record in caplog.records if record.name == "resayil.limits"]
    assert len(lost) == 1
    assert f"on_redis_error = {choice}" in lost[0].getMessage()


async def test_a_hung_redis_costs_a_request_at_most_redis_timeout_s(make_gateway, aiohttp_client, clock, stack):
    if stack != "postgres":
        pytest.skip("only a Redis limiter can wait on Redis")
    connections = []

    async def swallow(reader, writer):  # takes the connection, reads, never answers
        connections.append(writer)
        while await reader.read(4096):
            pass

    hung = await asyncio.start_server(swallow, "127.0.0.1", 0)
    overrides = {**CATALOG, "limits": {"redis_timeout_s": 0.1}}
    gateway = make_gateway(plugins=[FakeBackendPlugin(FakeBackend())], overrides=overrides, clock=clock)
    configured = gateway.limiter
    assert isinstance(configured, RedisRateLimiter) and configured.timeout_s == 0.1
    gateway.limiter = RedisRateLimiter(
        Redis.from_url(f"redis://127.0.0.1:{hung.sockets[0].getsockname()[1]}/0", decode_responses=True),
        configured.key,
        clock,
        timeout_s=configured.timeout_s,
    )
    client = await client_for(aiohttp_client, gateway)
    try:
        async with asyncio.timeout(10):  # unbounded, the first request would never answer
            statuses = [(await client.get("/v1/models", headers=client.auth)).status for _ in range(2)]
        assert statuses == [200, 200]
        assert connections
    finally:
        await gateway.limiter.redis.aclose()
        for writer in connections:
            writer.close()
        hung.close()
        await hung.wait_closed()
