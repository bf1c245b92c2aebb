"""OllamaBackend against mocked HTTP (aioresponses): requests sent, answers read, errors mapped."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses
from ollama_helpers import FAKE_URL, chat_request
from resayil_ollama.backend import OllamaBackend
from resayil_ollama.settings import OllamaSettings
from yarl import URL

from resayil_gateway.domain import EmbeddingRequest, Usage
from resayil_gateway.errors import (
    NoCapacity,
    UpstreamBadRequest,
    UpstreamModelNotFound,
    UpstreamUnavailable,
)
from resayil_gateway.routing.backends import Backend

CHAT = f"{FAKE_URL}/api/chat"
TAGS = f"{FAKE_URL}/api/tags"
EMBED = f"{FAKE_URL}/api/embed"


def ndjson(*lines: dict) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in lines)


def token(text: str) -> dict:
    return {"model": "llama3.2:3b", "message": {"role": "assistant", "content": text}, "done": False}


FINAL = {
    "model": "llama3.2:3b",
    "message": {"role": "assistant", "content": ""},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 12,
    "eval_count": 2,
}


def sent_body(mocked: aioresponses, url: str, method: str = "POST") -> dict:
    (call,) = mocked.requests[(method, URL(url))]
    return orjson.loads(call.kwargs["data"])


async def collect(backend: OllamaBackend, **fields) -> list:
    return [delta async for delta in backend.stream_chat(chat_request(**fields), "llama3.2:3b")]


def test_backend_implements_the_protocol():
    backend = OllamaBackend(OllamaSettings(name="gpu-box", max_concurrency=4))
    assert isinstance(backend, Backend)
    assert (backend.name, backend.kind, backend.max_concurrency) == ("gpu-box", "local", 4)


# chat ------------------------------------------------------------------------------------------------------


async def test_chat_returns_the_whole_answer_with_usage(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, payload={**FINAL, "message": {"role": "assistant", "content": "Hello!"}})
        result = await backend.chat(chat_request(), "llama3.2:3b")
    assert result.content == "Hello!"
    assert result.finish_reason == "stop"
    assert result.usage == Usage(prompt_tokens=12, completion_tokens=2)


async def test_chat_sends_a_native_non_streamed_body_with_configured_options(backend_for):
    backend = await backend_for(FAKE_URL, keep_alive="10m", num_ctx=4096)
    with aioresponses() as mocked:
        mocked.post(CHAT, payload=FINAL)
        await backend.chat(chat_request(max_tokens=50, temperature=0.1), "qwen2.5-coder:14b")
        body = sent_body(mocked, CHAT)
    assert body["model"] == "qwen2.5-coder:14b"
    assert body["stream"] is False
    assert body["keep_alive"] == "10m"
    assert body["options"] == {"num_predict": 50, "temperature": 0.1, "num_ctx": 4096}
    assert body["messages"] == [{"role": "user", "content": "hi"}]


async def test_stream_chat_yields_one_delta_per_line_then_finish_and_usage(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, body=ndjson(token("Hel"), token("lo"), FINAL), content_type="application/x-ndjson")
        deltas = await collect(backend)
        body = sent_body(mocked, CHAT)
    assert body["stream"] is True
    assert [d.content for d in deltas] == ["Hel", "lo", None]
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == Usage(prompt_tokens=12, completion_tokens=2)


async def test_stream_chat_skips_blank_lines(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, body=b"\n" + ndjson(token("a")) + b"\n\n" + ndjson(FINAL))
        deltas = await collect(backend)
    assert [d.content for d in deltas] == ["a", None]


async def test_stream_chat_joins_lines_split_across_network_reads(backend, monkeypatch):
    pieces = iter(
        [
            b'{"message":{"role":"assistant","con',
            b'tent":"Hi"},"done":false}\n{"message":{"content":"!"},"done":false}\n{"done":true,',
            b'"done_reason":"stop","eval_count":2}\n',
        ]
    )

    async def read_chunk(resp, deadline):
        return next(pieces, b"")

    monkeypatch.setattr(backend, "_read_chunk", read_chunk)
    with aioresponses() as mocked:
        mocked.post(CHAT, body=b"")
        deltas = await collect(backend)
    assert [d.content for d in deltas] == ["Hi", "!", None]
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 2


async def test_stream_chat_reads_a_last_line_without_newline(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, body=ndjson(token("a")) + orjson.dumps(FINAL))
        deltas = await collect(backend)
    assert deltas[-1].finish_reason == "stop"


async def test_stream_chat_relays_tool_calls(backend):
    call_line = {"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "w"}}]}}
    with aioresponses() as mocked:
        mocked.post(CHAT, body=ndjson(call_line, FINAL))
        deltas = await collect(backend)
    assert deltas[0].tool_calls[0]["function"] == {"name": "w", "arguments": "{}"}
    assert deltas[-1].finish_reason == "tool_calls"


# errors -----------------------------------------------------------------------------------------------------


def refused() -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("ollama.internal.test", 11434, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


async def test_dns_failure_is_upstream_unavailable(backend):
    key = aiohttp.client_reqrep.ConnectionKey("ollama.internal.test", 11434, False, True, None, None, None)
    with aioresponses() as mocked:
        mocked.post(CHAT, exception=aiohttp.ClientConnectorDNSError(key, OSError(-2, "Name or service not known")))
        with pytest.raises(UpstreamUnavailable) as caught:
            await collect(backend)
    assert "ollama.internal.test" not in caught.value.message


async def test_http_404_is_model_not_found_with_ollamas_message(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, status=404, payload={"error": 'model "nope" not found, try pulling it first'})
        with pytest.raises(UpstreamModelNotFound) as caught:
            await backend.chat(chat_request(), "nope")
    assert caught.value.status == 404
    assert "not found" in caught.value.message


async def test_http_503_is_no_capacity_with_retry_after(backend):
    busy = {"error": "server busy, please try again.  maximum pending requests exceeded"}
    with aioresponses() as mocked:
        mocked.post(CHAT, status=503, payload=busy)
        with pytest.raises(NoCapacity) as caught:
            await collect(backend)
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"] == "1"


async def test_http_400_is_upstream_bad_request_with_ollamas_message(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, status=400, payload={"error": '"bge-m3:latest" does not support chat'})
        with pytest.raises(UpstreamBadRequest) as caught:
            await backend.chat(chat_request(), "bge-m3")
    assert caught.value.status == 400
    assert caught.value.message == '"bge-m3:latest" does not support chat'


@pytest.mark.parametrize("status", [401, 429, 500, 502])
async def test_other_error_statuses_are_upstream_unavailable(backend, status):
    with aioresponses() as mocked:
        mocked.post(CHAT, status=status, body=b"oops")
        with pytest.raises(UpstreamUnavailable) as caught:
            await backend.chat(chat_request(), "llama3.2:3b")
    assert caught.value.status == 502


async def test_midstream_error_line_raises_upstream_unavailable_after_the_tokens(backend):
    received = []
    with aioresponses() as mocked:
        mocked.post(CHAT, body=ndjson(token("a"), token("b"), {"error": "runner crashed"}))
        with pytest.raises(UpstreamUnavailable) as caught:
            async for delta in backend.stream_chat(chat_request(), "llama3.2:3b"):
                received.append(delta.content)
    assert received == ["a", "b"]
    assert "runner crashed" in caught.value.message


async def test_stream_that_ends_without_done_raises_upstream_unavailable(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, body=ndjson(token("a")))
        with pytest.raises(UpstreamUnavailable):
            await collect(backend)


async def test_unreadable_line_raises_upstream_unavailable(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, body=b"<html>proxy error</html>\n")
        with pytest.raises(UpstreamUnavailable):
            await collect(backend)


# discovery --------------------------------------------------------------------------------------------------

TAGS_ANSWER = {
    "models": [
        {"name": "llama3.2:3b", "modified_at": "2025-05-01T07:00:00Z", "details": {"family": "llama"}},
        {"name": "bge-m3:latest", "modified_at": "2025-05-01T07:00:00Z", "details": {"family": "bert"}},
    ]
}


async def test_discovery_reads_tags_at_start_and_models_is_served_from_cache():
    backend = OllamaBackend(OllamaSettings(url=FAKE_URL, discover=True))
    with aioresponses() as mocked:
        mocked.get(TAGS, payload=TAGS_ANSWER)
        await backend.start()
        try:
            for _ in range(5):
                models = backend.models()
            assert len(mocked.requests[("GET", URL(TAGS))]) == 1
        finally:
            await backend.close()
    assert [(m.name, m.capabilities, m.created) for m in models] == [
        ("llama3.2:3b", ("chat",), 1746082800),
        ("bge-m3:latest", ("embedding",), 1746082800),
    ]


async def test_discovery_failure_at_start_is_not_fatal_and_logged_once(caplog):
    backend = OllamaBackend(OllamaSettings(url=FAKE_URL, discover=True))
    caplog.set_level(logging.WARNING, logger="resayil_ollama")
    with aioresponses() as mocked:
        mocked.get(TAGS, exception=refused(), repeat=True)
        await backend.start()
        try:
            assert await backend.refresh_models() is False
        finally:
            await backend.close()
    assert backend.models() == ()
    assert len([r for r in caplog.records if "discovery" in r.getMessage()]) == 1


# embeddings and readiness -----------------------------------------------------------------------------------


async def test_embed_sends_inputs_with_truncate_and_dimensions(backend):
    answer = {"model": "bge-m3", "embeddings": [[0.1, 0.2], [0.3, 0.4]], "prompt_eval_count": 9}
    with aioresponses() as mocked:
        mocked.post(EMBED, payload=answer)
        result = await backend.embed(EmbeddingRequest(model="e", inputs=("a", "b"), dimensions=2), "bge-m3")
        body = sent_body(mocked, EMBED)
    assert body == {"model": "bge-m3", "input": ["a", "b"], "truncate": True, "dimensions": 2}
    assert result.vectors == ((0.1, 0.2), (0.3, 0.4))
    assert result.usage == Usage(prompt_tokens=9)


async def test_embed_maps_errors_like_chat(backend):
    with aioresponses() as mocked:
        mocked.post(EMBED, status=404, payload={"error": 'model "x" not found, try pulling it first'})
        with pytest.raises(UpstreamModelNotFound):
            await backend.embed(EmbeddingRequest(model="x", inputs=("a",)), "x")


async def test_embed_with_a_wrong_vector_count_is_unavailable(backend):
    with aioresponses() as mocked:
        mocked.post(EMBED, payload={"embeddings": [[0.1]]})
        with pytest.raises(UpstreamUnavailable):
            await backend.embed(EmbeddingRequest(model="e", inputs=("a", "b")), "bge-m3")


async def test_ready_is_true_when_version_answers(backend):
    with aioresponses() as mocked:
        mocked.get(f"{FAKE_URL}/api/version", payload={"version": "0.14.3"})
        assert await backend.ready() is True
