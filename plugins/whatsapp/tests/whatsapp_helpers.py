"""Helpers shared by the WhatsApp plugin's tests (a unique module name, so it never clashes with other suites)."""

from __future__ import annotations

from typing import Any

from resayil_whatsapp.settings import WhatsAppSettings

from resayil_gateway.events.channels import Message

TOKEN = "wa-token-Zq81xK3vP0s"
RESAYIL_BASE = "https://api.resayil.test"
RESAYIL_URL = RESAYIL_BASE + "/v1/messages"
META_BASE = "https://graph.facebook.test"
PHONE_NUMBER_ID = "106540352242922"
META_URL = f"{META_BASE}/v24.0/{PHONE_NUMBER_ID}/messages"
PHONE = "+96550000000"
SINK_TOKEN = "sink-token-e2e-7Hq2"
EXTRA_ADMIN = "+96599990000"  # whatsapp.admin_phones of the gateways that deliver to a sink
BILINGUAL = "مرحباً بك في Resayil! رصيدك الحالي *100*.\n\nWelcome to Resayil! Your balance is *100* credits."


def resayil_settings(**values: Any) -> WhatsAppSettings:
    """Settings for the Resayil transport against a fake host, with a token."""
    return WhatsAppSettings(**{"base_url": RESAYIL_BASE, "token": TOKEN, **values})


def meta_settings(**values: Any) -> WhatsAppSettings:
    """Settings for the Meta transport against a fake host, with a token and a phone number ID."""
    base = {"transport": "meta", "meta_base_url": META_BASE, "meta_phone_number_id": PHONE_NUMBER_ID, "token": TOKEN}
    return WhatsAppSettings(**{**base, **values})


def message(text: str = BILINGUAL, recipient: str = PHONE) -> Message:
    """A notification for one recipient."""
    return Message(recipient=recipient, text=text, event="welcome", key="welcome:1")


def sink_env(sink_url: str, token: str = SINK_TOKEN, **settings: Any) -> dict[str, str]:
    """A deployment's environment for the WhatsApp plugin alone (loaded from its entry point), delivering to the
    sink at ``sink_url`` with ``EXTRA_ADMIN`` as an admin phone; ``settings`` are more ``[whatsapp]`` keys."""
    env = {
        "RESAYIL_LOAD_PLUGINS": "whatsapp",
        "RESAYIL_WHATSAPP__BASE_URL": sink_url,
        "RESAYIL_WHATSAPP__TOKEN": token,
        "RESAYIL_WHATSAPP__ADMIN_PHONES": f'["{EXTRA_ADMIN}"]',
    }
    env.update({f"RESAYIL_WHATSAPP__{key.upper()}": str(value) for key, value in settings.items()})
    return env
