"""The whole path: a gateway with the cloud plugin, served on a socket, calling the cloud simulator on another."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from resayil_cloud import plugin
from resayil_cloud.simulator import SIMULATOR_API_KEY

from resayil_gateway.app import create_app
from resayil_gateway.testing import seed_account

CATALOG = {"gpt-oss:120b-cloud": {"backend": "cloud", "size": "large"}}


@pytest.fixture
def serve(make_gateway, aiohttp_client, simulator):
    """``await serve(**cloud_settings)``: a client of a gateway whose only backend is the cloud plugin pointed
    at a fresh simulator, and an account on the Pro plan, which allows cloud models (``client.auth``: its key)."""

    async def start(**cloud: Any) -> Any:
        sim = await simulator(reply_tokens=5)
        settings = {"url": sim.url, "api_key": SIMULATOR_API_KEY, "discover": False, **cloud}
        gateway = make_gateway(plugins=[plugin], overrides={"cloud": settings, "models": {"catalog": CATALOG}})
        client = await aiohttp_client(create_app(gateway))
        client.gateway, client.sim = gateway, sim
        client.account = await seed_account(gateway, plan="pro")
        client.auth = {"Authorization": f"Bearer {client.account.key}"}
        return client

    return start


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-oss:120b-cloud", "messages": [{"role": "user", "content": "Hi"}], **extra}


async def test_chat_runs_on_the_cloud_under_the_catalog_name_and_is_charged(serve):
    client = await serve()
    before = (await client.gateway.ledger.balance(client.account.id)).total
    response = await client.post("/v1/chat/completions", json=chat(), headers=client.auth)
    body = await response.json()
    assert response.status == 200
    assert response.headers["x-resayil-backend"] == "cloud"
    assert body["model"] == "gpt-oss:120b-cloud"
    assert body["choices"][0]["message"]["content"].startswith("Hello")
    assert client.sim.state.last_body["model"] == "gpt-oss:120b"  # suffix dropped for ollama.com
    await client.gateway.drain()
    assert (await client.gateway.ledger.balance(client.account.id)).total < before


async def test_streamed_chat_from_the_cloud_ends_with_usage_and_done(serve):
    client = await serve()
    body = chat(stream=True, stream_options={"include_usage": True})
    response = await client.post("/v1/chat/completions", json=body, headers=client.auth)
    raw = await response.read()
    data = [block.removeprefix("data: ") for block in raw.decode().split("\n\n") if block.startswith("data: ")]
    assert data[-1] == "[DONE]"
    usage = orjson.loads(data[-2])["usage"]
    assert usage["completion_tokens"] == 5
    text = "".join(orjson.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-2])
    assert text.startswith("Hello")


async def test_a_refused_cloud_key_is_a_502_that_shows_no_key(serve):
    client = await serve(api_key="sk-wrong-cloud-key-000")
    response = await client.post("/v1/chat/completions", json=chat(), headers=client.auth)
    text = await response.text()
    assert response.status == 502
    assert "credentials" in orjson.loads(text)["error"]["message"]
    assert "sk-wrong-cloud-key-000" not in text


async def test_cloud_busy_is_a_503_with_retry_after(serve):
    client = await serve()
    client.sim.state.fail_next(429)
    response = await client.post("/v1/chat/completions", json=chat(), headers=client.auth)
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
