"""Recipients in E.164 with a leading ``+``: the only form both WhatsApp APIs accept (Resayil answers 400 otherwise).

Phones are normalised once, where they enter the gateway; here they are only checked. Spaces, dashes, dots and
brackets between digits are tolerated and removed, and a ``00`` international prefix becomes ``+``; a number
without a country code is refused rather than guessed (the original project guessed and broke registration).
"""

from __future__ import annotations

import re

import phonenumbers

SEPARATORS = re.compile(r"[\s\-.()]")
E164_SHAPE = re.compile(r"^\+[1-9][0-9]{6,14}$")


class NotE164(ValueError):
    """The text is not a valid phone number in international (E.164) form."""


def e164(raw: str) -> str:
    """``raw`` as E.164 (``+96550000000``); raises :class:`NotE164` when it is not a valid international number."""
    text = SEPARATORS.sub("", raw or "")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not E164_SHAPE.match(text):
        raise NotE164(
            f"{_shown(raw)} is not an E.164 phone number (expected '+' and the country code, e.g. +96550000000)"
        )
    try:
        valid = phonenumbers.is_valid_number(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        valid = False
    if not valid:
        raise NotE164(f"{_shown(raw)} is not a valid international phone number")
    return text


def meta_recipient(phone: str) -> str:
    """The Cloud API's ``to``: the E.164 digits without the ``+`` (as Meta's own examples send it)."""
    return phone.removeprefix("+")


def _shown(raw: str) -> str:
    return repr(raw if len(raw or "") <= 32 else raw[:32] + "…")
