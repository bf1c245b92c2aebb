"""E-mail addresses: trimmed, lower-cased, and checked for a plausible shape."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


class InvalidEmail(ValueError):
    """The text is not a plausible e-mail address."""


def normalize_email(raw: str) -> str:
    """``raw`` trimmed and lower-cased; raises :class:`InvalidEmail` when it is not an address."""
    email = (raw or "").strip().lower()
    if len(email) > 320 or not _EMAIL.match(email):
        raise InvalidEmail(f"not a valid e-mail address: {raw!r}")
    return email
