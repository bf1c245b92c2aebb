"""The suite's guard against a hang: pytest-timeout fails a test that runs past ``timeout`` (pyproject), and
this hook adds what a hung asyncio test is waiting on (every task's stack), which thread stacks do not show."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Any

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """Arm the timeout like pytest-timeout's signal method, printing the event loop's tasks when it fires."""
    if (
        settings.method != "signal"
        or settings.timeout <= 0
        or threading.current_thread() is not threading.main_thread()
    ):
        return None  # pytest-timeout's own implementation handles it
    import pytest_timeout

    def fire(signum: int, frame: Any) -> None:
        __tracebackhide__ = True
        loop = asyncio._get_running_loop()
        if loop is not None:
            print(f"\n+++ asyncio tasks of {item.nodeid} at the timeout +++", file=sys.stderr)
            for task in asyncio.all_tasks(loop):
                task.print_stack(limit=12, file=sys.stderr)
        pytest_timeout.timeout_sigalrm(item, settings)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # where pytest-timeout looks for it
    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True
