"""The suite's guard against a hang: pytest-timeout fails a test that runs past ``timeout`` (pyproject); this adds
to its report what a hung asyncio test is waiting on (every task's stack), which thread stacks do not show."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
import pytest_timeout

_report_timeout = pytest_timeout.timeout_sigalrm


def _report_timeout_with_tasks(item: pytest.Item, settings: Any) -> None:
    """Print the running event loop's tasks, then let pytest-timeout report and fail the test."""
    __tracebackhide__ = True
    loop = asyncio._get_running_loop()
    if loop is not None:
        print(f"\n+++ asyncio tasks of {item.nodeid} at the timeout +++", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            task.print_stack(limit=12, file=sys.stderr)
    _report_timeout(item, settings)


pytest_timeout.timeout_sigalrm = _report_timeout_with_tasks  # its signal handler looks the name up when it fires
