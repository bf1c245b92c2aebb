"""The ``[ollama]`` settings section."""

from __future__ import annotations

from pydantic import Field, field_validator

from resayil_gateway.config import Section


class OllamaSettings(Section):
    """``[ollama]``: where the local Ollama server is, how many requests it runs at once, and timeouts.

    Timeouts are in seconds. ``first_token_timeout_s`` bounds the wait for the response headers and the
    first NDJSON line (model load plus prompt processing); ``read_timeout_s`` bounds the gap between lines.
    """

    enabled: bool = True
    name: str = Field(default="ollama", min_length=1)
    url: str = "http://127.0.0.1:11434"
    max_concurrency: int = Field(default=1, ge=1, description="match OLLAMA_NUM_PARALLEL")
    discover: bool = True
    discovery_interval_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_token_timeout_s: float = Field(default=120.0, gt=0)
    read_timeout_s: float = Field(default=120.0, gt=0)
    keep_alive: str | None = None
    num_ctx: int | None = Field(default=None, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1].strip("/")) == 0:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")
