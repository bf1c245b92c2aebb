"""Errors that reach an API client, each carrying its OpenAI-shaped body and HTTP status.

Raise one of these anywhere on the request path (core or plugin); the API layer turns it into
``{"error": {"message", "type", "param", "code"}}`` with the right status and headers. One place builds that
shape: :func:`error_body`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def error_body(
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAI error object: ``{"error": {"message", "type", "param", "code", ...extra}}``."""
    error: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    if extra:
        error.update(extra)
    return {"error": error}


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI error body."""

    status = 500
    type_ = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        type_: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type_ is not None:
            self.type_ = type_
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON body a client receives."""
        return error_body(self.message, self.type_, self.code, self.param, self.extra)


class InvalidRequest(GatewayError):
    """400: the request is malformed or a parameter is wrong (``param`` names it)."""

    status = 400
    type_ = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    """401: missing, malformed, unknown or revoked API key (each with its own message)."""

    status = 401
    type_ = "invalid_request_error"
    code = "invalid_api_key"


class InsufficientCredits(GatewayError):
    """402: the balance cannot cover the request's hold. Carries ``top_up_url``; never retried by SDKs."""

    status = 402
    type_ = "insufficient_quota"
    code = "insufficient_credits"


class PermissionDenied(GatewayError):
    """403: the caller's plan does not allow this model."""

    status = 403
    type_ = "invalid_request_error"
    code = "model_not_allowed"


class ModelNotFound(GatewayError):
    """404: the model does not exist, or is restricted (indistinguishable on purpose)."""

    status = 404
    type_ = "invalid_request_error"
    code = "model_not_found"


class ServiceUnavailable(GatewayError):
    """503: the gateway's own database or Redis cannot be reached right now; carries ``Retry-After``."""

    status = 503
    type_ = "api_error"
    code = "service_unavailable"


class RateLimited(GatewayError):
    """429: too many requests for the plan; carries ``Retry-After``."""

    status = 429
    type_ = "requests"
    code = "rate_limit_exceeded"


class BackendError(GatewayError):
    """An upstream model server failed. Subclasses say how; the status follows SPEC §4.2."""

    status = 502
    type_ = "api_error"
    code = "upstream_error"


class UpstreamUnavailable(BackendError):
    """502: the backend refused the connection or answered with an error."""


class UpstreamTimeout(BackendError):
    """504: the backend did not answer in time."""

    status = 504
    code = "upstream_timeout"


class NoCapacity(BackendError):
    """503: no capacity now (backend busy, queue full, waited too long); carries ``Retry-After``."""

    status = 503
    code = "no_capacity"


class UpstreamBadRequest(BackendError):
    """400: the backend rejected the request's content (e.g. a model that cannot chat)."""

    status = 400
    type_ = "invalid_request_error"
    code = "upstream_rejected"


class UpstreamModelNotFound(BackendError):
    """404: the backend does not have the model (e.g. not pulled)."""

    status = 404
    type_ = "invalid_request_error"
    code = "model_not_found"
