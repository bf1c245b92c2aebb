"""Resayil Gateway: a paid, OpenAI-compatible LLM API whose every decision is a plugin hook.

Plugin authors need only this module's names: ``hookimpl`` to mark implementations, and the types in
:mod:`resayil_gateway.domain`, :mod:`resayil_gateway.errors`, :mod:`resayil_gateway.config` and
:mod:`resayil_gateway.routing.backends`.
"""

from importlib.metadata import PackageNotFoundError, version

from .hookspecs import hookimpl

try:
    __version__ = version("resayil-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl"]
