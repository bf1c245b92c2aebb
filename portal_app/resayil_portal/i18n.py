"""Arabic and English from one source: ``locales/<language>.json``, the same keys in both (a test checks)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

LANGUAGES = ("ar", "en")
LANGUAGE_COOKIE = "resayil_lang"
DIRECTION = {"ar": "rtl", "en": "ltr"}


@cache
def catalog(language: str) -> Mapping[str, str]:
    """Every message of ``language``, by key."""
    text = resources.files("resayil_portal").joinpath("locales", f"{language}.json").read_text("utf-8")
    data: dict[str, str] = json.loads(text)
    return data


class Translator:
    """Looks messages up in one language; a missing key shows as the key itself (a test keeps that from
    ever reaching a user)."""

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else LANGUAGES[0]
        self.direction = DIRECTION[self.language]
        self._messages = catalog(self.language)

    def __call__(self, key: str, **values: Any) -> str:
        """The message for ``key``, with ``{name}`` placeholders filled from ``values``."""
        text = self._messages.get(key, key)
        return text.format(**values) if values else text


def choose_language(cookie: str | None, default: str) -> str:
    """The visitor's remembered choice, else the deployment's default."""
    if cookie in LANGUAGES:
        return str(cookie)
    return default if default in LANGUAGES else LANGUAGES[0]


# Keys built from a prefix and a value in templates or code; the completeness test checks every one.
DYNAMIC_KEYS: dict[str, tuple[str, ...]] = {
    "model.kind_": ("local", "cloud"),
    "model.size_": ("small", "medium", "large"),
    "admin.budget_": ("green", "amber", "red"),
    "admin.role_": ("user", "admin"),
    "admin.status_": ("active", "disabled"),
    "pay.status_": ("pending", "paid", "failed", "cancelled"),
    "ledger.reason_": ("request", "topup", "plan_grant", "expiry", "adjustment", "refund", "signup"),
    "error.": tuple(f"{field}_{kind}" for field in ("email", "phone", "password") for kind in ("invalid", "taken")),
}
