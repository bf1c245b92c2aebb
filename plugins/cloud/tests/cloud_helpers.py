"""Helpers shared by the cloud plugin's tests (a unique module name, so it never clashes with other suites)."""

from __future__ import annotations

from typing import Any

from resayil_gateway.domain import ChatRequest

FAKE_URL = "https://cloud.internal.test"
FAKE_KEY = "sk-test-5ecret-cl0ud-key-0123456789"


def chat_request(text: str = "hi", **fields: Any) -> ChatRequest:
    """A one-message chat request."""
    return ChatRequest(model="gpt-oss:120b", messages=({"role": "user", "content": text},), **fields)
