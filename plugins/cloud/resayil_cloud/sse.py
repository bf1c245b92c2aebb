"""Server-sent events, read incrementally: bytes in as they arrive from the network, ``data`` payloads out."""

from __future__ import annotations

DONE = "[DONE]"


class SseDecoder:
    """Splits a ``text/event-stream`` body into the ``data`` of each event, fed in arbitrary pieces.

    An event ends at a blank line; several ``data:`` lines in one event are joined with newlines (the SSE
    rule). Comments (``:``), ``event:``, ``id:`` and ``retry:`` lines are ignored. Only the unfinished last
    line is kept between feeds.
    """

    __slots__ = ("_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event completed by ``chunk``, in order."""
        events: list[str] = []
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for raw in lines:
            line = raw.removesuffix(b"\r").decode("utf-8", "replace")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            field, _, value = line.partition(":")
            if field == "data":
                self._data.append(value.removeprefix(" "))
        return events

    def close(self) -> list[str]:
        """The data of an event left unterminated when the body ended (a last line without a blank line)."""
        events = self.feed(b"\n\n") if self._pending or self._data else []
        self._pending = b""
        return events
