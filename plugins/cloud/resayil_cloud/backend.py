"""The cloud backend: chat, streamed chat and embeddings on Ollama's cloud or any OpenAI-compatible host.

One :class:`aiohttp.ClientSession` per backend, opened in :meth:`CloudBackend.start`, so connections (and
their TLS sessions) are reused. Streams are server-sent events read as they arrive; a stream the consumer
abandons closes its HTTP response at once, which stops the generation upstream. Errors become the gateway's
:class:`BackendError` subclasses; the API key never appears in an error, a log line or a ``repr``, and a
refused key is reported to the client only as "the gateway's cloud credentials were refused".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

import aiohttp

from resayil_gateway.domain import (
    BackendKind,
    ChatDelta,
    ChatRequest,
    ChatResult,
    DiscoveredModel,
    EmbeddingRequest,
    EmbeddingResult,
)
from resayil_gateway.errors import (
    NoCapacity,
    UpstreamBadRequest,
    UpstreamModelNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from resayil_gateway.routing.http_backend import HttpBackend, error_text

from . import dialect
from .settings import CloudSettings
from .sse import DONE, SseDecoder

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300
MAX_RETRY_AFTER_S = 60
CREDENTIALS_REFUSED = "The cloud model provider refused the gateway's cloud credentials"
NO_EMBEDDINGS = "The cloud model provider does not serve embeddings"
EMBEDDINGS_PATH = "/v1/embeddings"


class CloudBackend(HttpBackend[CloudSettings]):
    """A cloud model host as a gateway backend (a :class:`resayil_gateway.routing.backends.Backend`).

    ``name`` and ``max_concurrency`` come from :class:`CloudSettings`; ``kind`` is ``"cloud"``. The core's
    cloud budget reads ``daily_request_budget`` and ``budget_alert_ratios`` from this object. The session,
    model discovery and readiness (both ``/v1/models``, so the key is checked too) and transport errors are
    :class:`~resayil_gateway.routing.http_backend.HttpBackend`'s.
    """

    kind: BackendKind = "cloud"
    server = "The cloud model server"
    ready_path = "/v1/models"
    discovery_timeout_s = 10.0
    max_error_chars = MAX_MESSAGE_CHARS

    def __init__(self, settings: CloudSettings | None = None) -> None:
        settings = settings or CloudSettings()
        self._api_key = settings.api_key.get_secret_value()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # ``timeout_s`` bounds every wait for the host's next sign of life.
        super().__init__(
            settings, headers_timeout_s=settings.timeout_s, read_timeout_s=settings.timeout_s, headers=headers
        )
        self.daily_request_budget: int = settings.daily_request_budget
        self.budget_alert_ratios: tuple[float, ...] = settings.budget_alert_ratios
        self.dialect: dialect.Dialect = settings.dialect

    def __repr__(self) -> str:
        return f"CloudBackend(name={self.name!r}, dialect={self.dialect!r}, max_concurrency={self.max_concurrency})"

    async def _discover(self) -> tuple[DiscoveredModel, ...]:
        """The models ``/v1/models`` lists; a refused key is a :class:`PermissionError` saying so."""
        try:
            data = await self._get_json("/v1/models")
        except aiohttp.ClientResponseError as exc:
            if exc.status in (401, 403):
                raise PermissionError(CREDENTIALS_REFUSED) from None
            raise
        return dialect.discovered_models(data if isinstance(data, dict) else {}, self.dialect)

    # requests --------------------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, model: str) -> ChatResult:
        """A non-streamed chat completion; the whole answer must arrive within ``timeout_s``."""
        body = dialect.chat_body(request, dialect.upstream_model(model, self.dialect), self.dialect, stream=False)
        resp = await self._post("/v1/chat/completions", body)
        data = await self._read_json(resp)
        self._raise_for_error_object(data)
        return dialect.chat_result(data, request)

    async def stream_chat(self, request: ChatRequest, model: str) -> AsyncIterator[ChatDelta]:
        """A streamed chat completion: one delta per chunk with output, then one with ``finish_reason`` and
        ``usage`` once ``[DONE]`` arrives.

        Closing the generator early closes the upstream response at once. An ``error`` event, or a stream
        that ends without ``[DONE]``, raises :class:`UpstreamUnavailable`.
        """
        body = dialect.chat_body(request, dialect.upstream_model(model, self.dialect), self.dialect, stream=True)
        translator = dialect.StreamTranslator(request)
        decoder = SseDecoder()
        loop = asyncio.get_running_loop()
        resp = await self._post("/v1/chat/completions", body)
        released = False
        try:
            deadline = loop.time() + self.settings.timeout_s
            while True:
                chunk = await self._read_chunk(resp, deadline)
                deadline = loop.time() + self.settings.timeout_s
                for event in decoder.feed(chunk) if chunk else decoder.close():
                    if event == DONE:
                        # Read to the end before the last delta goes out, so the connection is reused rather
                        # than closed when the consumer stops at ``finish_reason``.
                        while chunk:
                            chunk = await self._read_chunk(resp, deadline)
                        resp.release()
                        released = True
                        yield translator.finish()
                        return
                    data = self._parse(event.encode())
                    self._raise_for_error_object(data)
                    delta = translator.feed(data)
                    if delta is not None:
                        yield delta
                if not chunk:
                    raise UpstreamUnavailable("The cloud model server ended the answer before it was done")
        finally:
            if not released:
                resp.close()  # the host sees the disconnect and stops generating

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        """Embed every input with ``/v1/embeddings``; a host without embeddings is an
        :class:`UpstreamBadRequest` that says so."""
        if not self.settings.embeddings:
            raise UpstreamBadRequest(NO_EMBEDDINGS)
        body = dialect.embedding_body(request, dialect.upstream_model(model, self.dialect))
        resp = await self._post(EMBEDDINGS_PATH, body)
        data = await self._read_json(resp)
        self._raise_for_error_object(data)
        return dialect.embedding_result(data, request)

    # errors ------------------------------------------------------------------------------------------------

    def _raise_for_status(self, status: int, message: str, path: str, headers: Mapping[str, str]) -> NoReturn:
        """Raise the gateway error for an HTTP error status from the host (``message`` is already redacted)."""
        if status in (401, 403):
            logger.error(
                "backend %s: %s refused the API key (HTTP %d); check cloud.api_key", self.name, self._url, status
            )
            raise UpstreamUnavailable(CREDENTIALS_REFUSED)
        if path == EMBEDDINGS_PATH and (status == 405 or (status == 404 and "model" not in message.lower())):
            raise UpstreamBadRequest(NO_EMBEDDINGS)
        if status == 404:
            raise UpstreamModelNotFound(message or "The model is not available on the cloud model server.")
        if status in (429, 503):
            raise NoCapacity(
                "The cloud model server is busy, please try again",
                headers={"Retry-After": _retry_after(headers.get("Retry-After"))},
            )
        if status in (400, 413, 422):
            raise UpstreamBadRequest(message or "The cloud model server rejected the request")
        if status in (408, 504):
            raise UpstreamTimeout("The cloud model server did not answer in time")
        raise UpstreamUnavailable(f"The cloud model server answered HTTP {status}")

    def _raise_for_error_object(self, data: Mapping[str, Any]) -> None:
        """A 200 answer (or stream event) that is an ``{"error": ...}`` object is a failure upstream."""
        if data.get("error"):
            raise UpstreamUnavailable(f"The cloud model server failed: {self._redact(error_text(data))}")

    def _redact(self, text: str) -> str:
        """``text`` without the API key, cut to a readable length (hosts echo keys in some messages)."""
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "[redacted]")
        return text[:MAX_MESSAGE_CHARS]


def _retry_after(value: str | None) -> str:
    """The host's ``Retry-After`` in whole seconds (1 to 60), or 1 when absent or not a number of seconds."""
    try:
        seconds = int(float(value or ""))
    except ValueError:
        return "1"
    return str(min(max(seconds, 1), MAX_RETRY_AFTER_S))
