"""Deadlines for slow clients (slow-loris): a request's head, then its body, must arrive in time.

aiohttp has no such timeout: a client that sends its headers or its body one byte at a time holds a socket
(and, with enough of them, the worker) forever. :class:`TimedRequestHandler` is aiohttp's request handler
with two deadlines: the whole head within ``header_s`` (from the connection's start, or from the first byte
of a later request on a kept-alive connection), then the whole body within ``body_s`` of the head. A client
that misses one is disconnected. Idle kept-alive connections stay governed by aiohttp's ``keepalive_timeout``.

:class:`TimedAppRunner` is ``web.AppRunner`` serving through that handler; ``resayil serve`` runs it. The
handler also keeps the raw bytes of a malformed request (which aiohttp quotes, bearer key included) out of
its 400 answers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .logs import redact

log = logging.getLogger("resayil.server")


@dataclass(frozen=True, slots=True)
class ReadTimeouts:
    """How long a client may take to send a request's head and then its body, in seconds."""

    header_s: float
    body_s: float


class TimedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with the :class:`ReadTimeouts` deadlines.

    It reads three attributes aiohttp keeps private (``_request_count``, ``_messages``, ``_upgraded``), so
    ``tests/test_hardening_slow_clients.py`` pins the behaviour on the aiohttp version we install.
    """

    __slots__ = ("_deadline", "_reading_body", "_timeouts")

    def __init__(self, manager: web.Server, *, timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._timeouts = timeouts
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the clock for the first request's head."""
        super().connection_made(transport)
        self._arm(self._timeouts.header_s, "request headers")

    def data_received(self, data: bytes) -> None:
        """Feed aiohttp's parser; a completed head stops the head clock and starts the body clock."""
        if data and self._deadline is None and not self._upgraded:
            self._arm(self._timeouts.header_s, "request headers")  # the first byte of a later request
        parsed = self._request_count
        super().data_received(data)
        if self._request_count == parsed or not self._messages:
            return
        self._disarm()
        _, payload = self._messages[-1]
        if not payload.is_eof():
            self._reading_body = True
            self._arm(self._timeouts.body_s, "request body")
            payload.on_eof(self._body_complete)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's error answer, with any key or token it quotes from the raw request masked."""
        return super().handle_error(request, status, exc, redact(message) if message else message)

    def _body_complete(self) -> None:
        if self._reading_body:
            self._disarm()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self._loop.call_later(seconds, self._expire, seconds, what)

    def _disarm(self) -> None:
        self._reading_body = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, seconds: float, what: str) -> None:
        self._deadline = None
        self._reading_body = False
        if self.transport is None:
            return
        peer = self.transport.get_extra_info("peername")
        log.info("closed a slow connection from %s: the %s took more than %gs", peer[0] if peer else "-", what, seconds)
        self.force_close()


class _TimedServer(web.Server):
    """aiohttp's low-level server making :class:`TimedRequestHandler` connections."""

    def __init__(self, *args: Any, timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = timeouts

    def __call__(self) -> RequestHandler:
        return TimedRequestHandler(self, loop=self._loop, timeouts=self.timeouts, **self._kwargs)


class TimedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections enforce ``timeouts`` (other keyword arguments as AppRunner's)."""

    def __init__(self, app: web.Application, *, timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.timeouts = timeouts

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _TimedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            timeouts=self.timeouts,
            **server._kwargs,
        )
