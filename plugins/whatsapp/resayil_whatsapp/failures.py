"""Telling a transient failure from a permanent one, and wording it so that it is safe to log.

Transient (retry later): a timeout, a refused or broken connection, 408, 429 and every 5xx. Permanent (a
retry repeats the same answer): any other non-2xx. A ``Retry-After`` header (seconds or an HTTP date) travels
on the error as ``retry_after`` and in its text. Provider bodies are cut short and flattened to one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from resayil_gateway.events.channels import DeliveryFailed, PermanentDeliveryError, TransientDeliveryError

EXCERPT_CHARS = 200
RETRY_AFTER_MAX_S = 24 * 3600.0
TRANSIENT_STATUSES = frozenset({408, 429})
WHITESPACE = re.compile(r"\s+")


def is_transient_status(status: int) -> bool:
    """True for HTTP statuses worth retrying: 408, 429 and 5xx."""
    return status in TRANSIENT_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The ``Retry-After`` header in seconds (from a number or an HTTP date), or None when absent or unreadable."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def status_failure(provider: str, status: int, headers: Mapping[str, str], summary: str) -> DeliveryFailed:
    """The error for a non-2xx answer: transient (with ``retry_after``) or permanent, by status alone."""
    detail = f"{provider}: HTTP {status}" + (f": {summary}" if summary else "")
    if not is_transient_status(status):
        return PermanentDeliveryError(detail)
    wait = retry_after(headers)
    if wait is not None:
        detail += f" (retry after {wait:g}s)"
    return TransientDeliveryError(detail, retry_after=wait)


def parse_json(body: bytes) -> Any:
    """The decoded JSON body, or None when it is empty or not JSON."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    line = WHITESPACE.sub(" ", text).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def redacted(error: DeliveryFailed, secret: str) -> DeliveryFailed:
    """``error`` with every occurrence of ``secret`` in its text replaced (a provider may echo what it got)."""
    if not secret or secret not in error.detail:
        return error
    detail = error.detail.replace(secret, "[redacted]")
    if isinstance(error, TransientDeliveryError):
        return TransientDeliveryError(detail, retry_after=error.retry_after)
    return PermanentDeliveryError(detail)
