"""The backend interface plugins implement, and where a request is sent (:class:`Route`).

A backend is an object registered through the ``register_backends`` hook. The core owns its lifecycle
(``start`` when the application starts, ``close`` when it stops), admits at most ``max_concurrency``
requests to it at once (the rest wait in the gateway's own line), and translates what it yields into
OpenAI's wire format. A backend never sees HTTP from the client and never deals with credits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..domain import (
    BackendKind,
    ChatDelta,
    ChatRequest,
    ChatResult,
    DiscoveredModel,
    EmbeddingRequest,
    EmbeddingResult,
    ModelInfo,
)


@runtime_checkable
class Backend(Protocol):
    """A model server the gateway can send requests to.

    Errors: raise subclasses of :class:`resayil_gateway.errors.BackendError` (``UpstreamUnavailable`` 502,
    ``UpstreamTimeout`` 504, ``NoCapacity`` 503, ``UpstreamModelNotFound`` 404, ``UpstreamBadRequest`` 400).
    Anything else is reported to the client as a 502 and logged.
    """

    name: str
    kind: BackendKind
    max_concurrency: int

    async def start(self) -> None:
        """Open connections and start background work (model discovery). Called once per process."""

    async def close(self) -> None:
        """Stop background work and close connections."""

    def models(self) -> Sequence[DiscoveredModel]:
        """The models this backend can serve, from a cache: never a network call."""

    async def chat(self, request: ChatRequest, model: str) -> ChatResult:
        """Run a chat completion for the upstream model name ``model`` and return the whole answer."""

    def stream_chat(self, request: ChatRequest, model: str) -> AsyncIterator[ChatDelta]:
        """Run a chat completion and yield deltas as they arrive; the last one has ``finish_reason`` and
        ``usage``. Closing the iterator early (client gone) must cancel the upstream request at once."""

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        """Embed each input with the upstream model name ``model``."""

    async def ready(self) -> bool:
        """True when the backend answers (used by ``/readyz``); a quick check, with a short timeout."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request runs: the backend and the model name it knows; ``model`` is the one billed."""

    backend: Backend
    upstream_model: str
    model: ModelInfo
    reason: str = "default"
