"""Resayil Gateway plugin: WhatsApp notifications through the Resayil API or Meta's Cloud API.

- :mod:`resayil_whatsapp.settings`: the ``[whatsapp]`` settings section.
- :mod:`resayil_whatsapp.recipients`: E.164 checks for recipients and admin phones.
- :mod:`resayil_whatsapp.resayil_api`, :mod:`resayil_whatsapp.meta_api`: the two transports (request shape and
  answer rules, no I/O), behind :class:`resayil_whatsapp.transport.Transport`.
- :mod:`resayil_whatsapp.failures`: transient vs permanent, ``Retry-After``, log-safe error texts.
- :mod:`resayil_whatsapp.channel`: :class:`WhatsAppChannel`, the ``whatsapp`` channel the core delivers through.
- :mod:`resayil_whatsapp.sink`: a message sink that stands in for both providers in tests and demos.
- :mod:`resayil_whatsapp.plugin`: the hook implementations registered under the ``resayil_gateway`` entry point.
"""

from .channel import WhatsAppChannel
from .settings import WhatsAppSettings

__all__ = ["WhatsAppChannel", "WhatsAppSettings"]
