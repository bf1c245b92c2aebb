"""The Ollama backend: chat, streamed chat and embeddings through Ollama's native API, with model discovery.

One :class:`aiohttp.ClientSession` per backend, opened in :meth:`OllamaBackend.start`. Streams are read line
by line; a stream the consumer abandons closes its HTTP response at once, which makes Ollama cancel the
generation and free the parallel slot. Errors become the gateway's :class:`BackendError` subclasses and never
carry the server's address.
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
    Usage,
)
from resayil_gateway.errors import (
    NoCapacity,
    UpstreamBadRequest,
    UpstreamModelNotFound,
    UpstreamTimeout,
    UpstreamUnavailable,
)

from . import translate
from .settings import OllamaSettings

logger = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json"}
READY_TIMEOUT_S = 2.0
DISCOVERY_TIMEOUT_S = 5.0
UNREACHABLE = "The model server is unreachable"


class OllamaBackend:
    """A local Ollama server as a gateway backend (a :class:`resayil_gateway.routing.backends.Backend`).

    ``name`` and ``max_concurrency`` come from :class:`OllamaSettings`; ``kind`` is ``"local"``.
    """

    kind: BackendKind = "local"

    def __init__(self, settings: OllamaSettings | None = None) -> None:
        self.settings = settings or OllamaSettings()
        self.name = self.settings.name
        self.max_concurrency = self.settings.max_concurrency
        self._url = self.settings.url
        self._session: aiohttp.ClientSession | None = None
        self._models: tuple[DiscoveredModel, ...] = ()
        self._discovery_task: asyncio.Task[None] | None = None
        self._discovery_failing = False

    def __repr__(self) -> str:
        return f"OllamaBackend(name={self.name!r}, max_concurrency={self.max_concurrency})"

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
        """The models Ollama listed at the last successful discovery (a cache: never a network call)."""
        return self._models

    async def refresh_models(self) -> bool:
        """Read ``/api/tags`` into the cache. Returns False (and keeps the old list) when it fails.

        A failure is logged as a warning once, until discovery works again.
        """
        if self._session is None:
            return False
        try:
            async with asyncio.timeout(DISCOVERY_TIMEOUT_S):
                async with self._session.get(f"{self._url}/api/tags") as resp:
                    resp.raise_for_status()
                    data = orjson.loads(await resp.read())
            models = translate.discovered_models(data)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, AttributeError) as exc:
            if not self._discovery_failing:
                logger.warning(
                    "backend %s: model discovery from %s failed (%s: %s); keeping %d cached models",
                    self.name,
                    self._url,
                    type(exc).__name__,
                    exc,
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
        """True when ``GET /api/version`` answers 200 within two seconds."""
        if self._session is None:
            return False
        try:
            async with (
                asyncio.timeout(READY_TIMEOUT_S),
                self._session.get(f"{self._url}/api/version") as resp,
            ):
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

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
                    deltas = list(translator.feed(_parse(line)))
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

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamUnavailable(f"backend {self.name} is not started")
        return self._session

    async def _post(self, path: str, body: Mapping[str, Any], deadline: float | None = None) -> aiohttp.ClientResponse:
        """POST ``body`` and wait for the response headers (until ``deadline``, a loop time; by default
        ``first_token_timeout_s`` from now). A non-2xx answer raises the mapped error."""
        session = self._require_session()
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.settings.first_token_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                resp = await session.post(f"{self._url}{path}", data=orjson.dumps(body), headers=JSON_HEADERS)
        except TimeoutError:
            raise UpstreamTimeout("The model server did not answer in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable(UNREACHABLE) from None
        if resp.status >= 300:
            try:
                message = await self._error_message(resp)
            finally:
                resp.release()
            _raise_for_status(resp.status, message)
        return resp

    async def _error_message(self, resp: aiohttp.ClientResponse) -> str:
        try:
            async with asyncio.timeout(self.settings.read_timeout_s):
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return ""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw[:200].decode("utf-8", "replace").strip()
        error = data.get("error") if isinstance(data, dict) else None
        return str(error) if error else ""

    async def _read_json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.settings.read_timeout_s):
                raw = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout("The model server stopped sending in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable("The model server closed the connection") from None
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
            raise UpstreamTimeout("The model server stopped sending in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable("The model server closed the connection") from None


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable("The model server sent an unreadable answer") from None
    if not isinstance(data, dict):
        raise UpstreamUnavailable("The model server sent an unreadable answer")
    return data


def _raise_for_status(status: int, message: str) -> NoReturn:
    """Raise the gateway error for an Ollama HTTP error status (the message is Ollama's own text)."""
    if status == 404:
        raise UpstreamModelNotFound(message or "The model is not available on the model server.")
    if status == 503:
        raise NoCapacity("The model server is busy, please try again", headers={"Retry-After": "1"})
    if status == 400:
        raise UpstreamBadRequest(message or "The model server rejected the request")
    raise UpstreamUnavailable(f"The model server answered HTTP {status}")
