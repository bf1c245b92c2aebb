"""Phone numbers, normalised once at the boundary to E.164 with a leading ``+``.

An 8-digit number without a country code is Kuwaiti (``+965``); other numbers need their country code.
"""

from __future__ import annotations

DEFAULT_REGION = "KW"


class InvalidPhone(ValueError):
    """The text is not a valid phone number."""


def normalize_phone(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """``raw`` as E.164 (``+96550000000``); raises :class:`InvalidPhone` with a readable reason."""
    import phonenumbers  # its metadata is loaded on first use (a sign-up), not by every worker at start

    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("phone number is required")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        raise InvalidPhone(f"not a phone number: {raw!r}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(f"not a valid phone number: {raw!r} (include the country code, e.g. +965…)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
