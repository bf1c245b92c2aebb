"""The WhatsApp Cloud API (Meta): ``POST {meta_base_url}/{version}/{phone_number_id}/messages`` with a Bearer token.

Shapes from wire-formats.md §2.2. ``to`` is the number without '+'. A 200 carries ``messages[0].id`` (the wamid)
and means *accepted*, not delivered. Errors come as ``{"error": {"code", "message", "error_data": {"details"}}}``
and are classified by ``error.code`` first (the HTTP status only when the code is unknown).

The 24-hour rule: free-form text reaches a user only within 24 hours of their last message. Outside it Meta
still answers 200 and the failure (131047) arrives later in a status webhook, so a text that "succeeded" may
never arrive. Our notifications are business-initiated: configure an approved template (``meta_template``,
``meta_template_language``) whose body has one variable ``{{1}}``; the whole text goes in as that parameter.
Template parameters may not contain newlines, tabs or more than four consecutive spaces, so the text's lines
are joined with " / " there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from resayil_gateway.events.channels import (
    DeliveryFailed,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
)

from .failures import excerpt, parse_json, retry_after, status_failure
from .recipients import meta_recipient
from .transport import OutboundRequest

TEXT_BODY_MAX_CHARS = 4096
LINE_BREAKS = re.compile(r"\s*[\r\n\t\v\f]+\s*")
SPACE_RUNS = re.compile(r" {4,}")

# error.code -> (worth retrying, what it means). From wire-formats.md §2.2, plus the common codes of Meta's
# error-code table (131000, 131016, 133004 transient; 131008/131009, 131030, 132000/132001, 132018, 133010 not).
META_ERRORS: dict[int, tuple[bool, str]] = {
    0: (False, "authentication failed: check the access token"),
    3: (False, "the app lacks the capability for this call"),
    10: (False, "permission denied"),
    190: (False, "access token invalid or expired"),
    368: (False, "temporarily blocked for policy violations"),
    100: (False, "invalid parameter"),
    131008: (False, "a required parameter is missing"),
    131009: (False, "a parameter value is not valid (check the recipient number)"),
    131026: (False, "message undeliverable to this recipient"),
    131030: (False, "recipient not in the allowed list of this test number"),
    131047: (False, "more than 24 hours since the user's last message: configure whatsapp.meta_template"),
    131051: (False, "unsupported message type"),
    132000: (False, "template parameter count does not match: the template body needs exactly {{1}}"),
    132001: (False, "template does not exist in this language: check meta_template and meta_template_language"),
    132018: (False, "template parameter not accepted"),
    133010: (False, "phone number not registered on WhatsApp Business"),
    1: (True, "unknown error"),
    2: (True, "service temporarily unavailable"),
    4: (True, "app call rate limit"),
    80007: (True, "WhatsApp Business Account rate limit"),
    130429: (True, "throughput limit of the phone number"),
    131000: (True, "something went wrong at Meta"),
    131016: (True, "service unavailable"),
    131048: (True, "spam rate limit: slow down"),
    131056: (True, "too many messages to the same recipient"),
    133004: (True, "server temporarily unavailable"),
}
PERMISSION_CODES = range(200, 300)


class MetaCloudTransport:
    """Requests and answers of the WhatsApp Cloud API: text messages, or one template with the text as ``{{1}}``."""

    label = "meta"

    def __init__(
        self,
        base_url: str,
        api_version: str,
        phone_number_id: str,
        token: str,
        template: str = "",
        template_language: str = "ar",
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/{api_version}/{phone_number_id}/messages"
        self.template = template
        self.template_language = template_language
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"MetaCloudTransport(url={self.url!r}, template={self.template!r})"

    def request(self, phone: str, text: str) -> OutboundRequest:
        """A template message when a template is configured, else a text message (≤ 4096 characters)."""
        return OutboundRequest(
            self.url, self._template(phone, text) if self.template else self._text(phone, text), self._headers
        )

    def _text(self, phone: str, text: str) -> dict[str, Any]:
        if len(text) > TEXT_BODY_MAX_CHARS:
            raise PermanentDeliveryError(f"{self.label}: text longer than {TEXT_BODY_MAX_CHARS} characters")
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": meta_recipient(phone),
            "type": "text",
            "text": {"preview_url": False, "body": text},
        }

    def _template(self, phone: str, text: str) -> dict[str, Any]:
        return {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": meta_recipient(phone),
            "type": "template",
            "template": {
                "name": self.template,
                "language": {"code": self.template_language},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": template_parameter(text)}]}],
            },
        }

    def receipt(self, status: int, headers: Mapping[str, str], body: bytes) -> Receipt:
        """The wamid of an accepted message; an error classified by its code, else by the status."""
        data = parse_json(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            raise self._failure(status, headers, error)
        if not 200 <= status < 300:
            raise status_failure(self.label, status, headers, excerpt(body))
        if error not in (None, "", False):
            raise PermanentDeliveryError(f"{self.label}: HTTP {status} with an error: {excerpt(str(error))}")
        messages = data.get("messages") if isinstance(data, dict) else None
        first = messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else {}
        wamid = first.get("id")
        state = first.get("message_status") or "accepted"
        return Receipt(
            provider_id=excerpt(str(wamid), 128) if wamid else None,
            detail=f"{self.label}: HTTP {status}, {excerpt(str(state), 40)}",
        )

    def _failure(self, status: int, headers: Mapping[str, str], error: Mapping[str, Any]) -> DeliveryFailed:
        code = error.get("code")
        details = error.get("error_data", {}).get("details") if isinstance(error.get("error_data"), dict) else None
        words = excerpt(str(details or error.get("message") or ""))
        known = META_ERRORS.get(code) if isinstance(code, int) else None
        if known is None and isinstance(code, int) and code in PERMISSION_CODES:
            known = (False, "permission denied")
        if known is None:
            return status_failure(self.label, status, headers, f"error {code}: {words}")
        transient, meaning = known
        detail = f"{self.label}: HTTP {status}, error {code} ({meaning}): {words}"
        if not transient:
            return PermanentDeliveryError(detail)
        wait = retry_after(headers)
        return TransientDeliveryError(
            detail + (f" (retry after {wait:g}s)" if wait is not None else ""), retry_after=wait
        )


def template_parameter(text: str) -> str:
    """``text`` as one template parameter: its lines joined with " / ", no run of more than four spaces."""
    return SPACE_RUNS.sub(" ", LINE_BREAKS.sub(" / ", text.strip()))
