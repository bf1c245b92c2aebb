"""The ``[whatsapp]`` settings section."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from resayil_gateway.config import Section

from .recipients import NotE164, e164


class WhatsAppSettings(Section):
    """``[whatsapp]``: which API delivers the messages, where it is, its token and the admins' phones.

    ``enabled`` unset means "on when a token is set", so a deployment that sets ``RESAYIL_WHATSAPP__TOKEN``
    sends messages and one that has no token does not fail to start. ``enabled = true`` without a token is an
    error, except against a loopback address (the sink simulator). The token (``RESAYIL_WHATSAPP__TOKEN``) is
    Resayil's ``Token`` header or Meta's Bearer access token, whichever ``transport`` uses.
    """

    enabled: bool | None = None
    transport: Literal["resayil", "meta"] = "resayil"
    base_url: str = "https://api.resayil.io"
    meta_base_url: str = "https://graph.facebook.com"
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    admin_phones: tuple[str, ...] = ()
    token: SecretStr = Field(default=SecretStr(""), repr=False, validate_default=True)
    meta_phone_number_id: str = Field(default="", pattern=r"^[0-9]*$", validate_default=True)
    meta_api_version: str = Field(default="v24.0", pattern=r"^v[0-9]+\.[0-9]+$")
    meta_template: str = Field(default="", pattern=r"^[a-z0-9_]*$", max_length=512)
    meta_template_language: str = Field(default="ar", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")

    @property
    def active(self) -> bool:
        """True when the channel should be registered."""
        return self.enabled if self.enabled is not None else bool(self.token.get_secret_value())

    @property
    def endpoint_base(self) -> str:
        """The base URL of the API ``transport`` talks to."""
        return self.meta_base_url if self.transport == "meta" else self.base_url

    @field_validator("base_url", "meta_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or not urlsplit(value).hostname:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("admin_phones")
    @classmethod
    def _admin_phones_are_e164(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(dict.fromkeys(e164(phone) for phone in value))
        except NotE164 as exc:
            raise ValueError(str(exc)) from None

    @field_validator("token")
    @classmethod
    def _token_when_enabled(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("enabled") is not True or value.get_secret_value():
            return value
        base = info.data.get("meta_base_url" if info.data.get("transport") == "meta" else "base_url")
        if isinstance(base, str) and not is_loopback_url(base):
            raise ValueError("required when whatsapp is enabled (set RESAYIL_WHATSAPP__TOKEN)")
        return value

    @field_validator("meta_phone_number_id")
    @classmethod
    def _phone_number_id_for_meta(cls, value: str, info: ValidationInfo) -> str:
        token = info.data.get("token")
        has_token = isinstance(token, SecretStr) and bool(token.get_secret_value())
        active = info.data.get("enabled") if info.data.get("enabled") is not None else has_token
        if active and info.data.get("transport") == "meta" and not value:
            raise ValueError("required when transport is 'meta' (the phone number ID, not the phone number)")
        return value


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
