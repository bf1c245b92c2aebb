"""``resayil serve`` for end-to-end tests that need to move time: the real serving path
(:func:`resayil_gateway.server.serve`, forked workers, one shared socket) with a :class:`FileClock` handed to
:func:`~resayil_gateway.bootstrap.gateway_from_config` through its ``clock`` parameter, and an
:class:`EventLog` plugin that writes every cloud-budget event each worker raises to a file.

Nothing here is in the product: the ``resayil serve`` command builds its gateways with the same
``gateway_from_config`` and hands them to the same ``serve``; this script only adds the clock and the
plugin. Run it as ``python tests/traffic_serve.py --config resayil.toml --clock-file clock --events-file
events.jsonl --port 8080 --workers 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from resayil_gateway.clock import Clock
from resayil_gateway.plugins import hookimpl


class FileClock(Clock):
    """Real time shifted by the number of seconds written in a file, read on every call, so that a test can
    move the clock of several server processes (and their forked workers) at once. A missing file is no
    shift. Only ever move it forward: ``monotonic`` moves with it."""

    def __init__(self, path: str | Path, timezone: str = "Asia/Kuwait") -> None:
        super().__init__(timezone)
        self.path = Path(path)

    def offset(self) -> float:
        """The shift in seconds (0 when the file is missing)."""
        try:
            return float(self.path.read_text())
        except FileNotFoundError:
            return 0.0

    def now(self) -> datetime:
        """The shifted current time, timezone-aware UTC."""
        return datetime.now(UTC) + timedelta(seconds=self.offset())

    def monotonic(self) -> float:
        """The shifted monotonic time."""
        return time.monotonic() + self.offset()

    def set_offset(self, seconds: float) -> None:
        """Write a new shift atomically: a reader sees the old one or the new one, never half a number."""
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(repr(float(seconds)))
        os.replace(partial, self.path)

    def set_now(self, moment: datetime) -> None:
        """Shift the clock so that it reads ``moment`` now (and runs on from there at the real pace)."""
        self.set_offset((moment - datetime.now(UTC)).total_seconds())


class EventLog:
    """A plugin that appends each ``cloud.*`` event this process raises to a JSON-lines file, one
    ``write`` per line (``O_APPEND``: lines from several processes never interleave)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @hookimpl
    def on_event(self, event: Any, gateway: Any) -> None:
        """Record a cloud-budget event with the process that raised it."""
        if not event.name.startswith("cloud."):
            return
        line = json.dumps({"pid": os.getpid(), "name": event.name, "key": event.key, "data": event.data})
        with self.path.open("a") as log:
            log.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    """Serve like ``resayil serve`` does, with the file clock and the event log; returns the exit status."""
    from resayil_gateway.bootstrap import gateway_from_config
    from resayil_gateway.gateway import Gateway
    from resayil_gateway.logs import configure_logging
    from resayil_gateway.server import serve

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--clock-file", required=True)
    parser.add_argument("--events-file", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    configure_logging("text", args.log_level)
    clock = FileClock(args.clock_file)

    def make_gateway() -> Gateway:
        return gateway_from_config(args.config, clock=clock, plugins=[EventLog(args.events_file)])

    return serve(make_gateway(), make_gateway, args.host, args.port, args.workers, access_log=False, loop="asyncio")


if __name__ == "__main__":
    sys.exit(main())
