"""A base for backends that reach their model server over HTTP: what every such backend does the same way.

:class:`HttpBackend` owns one :class:`aiohttp.ClientSession` (opened in ``start``, closed in ``close``), the
model list (read at start and refreshed in the background, served from a cache), the readiness probe, and
the transport: a JSON POST bounded by a deadline, reads bounded by a timeout, and every network failure turned
into the gateway's :class:`~resayil_gateway.errors.BackendError` subclasses without the server's address.

A subclass supplies what is particular to its server: ``kind``, ``ready_path``, its two timeouts (passed to
``__init__``), how to read the model list (:meth:`~HttpBackend._discover`), what an error status means
(:meth:`~HttpBackend._raise_for_status`), and the wire format of ``chat``, ``stream_chat`` and ``embed``. The
bundled Ollama and cloud backends are written this way; a third-party backend can be too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar

import aiohttp
import orjson

from ..domain import (
    BackendKind,
    ChatDelta,
    ChatRequest,
    ChatResult,
    DiscoveredModel,
    EmbeddingRequest,
    EmbeddingResult,
)
from ..errors import UpstreamTimeout, UpstreamUnavailable

# What a failed discovery may raise: network trouble, a timeout, an error status, or an answer of the wrong shape.
DISCOVERY_ERRORS = (TimeoutError, aiohttp.ClientError, OSError, ValueError, AttributeError)


class HttpBackendSettings(Protocol):
    """The settings :class:`HttpBackend` reads (a plugin's settings section has these fields, and its own)."""

    @property
    def name(self) -> str:
        """The backend's name (in routes, logs and metrics)."""

    @property
    def url(self) -> str:
        """The server's base URL, without a trailing slash."""

    @property
    def max_concurrency(self) -> int:
        """How many requests the server runs at once."""

    @property
    def discover(self) -> bool:
        """Whether to read the server's model list at start and refresh it in the background."""

    @property
    def discovery_interval_s(self) -> float:
        """Seconds between two background refreshes of the model list."""

    @property
    def connect_timeout_s(self) -> float:
        """The longest wait for a TCP (and TLS) connection."""


SettingsT = TypeVar("SettingsT", bound=HttpBackendSettings)


def error_text(data: Any) -> str:
    """The error text of an answer shaped ``{"error": "..."}`` (Ollama) or ``{"error": {"message": "..."}}``
    (OpenAI); empty when there is none."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error) if error else ""


class HttpBackend(ABC, Generic[SettingsT]):
    """A model server reached over HTTP, as a :class:`resayil_gateway.routing.backends.Backend`.

    ``name`` and ``max_concurrency`` come from ``settings``. ``headers_timeout_s`` bounds the wait for the
    response headers of a POST (unless the caller passes a deadline), ``read_timeout_s`` each read of a body.
    ``headers`` go with every request (an ``Authorization`` header, say); a POST adds
    ``Content-Type: application/json``. Log lines use the logger of the subclass's module.
    """

    kind: BackendKind = "local"
    #: How error messages name the upstream ("The model server is unreachable").
    server: ClassVar[str] = "The model server"
    #: The path ``ready`` GETs; a 200 means ready.
    ready_path: ClassVar[str] = "/"
    ready_timeout_s: ClassVar[float] = 2.0
    discovery_timeout_s: ClassVar[float] = 5.0
    #: How much of an error answer that is not JSON becomes the error message.
    max_error_chars: ClassVar[int] = 200

    def __init__(
        self,
        settings: SettingsT,
        *,
        headers_timeout_s: float,
        read_timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.max_concurrency = settings.max_concurrency
        self.headers_timeout_s = headers_timeout_s
        self.read_timeout_s = read_timeout_s
        self._url = settings.url
        self._headers = dict(headers or {})
        self._post_headers = {"Content-Type": "application/json", **self._headers}
        self._logger = logging.getLogger(type(self).__module__)
        self._session: aiohttp.ClientSession | None = None
        self._models: tuple[DiscoveredModel, ...] = ()
        self._discovery_task: asyncio.Task[None] | None = None
        self._discovery_failing = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, max_concurrency={self.max_concurrency})"

    # what a subclass supplies ------------------------------------------------------------------------------

    @abstractmethod
    async def _discover(self) -> tuple[DiscoveredModel, ...]:
        """Read the server's model list (:meth:`_get_json` helps); raise any of ``DISCOVERY_ERRORS`` on failure."""

    @abstractmethod
    def _raise_for_status(self, status: int, message: str, path: str, headers: Mapping[str, str]) -> NoReturn:
        """Raise the gateway error for an HTTP error ``status`` answered to a POST to ``path``; ``message`` is the
        server's own text (see :meth:`_error_message`), ``headers`` the answer's (``Retry-After``, say)."""

    @abstractmethod
    async def chat(self, request: ChatRequest, model: str) -> ChatResult:
        """Run a chat completion for the upstream model name ``model`` and return the whole answer."""

    @abstractmethod
    def stream_chat(self, request: ChatRequest, model: str) -> AsyncIterator[ChatDelta]:
        """Run a chat completion and yield deltas as they arrive (see ``Backend.stream_chat``)."""

    @abstractmethod
    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        """Embed each input with the upstream model name ``model``."""

    def _redact(self, text: str) -> str:
        """``text`` as it may be logged or shown; override to hide secrets a server echoes back."""
        return text

    # lifecycle ---------------------------------------------------------------------------------------------

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

    # discovery and readiness -------------------------------------------------------------------------------

    def models(self) -> Sequence[DiscoveredModel]:
        """The models the server listed at the last successful discovery (a cache: never a network call)."""
        return self._models

    async def refresh_models(self) -> bool:
        """Read the model list into the cache. Returns False (and keeps the old list) when it fails.

        A failure is logged as a warning once, until discovery works again.
        """
        if self._session is None:
            return False
        try:
            async with asyncio.timeout(self.discovery_timeout_s):
                models = await self._discover()
        except DISCOVERY_ERRORS as exc:
            if not self._discovery_failing:
                self._logger.warning(
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
            self._logger.info("backend %s: model discovery works again (%d models)", self.name, len(models))
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
                self._logger.exception("backend %s: model discovery crashed", self.name)

    async def ready(self) -> bool:
        """True when ``GET ready_path`` answers 200 within ``ready_timeout_s``."""
        if self._session is None:
            return False
        try:
            async with (
                asyncio.timeout(self.ready_timeout_s),
                self._session.get(f"{self._url}{self.ready_path}", headers=self._headers) as resp,
            ):
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def _get_json(self, path: str) -> Any:
        """GET ``path`` and decode its JSON (for :meth:`_discover`); an error status raises
        :class:`aiohttp.ClientResponseError`. No timeout of its own: ``refresh_models`` bounds it."""
        async with self._require_session().get(f"{self._url}{path}", headers=self._headers) as resp:
            resp.raise_for_status()
            return orjson.loads(await resp.read())

    # transport ---------------------------------------------------------------------------------------------

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamUnavailable(f"backend {self.name} is not started")
        return self._session

    async def _post(self, path: str, body: Mapping[str, Any], deadline: float | None = None) -> aiohttp.ClientResponse:
        """POST ``body`` as JSON and wait for the response headers until ``deadline`` (a loop time; by default
        ``headers_timeout_s`` from now). A non-2xx answer is released and raised by :meth:`_raise_for_status`."""
        session = self._require_session()
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.headers_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                resp = await session.post(f"{self._url}{path}", data=orjson.dumps(body), headers=self._post_headers)
        except TimeoutError:
            raise UpstreamTimeout(f"{self.server} did not answer in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable(f"{self.server} is unreachable") from None
        if resp.status >= 300:
            try:
                message = await self._error_message(resp)
            finally:
                resp.release()
            self._raise_for_status(resp.status, message, path, resp.headers)
        return resp

    async def _error_message(self, resp: aiohttp.ClientResponse) -> str:
        """The server's own text in an error answer (see :func:`error_text`, or the start of a body that is not
        JSON), redacted; empty when it cannot be read in time."""
        try:
            async with asyncio.timeout(self.read_timeout_s):
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return ""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._redact(raw[: self.max_error_chars].decode("utf-8", "replace").strip())
        return self._redact(error_text(data))

    async def _read_json(self, resp: aiohttp.ClientResponse) -> dict[str, Any]:
        """The whole body as a JSON object, read within ``read_timeout_s``; the response is released."""
        try:
            async with asyncio.timeout(self.read_timeout_s):
                raw = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"{self.server} stopped sending in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable(f"{self.server} closed the connection") from None
        finally:
            resp.release()
        return self._parse(raw)

    async def _read_chunk(self, resp: aiohttp.ClientResponse, deadline: float) -> bytes:
        """Whatever part of the body has arrived (``b""`` at the end), waiting until ``deadline`` at most."""
        try:
            async with asyncio.timeout_at(deadline):
                return await resp.content.readany()
        except TimeoutError:
            raise UpstreamTimeout(f"{self.server} stopped sending in time") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable(f"{self.server} closed the connection") from None

    def _parse(self, raw: bytes) -> dict[str, Any]:
        """``raw`` as a JSON object; anything else is :class:`UpstreamUnavailable`."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable(f"{self.server} sent an unreadable answer") from None
        if not isinstance(data, dict):
            raise UpstreamUnavailable(f"{self.server} sent an unreadable answer")
        return data
