"""Money on screen: one helper turns integer fils into KWD with three decimals."""

from __future__ import annotations

CURRENCY_LABEL = {"en": "KWD", "ar": "د.ك"}


def format_kwd(fils: int, language: str = "en") -> str:
    """``2500`` → ``"2.500 KWD"`` (``"2.500 د.ك"`` in Arabic): 1 KWD is 1,000 fils, always three decimals."""
    sign = "-" if fils < 0 else ""
    whole, part = divmod(abs(int(fils)), 1000)
    return f"{sign}{whole:,}.{part:03d} {CURRENCY_LABEL.get(language, 'KWD')}"


def format_count(value: int) -> str:
    """An integer with thousands separators (credits, tokens, requests)."""
    return f"{int(value):,}"
