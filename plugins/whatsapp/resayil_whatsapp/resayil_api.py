"""The Resayil WhatsApp API (resayil.io): ``POST {base_url}/v1/messages``, header ``Token``, ``{phone, message}``.

The exact shape from the reference (wire-formats.md §2.1): the token goes in a ``Token`` header, **not**
``Authorization: Bearer``; the body has exactly ``phone`` (E.164 with '+') and ``message`` and nothing else
(the original project's extra ``language`` field and Bearer header made every notification fail). A failure
is a non-2xx status **or** a JSON body with an ``error`` key (``"error": null`` counts as none); any other 2xx
means queued. The success body is
not documented: the message id is read from ``id`` (Wassenger-style 201) or ``message_id`` when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resayil_gateway.events.channels import PermanentDeliveryError, Receipt

from .failures import excerpt, parse_json, status_failure
from .transport import OutboundRequest

MESSAGES_PATH = "/v1/messages"


class ResayilTransport:
    """Requests and answers of the Resayil API."""

    label = "resayil"

    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url.rstrip("/") + MESSAGES_PATH
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Token"] = token

    def __repr__(self) -> str:
        return f"ResayilTransport(url={self.url!r})"

    def request(self, phone: str, text: str) -> OutboundRequest:
        """``POST /v1/messages`` with ``{"phone": phone, "message": text}``."""
        return OutboundRequest(self.url, {"phone": phone, "message": text}, self._headers)

    def receipt(self, status: int, headers: Mapping[str, str], body: bytes) -> Receipt:
        """Queued on any 2xx without an ``error`` key; otherwise the failure, transient or permanent by status."""
        data = parse_json(body)
        if not 200 <= status < 300:
            raise status_failure(self.label, status, headers, _problem(data) or excerpt(body))
        if isinstance(data, dict) and data.get("error") not in (None, "", False):
            # No retryable in-body error is documented: retrying would most likely repeat it.
            raise PermanentDeliveryError(f"{self.label}: HTTP {status} with an error: {_problem(data)}")
        state = data.get("status") if isinstance(data, dict) else None
        detail = f"{self.label}: HTTP {status}" + (f", {excerpt(str(state), 40)}" if state else ", queued")
        return Receipt(provider_id=_message_id(data), detail=detail)


def _message_id(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for key in ("id", "message_id", "messageId"):
        value = data.get(key)
        if isinstance(value, str | int) and str(value):
            return excerpt(str(value), 128)
    return None


def _problem(data: Any) -> str:
    """The provider's own words: ``error`` (a string or an object with a message), else ``message``."""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("description") or error
    text = error if error not in (None, "", {}) else data.get("message")
    return excerpt(str(text)) if text not in (None, "") else ""
