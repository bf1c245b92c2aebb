"""The cloud backend: chat, streamed chat and embeddings on Ollama's cloud or any OpenAI-compatible host.

One :class:`aiohttp.ClientSession` per backend, opened in :meth:`CloudBackend.start`, so connections (and
their TLS sessions) are reused. Streams are server-sent events read as they arrive; a stream the consumer
abandons closes its HTTP response at once, which stops the generation upstream. Errors become the gateway's
:class:`BackendError` subclasses; the API key never appears in an error, a log line or a ``repr``, and a
refused key is reported to the client only as "the gateway's cloud credentials were refused".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NoReturn

import aiohttp
import orjson

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

from . import dialect
from .settings import CloudSettings
from .sse import DONE, SseDecoder

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
DISCOVERY_TIMEOUT_S = 10.0
MAX_MESSAGE_CHARS = 300
MAX_RETRY_AFTER_S = 60
UNREACHABLE = "The cloud model server is unreachable"
CREDENTIALS_REFUSED = "The cloud model provider refused the gateway's cloud credentials"
NO_EMBEDDINGS = "The cloud model provider does not serve embeddings"


class CloudBackend:
    """A cloud model host as a gateway backend (a :class:`resayil_gateway.routing.backends.Backend`).

    ``name`` and ``max_concurrency`` come from :class:`CloudSettings`; ``kind`` is ``"cloud"``. The core's
    cloud budget reads ``daily_request_budget`` and ``budget_alert_ratios`` from this object.
    """

    kind: BackendKind = "cloud"

    def __init__(self, settings: CloudSettings | None = None) -> None:
        self.settings = settings or CloudSettings()
        self.name = self.settings.name
        self.max_concurrency = self.settings.max_concurrency
        self.daily_request_budget: int = self.settings.daily_request_budget
        self.budget_alert_ratios: tuple[float, ...] = self.settings.budget_alert_ratios
        self.dialect: dialect.Dialect = self.settings.dialect
        self._url = self.settings.url
        self._api_key = self.settings.api_key.get_secret_value()
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._models: tuple[DiscoveredModel, ...] = ()
        self._discovery_task: asyncio.Task[None] | None = None
        self._discovery_failing = False

    def __repr__(self) -> str:
        return f"CloudBackend(name={self.name!r}, dialect={self.dialect!r}, max_concurrency={self.max_concurrency})"

    # lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session; with ``discover``, read the model list once and start refreshing it."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self.settings.connect_timeout_s,
                sock_connect=self.settings.connect_timeout_s,
            )
            connector = aiohttp.TCPConnector(limit=max(100, 2 * self.max_concurrency))
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        if self.settings.discover and self._discovery_task is None:
            await self.refresh_models()
            self._discovery_task = asyncio.create_task(self._discover_forever(), name=f"{self.name}-discovery")

    async def close(self) -> None:
        """Stop the discovery task and close the HTTP session."""
        task, self._discovery_task = self._discovery_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # discovery -------------------------------------------------------------------------------------------

    def models(self) -> Sequence[DiscoveredModel]:
        """The models the host listed at the last successful discovery (a cache: never a network call)."""
        return self._models

    async def refresh_models(self) -> bool:
        """Read ``/v1/models`` into the cache. Returns False (and keeps the old list) when it fails.

        A failure is logged as a warning once, until discovery works again.
        """
        if self._session is None:
            return False
        try:
            async with (
                asyncio.timeout(DISCOVERY_TIMEOUT_S),
                self._session.get(f"{self._url}/v1/models", headers=self._headers) as resp,
            ):
                if resp.status in (401, 403):
                    raise PermissionError(CREDENTIALS_REFUSED)
                resp.raise_for_status()
                data = orjson.loads(await resp.read())
            models = dialect.discovered_models(data if isinstance(data, dict) else {}, self.dialect)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, AttributeError) as exc:
            if not self._discovery_failing:
                logger.warning(
                    "backend %s: model discovery from %s failed (%s: %s); keeping %d cached models",
                    self.name,
                    self._url,
                    type(exc).__name__,
                    self._redact(str(exc)),
                    len(self._models),
                )
            self._discovery_failing = True
            return False
        if self._discovery_failing:
            logger.info("backend %s: model discovery works again (%d models)", self.name, len(models))
        self._discovery_failing = False
        if models != self._models:  # a new object tells the catalog to rebuild; keep the old one if equal
            self._models = models
        return True

    async def _discover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.discovery_interval_s)
            try:
                await self.refresh_models()
            except Exception:  # keep refreshing whatever happens once
                logger.exception("backend %s: model discovery crashed", self.name)

    async def ready(self) -> bool:
        """True when ``GET /v1/models`` answers 200 within two seconds (so the key is accepted too)."""
        if self._session is None:
            return False
        try:
            async with (
                asyncio.timeout(READY_TIMEOUT_S),
                self._session.get(f"{self._url}/v1/models", headers=self._headers) as resp,
            ):
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

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
                    data = _parse(event.encode())
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
        resp = await self._post("/v1/embeddings", body, embeddings=True)
        data = await self._read_json(resp)
        self._raise_for_error_object(data)
        return dialect.embedding_result(data, request)

    # HTTP ------------------------------------------------------------------------------------------------

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamUnavailable(f"backend {self.name} is not started")
        return self._session

    async def _post(self, path: str, body: Mapping[str, Any], *, embeddings: bool = False) -> aiohttp.ClientResponse:
        """POST ``body`` and wait ``timeout_s`` at most for the response headers; a non-2xx answer raises the
        mapped error."""
        session = self._require_session()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                resp = await session.post(f"{self._url}{path}", data=orjson.dumps(body), headers=self._headers)
        except TimeoutError:
            raise UpstreamTimeout("The cloud model server did not answer in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable(UNREACHABLE) from None
        if resp.status >= 300:
            try:
                message = await self._error_message(resp)
            finally:
                resp.release()
            self._raise_for_status(resp.status, message, resp.headers.get("Retry-After"), embeddings=embeddings)
        return resp

    async def _error_message(self, resp: aiohttp.ClientResponse) -> str:
        """The host's own error text (``{"error": {"message"}}`` or ``{"error": "..."}``), redacted and short."""
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return ""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._redact(raw[:MAX_MESSAGE_CHARS].decode("utf-8", "replace").strip())
        return self._redact(_error_text(data))

    def _raise_for_status(self, status: int, message: str, retry_after: str | None, *, embeddings: bool) -> NoReturn:
        """Raise the gateway error for an HTTP error status from the host (``message`` is already redacted)."""
        if status in (401, 403):
            logger.error(
                "backend %s: %s refused the API key (HTTP %d); check cloud.api_key", self.name, self._url, status
            )
            raise UpstreamUnavailable(CREDENTIALS_REFUSED)
        if embeddings and (status == 405 or (status == 404 and "model" not in message.lower())):
            raise UpstreamBadRequest(NO_EMBEDDINGS)
        if status == 404:
            raise UpstreamModelNotFound(message or "The model is not available on the cloud model server.")
        if status in (429, 503):
            raise NoCapacity(
                "The cloud model server is busy, please try again",
                headers={"Retry-After": _retry_after(retry_after)},
            )
        if status in (400, 413, 422):
            raise UpstreamBadRequest(message or "The cloud model server rejected the request")
        if status in (408, 504):
            raise UpstreamTimeout("The cloud model server did not answer in time")
        raise UpstreamUnavailable(f"The cloud model server answered HTTP {status}")

    def _raise_for_error_object(self, data: Mapping[str, Any]) -> None:
        """A 200 answer (or stream event) that is an ``{"error": ...}`` object is a failure upstream."""
        if data.get("error"):
            raise UpstreamUnavailable(f"The cloud model server failed: {self._redact(_error_text(data))}")

    def _redact(self, text: str) -> str:
        """``text`` without the API key, cut to a readable length (hosts echo keys in some messages)."""
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "[redacted]")
        return text[:MAX_MESSAGE_CHARS]

    async def _read_json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                raw = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout("The cloud model server stopped sending in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable("The cloud model server closed the connection") from None
        finally:
            resp.release()
        return _parse(raw)

    @staticmethod
    async def _read_chunk(resp: aiohttp.ClientResponse, deadline: float) -> bytes:
        """Whatever part of the body has arrived (``b""`` at the end), waiting until ``deadline`` at most."""
        try:
            async with asyncio.timeout_at(deadline):
                return await resp.content.readany()
        except TimeoutError:
            raise UpstreamTimeout("The cloud model server stopped sending in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable("The cloud model server closed the connection") from None


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable("The cloud model server sent an unreadable answer") from None
    if not isinstance(data, dict):
        raise UpstreamUnavailable("The cloud model server sent an unreadable answer")
    return data


def _error_text(data: Any) -> str:
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error) if error else ""


def _retry_after(value: str | None) -> str:
    """The host's ``Retry-After`` in whole seconds (1 to 60), or 1 when absent or not a number of seconds."""
    try:
        seconds = int(float(value or ""))
    except ValueError:
        return "1"
    return str(min(max(seconds, 1), MAX_RETRY_AFTER_S))
