"""Resayil Gateway plugin for a local Ollama server.

- :mod:`resayil_ollama.settings`: the ``[ollama]`` settings section.
- :mod:`resayil_ollama.translate`: OpenAI request ↔ Ollama native ``/api/chat`` translation (pure functions).
- :mod:`resayil_ollama.backend`: :class:`OllamaBackend`, the backend the gateway routes local requests to.
- :mod:`resayil_ollama.simulator`: an Ollama look-alike server for tests, demos and benchmarks.
- :mod:`resayil_ollama.plugin`: the hook implementations registered under the ``resayil_gateway`` entry point.
"""

from .backend import OllamaBackend
from .settings import OllamaSettings

__all__ = ["OllamaBackend", "OllamaSettings"]
