"""One MyFatoorah v2 call: ``POST <base_url>/v2/<Endpoint>`` with the Bearer token, the envelope unwrapped.

Every failure becomes :class:`~resayil_gateway.billing.payments.PaymentError` with a message that is safe to
log (it never contains the token) and ``transient`` true when a retry may succeed: timeouts, refused
connections, HTTP 429 and 5xx, and replies that are not the JSON envelope on a 2xx. Success is decided by
``IsSuccess``, not by the HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from resayil_gateway.billing.payments import PaymentError

from .money import decode_json, encode_json
from .settings import MyFatoorahSettings

MAX_MESSAGE = 300


class MyFatoorahClient:
    """An aiohttp session to MyFatoorah's API, opened by :meth:`start` and closed by :meth:`close`."""

    def __init__(self, settings: MyFatoorahSettings) -> None:
        self.settings = settings
        self._token = settings.api_token.get_secret_value()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP session."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"},
            )

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, endpoint: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v2/<endpoint>`` and return the envelope's ``Data`` object."""
        if self._session is None:
            raise PaymentError("the MyFatoorah provider is not started", transient=True)
        url = f"{self.settings.base_url}/v2/{endpoint}"
        try:
            async with self._session.post(
                url, data=encode_json(body), headers={"Content-Type": "application/json"}
            ) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError:
            raise PaymentError(
                f"MyFatoorah {endpoint}: no answer within {self.settings.timeout_s:g} s", transient=True
            ) from None
        except aiohttp.ClientError as exc:
            raise PaymentError(
                f"MyFatoorah {endpoint}: cannot reach {self.settings.base_url} ({type(exc).__name__})",
                transient=True,
            ) from None
        return self._unwrap(endpoint, status, raw)

    def _unwrap(self, endpoint: str, status: int, raw: bytes) -> dict[str, Any]:
        retryable = status == 429 or status >= 500
        try:
            envelope = decode_json(raw) if raw.strip() else None
        except ValueError:
            envelope = None
        if status in (401, 403):
            reason = _reason(envelope) if isinstance(envelope, dict) else ""
            said = f": {reason}" if reason else ""
            message = f"MyFatoorah {endpoint}: HTTP {status}, the API token was refused{said}"
            message += " (check myfatoorah.api_token)"
            raise PaymentError(self._safe(message), transient=False)
        if not isinstance(envelope, dict):
            what = "an empty body" if not raw.strip() else "a body that is not JSON"
            raise PaymentError(f"MyFatoorah {endpoint}: HTTP {status} with {what}", transient=retryable or status < 300)
        if envelope.get("IsSuccess") is not True:
            reason = _reason(envelope) or "IsSuccess is not true"
            raise PaymentError(self._safe(f"MyFatoorah {endpoint}: HTTP {status}: {reason}"), transient=retryable)
        data = envelope.get("Data")
        if not isinstance(data, dict):
            raise PaymentError(f"MyFatoorah {endpoint}: the reply has no Data object", transient=False)
        return data

    def _safe(self, message: str) -> str:
        if self._token and self._token in message:
            message = message.replace(self._token, "***")
        return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def _reason(envelope: Mapping[str, Any]) -> str:
    """The error text MyFatoorah gave: validation items (``Name: Error``), ``Data.ErrorMessage``, ``Message``."""
    message = _text(envelope.get("Message"))
    items = envelope.get("ValidationErrors") or envelope.get("FieldsErrors") or []
    details = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            name, error = _text(item.get("Name")), _text(item.get("Error"))
            details.append(f"{name}: {error}" if name and error else error or name or message)
    data = envelope.get("Data")
    if isinstance(data, dict) and _text(data.get("ErrorMessage")):
        details.append(_text(data.get("ErrorMessage")))
    detail = "; ".join(part for part in details if part)
    if message and detail:
        return f"{message} ({detail})"
    return detail or message or _text(envelope.get("MessageDetail"))


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
