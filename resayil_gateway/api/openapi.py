"""``GET /openapi.json``: an OpenAPI 3.1 description of the API, matching what the validators accept."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .. import __version__
from .parsing import (
    DIMENSIONS_RANGE,
    LOGIT_BIAS_RANGE,
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_RANGE,
    ROLES,
    SEED_RANGE,
    TOKEN_ID_PATTERN,
    TOP_LOGPROBS_RANGE,
)
from .paths import API_PREFIXES


def _integer(bounds: tuple[int, int]) -> dict[str, Any]:
    return {"type": "integer", "minimum": bounds[0], "maximum": bounds[1]}


_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_CONTENT_PART = {
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        },
        {
            "type": "object",
            "required": ["type", "image_url"],
            "properties": {
                "type": {"const": "image_url"},
                "image_url": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {"url": {"type": "string", "minLength": 1}, "detail": {"type": "string"}},
                },
            },
        },
    ]
}

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": sorted(ROLES)},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _CONTENT_PART}, {"type": "null"}]},
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
    },
    "if": {"properties": {"role": {"enum": ["system", "developer", "user"]}}},
    "then": {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}},
}

_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "max_tokens": _integer(MAX_TOKENS_RANGE),
        "max_completion_tokens": _integer(MAX_TOKENS_RANGE),
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "const": 1},
        "stop": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP_SEQUENCES},
            ]
        },
        "seed": _integer(SEED_RANGE),
        "logprobs": {"type": "boolean"},
        "top_logprobs": _integer(TOP_LOGPROBS_RANGE),
        "logit_bias": {
            "type": "object",
            "propertyNames": {"pattern": TOKEN_ID_PATTERN},
            "additionalProperties": {"type": "number", "minimum": LOGIT_BIAS_RANGE[0], "maximum": LOGIT_BIAS_RANGE[1]},
        },
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
        },
        "tool_choice": {},
        "response_format": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}, "json_schema": {"type": "object"}},
            "if": {"properties": {"type": {"const": "json_schema"}}},
            "then": {"required": ["json_schema"]},
        },
        "user": {"type": "string"},
    },
}

_EMBEDDING_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "input": {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            ]
        },
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": _integer(DIMENSIONS_RANGE),
    },
}

_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "size": {"enum": ["small", "medium", "large"]},
    },
}


# Response headers. Every response after authentication carries the rate-limit ones
# (SPEC §4.7, §5.1); a 401 has no account to count against, and a 503 for an unreachable store or Redis may
# come before the count, so neither promises them.
_DURATION = r"^(?:[0-9]+m)?[0-9]+(?:\.[0-9]+)?(?:ms|s)$"  # Go style, as OpenAI writes it: 12ms, 6.5s, 1m0s
_HEADERS: dict[str, dict[str, Any]] = {
    "x-request-id": {
        "description": "This request's id (quote it when reporting a problem)",
        "schema": {"type": "string", "minLength": 1},
    },
    "x-ratelimit-limit-requests": {
        "description": "Requests per minute the caller's plan allows",
        "schema": {"type": "integer", "minimum": 1},
    },
    "x-ratelimit-remaining-requests": {
        "description": "Requests left in the last 60 seconds' window after this one",
        "schema": {"type": "integer", "minimum": 0},
    },
    "x-ratelimit-reset-requests": {
        "description": "Until the whole allowance is free again (Go duration, e.g. 1m0s, 6.5s, 12ms)",
        "schema": {"type": "string", "pattern": _DURATION},
    },
    "Retry-After": {
        "description": "Whole seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    },
    "retry-after-ms": {
        "description": "Milliseconds to wait before retrying (the OpenAI SDKs honour it)",
        "schema": {"type": "integer", "minimum": 1},
    },
    "x-should-retry": {
        "description": "Always false: retrying cannot help until the balance is topped up",
        "schema": {"const": "false"},
    },
    "x-resayil-backend": {
        "description": "Where the request ran: local, or cloud (failover, or a cloud model); billed at the "
        "requested model's price either way",
        "schema": {"enum": ["local", "cloud"]},
    },
}
_RATE_LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
_AUTHENTICATED = frozenset({200, 400, 402, 403, 404, 413, 429, 502, 504})

_DESCRIBED = {
    400: "Invalid request",
    401: "Missing, malformed, unknown or revoked API key",
    402: "Insufficient credits (carries top_up_url; not retried)",
    403: "Model not included in the plan",
    404: "Unknown model",
    413: "Request body too large",
    429: "Rate limited (code rate_limit_exceeded): the plan's requests per minute were used in the last 60 "
    "seconds; retry after Retry-After",
    502: "Upstream failure",
    503: "No capacity now: the model server's queue waited max_queue_wait (code no_capacity), today's cloud "
    "budget is spent (code cloud_budget_exhausted), or the gateway's own store or Redis is unavailable "
    "(code service_unavailable); retry after Retry-After",
    504: "Upstream timeout",
}


def _response_headers(status: int, *extra: str, uncounted: frozenset[int] = frozenset()) -> dict[str, Any]:
    """The headers a response with ``status`` carries, each marked required when it is always sent (inline:
    a ``$ref`` cannot carry ``required``). ``uncounted`` statuses may also come before authentication."""
    names: list[tuple[str, bool]] = [("x-request-id", True)]
    if status in _AUTHENTICATED or status == 503:
        names += [(name, status in _AUTHENTICATED and status not in uncounted) for name in _RATE_LIMIT_HEADERS]
    if status == 429:
        names += [("Retry-After", True), ("retry-after-ms", True)]
    elif status == 503:
        names.append(("Retry-After", True))
    elif status == 402:
        names.append(("x-should-retry", True))
    names += [(name, True) for name in extra]
    return {name: {**_HEADERS[name], "required": required} for name, required in names}


def _errors(*statuses: int, uncounted: frozenset[int] = frozenset()) -> dict[str, Any]:
    return {
        str(status): {
            "description": _DESCRIBED[status],
            "headers": _response_headers(status, uncounted=uncounted),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status in statuses
    }


_FAILOVER_PARAMETER = {
    "name": "x-resayil-failover",
    "in": "header",
    "required": False,
    "description": "off: never run this request in the cloud when the local model server is busy (it waits "
    "for a local slot instead); anything else, or no header, allows failover where the plan does",
    "schema": {"type": "string"},
}


def build_openapi() -> dict[str, Any]:
    """The OpenAPI document for every API route under each prefix."""

    paths: dict[str, Any] = {}
    for prefix in API_PREFIXES:
        tag = prefix.strip("/")
        paths[f"{prefix}/chat/completions"] = {
            "post": {
                "operationId": f"createChatCompletion_{tag.replace('/', '_')}",
                "summary": "Create a chat completion (JSON, or Server-Sent Events when stream is true)",
                "parameters": [_FAILOVER_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
                },
                "responses": {
                    "200": {
                        "description": "A chat.completion object, or a text/event-stream of chunks",
                        "headers": _response_headers(200, "x-resayil-backend"),
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {},
                        },
                    },
                    **_errors(400, 401, 402, 403, 404, 413, 429, 502, 503, 504),
                },
            }
        }
        paths[f"{prefix}/embeddings"] = {
            "post": {
                "operationId": f"createEmbedding_{tag.replace('/', '_')}",
                "summary": "Create embeddings",
                "parameters": [_FAILOVER_PARAMETER],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingRequest"}}},
                },
                "responses": {
                    "200": {
                        "description": "A list of embeddings",
                        "headers": _response_headers(200, "x-resayil-backend"),
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(400, 401, 402, 403, 404, 413, 429, 502, 503, 504),
                },
            }
        }
        paths[f"{prefix}/models"] = {
            "get": {
                "operationId": f"listModels_{tag.replace('/', '_')}",
                "summary": "List the models the caller may use",
                "responses": {
                    "200": {
                        "description": "A list of models",
                        "headers": _response_headers(200),
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "object": {"const": "list"},
                                        "data": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Model"},
                                        },
                                    },
                                }
                            }
                        },
                    },
                    **_errors(401, 429, 503),
                },
            }
        }
        paths[f"{prefix}/models/{{model}}"] = {
            "get": {
                "operationId": f"retrieveModel_{tag.replace('/', '_')}",
                "summary": "Retrieve one model",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "The model",
                        "headers": _response_headers(200),
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}},
                    },
                    # a path the router cannot match (a newline in the id) is a 404 before authentication
                    **_errors(401, 404, 429, 503, uncounted=frozenset({404})),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Resayil Gateway API",
            "version": __version__,
            "description": "OpenAI-compatible API",
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR,
                "ChatCompletionRequest": _CHAT_REQUEST,
                "EmbeddingRequest": _EMBEDDING_REQUEST,
                "Model": _MODEL,
            },
        },
        "security": [{"bearerAuth": []}],
        "paths": paths,
    }


_DOCUMENT: bytes | None = None


async def openapi_handler(request: web.Request) -> web.Response:
    """Serve the OpenAPI document (built once)."""
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = orjson.dumps(build_openapi())
    return web.Response(body=_DOCUMENT, content_type="application/json")
