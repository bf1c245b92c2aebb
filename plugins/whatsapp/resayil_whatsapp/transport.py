"""What a WhatsApp transport is: it builds the HTTP request for one message and reads the provider's answer.

Transports do no I/O: :class:`~resayil_whatsapp.channel.WhatsAppChannel` sends the request, maps timeouts and
connection errors, and keeps the token out of every error text. That leaves each transport two pure
functions, tested against the provider's documented shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from resayil_gateway.events.channels import Receipt


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """One ``POST``: where, with which headers (they carry the token, so never shown) and which JSON body."""

    url: str
    payload: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class Transport(Protocol):
    """One provider's request shape and answer rules."""

    label: str

    def request(self, phone: str, text: str) -> OutboundRequest:
        """The request that sends ``text`` to ``phone`` (E.164 with '+'); raise ``PermanentDeliveryError`` when
        the text can never be sent through this provider."""
        ...

    def receipt(self, status: int, headers: Mapping[str, str], body: bytes) -> Receipt:
        """The receipt for an accepted message; raise ``TransientDeliveryError`` or ``PermanentDeliveryError``."""
        ...
