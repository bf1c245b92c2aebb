"""The types that carry meaning through the gateway: who calls, what they ask, what it used, what it cost.

Everything here is a frozen dataclass so values can be cached and shared between tasks without copies.
Plugins receive and return these types through the hooks in :mod:`resayil_gateway.hookspecs`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

BackendKind = Literal["local", "cloud"]
SizeClass = Literal["small", "medium", "large"]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API caller: the account, the key it used and the plan whose rules apply."""

    account_id: int
    key_id: int | None
    key_prefix: str
    plan: str
    role: str = "user"
    email: str = ""

    @property
    def is_admin(self) -> bool:
        """True when the account has the admin role (admins still pay for API calls)."""
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI chat-completions request, validated, with the fields a backend translates.

    ``body`` is the request as the client sent it (parsed JSON), so a backend that speaks OpenAI's dialect
    itself can pass unknown fields through untouched.
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: tuple[Mapping[str, Any], ...] | None = None
    tool_choice: Any = None
    response_format: Mapping[str, Any] | None = None
    user: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)

    def estimated_prompt_tokens(self) -> int:
        """A cheap upper-leaning estimate of the prompt's tokens (about four characters a token)."""
        chars = 0
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                        chars += len(part["text"])
                    else:
                        chars += 1024  # an image or other part: hold generously
            chars += 16
        return chars // 4 + 8


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """An OpenAI embeddings request: one or more input strings."""

    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    body: Mapping[str, Any] = field(default_factory=dict)

    def estimated_prompt_tokens(self) -> int:
        """A cheap upper-leaning estimate of the input's tokens."""
        return sum(len(text) for text in self.inputs) // 3 + len(self.inputs)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a request consumed, as the backend reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A whole (non-streamed) answer from a backend."""

    content: str | None
    finish_reason: str
    usage: Usage
    tool_calls: tuple[Mapping[str, Any], ...] | None = None
    reasoning: str | None = None


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """One piece of a streamed answer. The last piece carries ``finish_reason`` and ``usage``.

    ``tool_calls`` items follow OpenAI's streamed shape: ``{"index", "id", "type", "function": {...}}``.
    """

    content: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[Mapping[str, Any], ...] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """Vectors for each input, in input order, and the tokens read."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model of the catalog: where it runs, how big it is, what it costs and where it may fail over."""

    id: str
    backend: str
    kind: BackendKind = "local"
    size: SizeClass = "medium"
    multiplier: float = 1.0
    cloud_equivalent: str | None = None
    capabilities: tuple[str, ...] = ("chat",)
    created: int = 0
    owned_by: str = "resayil"
    upstream_name: str | None = None

    @property
    def name_upstream(self) -> str:
        """The name the backend knows the model by."""
        return self.upstream_name or self.id


@dataclass(frozen=True, slots=True)
class DiscoveredModel:
    """A model a backend reports it can serve (from its own listing, e.g. Ollama's ``/api/tags``)."""

    name: str
    capabilities: tuple[str, ...] = ("chat",)
    created: int = 0
    parameter_size: str = ""
    family: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """A domain event: something happened that plugins may want to observe or notify about.

    ``name`` is a dotted verb such as ``account.created`` or ``request.completed``; ``key`` de-duplicates
    (the same key is delivered once).
    """

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    account_id: int | None = None
    key: str | None = None
    at: float = field(default_factory=time.time)


Emit = Callable[[Event], Awaitable[None]]
"""Hand an event to every ``on_event`` observer (what a service is given instead of the whole gateway)."""
