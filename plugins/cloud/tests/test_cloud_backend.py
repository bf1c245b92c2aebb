"""CloudBackend against mocked HTTP (aioresponses): requests sent, answers read, errors mapped, the key kept secret."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses
from cloud_helpers import FAKE_KEY, FAKE_URL, chat_request
from resayil_cloud.backend import CREDENTIALS_REFUSED, NO_EMBEDDINGS, CloudBackend
from resayil_cloud.settings import CloudSettings
from yarl import URL

from resayil_gateway.domain import EmbeddingRequest, Usage
from resayil_gateway.errors import (
    NoCapacity,
    UpstreamBadRequest,
    UpstreamModelNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from resayil_gateway.routing.backends import Backend

CHAT = f"{FAKE_URL}/v1/chat/completions"
EMBEDDINGS = f"{FAKE_URL}/v1/embeddings"
MODELS = f"{FAKE_URL}/v1/models"
TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


def sse(*events: dict | str) -> bytes:
    return b"".join(b"data: " + (e.encode() if isinstance(e, str) else orjson.dumps(e)) + b"\n\n" for e in events)


def chunk(delta: dict, finish_reason: str | None = None) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {"object": "chat.completion.chunk", "choices": [choice]}


USAGE = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 2}}
COMPLETION = {
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}


def sent(mocked: aioresponses, url: str, method: str = "POST") -> tuple[dict, dict]:
    """The body and headers of the one request sent to ``url``."""
    (call,) = mocked.requests[(method, URL(url))]
    body = orjson.loads(call.kwargs["data"]) if call.kwargs.get("data") else {}
    return body, call.kwargs["headers"]


async def collect(backend: CloudBackend, model: str = "gpt-oss:120b", **fields) -> list:
    return [delta async for delta in backend.stream_chat(chat_request(**fields), model)]


async def started(**settings) -> CloudBackend:
    backend = CloudBackend(CloudSettings(url=FAKE_URL, api_key=FAKE_KEY, **{"discover": False, **settings}))
    await backend.start()
    return backend


def test_backend_implements_the_protocol_and_exposes_its_budget():
    settings = CloudSettings(
        name="sky", max_concurrency=4, daily_request_budget=50, budget_alert_ratios=(0.5, 0.9, 1.0), api_key=FAKE_KEY
    )
    backend = CloudBackend(settings)
    assert isinstance(backend, Backend)
    assert (backend.name, backend.kind, backend.max_concurrency) == ("sky", "cloud", 4)
    assert backend.daily_request_budget == 50
    assert backend.budget_alert_ratios == (0.5, 0.9, 1.0)
    assert FAKE_KEY not in repr(backend)


# chat ------------------------------------------------------------------------------------------------------


async def test_chat_returns_the_whole_answer_with_usage(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, payload=COMPLETION)
        result = await backend.chat(chat_request(), "gpt-oss:120b")
    assert result.content == "Hello!"
    assert result.finish_reason == "stop"
    assert result.usage == Usage(prompt_tokens=12, completion_tokens=2)


async def test_chat_sends_the_bearer_key_and_an_openai_body(backend):
    fields = {"max_tokens": 50, "temperature": 0.1, "stop": ("END",), "tools": (TOOL,), "tool_choice": "auto"}
    with aioresponses() as mocked:
        mocked.post(CHAT, payload=COMPLETION)
        await backend.chat(chat_request(**fields), "gpt-oss:120b")
        body, headers = sent(mocked, CHAT)
    assert headers["Authorization"] == f"Bearer {FAKE_KEY}"
    assert body == {
        "model": "gpt-oss:120b",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "temperature": 0.1,
        "stop": ["END"],
        "tools": [TOOL],
        "tool_choice": "auto",
        "stream": False,
    }


@pytest.mark.parametrize(
    ("catalog_name", "sent_name"),
    [("gpt-oss:120b-cloud", "gpt-oss:120b"), ("qwen3.5:cloud", "qwen3.5"), ("gpt-oss:20b", "gpt-oss:20b")],
)
async def test_ollama_dialect_drops_the_cloud_suffix_from_the_model_name(backend, catalog_name, sent_name):
    with aioresponses() as mocked:
        mocked.post(CHAT, payload=COMPLETION)
        await backend.chat(chat_request(), catalog_name)
        body, _ = sent(mocked, CHAT)
    assert body["model"] == sent_name


async def test_openai_dialect_keeps_names_and_uses_max_completion_tokens():
    backend = await started(dialect="openai")
    try:
        with aioresponses() as mocked:
            mocked.post(CHAT, payload=COMPLETION)
            request = chat_request(max_tokens=9)
            request = type(request)(**{**_fields(request), "messages": ({"role": "developer", "content": "be brief"},)})
            await backend.chat(request, "my-model:cloud")
            body, _ = sent(mocked, CHAT)
    finally:
        await backend.close()
    assert body["model"] == "my-model:cloud"
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body
    assert body["messages"] == [{"role": "developer", "content": "be brief"}]


def _fields(request) -> dict:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


async def test_ollama_dialect_sends_developer_messages_as_system(backend):
    request = chat_request()
    request = type(request)(**{**_fields(request), "messages": ({"role": "developer", "content": "be brief"},)})
    with aioresponses() as mocked:
        mocked.post(CHAT, payload=COMPLETION)
        await backend.chat(request, "gpt-oss:120b")
        body, _ = sent(mocked, CHAT)
    assert body["messages"] == [{"role": "system", "content": "be brief"}]


async def test_fields_that_change_cost_or_storage_never_reach_the_host(backend):
    client_body = {"n": 1, "user": "u-1", "store": True, "service_tier": "priority", "reasoning_effort": "low"}
    with aioresponses() as mocked:
        mocked.post(CHAT, payload=COMPLETION)
        await backend.chat(chat_request(body=client_body), "gpt-oss:120b")
        body, _ = sent(mocked, CHAT)
    assert body["reasoning_effort"] == "low"
    assert not {"n", "user", "store", "service_tier"} & set(body)


async def test_chat_passes_tool_calls_and_reasoning_through(backend):
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Kuwait"}'}}
    message = {"role": "assistant", "content": "", "reasoning": "thinking", "tool_calls": [call]}
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
    answer = {"choices": [choice], "usage": COMPLETION["usage"]}
    with aioresponses() as mocked:
        mocked.post(CHAT, payload=answer)
        result = await backend.chat(chat_request(tools=(TOOL,)), "gpt-oss:120b")
    assert result.tool_calls == (call,)
    assert result.content is None
    assert result.reasoning == "thinking"
    assert result.finish_reason == "tool_calls"


async def test_chat_without_usage_is_estimated(backend):
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 40}, "finish_reason": "stop"}]}
    with aioresponses() as mocked:
        mocked.post(CHAT, payload=answer)
        result = await backend.chat(chat_request(), "gpt-oss:120b")
    assert result.usage == Usage(prompt_tokens=chat_request().estimated_prompt_tokens(), completion_tokens=10)


async def test_chat_answer_without_choices_is_unavailable(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, payload={"object": "chat.completion", "choices": []})
        with pytest.raises(UpstreamUnavailable):
            await backend.chat(chat_request(), "gpt-oss:120b")


# streaming --------------------------------------------------------------------------------------------------


async def test_stream_yields_one_delta_per_chunk_then_finish_with_usage_from_the_last_chunk(backend):
    events = (chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop"), USAGE)
    with aioresponses() as mocked:
        mocked.post(CHAT, body=sse(*events, "[DONE]"), content_type="text/event-stream")
        deltas = await collect(backend)
        body, _ = sent(mocked, CHAT)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert [d.content for d in deltas] == ["Hel", "lo", None]
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == Usage(prompt_tokens=12, completion_tokens=2)


async def test_stream_reads_events_split_across_network_reads_and_crlf_lines(backend, monkeypatch):
    pieces = iter(
        [
            b'data: {"choices":[{"index":0,"delta":{"con',
            b'tent":"Hi"}}]}\r\n\r\n: keep-alive comment\r\n\r\ndata: {"choices":[{"index":0,"delta":{"content":"!"}',
            b',"finish_reason":"length"}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
            b"\n\ndata: [DONE]\n\n",
        ]
    )

    async def read_chunk(resp, deadline):
        return next(pieces, b"")

    monkeypatch.setattr(backend, "_read_chunk", read_chunk)
    with aioresponses() as mocked:
        mocked.post(CHAT, body=b"")
        deltas = await collect(backend)
    assert [d.content for d in deltas] == ["Hi", "!", None]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage == Usage(prompt_tokens=3, completion_tokens=2)


async def test_stream_relays_tool_call_pieces_as_sent(backend):
    piece = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"c'}}
    rest = {"index": 0, "function": {"arguments": 'ity":"Kuwait"}'}}
    events = (chunk({"tool_calls": [piece]}), chunk({"tool_calls": [rest]}), chunk({}, "tool_calls"), USAGE)
    with aioresponses() as mocked:
        mocked.post(CHAT, body=sse(*events, "[DONE]"))
        deltas = await collect(backend, tools=(TOOL,))
    assert [d.tool_calls for d in deltas[:2]] == [(piece,), (rest,)]
    assert deltas[-1].finish_reason == "tool_calls"


async def test_stream_relays_reasoning(backend):
    events = (chunk({"reasoning": "hmm"}), chunk({"content": "ok"}), chunk({}, "stop"), USAGE)
    with aioresponses() as mocked:
        mocked.post(CHAT, body=sse(*events, "[DONE]"))
        deltas = await collect(backend)
    assert (deltas[0].reasoning, deltas[1].content) == ("hmm", "ok")


async def test_stream_without_a_usage_chunk_estimates_usage(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, body=sse(chunk({"content": "abcdefgh"}), chunk({}, "stop"), "[DONE]"))
        deltas = await collect(backend)
    assert deltas[-1].usage == Usage(prompt_tokens=chat_request().estimated_prompt_tokens(), completion_tokens=2)


async def test_stream_that_ends_without_done_is_unavailable(backend):
    received = []
    with aioresponses() as mocked:
        mocked.post(CHAT, body=sse(chunk({"content": "a"}), chunk({}, "stop"), USAGE))
        with pytest.raises(UpstreamUnavailable) as caught:
            async for delta in backend.stream_chat(chat_request(), "gpt-oss:120b"):
                received.append(delta.content)
    assert received == ["a"]
    assert "before it was done" in caught.value.message


async def test_error_event_midstream_raises_after_the_tokens(backend):
    received = []
    error = {"error": {"message": "runner crashed", "type": "api_error"}}
    with aioresponses() as mocked:
        mocked.post(CHAT, body=sse(chunk({"content": "a"}), chunk({"content": "b"}), error))
        with pytest.raises(UpstreamUnavailable) as caught:
            async for delta in backend.stream_chat(chat_request(), "gpt-oss:120b"):
                received.append(delta.content)
    assert received == ["a", "b"]
    assert "runner crashed" in caught.value.message


async def test_unreadable_event_is_unavailable(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, body=b"data: <html>proxy error</html>\n\n")
        with pytest.raises(UpstreamUnavailable):
            await collect(backend)


# errors -----------------------------------------------------------------------------------------------------


def refused() -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("cloud.internal.test", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_a_502_that_never_shows_the_key(backend, caplog, status):
    caplog.set_level(logging.DEBUG)
    answer = {"error": {"message": f"Incorrect API key provided: {FAKE_KEY}", "code": "invalid_api_key"}}
    with aioresponses() as mocked:
        mocked.post(CHAT, status=status, payload=answer)
        with pytest.raises(UpstreamUnavailable) as caught:
            await backend.chat(chat_request(), "gpt-oss:120b")
    assert caught.value.status == 502
    assert caught.value.message == CREDENTIALS_REFUSED
    assert "cloud.api_key" in caplog.text
    assert FAKE_KEY not in caplog.text
    assert FAKE_KEY not in str(caught.value.body())


async def test_a_key_echoed_in_an_upstream_message_is_redacted(backend, caplog):
    caplog.set_level(logging.DEBUG)
    with aioresponses() as mocked:
        mocked.post(CHAT, status=400, payload={"error": {"message": f"bad request from key {FAKE_KEY}"}})
        with pytest.raises(UpstreamBadRequest) as caught:
            await backend.chat(chat_request(), "gpt-oss:120b")
    assert caught.value.message == "bad request from key [redacted]"
    assert FAKE_KEY not in caplog.text


async def test_http_404_is_model_not_found_with_the_hosts_message(backend):
    answer = {"error": {"message": 'model "nope" not found', "type": "not_found_error", "param": None, "code": None}}
    with aioresponses() as mocked:
        mocked.post(CHAT, status=404, payload=answer)
        with pytest.raises(UpstreamModelNotFound) as caught:
            await backend.chat(chat_request(), "nope")
    assert caught.value.status == 404
    assert caught.value.message == 'model "nope" not found'


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"), [(429, "7", "7"), (503, None, "1"), (429, "9000", "60")]
)
async def test_rate_limit_and_busy_are_no_capacity_with_retry_after(backend, status, retry_after, expected):
    headers = {"Retry-After": retry_after} if retry_after else None
    with aioresponses() as mocked:
        mocked.post(CHAT, status=status, payload={"error": {"message": "slow down"}}, headers=headers)
        with pytest.raises(NoCapacity) as caught:
            await collect(backend)
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"] == expected


@pytest.mark.parametrize("status", [400, 422])
async def test_rejected_content_is_upstream_bad_request_with_the_hosts_message(backend, status):
    with aioresponses() as mocked:
        mocked.post(CHAT, status=status, payload={"error": "messages must not be empty"})
        with pytest.raises(UpstreamBadRequest) as caught:
            await backend.chat(chat_request(), "gpt-oss:120b")
    assert caught.value.status == 400
    assert caught.value.message == "messages must not be empty"


@pytest.mark.parametrize("status", [500, 502, 409])
async def test_server_errors_are_upstream_unavailable(backend, status):
    with aioresponses() as mocked:
        mocked.post(CHAT, status=status, body=b"<html>oops</html>")
        with pytest.raises(UpstreamUnavailable) as caught:
            await backend.chat(chat_request(), "gpt-oss:120b")
    assert caught.value.status == 502


async def test_gateway_timeout_upstream_is_upstream_timeout(backend):
    with aioresponses() as mocked:
        mocked.post(CHAT, status=504, body=b"")
        with pytest.raises(UpstreamTimeout):
            await backend.chat(chat_request(), "gpt-oss:120b")


# embeddings ---------------------------------------------------------------------------------------------------


async def test_embed_sends_floats_and_reads_vectors_in_input_order(backend):
    answer = {
        "object": "list",
        "data": [{"embedding": [0.3, 0.4], "index": 1}, {"embedding": [0.1, 0.2], "index": 0}],
        "usage": {"prompt_tokens": 9, "total_tokens": 9},
    }
    with aioresponses() as mocked:
        mocked.post(EMBEDDINGS, payload=answer)
        request = EmbeddingRequest(model="e", inputs=("a", "b"), dimensions=2, encoding_format="base64")
        result = await backend.embed(request, "embeddinggemma:300m-cloud")
        body, headers = sent(mocked, EMBEDDINGS)
    assert body == {"model": "embeddinggemma:300m", "input": ["a", "b"], "encoding_format": "float", "dimensions": 2}
    assert headers["Authorization"] == f"Bearer {FAKE_KEY}"
    assert result.vectors == ((0.1, 0.2), (0.3, 0.4))
    assert result.usage == Usage(prompt_tokens=9)


async def test_embed_for_an_unknown_model_is_model_not_found(backend):
    with aioresponses() as mocked:
        mocked.post(EMBEDDINGS, status=404, payload={"error": {"message": 'model "x" not found'}})
        with pytest.raises(UpstreamModelNotFound):
            await backend.embed(EmbeddingRequest(model="x", inputs=("a",)), "x")


@pytest.mark.parametrize(("status", "body"), [(404, b"404 page not found"), (405, b"")])
async def test_host_without_embeddings_is_a_clear_bad_request(backend, status, body):
    with aioresponses() as mocked:
        mocked.post(EMBEDDINGS, status=status, body=body)
        with pytest.raises(UpstreamBadRequest) as caught:
            await backend.embed(EmbeddingRequest(model="e", inputs=("a",)), "e")
    assert caught.value.message == NO_EMBEDDINGS


async def test_embeddings_switched_off_are_refused_without_a_request():
    backend = await started(embeddings=False)
    try:
        with aioresponses() as mocked:
            with pytest.raises(UpstreamBadRequest) as caught:
                await backend.embed(EmbeddingRequest(model="e", inputs=("a",)), "e")
            assert not mocked.requests
    finally:
        await backend.close()
    assert caught.value.message == NO_EMBEDDINGS


async def test_embed_with_a_wrong_vector_count_is_unavailable(backend):
    with aioresponses() as mocked:
        mocked.post(EMBEDDINGS, payload={"data": [{"embedding": [0.1], "index": 0}]})
        with pytest.raises(UpstreamUnavailable):
            await backend.embed(EmbeddingRequest(model="e", inputs=("a", "b")), "e")


# discovery and readiness ----------------------------------------------------------------------------------------

LISTING = {
    "object": "list",
    "data": [
        {"id": "gpt-oss:120b", "object": "model", "created": 1767000000, "owned_by": "library"},
        {"id": "gpt-oss:120b-cloud", "object": "model", "created": 1767000000, "owned_by": "library"},
        {"id": "embeddinggemma:300m", "object": "model", "created": 1767000001, "owned_by": "library"},
    ],
}


async def test_discovery_reads_models_at_start_and_models_is_served_from_cache():
    backend = CloudBackend(CloudSettings(url=FAKE_URL, api_key=FAKE_KEY, discover=True))
    with aioresponses() as mocked:
        mocked.get(MODELS, payload=LISTING)
        await backend.start()
        try:
            for _ in range(5):
                models = backend.models()
            (call,) = mocked.requests[("GET", URL(MODELS))]
        finally:
            await backend.close()
    assert call.kwargs["headers"]["Authorization"] == f"Bearer {FAKE_KEY}"
    assert [(m.name, m.capabilities, m.created) for m in models] == [
        ("gpt-oss:120b", ("chat",), 1767000000),
        ("embeddinggemma:300m", ("embedding",), 1767000001),
    ]


async def test_discovery_with_a_refused_key_is_logged_once_without_the_key(caplog):
    caplog.set_level(logging.DEBUG)
    backend = CloudBackend(CloudSettings(url=FAKE_URL, api_key=FAKE_KEY, discover=True))
    with aioresponses() as mocked:
        mocked.get(MODELS, status=401, payload={"error": {"message": f"bad key {FAKE_KEY}"}}, repeat=True)
        await backend.start()
        try:
            assert await backend.refresh_models() is False
        finally:
            await backend.close()
    assert backend.models() == ()
    warnings = [r.getMessage() for r in caplog.records if "discovery" in r.getMessage()]
    assert len(warnings) == 1 and "credentials" in warnings[0]
    assert FAKE_KEY not in caplog.text


async def test_ready_is_true_when_the_model_list_answers(backend):
    with aioresponses() as mocked:
        mocked.get(MODELS, payload=LISTING)
        assert await backend.ready() is True


@pytest.mark.parametrize("failure", [{"status": 401}, {"exception": refused()}])
async def test_ready_is_false_when_refused(backend, failure):
    with aioresponses() as mocked:
        mocked.get(MODELS, **failure)
        assert await backend.ready() is False
