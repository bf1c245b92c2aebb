"""Resayil Gateway plugin for a cloud model host: Ollama's cloud (https://ollama.com) or any OpenAI-compatible API.

- :mod:`resayil_cloud.settings`: the ``[cloud]`` settings section.
- :mod:`resayil_cloud.dialect`: the gateway's requests in OpenAI's wire format, and the answers back (pure).
- :mod:`resayil_cloud.sse`: an incremental server-sent-events decoder.
- :mod:`resayil_cloud.backend`: :class:`CloudBackend`, the backend the gateway routes cloud requests to.
- :mod:`resayil_cloud.simulator`: a cloud look-alike server for tests, demos and benchmarks.
- :mod:`resayil_cloud.plugin`: the hook implementations registered under the ``resayil_gateway`` entry point.
"""

from .backend import CloudBackend
from .settings import CloudSettings

__all__ = ["CloudBackend", "CloudSettings"]
