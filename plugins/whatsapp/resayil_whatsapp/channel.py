"""The ``whatsapp`` notification channel: one text to one phone through the configured transport.

It checks the recipient before anything goes out (a number that is not E.164 is a permanent failure, never a
call), sends one ``POST`` with a total timeout, and turns every outcome into a :class:`Receipt` or a
:class:`TransientDeliveryError` / :class:`PermanentDeliveryError` whose text never contains the token. The
core's delivery worker owns retries and backoff; the channel never retries by itself.
"""

from __future__ import annotations

import logging

import aiohttp

from resayil_gateway.events.channels import (
    DeliveryFailed,
    Message,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
)

from .failures import excerpt, redacted
from .meta_api import MetaCloudTransport
from .recipients import NotE164, e164
from .resayil_api import ResayilTransport
from .settings import WhatsAppSettings
from .transport import Transport

logger = logging.getLogger(__name__)

CHANNEL_NAME = "whatsapp"


def make_transport(settings: WhatsAppSettings) -> Transport:
    """The transport ``settings.transport`` names, configured from ``settings``."""
    token = settings.token.get_secret_value()
    if settings.transport == "meta":
        return MetaCloudTransport(
            settings.meta_base_url,
            settings.meta_api_version,
            settings.meta_phone_number_id,
            token,
            template=settings.meta_template,
            template_language=settings.meta_template_language,
        )
    return ResayilTransport(settings.base_url, token)


class WhatsAppChannel:
    """A :class:`resayil_gateway.events.channels.Channel` named ``whatsapp``.

    ``extra_admin_recipients`` are the ``admin_phones`` of the settings (E.164), to which the core sends admin
    alerts in addition to the admin accounts' own phones.
    """

    name = CHANNEL_NAME

    def __init__(self, settings: WhatsAppSettings, transport: Transport | None = None) -> None:
        self.settings = settings
        self.extra_admin_recipients: tuple[str, ...] = settings.admin_phones
        self.transport = transport or make_transport(settings)
        self._secret = settings.token.get_secret_value()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"WhatsAppChannel(transport={self.transport!r})"

    async def start(self) -> None:
        """Open the HTTP session (idempotent; :meth:`send` opens it too when the caller did not)."""
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)

    async def close(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, message: Message) -> Receipt:
        """Deliver ``message``: a :class:`Receipt` when the provider accepted it, else a delivery error."""
        label = self.transport.label
        try:
            phone = e164(message.recipient)
        except NotE164 as exc:
            raise PermanentDeliveryError(f"{label}: recipient {exc}") from None
        if not message.text.strip():
            raise PermanentDeliveryError(f"{label}: empty message text")
        try:
            outbound = self.transport.request(phone, message.text)
            await self.start()
            assert self._session is not None
            async with self._session.post(outbound.url, json=outbound.payload, headers=outbound.headers) as resp:
                body = await resp.read()
                receipt = self.transport.receipt(resp.status, resp.headers, body)
        except DeliveryFailed as exc:
            raise redacted(exc, self._secret) from None
        except TimeoutError:
            raise TransientDeliveryError(f"{label}: no answer within {self.settings.timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = excerpt(str(exc).replace(self._secret, "[redacted]") if self._secret else str(exc))
            raise TransientDeliveryError(f"{label}: {type(exc).__name__}: {reason}") from None
        logger.debug(
            "whatsapp: %s accepted %s for %s (%s)", label, receipt.provider_id, message.key or "-", receipt.detail
        )
        return receipt
