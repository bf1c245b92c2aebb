"""The Ollama backend: chat, streamed chat and embeddings through Ollama's native API, with model discovery.

An :class:`~resayil_gateway.routing.http_backend.HttpBackend`: one :class:`aiohttp.ClientSession` per backend,
opened in :meth:`OllamaBackend.start`. Streams are read line by line; a stream the consumer abandons closes its
HTTP response at once, which makes Ollama cancel the generation and free the parallel slot. Errors become the
gateway's :class:`BackendError` subclasses and never carry the server's address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

from resayil_gateway.domain import (
    BackendKind,
    ChatDelta,
    ChatRequest,
    ChatResult,
    DiscoveredModel,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
)
from resayil_gateway.errors import NoCapacity, UpstreamBadRequest, UpstreamModelNotFound, UpstreamUnavailable
from resayil_gateway.routing.http_backend import HttpBackend

from . import translate
from .settings import OllamaSettings


class OllamaBackend(HttpBackend[OllamaSettings]):
    """A local Ollama server as a gateway backend (a :class:`resayil_gateway.routing.backends.Backend`).

    ``name`` and ``max_concurrency`` come from :class:`OllamaSettings`; ``kind`` is ``"local"``. The session,
    model discovery (``/api/tags``), readiness (``/api/version``) and transport errors are
    :class:`~resayil_gateway.routing.http_backend.HttpBackend`'s.
    """

    kind: BackendKind = "local"
    ready_path = "/api/version"

    def __init__(self, settings: OllamaSettings | None = None) -> None:
        settings = settings or OllamaSettings()
        # Ollama sends its headers with the first line (or the whole answer).
        super().__init__(
            settings, headers_timeout_s=settings.first_token_timeout_s, read_timeout_s=settings.read_timeout_s
        )

    async def _discover(self) -> tuple[DiscoveredModel, ...]:
        """The models ``/api/tags`` lists."""
        return translate.discovered_models(await self._get_json("/api/tags"))

    def _raise_for_status(self, status: int, message: str, path: str, headers: Mapping[str, str]) -> NoReturn:
        """Raise the gateway error for an Ollama HTTP error status (the message is Ollama's own text)."""
        if status == 404:
            raise UpstreamModelNotFound(message or "The model is not available on the model server.")
        if status == 503:
            raise NoCapacity("The model server is busy, please try again", headers={"Retry-After": "1"})
        if status == 400:
            raise UpstreamBadRequest(message or "The model server rejected the request")
        raise UpstreamUnavailable(f"The model server answered HTTP {status}")

    # requests --------------------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, model: str) -> ChatResult:
        """A non-streamed chat completion (``stream: false``).

        Ollama sends nothing until the whole answer is ready, so it must arrive within
        ``first_token_timeout_s``.
        """
        body = self._chat_body(request, model, stream=False)
        resp = await self._post("/api/chat", body)
        data = await self._read_json(resp)
        return translate.chat_result(data, request)

    async def stream_chat(self, request: ChatRequest, model: str) -> AsyncIterator[ChatDelta]:
        """A streamed chat completion: one delta per NDJSON line with content, then one with
        ``finish_reason`` and ``usage``.

        Closing the generator early closes the upstream response at once. An ``error`` line, or a stream
        that ends without ``done: true``, raises :class:`UpstreamUnavailable`.
        """
        body = self._chat_body(request, model, stream=True)
        translator = translate.StreamTranslator(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.first_token_timeout_s  # headers and first line
        resp = await self._post("/api/chat", body, deadline)
        released = False
        try:
            pending = b""
            while True:
                # Read what has arrived and handle every complete line in it: one timeout per network read,
                # not per line, and never more than the unfinished last line kept in memory.
                chunk = await self._read_chunk(resp, deadline)
                if not chunk:
                    if not pending.strip():
                        raise UpstreamUnavailable("The model server ended the answer before it was done")
                    chunk = b"\n"  # the last line had no newline
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if not line or line.isspace():
                        continue
                    deltas = list(translator.feed(self._parse(line)))
                    deadline = loop.time() + self.settings.read_timeout_s
                    if translator.done:
                        # Read to the end before the last delta goes out, so the connection is reused rather
                        # than closed when the consumer stops at ``finish_reason``.
                        while chunk:
                            chunk = await self._read_chunk(resp, deadline)
                        resp.release()
                        released = True
                        for delta in deltas:
                            yield delta
                        return
                    for delta in deltas:
                        yield delta
        finally:
            if not released:
                resp.close()  # Ollama sees the disconnect, stops generating and frees the slot

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        """Embed every input with ``/api/embed`` (``truncate: true``; ``dimensions`` when asked)."""
        body: dict[str, Any] = {"model": model, "input": list(request.inputs), "truncate": True}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if self.settings.keep_alive is not None:
            body["keep_alive"] = translate.keep_alive_value(self.settings.keep_alive)
        resp = await self._post("/api/embed", body)
        data = await self._read_json(resp)
        if "error" in data:
            raise translate.upstream_error(data)
        vectors = data.get("embeddings")
        if not isinstance(vectors, list) or len(vectors) != len(request.inputs):
            raise UpstreamUnavailable("The model server returned a malformed embedding answer")
        prompt_tokens = data.get("prompt_eval_count")
        usage = Usage(
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else request.estimated_prompt_tokens()
        )
        return EmbeddingResult(vectors=tuple(tuple(vector) for vector in vectors), usage=usage)

    # HTTP ------------------------------------------------------------------------------------------------

    def _chat_body(self, request: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
        return translate.chat_body(
            request, model, stream=stream, keep_alive=self.settings.keep_alive, num_ctx=self.settings.num_ctx
        )
