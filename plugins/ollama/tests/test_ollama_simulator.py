"""The Ollama simulator on a real socket, and the backend against it (streams, limits, disconnects, timeouts)."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import orjson
import pytest
from click.testing import CliRunner
from ollama_helpers import chat_request
from resayil_ollama.simulator import BUSY_ERROR, SimulatorConfig, simulator_command

from resayil_gateway.domain import EmbeddingRequest
from resayil_gateway.errors import UpstreamModelNotFound, UpstreamTimeout, UpstreamUnavailable
from resayil_gateway.testing import module_server, pooled_connections

HI = {"role": "user", "content": "hi"}


async def post(url: str, path: str, body: dict) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body) as resp:
        return resp.status, resp.content_type, await resp.read()


def lines(raw: bytes) -> list[dict]:
    return [orjson.loads(line) for line in raw.splitlines() if line.strip()]


# the HTTP surface -------------------------------------------------------------------------------------------


async def test_root_says_ollama_is_running_and_version_answers(simulator):
    sim = await simulator()
    async with aiohttp.ClientSession() as session:
        async with session.get(sim.url + "/") as resp:
            assert await resp.text() == "Ollama is running"
        async with session.get(sim.url + "/api/version") as resp:
            assert (await resp.json())["version"]


async def test_tags_lists_chat_and_restricted_models_with_details(simulator):
    sim = await simulator()
    async with aiohttp.ClientSession() as session, session.get(sim.url + "/api/tags") as resp:
        models = {m["name"]: m for m in (await resp.json())["models"]}
    assert {"llama3.2:3b", "qwen2.5-coder:14b", "smollm2:135m"} <= set(models)
    assert {"bge-m3:latest", "nomic-embed-text:latest", "glm-4.7-flash:latest"} <= set(models)
    entry = models["bge-m3:latest"]
    assert entry["details"]["family"] == "bert"
    assert {"model", "modified_at", "size", "digest"} <= set(entry)


async def test_models_are_configurable(simulator):
    sim = await simulator(models=("tiny:1b",))
    status, _, _ = await post(sim.url, "/api/chat", {"model": "llama3.2:3b", "messages": [HI]})
    assert status == 404
    status, _, _ = await post(sim.url, "/api/chat", {"model": "tiny:1b", "messages": [HI], "stream": False})
    assert status == 200


async def test_stream_is_ndjson_with_one_token_a_line_and_a_final_metrics_line(simulator):
    sim = await simulator(reply_tokens=5)
    status, content_type, raw = await post(sim.url, "/api/chat", {"model": "llama3.2:3b", "messages": [HI]})
    assert (status, content_type) == (200, "application/x-ndjson")
    *tokens, final = lines(raw)
    assert len(tokens) == 5
    assert all(t["done"] is False and t["message"]["role"] == "assistant" for t in tokens)
    assert all(t["model"] == "llama3.2:3b" and t["created_at"].endswith("Z") for t in tokens)
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == 5
    assert final["prompt_eval_count"] > 0
    assert {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"} <= set(final)


async def test_stream_false_answers_one_json_object(simulator):
    sim = await simulator(reply_tokens=4)
    body = {"model": "llama3.2", "messages": [HI], "stream": False}  # ":latest" is implied
    sim.state.models["llama3.2:latest"] = sim.state.models["llama3.2:3b"]
    status, content_type, raw = await post(sim.url, "/api/chat", body)
    data = orjson.loads(raw)
    assert (status, content_type) == (200, "application/json")
    assert data["done"] is True
    assert data["eval_count"] == 4
    assert data["message"]["content"].startswith("Hello")


async def test_num_predict_cuts_the_reply_and_sets_length(simulator):
    sim = await simulator(reply_tokens=20)
    body = {"model": "llama3.2:3b", "messages": [HI], "options": {"num_predict": 3}}
    *tokens, final = lines((await post(sim.url, "/api/chat", body))[2])
    assert len(tokens) == 3
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 3


async def test_replies_and_prompt_counts_are_deterministic(simulator):
    sim = await simulator()
    body = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "x" * 40}], "stream": False}
    first = orjson.loads((await post(sim.url, "/api/chat", body))[2])
    second = orjson.loads((await post(sim.url, "/api/chat", body))[2])
    assert first["message"] == second["message"]
    assert first["prompt_eval_count"] == second["prompt_eval_count"] == math.ceil(40 / 4) + 4 + 1


async def test_unknown_model_is_ollamas_404(simulator):
    sim = await simulator()
    status, _, raw = await post(sim.url, "/api/chat", {"model": "nope", "messages": [HI]})
    assert status == 404
    assert orjson.loads(raw) == {"error": 'model "nope" not found, try pulling it first'}


async def test_embedding_model_cannot_chat(simulator):
    sim = await simulator()
    status, _, raw = await post(sim.url, "/api/chat", {"model": "bge-m3", "messages": [HI]})
    assert status == 400
    assert "does not support chat" in orjson.loads(raw)["error"]


@pytest.mark.parametrize(("model", "size"), [("bge-m3", 1024), ("nomic-embed-text", 768), ("llama3.2:3b", 384)])
async def test_embed_returns_deterministic_unit_vectors_sized_by_model(simulator, model, size):
    sim = await simulator()
    body = {"model": model, "input": ["a", "b"]}
    first = orjson.loads((await post(sim.url, "/api/embed", body))[2])
    second = orjson.loads((await post(sim.url, "/api/embed", body))[2])
    assert [len(v) for v in first["embeddings"]] == [size, size]
    assert first["embeddings"] == second["embeddings"]
    assert first["embeddings"][0] != first["embeddings"][1]
    assert math.isclose(sum(x * x for x in first["embeddings"][0]), 1.0, rel_tol=1e-9)
    assert first["prompt_eval_count"] > 0


async def test_embed_honours_dimensions(simulator):
    sim = await simulator()
    data = orjson.loads((await post(sim.url, "/api/embed", {"model": "bge-m3", "input": "a", "dimensions": 64}))[2])
    assert [len(v) for v in data["embeddings"]] == [64]


# queue and slots ---------------------------------------------------------------------------------------------


async def test_request_beyond_the_queue_limit_gets_ollamas_exact_503(simulator):
    sim = await simulator(parallel=1, max_queue=0, tokens_per_second=50, reply_tokens=500)
    async with aiohttp.ClientSession() as session:
        body = {"model": "llama3.2:3b", "messages": [HI]}
        async with session.post(sim.url + "/api/chat", json=body) as holder:
            await holder.content.readline()  # the slot is taken
            async with session.post(sim.url + "/api/chat", json=body) as refused:
                assert refused.status == 503
                assert await refused.read() == b'{"error":"' + BUSY_ERROR.encode() + b'"}'
    assert "please try again.  maximum" in BUSY_ERROR
    assert sim.state.stats.rejected == 1


async def test_waiting_request_runs_when_the_slot_frees(simulator):
    sim = await simulator(parallel=1, max_queue=1, first_token_ms=0, reply_tokens=3, tokens_per_second=200)
    body = {"model": "llama3.2:3b", "messages": [HI], "stream": False}
    results = await asyncio.gather(*(post(sim.url, "/api/chat", body) for _ in range(2)))
    assert [status for status, _, _ in results] == [200, 200]
    assert sim.state.stats.snapshot()["completed"] == 2


async def test_separate_models_have_separate_slots(simulator):
    sim = await simulator(parallel=1, max_queue=0, tokens_per_second=50, reply_tokens=500)
    body = {"model": "llama3.2:3b", "messages": [HI]}
    async with aiohttp.ClientSession() as session, session.post(sim.url + "/api/chat", json=body) as holder:
        await holder.content.readline()
        other = {"model": "smollm2:135m", "messages": [HI], "options": {"num_predict": 1}}
        status, _, _ = await post(sim.url, "/api/chat", other)
    assert status == 200


async def test_stats_endpoint_counts_requests(simulator):
    sim = await simulator()
    await post(sim.url, "/api/chat", {"model": "llama3.2:3b", "messages": [HI]})
    async with aiohttp.ClientSession() as session, session.get(sim.url + "/_sim/stats") as resp:
        stats = await resp.json()
    assert stats["requests"] == 1
    assert stats["completed"] == 1
    assert stats["in_flight"] == 0
    assert stats["cancelled"] == 0


# the backend against the simulator ----------------------------------------------------------------------------


async def test_backend_streams_from_the_simulator_line_by_line(simulator, backend_for):
    sim = await simulator(reply_tokens=6, tokens_per_second=0)
    backend = await backend_for(sim.url)
    deltas = [d async for d in backend.stream_chat(chat_request(max_tokens=4), "llama3.2:3b")]
    assert [d.content is not None for d in deltas] == [True, True, True, True, False]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 4


async def test_backend_discovers_the_simulators_models(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url, discover=True)
    capabilities = {m.name: m.capabilities for m in backend.models()}
    assert capabilities["bge-m3:latest"] == ("embedding",)
    assert capabilities["llama3.2:3b"] == ("chat",)
    assert await backend.ready() is True


async def test_closing_the_stream_early_frees_the_slot_and_counts_a_cancel(simulator, backend_for):
    sim = await simulator(parallel=1, max_queue=0, tokens_per_second=100, reply_tokens=1000)
    backend = await backend_for(sim.url)
    stream = backend.stream_chat(chat_request(), "llama3.2:3b")
    assert (await anext(stream)).content == "Hello"
    await anext(stream)
    assert sim.state.stats.in_flight == 1

    await stream.aclose()  # the client went away

    async with asyncio.timeout(5):
        await sim.state.stats.wait_until(lambda s: s.cancelled == 1 and s.in_flight == 0)
    async with aiohttp.ClientSession() as session, session.get(sim.url + "/_sim/stats") as resp:
        stats = await resp.json()
    assert (stats["cancelled"], stats["in_flight"], stats["completed"]) == (1, 0, 0)
    result = await backend.chat(chat_request(max_tokens=2), "llama3.2:3b")  # max_queue=0: needs a free slot
    assert result.finish_reason == "length"


async def test_midstream_error_hook_raises_after_two_tokens(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url)
    received = []
    with pytest.raises(UpstreamUnavailable):
        async for delta in backend.stream_chat(chat_request("__sim_midstream_error__"), "llama3.2:3b"):
            received.append(delta.content)
    assert len(received) == 2


async def test_http_500_hook_is_upstream_unavailable(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url)
    with pytest.raises(UpstreamUnavailable) as caught:
        await backend.chat(chat_request("__sim_http_500__"), "llama3.2:3b")
    assert caught.value.status == 502


async def test_unknown_model_is_model_not_found_through_the_backend(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url)
    with pytest.raises(UpstreamModelNotFound):
        await backend.chat(chat_request(), "nope:1b")


async def test_tool_call_hook_comes_back_as_openai_tool_calls(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url)
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    result = await backend.chat(chat_request("__sim_tool_call__", tools=(tool,)), "llama3.2:3b")
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls and result.tool_calls[0]["function"]["name"] == "weather"


async def test_embed_through_the_backend(simulator, backend_for):
    sim = await simulator()
    backend = await backend_for(sim.url)
    result = await backend.embed(EmbeddingRequest(model="e", inputs=("a", "b", "c")), "nomic-embed-text")
    assert [len(v) for v in result.vectors] == [768, 768, 768]
    assert result.usage.prompt_tokens > 0


async def test_slow_first_token_is_upstream_timeout(simulator, backend_for):
    sim = await simulator(first_token_ms=2000)
    backend = await backend_for(sim.url, first_token_timeout_s=0.05)
    with pytest.raises(UpstreamTimeout) as caught:
        await anext(backend.stream_chat(chat_request(), "llama3.2:3b"))
    assert caught.value.status == 504


async def test_stalled_stream_is_upstream_timeout(simulator, backend_for):
    sim = await simulator(tokens_per_second=1, reply_tokens=5)
    backend = await backend_for(sim.url, read_timeout_s=0.05)
    received = []
    with pytest.raises(UpstreamTimeout):
        async for delta in backend.stream_chat(chat_request(), "llama3.2:3b"):
            received.append(delta.content)
    assert received == ["Hello"]


# running it ---------------------------------------------------------------------------------------------------


def test_config_refuses_nonsense():
    with pytest.raises(ValueError):
        SimulatorConfig(parallel=0)
    with pytest.raises(ValueError):
        SimulatorConfig(max_queue=-1)


def test_command_line_lists_its_options():
    result = CliRunner().invoke(simulator_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--first-token-ms", "--tokens-per-second", "--parallel", "--max-queue"):
        assert option in result.output
    assert "--models" in result.output


async def test_python_dash_m_serves_ollamas_api():
    async with (
        module_server("resayil_ollama.simulator", "--models", "tiny:1b") as url,
        aiohttp.ClientSession() as session,
        session.get(f"{url}/api/tags") as resp,
    ):
        names = [m["name"] for m in (await resp.json())["models"]]
    assert names == ["tiny:1b"]


async def test_stopping_at_finish_reason_keeps_the_upstream_connection_for_reuse(simulator, backend_for):
    sim = await simulator(reply_tokens=3, tokens_per_second=0)
    backend = await backend_for(sim.url)
    connections = set()
    for _ in range(3):
        stream = backend.stream_chat(chat_request(), "llama3.2:3b")
        async for delta in stream:  # stop at the finish delta, as the gateway does, then close the stream
            if delta.finish_reason is not None:
                break
        await stream.aclose()
        connections |= pooled_connections(backend._session)
    assert len(connections) == 1
    assert sim.state.stats.snapshot()["cancelled"] == 0
