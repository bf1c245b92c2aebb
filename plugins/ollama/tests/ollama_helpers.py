"""Helpers shared by the Ollama plugin's tests (a unique module name, so it never clashes with other suites)."""

from __future__ import annotations

from typing import Any

from resayil_gateway.domain import ChatRequest

FAKE_URL = "http://ollama.internal.test:11434"


def chat_request(text: str = "hi", **fields: Any) -> ChatRequest:
    """A one-message chat request."""
    return ChatRequest(model="llama3.2:3b", messages=({"role": "user", "content": text},), **fields)
