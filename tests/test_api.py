"""The OpenAI-compatible API on a scripted backend: shapes, statuses, billing, streaming, disconnects."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select

from resayil_gateway.app import create_app
from resayil_gateway.errors import NoCapacity, UpstreamTimeout, UpstreamUnavailable
from resayil_gateway.store.tables import usage, usage_daily
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


@pytest.fixture
def backend():
    return FakeBackend(model_names=("fake-small", "fake-medium", "fake-large", "BGE-M3:567m", "bge-m3:latest"))


@pytest.fixture
async def api(gateway_client, backend):
    return await gateway_client(
        backends=(backend,), overrides=CATALOG, credits=100, server_kwargs={"handler_cancellation": True}
    )


def chat_body(**extra):
    return {"model": "fake-small", "messages": [{"role": "user", "content": "Hi"}], **extra}


async def balance(api):
    await api.gateway.drain()
    return (await api.gateway.ledger.balance(api.account.id)).total


async def error_of(response, status):
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


async def test_chat_completion_answers_in_openai_shape_and_charges_one_credit(api):
    response = await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from the fake backend",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers["x-resayil-backend"] == "local"
    assert await balance(api) == 99


async def test_api_v1_prefix_serves_the_same_routes(api):
    response = await api.post("/api/v1/chat/completions", json=chat_body(), headers=api.auth)
    assert response.status == 200
    assert (await api.get("/api/v1/models", headers=api.auth)).status == 200


async def test_every_response_carries_a_request_id_even_errors(api):
    response = await api.post("/v1/chat/completions", data=b"{", headers=api.auth)
    assert response.headers["x-request-id"].startswith("req_")
    assert (await api.get("/healthz")).headers["x-request-id"]


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"\xff\xfe{}", None, "not valid UTF-8"),
        (b"[1, 2]", None, "JSON object"),
        (b"", None, "empty"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model", "'model'"),
        (json.dumps({"model": "fake-small"}).encode(), "messages", "'messages' is required"),
        (json.dumps({"model": "fake-small", "messages": []}).encode(), "messages", "non-empty"),
        (json.dumps(chat_body(temperature="hot")).encode(), "temperature", "between 0 and 2"),
        (json.dumps(chat_body(max_tokens=0)).encode(), "max_tokens", "at least 1"),
        (json.dumps(chat_body(max_tokens=True)).encode(), "max_tokens", "integer"),
        (json.dumps(chat_body(stream="yes")).encode(), "stream", "boolean"),
        (json.dumps(chat_body(messages=[{"role": "robot", "content": "x"}])).encode(), "messages[0].role", "role"),
        (json.dumps(chat_body(messages=[{"role": "user", "content": 5}])).encode(), "messages[0].content", "string"),
        (json.dumps(chat_body(stop=["a", "b", "c", "d", "e"])).encode(), "stop", "at most 4"),
        (json.dumps(chat_body(n=2)).encode(), "n", "n=1"),
    ],
)
async def test_bad_input_gets_400_naming_the_parameter_and_is_never_charged(api, payload, param, fragment):
    response = await api.post("/v1/chat/completions", data=payload, headers=api.auth)
    error = await error_of(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]
    assert await balance(api) == 100


async def test_body_over_the_configured_size_gets_413(make_gateway, backend, aiohttp_client):
    gateway = make_gateway(
        plugins=[FakeBackendPlugin(backend)], overrides={**CATALOG, "gateway": {"max_body_bytes": 2048}}
    )
    client = await aiohttp_client(create_app(gateway))
    account = await seed_account(gateway, credits=10)
    big = chat_body(messages=[{"role": "user", "content": "x" * 5000}])
    response = await client.post("/v1/chat/completions", json=big, headers={"Authorization": f"Bearer {account.key}"})
    error = await error_of(response, 413)
    assert error["code"] == "request_too_large"


async def test_unknown_and_restricted_models_get_the_same_404(api):
    for model in ("no-such-model", "bge-m3", "BGE-M3:567m", "bge-m3:latest", "glm-4.7-flash"):
        response = await api.post("/v1/chat/completions", json=chat_body(model=model), headers=api.auth)
        error = await error_of(response, 404)
        assert error["code"] == "model_not_found"
        assert error["message"] == f"The model `{model}` does not exist or you do not have access to it."
    assert await balance(api) == 100


async def test_model_outside_the_plan_gets_403(api):
    response = await api.post("/v1/chat/completions", json=chat_body(model="fake-large"), headers=api.auth)
    error = await error_of(response, 403)
    assert error["code"] == "model_not_allowed"


@pytest.mark.parametrize(
    ("header", "code", "fragment"),
    [
        (None, "missing_api_key", "didn't provide an API key"),
        ("Token abc", "malformed_authorization", "Malformed Authorization header"),
        ("Bearer sk-short", "malformed_api_key", "Malformed API key"),
        ("Bearer rsk-" + "A" * 43, "invalid_api_key", "Incorrect API key provided: rsk-AAAAAAAA****AAAA"),
    ],
)
async def test_key_problems_get_401_each_with_its_own_message(api, header, code, fragment):
    headers = {"Authorization": header} if header else {}
    response = await api.post("/v1/chat/completions", json=chat_body(), headers=headers)
    error = await error_of(response, 401)
    assert error["code"] == code
    assert fragment in error["message"]


async def test_revoked_key_is_refused_on_next_request(api):
    assert (await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)).status == 200
    await api.gateway.keys.revoke(api.account.key[:12])
    error = await error_of(await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth), 401)
    assert error["code"] == "revoked_api_key"
    assert error["message"] == "This API key has been revoked."


async def test_insufficient_credits_gets_402_with_absolute_top_up_url_and_no_retry(api):
    response = await api.post("/v1/chat/completions", json=chat_body(max_tokens=500_000), headers=api.auth)
    error = await error_of(response, 402)
    assert error["code"] == "insufficient_credits"
    assert error["type"] == "insufficient_quota"
    assert error["top_up_url"] == "http://127.0.0.1:8080/billing/top-up"
    assert response.headers["x-should-retry"] == "false"
    assert await balance(api) == 100


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UpstreamUnavailable("The model server is unavailable."), 502, "upstream_error"),
        (UpstreamTimeout("The model server did not answer in time."), 504, "upstream_timeout"),
        (NoCapacity("busy", headers={"Retry-After": "1"}), 503, "no_capacity"),
        (RuntimeError("a bug in a backend"), 502, "upstream_error"),
    ],
)
async def test_upstream_failures_map_to_502_504_503_and_are_not_charged(api, backend, error, status, code):
    backend.error = error
    for stream in (False, True):
        response = await api.post("/v1/chat/completions", json=chat_body(stream=stream), headers=api.auth)
        body = await error_of(response, status)
        assert body["code"] == code
    assert await balance(api) == 100
    assert await api.gateway.ledger.check() == []


def sse_events(text):
    assert text.endswith("\n\n")
    return [block.removeprefix("data: ") for block in text.strip().split("\n\n")]


async def test_stream_relays_openai_chunks_and_ends_with_done_and_is_charged(api):
    response = await api.post("/v1/chat/completions", json=chat_body(stream=True), headers=api.auth)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-cache"
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text == "Hello from the fake backend"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all("usage" not in chunk for chunk in chunks)
    assert await balance(api) == 99


async def test_stream_include_usage_sends_a_final_usage_chunk_with_empty_choices(api):
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = sse_events(await (await api.post("/v1/chat/completions", json=body, headers=api.auth)).text())
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


async def test_stream_broken_mid_way_ends_with_an_error_event_and_charges_what_was_produced(api, backend):
    backend.error, backend.error_after = UpstreamUnavailable("The model server failed mid-stream."), 2
    response = await api.post("/v1/chat/completions", json=chat_body(stream=True), headers=api.auth)
    events = sse_events(await response.text())
    assert events[-1] != "[DONE]"
    assert json.loads(events[-1])["error"]["code"] == "upstream_error"
    assert await balance(api) == 99
    assert await api.gateway.ledger.check() == []


async def test_client_disconnect_mid_stream_cancels_upstream_and_charges_what_was_produced(api, backend):
    backend.reply = " ".join(["word"] * 50)
    gate = asyncio.Event()
    original = backend.stream_chat

    async def paused(request, model):
        count = 0
        async for delta in original(request, model):
            yield delta
            count += 1
            if count == 3:
                await gate.wait()  # never set: the client leaves first

    backend.stream_chat = paused
    response = await api.post("/v1/chat/completions", json=chat_body(stream=True), headers=api.auth)
    await response.content.readuntil(b"word")
    response.close()
    for _ in range(200):
        if backend.cancelled:
            break
        await asyncio.sleep(0.01)
    assert backend.cancelled == 1
    assert api.gateway.admission.running("fake") == 0
    assert await balance(api) == 99
    assert (await api.gateway.ledger.balance(api.account.id)).held == 0


async def test_models_list_shows_exactly_what_the_plan_allows_and_never_restricted_models(api):
    body = await (await api.get("/v1/models", headers=api.auth)).json()
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["fake-small", "fake-medium"]
    assert (await api.get("/v1/models/fake-small", headers=api.auth)).status == 200
    await error_of(await api.get("/v1/models/bge-m3", headers=api.auth), 404)
    await error_of(await api.get("/v1/models", headers={}), 401)


async def test_enterprise_plan_sees_every_unrestricted_model(make_gateway, backend, aiohttp_client):
    gateway = make_gateway(plugins=[FakeBackendPlugin(backend)], overrides=CATALOG)
    client = await aiohttp_client(create_app(gateway))
    account = await seed_account(gateway, plan="enterprise")
    body = await (await client.get("/v1/models", headers={"Authorization": f"Bearer {account.key}"})).json()
    assert [model["id"] for model in body["data"]] == ["fake-small", "fake-medium", "fake-large"]


async def test_embeddings_answer_in_openai_shape_and_are_charged(api):
    response = await api.post(
        "/v1/embeddings", json={"model": "fake-small", "input": ["hello world", "bye"]}, headers=api.auth
    )
    assert response.status == 200
    body = await response.json()
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert await balance(api) == 99
    bad = await api.post("/v1/embeddings", json={"model": "fake-small", "input": []}, headers=api.auth)
    assert (await error_of(bad, 400))["param"] == "input"


async def test_one_usage_row_per_request_and_a_daily_rollup(api, backend):
    await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)
    await api.post("/v1/chat/completions", json=chat_body(stream=True), headers=api.auth)
    backend.error = UpstreamUnavailable("down")
    await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)
    await api.gateway.drain()
    await api.gateway.usage.flush()
    async with api.gateway.store.connect() as conn:
        rows = (await conn.execute(select(usage.c.status, usage.c.credits, usage.c.stream).order_by(usage.c.id))).all()
        daily = (await conn.execute(select(usage_daily))).one()
        assert await conn.scalar(select(func.count()).select_from(usage)) == 3
    assert sorted((row.status, row.credits, row.stream) for row in rows) == [
        (200, 1, False),
        (200, 1, True),
        (502, 0, False),
    ]
    assert (daily.requests, daily.errors, daily.credits, daily.prompt_tokens) == (3, 1, 2, 20)


async def test_unknown_api_path_and_wrong_method_answer_in_openai_shape(api):
    assert (await error_of(await api.get("/v1/nothing-here", headers=api.auth), 404))["code"] == "not_found"
    assert (await error_of(await api.get("/v1/chat/completions", headers=api.auth), 405))[
        "code"
    ] == "method_not_allowed"


async def test_a_settle_that_fails_for_a_moment_is_retried_and_charged_once(api, monkeypatch):
    from resayil_gateway.billing import metering

    monkeypatch.setattr(metering, "SETTLE_BACKOFF_S", 0.001)
    real_settle = api.gateway.ledger.settle
    failures = []

    async def flaky(hold_id, cost, **kwargs):
        if len(failures) < 2:
            failures.append(hold_id)
            raise ConnectionError("database restarting")
        return await real_settle(hold_id, cost, **kwargs)

    monkeypatch.setattr(api.gateway.ledger, "settle", flaky)
    assert (await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)).status == 200
    assert await balance(api) == 99
    assert len(failures) == 2
    assert await api.gateway.ledger.check() == []


async def test_a_store_that_cannot_be_reached_gets_503_to_retry_never_500(api, monkeypatch):
    import sqlalchemy.exc

    async def down(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(api.gateway.ledger, "reserve", down)
    response = await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)
    error = await error_of(response, 503)
    assert error["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == "2"


async def test_killed_database_connections_are_replaced_without_failing_a_request(api, stack):
    if stack != "postgres":
        pytest.skip("PostgreSQL only")
    assert (await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)).status == 200
    await api.gateway.drain()
    async with api.gateway.store.connect() as conn:  # as a database restart would
        await conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    for _ in range(3):
        assert (await api.post("/v1/chat/completions", json=chat_body(), headers=api.auth)).status == 200
    assert await balance(api) == 96
    assert await api.gateway.ledger.check() == []
