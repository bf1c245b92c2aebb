"""KWD amounts on the wire ↔ integer fils, exactly, and JSON that keeps them exact both ways.

MyFatoorah takes and returns amounts as JSON numbers with up to three decimals (``5.000``), and as strings in
transactions (``"12,345.000"``). Nothing here passes through a float: requests write the digits from the
integer, responses are parsed with :class:`~decimal.Decimal` numbers.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

FILS_PER_KWD = 1000
CURRENCY_ALIASES = {"KD": "KWD"}  # GetPaymentStatus writes "5.000 KD"; the ISO code is KWD


@dataclass(frozen=True, slots=True)
class Kwd:
    """An amount to send as a JSON number with three decimals; ``fils`` is the exact integer amount."""

    fils: int

    def __post_init__(self) -> None:
        if isinstance(self.fils, bool) or not isinstance(self.fils, int) or self.fils < 0:
            raise ValueError("an amount is a non-negative integer number of fils")

    def text(self) -> str:
        """The amount as MyFatoorah writes it: ``"5.000"``."""
        return fils_to_kwd_text(self.fils)


def fils_to_kwd_text(fils: int) -> str:
    """``5000`` → ``"5.000"``: whole dinars, a point and exactly three digits of fils."""
    if isinstance(fils, bool) or not isinstance(fils, int) or fils < 0:
        raise ValueError("an amount is a non-negative integer number of fils")
    dinars, rest = divmod(fils, FILS_PER_KWD)
    return f"{dinars}.{rest:03d}"


def kwd_to_fils(value: Decimal | int | str) -> int:
    """An amount in KWD (``Decimal("5.000")``, ``5``, ``"12,345.000"``) → integer fils, exactly.

    Raises :class:`ValueError` for anything that is not a finite, non-negative number with at most three
    decimals. Floats are refused: parse JSON with :func:`decode_json` so amounts arrive as ``Decimal``.
    """
    if isinstance(value, bool | float):
        raise ValueError("amounts must not be floats (parse JSON with decode_json)")
    if isinstance(value, str):
        text = value.replace(",", "").strip()
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not an amount: {text[:40]!r}") from None
    number = Decimal(value)
    if not number.is_finite() or number < 0:
        raise ValueError(f"not a non-negative amount: {number}")
    fils = number * FILS_PER_KWD
    if fils != fils.to_integral_value():
        raise ValueError(f"more than three decimals: {number}")
    return int(fils)


_DISPLAY_VALUE = re.compile(r"^\s*(?:([A-Za-z]{2,3})\s*)?([0-9][0-9,]*(?:\.[0-9]+)?)\s*(?:([A-Za-z]{2,3}))?\s*$")


def parse_display_value(text: str) -> tuple[int, str] | None:
    """``"5.000 KD"`` (or ``"KD 5.000"``) → ``(5000, "KWD")``; None when it is not that shape."""
    match = _DISPLAY_VALUE.match(text or "")
    code = match and (match.group(1) or match.group(3))
    if not match or not code:
        return None
    try:
        fils = kwd_to_fils(match.group(2))
    except ValueError:
        return None
    code = code.upper()
    return fils, CURRENCY_ALIASES.get(code, code)


def normalize_currency(code: str) -> str:
    """A currency as an ISO code: ``"KD"`` → ``"KWD"``."""
    code = code.strip().upper()
    return CURRENCY_ALIASES.get(code, code)


def encode_json(body: Any) -> bytes:
    """``body`` as JSON bytes, writing every :class:`Kwd` as a number with three decimals (``5.000``)."""
    nonce = secrets.token_hex(8)
    marker = f"\x00{nonce}:"

    def placeholder(value: Any) -> str:
        if isinstance(value, Kwd):
            return f"{marker}{value.fils}"
        raise TypeError(f"cannot encode {type(value).__name__}")

    raw = orjson.dumps(body, default=placeholder, option=orjson.OPT_PASSTHROUGH_DATACLASS)
    pattern = re.compile(rb'"\\u0000' + nonce.encode() + rb':(\d+)"')
    return pattern.sub(lambda match: fils_to_kwd_text(int(match.group(1))).encode(), raw)


def decode_json(data: bytes | str) -> Any:
    """Parse JSON with decimal numbers as :class:`~decimal.Decimal` (exact) and integers as ``int``."""
    return json.loads(data, parse_float=Decimal)


def plain_json(value: Any) -> Any:
    """A :func:`decode_json` result with ``Decimal`` turned into ``float``: JSON-serialisable, for logs/storage."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_json(item) for item in value]
    return value
