"""The ``[cloud]`` settings section."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from resayil_gateway.config import Section

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_local_url(url: str) -> bool:
    """True when ``url`` points at this machine (a simulator or a local proxy, where no key is needed)."""
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


class CloudSettings(Section):
    """``[cloud]``: the cloud model host, its key, how many requests run at once, the daily budget and timeouts.

    ``enabled`` left unset means "on when ``api_key`` is set", so setting ``RESAYIL_CLOUD__API_KEY`` is all a
    deployment needs, and a machine without a key (``make run``, the tests) runs without the cloud. An explicit
    ``enabled = true`` without a key for a non-local ``url`` is a configuration error.

    ``dialect``: ``"ollama"`` for ``https://ollama.com`` (model names lose a ``-cloud``/``:cloud`` suffix,
    ``max_tokens`` carries the length limit), ``"openai"`` for any other OpenAI-compatible host
    (``max_completion_tokens``). Both speak ``/v1/chat/completions``, ``/v1/embeddings`` and ``/v1/models``.

    ``timeout_s`` bounds every wait for the upstream's next sign of life: the response headers, a whole
    non-streamed answer, the gap between two pieces of a stream.
    """

    enabled: bool | None = None
    name: str = Field(default="cloud", min_length=1)
    url: str = "https://ollama.com"
    dialect: Literal["ollama", "openai"] = "ollama"
    max_concurrency: int = Field(default=16, ge=1)
    daily_request_budget: int = Field(default=500, ge=0)
    budget_alert_ratios: tuple[float, ...] = (0.8, 1.0)
    embeddings: bool = True
    discover: bool = True
    discovery_interval_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    # Last, so its validator sees every other field.
    api_key: SecretStr = Field(default=SecretStr(""), validate_default=True)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1].strip("/")) == 0:
            raise ValueError("must be an absolute http(s) URL")
        value = value.rstrip("/")
        return value.removesuffix("/v1")  # the backend adds /v1 itself

    @field_validator("budget_alert_ratios")
    @classmethod
    def _ascending_ratios(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < ratio <= 1 for ratio in value):
            raise ValueError("each ratio must be above 0 and at most 1")
        if any(later <= earlier for earlier, later in pairwise(value)):
            raise ValueError("ratios must be in ascending order without repeats")
        return value

    @field_validator("api_key")
    @classmethod
    def _key_when_enabled(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        url = info.data.get("url")
        if info.data.get("enabled") is True and not value.get_secret_value() and url and not is_local_url(url):
            raise ValueError(f"required when the cloud backend is enabled for {url} (set RESAYIL_CLOUD__API_KEY)")
        return value

    @property
    def active(self) -> bool:
        """True when the backend should be registered: ``enabled``, or unset with an ``api_key``."""
        if self.enabled is None:
            return bool(self.api_key.get_secret_value())
        return self.enabled
