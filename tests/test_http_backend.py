"""HttpBackend, the base of backends that reach a model server over HTTP, against a real scripted server:
session lifecycle, discovery (cached, refreshed, failures logged once), readiness, and transport errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
import pytest
from aiohttp import web

from resayil_gateway.domain import (
    ChatDelta,
    ChatRequest,
    ChatResult,
    DiscoveredModel,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
)
from resayil_gateway.errors import UpstreamBadRequest, UpstreamTimeout, UpstreamUnavailable
from resayil_gateway.routing.backends import Backend
from resayil_gateway.routing.http_backend import HttpBackend, error_text
from resayil_gateway.simulators import json_response, start_app
from resayil_gateway.testing import free_port

SECRET = "sk-secret-123"
REQUEST = ChatRequest(model="toy", messages=({"role": "user", "content": "hi"},))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ToySettings:
    url: str
    name: str = "toy-box"
    max_concurrency: int = 2
    discover: bool = False
    discovery_interval_s: float = 60.0
    connect_timeout_s: float = 5.0
    timeout_s: float = 5.0


class ToyBackend(HttpBackend[ToySettings]):
    """A minimal subclass: plain JSON chat, a byte stream, model names at ``/models``."""

    server = "The toy server"
    ready_path = "/health"
    max_error_chars = 10

    def __init__(self, settings: ToySettings) -> None:
        super().__init__(
            settings,
            headers_timeout_s=settings.timeout_s,
            read_timeout_s=settings.timeout_s,
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        self.statuses: list[tuple[int, str, str, str | None]] = []

    async def _discover(self) -> tuple[DiscoveredModel, ...]:
        data = await self._get_json("/models")
        if "error" in data:
            raise ValueError(data["error"])
        return tuple(DiscoveredModel(name) for name in data.get("names", ()))

    def _raise_for_status(self, status: int, message: str, path: str, headers: Mapping[str, str]) -> NoReturn:
        self.statuses.append((status, message, path, headers.get("Retry-After")))
        raise UpstreamBadRequest(message or f"HTTP {status}")

    def _redact(self, text: str) -> str:
        return text.replace(SECRET, "[redacted]")

    async def chat(self, request: ChatRequest, model: str) -> ChatResult:
        data = await self._read_json(await self._post("/chat", {"model": model}))
        return ChatResult(content=str(data["content"]), finish_reason="stop", usage=Usage())

    async def stream_chat(self, request: ChatRequest, model: str) -> AsyncIterator[ChatDelta]:
        resp = await self._post("/chat", {"model": model, "stream": True})
        try:
            while chunk := await self._read_chunk(resp, asyncio.get_running_loop().time() + self.read_timeout_s):
                yield ChatDelta(content=chunk.decode())
        finally:
            resp.close()

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        raise UpstreamBadRequest("no embeddings here")


class Upstream:
    """A server whose answers a test scripts: ``answers[path]`` is a handler, or a list of them used in turn."""

    def __init__(self) -> None:
        self.answers: dict[str, Handler | list[Handler]] = {}
        self.seen: list[web.Request] = []
        self.bodies: list[bytes] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.bodies.append(await request.read())
        answer = self.answers.get(request.path)
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if answer is None:
            return web.Response(status=404)
        return await answer(request)

    def hits(self, path: str) -> int:
        return sum(1 for request in self.seen if request.path == path)


def answer(data: Any = None, status: int = 200, headers: Mapping[str, str] | None = None, body: bytes = b"") -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if data is None:
            return web.Response(status=status, body=body, headers=headers)
        return json_response(data, status, headers)

    return handler


async def never_answers(request: web.Request) -> web.StreamResponse:
    await asyncio.Event().wait()  # cancelled when the client gives up
    raise AssertionError("unreachable")


async def stalls_after_one_chunk(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"first")
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


BUSY = {"Retry-After": "7"}
MODELS = answer({"names": ["a:1b", "b:2b"]})


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", server.handle)
    runner, server.url = await start_app(app)
    yield server
    await runner.cleanup()


@pytest.fixture
async def toy_for() -> AsyncIterator[Callable[..., Awaitable[ToyBackend]]]:
    made: list[ToyBackend] = []

    async def start(url: str, **settings: Any) -> ToyBackend:
        backend = ToyBackend(ToySettings(url=url, **settings))
        made.append(backend)
        await backend.start()
        return backend

    yield start
    for backend in made:
        await backend.close()


# the protocol and the lifecycle ------------------------------------------------------------------------------


def test_a_subclass_is_a_backend_named_by_its_settings():
    backend = ToyBackend(ToySettings(url="http://toy.test"))
    assert isinstance(backend, Backend)
    assert (backend.name, backend.kind, backend.max_concurrency) == ("toy-box", "local", 2)
    assert repr(backend) == "ToyBackend(name='toy-box', max_concurrency=2)"


def test_a_subclass_that_leaves_out_the_wire_format_cannot_be_made():
    class Incomplete(HttpBackend[ToySettings]):
        pass

    with pytest.raises(TypeError):
        Incomplete(ToySettings(url="http://toy.test"))  # type: ignore[abstract]


async def test_a_backend_that_was_not_started_is_unavailable_not_ready_and_discovers_nothing():
    backend = ToyBackend(ToySettings(url="http://toy.test"))
    with pytest.raises(UpstreamUnavailable) as caught:
        await backend.chat(REQUEST, "toy")
    assert caught.value.message == "backend toy-box is not started"
    assert await backend.ready() is False
    assert await backend.refresh_models() is False
    assert backend.models() == ()


async def test_start_and_close_are_safe_to_repeat(upstream, toy_for):
    upstream.answers["/models"] = MODELS
    backend = await toy_for(upstream.url, discover=True)
    await backend.start()
    assert upstream.hits("/models") == 1
    await backend.close()
    await backend.close()
    assert await backend.ready() is False


# discovery ----------------------------------------------------------------------------------------------------


async def test_discovery_reads_the_list_at_start_with_the_headers_and_serves_it_from_cache(upstream, toy_for):
    upstream.answers["/models"] = MODELS
    backend = await toy_for(upstream.url, discover=True)
    for _ in range(5):
        models = backend.models()
    assert [m.name for m in models] == ["a:1b", "b:2b"]
    assert upstream.hits("/models") == 1
    assert upstream.seen[0].headers["Authorization"] == f"Bearer {SECRET}"


async def test_discovery_is_off_unless_asked(upstream, toy_for):
    upstream.answers["/models"] = MODELS
    backend = await toy_for(upstream.url)
    assert backend.models() == ()
    assert upstream.hits("/models") == 0


async def test_a_failing_discovery_keeps_the_cache_and_warns_once_until_it_works_again(upstream, toy_for, caplog):
    caplog.set_level(logging.INFO, logger=__name__)
    refused = answer({"error": f"bad key {SECRET}"})
    upstream.answers["/models"] = [MODELS, refused, answer(None, 500), answer(["not", "an", "object"]), MODELS]
    backend = await toy_for(upstream.url)
    assert await backend.refresh_models() is True
    cached = backend.models()
    for _ in range(3):
        assert await backend.refresh_models() is False
    assert backend.models() is cached
    assert await backend.refresh_models() is True
    assert backend.models() is cached  # unchanged: the same object, so the catalog does not rebuild
    messages = [r.getMessage() for r in caplog.records if r.name == __name__]
    assert len([m for m in messages if "discovery from" in m and "failed" in m]) == 1
    assert len([m for m in messages if "works again" in m]) == 1
    assert "bad key [redacted]" in caplog.text
    assert SECRET not in caplog.text


async def test_a_changed_list_replaces_the_cache(upstream, toy_for):
    upstream.answers["/models"] = [MODELS, answer({"names": ["c:3b"]})]
    backend = await toy_for(upstream.url)
    await backend.refresh_models()
    await backend.refresh_models()
    assert [m.name for m in backend.models()] == ["c:3b"]


async def test_discovery_refreshes_in_the_background(upstream, toy_for):
    upstream.answers["/models"] = [answer({"names": []}), MODELS]
    backend = ToyBackend(ToySettings(url=upstream.url, discover=True, discovery_interval_s=0.01))
    found = asyncio.Event()
    refresh = backend.refresh_models

    async def watched_refresh() -> bool:
        ok = await refresh()
        if backend.models():
            found.set()
        return ok

    backend.refresh_models = watched_refresh  # type: ignore[method-assign]
    await backend.start()
    try:
        assert backend.models() == ()
        async with asyncio.timeout(5):
            await found.wait()
    finally:
        await backend.close()
    assert len(backend.models()) == 2


# readiness ----------------------------------------------------------------------------------------------------


async def test_ready_when_the_ready_path_answers_200_with_the_headers(upstream, toy_for):
    upstream.answers["/health"] = [answer({}), answer({}, status=503)]
    backend = await toy_for(upstream.url)
    assert await backend.ready() is True
    assert upstream.seen[-1].headers["Authorization"] == f"Bearer {SECRET}"
    assert await backend.ready() is False


async def test_not_ready_when_nothing_listens(toy_for):
    backend = await toy_for(f"http://127.0.0.1:{free_port()}")
    assert await backend.ready() is False


# transport errors ---------------------------------------------------------------------------------------------


async def test_a_post_sends_json_with_the_headers(upstream, toy_for):
    upstream.answers["/chat"] = answer({"content": "hello"})
    backend = await toy_for(upstream.url)
    result = await backend.chat(REQUEST, "toy:1b")
    assert result.content == "hello"
    (request,) = upstream.seen
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert orjson.loads(upstream.bodies[0]) == {"model": "toy:1b"}


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (answer({"error": "plain words"}, 429, BUSY), "plain words"),
        (
            answer({"error": {"message": f"openai shape {SECRET}"}}, 429, BUSY),
            "openai shape [redacted]",
        ),
        (answer(None, 429, BUSY, body=b"  <html>a long proxy page</html>"), "<html>a"),
    ],
)
async def test_an_error_status_is_raised_by_the_subclass_with_the_servers_message(upstream, toy_for, reply, message):
    upstream.answers["/chat"] = reply
    backend = await toy_for(upstream.url)
    with pytest.raises(UpstreamBadRequest):
        await backend.chat(REQUEST, "toy")
    assert backend.statuses == [(429, message, "/chat", "7")]


async def test_a_refused_connection_is_unavailable_without_the_address(toy_for):
    port = free_port()
    backend = await toy_for(f"http://127.0.0.1:{port}")
    with pytest.raises(UpstreamUnavailable) as caught:
        await backend.chat(REQUEST, "toy")
    assert caught.value.message == "The toy server is unreachable"
    assert str(port) not in caught.value.message


async def test_no_answer_in_time_is_a_timeout(upstream, toy_for):
    upstream.answers["/chat"] = never_answers
    backend = await toy_for(upstream.url, timeout_s=0.05)
    with pytest.raises(UpstreamTimeout) as caught:
        await backend.chat(REQUEST, "toy")
    assert caught.value.message == "The toy server did not answer in time"


async def test_a_body_that_stops_coming_is_a_timeout_after_what_arrived(upstream, toy_for):
    upstream.answers["/chat"] = stalls_after_one_chunk
    backend = await toy_for(upstream.url, timeout_s=0.05)
    received = []
    with pytest.raises(UpstreamTimeout) as caught:
        async for delta in backend.stream_chat(REQUEST, "toy"):
            received.append(delta.content)
    assert received == ["first"]
    assert caught.value.message == "The toy server stopped sending in time"


@pytest.mark.parametrize("body", [b"<html>proxy error</html>", b"[1, 2]"])
async def test_an_answer_that_is_not_a_json_object_is_unavailable(upstream, toy_for, body):
    upstream.answers["/chat"] = answer(None, 200, body=body)
    backend = await toy_for(upstream.url)
    with pytest.raises(UpstreamUnavailable) as caught:
        await backend.chat(REQUEST, "toy")
    assert caught.value.message == "The toy server sent an unreadable answer"


def test_error_text_reads_both_error_shapes():
    assert error_text({"error": "plain"}) == "plain"
    assert error_text({"error": {"message": "nested", "type": "x"}}) == "nested"
    assert error_text({"error": None}) == error_text([]) == error_text({"detail": "x"}) == ""
