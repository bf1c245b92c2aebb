"""Logging as text or JSON lines (``--log-format json``), with an access log that carries the request id.

Secrets never reach a log at any level: :class:`SecretsFilter`, installed on every handler by
:func:`configure_logging`, masks API keys (``rsk-…``), bearer tokens, ``password=``/``token:``-style values,
the password of any ``scheme://user:password@host`` URL and every secret value the settings hold, in the
message, its arguments, the traceback and extra fields. aiohttp quotes the raw bytes of a malformed request
line or header in its errors; they go through the same filter."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
MIN_SECRET_LENGTH = 6  # shorter configured values would mask ordinary words

# keeps the 12-character display prefix, which is not a secret (it is how keys are listed and revoked)
_API_KEY = re.compile(r"(rsk-[A-Za-z0-9_-]{8})[A-Za-z0-9_-]+")
_SCHEME = r"(?:(?:bearer|basic|token)\b:?\s*)"
_VALUE = r"(?!\*)[^\s'\"\\&,;]+"
_ASSIGNED = re.compile(
    r"(?i)(?<![A-Za-z0-9])((?:password|passwd|pwd|secret|token|api[_-]?key|authorization)(?:[_-][A-Za-z0-9_-]*)?)"
    rf"(['\"]?\s*[:=]\s*)(?:\"[^\"]*\"|'[^']*'|{_SCHEME}?{_VALUE})"
)
_ASSIGNED_WORDS = ("pass", "pwd", "secret", "token", "key", "authorization")
_BEARER = re.compile(rf"(?i)\b(bearer)(\s+){_VALUE}")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@")
_secrets: set[str] = set()


def remember_secrets(values: Iterable[str]) -> None:
    """Mask these configured values (secret keys, plugin tokens) in every log from now on."""
    _secrets.update(value for value in values if len(value) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with every API key, token, password and configured secret masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "rsk-" in text:
        text = _API_KEY.sub(rf"\1{MASK}", text)
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    lowered = text.lower()  # the patterns are costly: run each only when its words appear (access log lines)
    if any(word in lowered for word in _ASSIGNED_WORDS):
        text = _ASSIGNED.sub(rf"\1\2{MASK}", text)
    if "bearer" in lowered:
        text = _BEARER.sub(rf"\1\2{MASK}", text)
    return text


class SecretsFilter(logging.Filter):
    """Masks secrets in a record before any handler formats it (install it on handlers: a logger's own
    filters do not see records that propagate from its children)."""

    _standard = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message, traceback and extra fields with secrets masked; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let logging report it as usual
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in self._standard and isinstance(value, str):
                record.__dict__[key] = redact(value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    _standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._standard and not key.startswith("_"):
                payload[key] = value
        if record.exc_info or record.exc_text:
            payload["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(payload, ensure_ascii=False, default=str)


def configure_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send logs to stderr (or ``stream``) as ``text`` or ``json``, every record through :class:`SecretsFilter`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(SecretsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, method, path, status, size, duration and request id."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write the access line (as structured fields in JSON mode)."""
        self.logger.info(
            '%s "%s %s" %s %s %.1fms %s',
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
            response.headers.get("x-request-id", "-"),
            extra={
                "remote": request.remote,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(time * 1000, 2),
                "request_id": response.headers.get("x-request-id"),
            },
        )

    @property
    def enabled(self) -> bool:
        """Only when the access logger would emit."""
        return self.logger.isEnabledFor(logging.INFO)
