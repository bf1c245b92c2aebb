"""The cloud simulator on a real socket, and the backend against it (streams, failures, disconnects, timeouts)."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import orjson
import pytest
from click.testing import CliRunner
from cloud_helpers import chat_request
from resayil_cloud.backend import CREDENTIALS_REFUSED
from resayil_cloud.simulator import SIMULATOR_API_KEY, SimulatorConfig, simulator_command

from resayil_gateway.domain import EmbeddingRequest
from resayil_gateway.errors import (
    NoCapacity,
    UpstreamBadRequest,
    UpstreamModelNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from resayil_gateway.testing import module_server, pooled_connections

HI = {"role": "user", "content": "hi"}
AUTH = {"Authorization": f"Bearer {SIMULATOR_API_KEY}"}


async def post(url: str, path: str, body: dict, headers: dict | None = None) -> tuple[int, str, bytes]:
    headers = AUTH if headers is None else headers
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.read()


def events(raw: bytes) -> list:
    found = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block.removeprefix("data: ")
            found.append(data if data == "[DONE]" else orjson.loads(data))
    return found


# the HTTP surface -------------------------------------------------------------------------------------------


async def test_wrong_or_missing_key_is_openais_401_with_the_key_masked(simulator):
    sim = await simulator()
    for headers in ({}, {"Authorization": "Bearer sk-wrong-key-123456"}):
        status, _, raw = await post(sim.url, "/v1/chat/completions", {"model": "gpt-oss:20b"}, headers)
        error = orjson.loads(raw)["error"]
        assert (status, error["code"], error["type"]) == (401, "invalid_api_key", "invalid_request_error")
        assert "sk-wrong-key-123456" not in error["message"]
    assert sim.state.stats.unauthorized == 2


async def test_models_lists_chat_and_embedding_models_without_the_cloud_suffix(simulator):
    sim = await simulator()
    async with aiohttp.ClientSession() as session, session.get(sim.url + "/v1/models", headers=AUTH) as resp:
        listing = await resp.json()
    assert listing["object"] == "list"
    ids = [model["id"] for model in listing["data"]]
    assert {"gpt-oss:20b", "gpt-oss:120b", "embeddinggemma:300m"} <= set(ids)
    assert not any(name.endswith("cloud") for name in ids)


async def test_stream_is_sse_with_a_finish_chunk_a_usage_chunk_and_done(simulator):
    sim = await simulator(reply_tokens=5)
    body = {"model": "gpt-oss:20b", "messages": [HI], "stream": True, "stream_options": {"include_usage": True}}
    status, content_type, raw = await post(sim.url, "/v1/chat/completions", body)
    assert (status, content_type) == (200, "text/event-stream")
    *tokens, finish, usage, done = events(raw)
    assert [t["choices"][0]["delta"].get("content") is not None for t in tokens] == [True] * 5
    assert tokens[0]["choices"][0]["delta"]["role"] == "assistant"
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert done == "[DONE]"


async def test_stream_without_include_usage_has_no_usage_chunk(simulator):
    sim = await simulator(reply_tokens=2)
    body = {"model": "gpt-oss:20b", "messages": [HI], "stream": True}
    *_, finish, done = events((await post(sim.url, "/v1/chat/completions", body))[2])
    assert finish["choices"][0]["finish_reason"] == "stop" and done == "[DONE]"


async def test_whole_answers_and_prompt_counts_are_deterministic(simulator):
    sim = await simulator(reply_tokens=4)
    body = {"model": "gpt-oss:20b", "messages": [{"role": "user", "content": "x" * 40}]}
    first = orjson.loads((await post(sim.url, "/v1/chat/completions", body))[2])
    second = orjson.loads((await post(sim.url, "/v1/chat/completions", body))[2])
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["usage"]["prompt_tokens"] == math.ceil(40 / 4) + 4 + 1
    assert first["usage"]["completion_tokens"] == 4


async def test_suffixed_or_unknown_model_is_a_404(simulator):
    sim = await simulator()
    for model in ("gpt-oss:120b-cloud", "nope"):
        status, _, raw = await post(sim.url, "/v1/chat/completions", {"model": model, "messages": [HI]})
        assert status == 404
        assert orjson.loads(raw)["error"]["type"] == "not_found_error"


async def test_embeddings_are_deterministic_unit_vectors(simulator):
    sim = await simulator()
    body = {"model": "embeddinggemma:300m", "input": ["a", "b"], "dimensions": 64}
    first = orjson.loads((await post(sim.url, "/v1/embeddings", body))[2])
    second = orjson.loads((await post(sim.url, "/v1/embeddings", body))[2])
    vectors = [item["embedding"] for item in first["data"]]
    assert [len(v) for v in vectors] == [64, 64]
    assert vectors == [item["embedding"] for item in second["data"]]
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-9)
    assert first["usage"]["prompt_tokens"] > 0


async def test_failures_on_demand_answer_the_next_requests_then_stop(simulator):
    sim = await simulator()
    failure = {"status": 503, "count": 2}
    async with aiohttp.ClientSession() as session, session.post(sim.url + "/_sim/fail", json=failure) as resp:
        assert resp.status == 200
    body = {"model": "gpt-oss:20b", "messages": [HI]}
    statuses = [(await post(sim.url, "/v1/chat/completions", body))[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    async with aiohttp.ClientSession() as session, session.get(sim.url + "/_sim/stats") as resp:
        stats = await resp.json()
    assert (stats["requests"], stats["errors"], stats["completed"]) == (3, 2, 1)


async def test_in_flight_limit_answers_429(simulator):
    sim = await simulator(max_in_flight=1, tokens_per_second=50, reply_tokens=500)
    body = {"model": "gpt-oss:20b", "messages": [HI], "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.url + "/v1/chat/completions", json=body, headers=AUTH) as holder,
    ):
        await holder.content.readline()
        status, _, _ = await post(sim.url, "/v1/chat/completions", body)
    assert status == 429
    assert sim.state.stats.rejected == 1


# the backend against the simulator ----------------------------------------------------------------------------


async def test_backend_streams_from_the_simulator_with_usage(simulator, backend_for):
    sim = await simulator(reply_tokens=6)
    backend = await backend_for(sim.url)
    deltas = [d async for d in backend.stream_chat(chat_request(max_tokens=4), "gpt-oss:120b-cloud")]
    assert [d.content is not None for d in deltas] == [True, True, True, True, False]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 4
    assert sim.state.last_body is not None and sim.state.last_body["model"] == "gpt-oss:120b"


async def test_backend_discovers_the_simulators_models_and_is_ready(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url, discover=True)
    capabilities = {m.name: m.capabilities for m in backend.models()}
    assert capabilities["gpt-oss:120b"] == ("chat",)
    assert capabilities["embeddinggemma:300m"] == ("embedding",)
    assert await backend.ready() is True


async def test_backend_with_a_wrong_key_is_refused_and_not_ready(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url, api_key="sk-not-the-right-one")
    with pytest.raises(UpstreamUnavailable) as caught:
        await backend.chat(chat_request(), "gpt-oss:20b")
    assert caught.value.message == CREDENTIALS_REFUSED
    assert await backend.ready() is False


async def test_closing_the_stream_early_cancels_the_upstream_request(simulator, backend_for):
    sim = await simulator(tokens_per_second=100, reply_tokens=1000)
    backend = await backend_for(sim.url)
    stream = backend.stream_chat(chat_request(), "gpt-oss:20b")
    assert (await anext(stream)).content == "Hello"
    await anext(stream)
    assert sim.state.stats.in_flight == 1

    await stream.aclose()  # the client went away

    async with asyncio.timeout(5):
        await sim.state.stats.wait_until(lambda s: s.cancelled == 1 and s.in_flight == 0)
    assert sim.state.stats.completed == 0


async def test_stopping_at_finish_reason_keeps_the_upstream_connection_for_reuse(simulator, backend_for):
    sim = await simulator(reply_tokens=3)
    backend = await backend_for(sim.url)
    connections = set()
    for _ in range(3):
        stream = backend.stream_chat(chat_request(), "gpt-oss:20b")
        async for delta in stream:  # stop at the finish delta, as the gateway does, then close the stream
            if delta.finish_reason is not None:
                break
        await stream.aclose()
        connections |= pooled_connections(backend._session)
    assert len(connections) == 1
    assert sim.state.stats.cancelled == 0


@pytest.mark.parametrize(
    ("hook", "error"),
    [("__sim_midstream_error__", UpstreamUnavailable), ("__sim_midstream_cut__", UpstreamUnavailable)],
)
async def test_broken_streams_raise_after_two_tokens(simulator, backend_for, hook, error):
    sim = await simulator()
    backend = await backend_for(sim.url)
    received = []
    with pytest.raises(error):
        async for delta in backend.stream_chat(chat_request(hook), "gpt-oss:20b"):
            received.append(delta.content)
    assert len(received) == 2


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, UpstreamBadRequest), (429, NoCapacity), (503, NoCapacity), (500, UpstreamUnavailable)],
)
async def test_status_hooks_map_to_gateway_errors(simulator, backend_for, status, error):
    sim = await simulator()
    backend = await backend_for(sim.url)
    with pytest.raises(error):
        await backend.chat(chat_request(f"__sim_http_{status}__"), "gpt-oss:20b")


async def test_injected_429_carries_the_simulators_retry_after(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url)
    sim.state.fail_next(429)
    with pytest.raises(NoCapacity) as caught:
        await backend.chat(chat_request(), "gpt-oss:20b")
    assert caught.value.headers["Retry-After"] == "2"


async def test_unknown_model_is_model_not_found_through_the_backend(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url, dialect="openai")  # no suffix stripping
    with pytest.raises(UpstreamModelNotFound):
        await backend.chat(chat_request(), "gpt-oss:120b-cloud")


async def test_tool_call_hook_comes_back_as_openai_tool_calls(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url)
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    result = await backend.chat(chat_request("__sim_tool_call__", tools=(tool,)), "gpt-oss:20b")
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls and result.tool_calls[0]["function"]["name"] == "weather"
    deltas = [d async for d in backend.stream_chat(chat_request("__sim_tool_call__", tools=(tool,)), "gpt-oss:20b")]
    assert deltas[0].tool_calls and deltas[0].tool_calls[0]["index"] == 0
    assert deltas[-1].finish_reason == "tool_calls"


async def test_embed_through_the_backend(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url)
    result = await backend.embed(EmbeddingRequest(model="e", inputs=("a", "b", "c")), "embeddinggemma:300m")
    assert [len(v) for v in result.vectors] == [768, 768, 768]
    assert result.usage.prompt_tokens > 0


async def test_slow_first_token_is_upstream_timeout(simulator, backend_for):
    sim = await simulator(latency_ms=2000)
    backend = await backend_for(sim.url, timeout_s=0.05)
    with pytest.raises(UpstreamTimeout) as caught:
        await anext(backend.stream_chat(chat_request(), "gpt-oss:20b"))
    assert caught.value.status == 504


async def test_stalled_stream_is_upstream_timeout(simulator, backend_for):
    sim = await simulator(tokens_per_second=1, reply_tokens=5)
    backend = await backend_for(sim.url, timeout_s=0.05)
    received = []
    with pytest.raises(UpstreamTimeout):
        async for delta in backend.stream_chat(chat_request(), "gpt-oss:20b"):
            received.append(delta.content)
    assert received == ["Hello"]


# running it ---------------------------------------------------------------------------------------------------


def test_config_refuses_nonsense():
    with pytest.raises(ValueError):
        SimulatorConfig(latency_ms=-1)
    with pytest.raises(ValueError):
        SimulatorConfig(reply_tokens=0)


def test_command_line_lists_its_options():
    result = CliRunner().invoke(simulator_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--latency", "--tokens-per-second", "--api-key", "--max-in-flight"):
        assert option in result.output


async def test_python_dash_m_serves_the_cloud_api():
    async with (
        module_server("resayil_cloud.simulator", "--models", "tiny:1b", "--latency", "5") as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/models", headers=AUTH) as resp,
    ):
        names = [m["id"] for m in (await resp.json())["data"]]
    assert names[0] == "tiny:1b"
