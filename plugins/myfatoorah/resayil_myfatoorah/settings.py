"""The ``[myfatoorah]`` settings section."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from resayil_gateway.config import ConfigError, Section


class MyFatoorahSettings(Section):
    """``[myfatoorah]``: the API host and token, the webhook secret, and how payments are started and checked.

    ``api_token`` and ``webhook_secret`` come from the environment (``RESAYIL_MYFATOORAH__API_TOKEN``,
    ``RESAYIL_MYFATOORAH__WEBHOOK_SECRET``); the webhook secret is the portal's *Webhook Secret Key*, never the
    API token. ``payment_method_id = 0`` picks the first non-direct method ``InitiatePayment`` lists (KNET on
    a Kuwaiti account); ids are account-specific, so set one only after looking it up.
    """

    enabled: bool = False
    base_url: str = "https://apitest.myfatoorah.com"
    api_token: SecretStr = SecretStr("")
    webhook_secret: SecretStr = SecretStr("")
    webhook_version: Literal["v1", "v2", "any"] = "v2"
    webhook_max_age_s: float = Field(3600.0, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    payment_method_id: int = Field(0, ge=0)
    methods_cache_s: float = Field(3600.0, ge=0)
    reconcile_after_s: float = Field(600.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or not urlsplit(value).hostname:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    def require_token(self) -> None:
        """Raise :class:`ConfigError` when the API token is empty for a host other than this machine."""
        if not self.api_token.get_secret_value() and not is_loopback(self.base_url):
            raise ConfigError(
                "myfatoorah.api_token: required when [myfatoorah] is enabled "
                f"(set RESAYIL_MYFATOORAH__API_TOKEN for {self.base_url})"
            )


def is_loopback(url: str) -> bool:
    """True when ``url`` points at this machine (a simulator), where an empty token is acceptable."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
