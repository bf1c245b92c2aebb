"""Calling hooks whose implementations may be plain functions or ``async def``.

pluggy calls implementations synchronously: an ``async def`` returns a coroutine, and under ``firstresult``
a coroutine is never ``None``, so it would always win. :func:`first_result` walks the implementations in
pluggy's own order and awaits each answer before deciding, so an async implementation that returns ``None``
lets the next one decide exactly as a plain one does. Hook wrappers (``wrapper=True``) are not supported on
these hooks.
"""

from __future__ import annotations

import inspect
from typing import Any

import pluggy


async def await_me_maybe(value: Any) -> Any:
    """Resolve a hook result that may be a value, a callable returning one, or an awaitable."""
    if callable(value):
        value = value()
    if inspect.isawaitable(value):
        value = await value
    return value


def _arguments(impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> list[Any]:
    return [kwargs[name] for name in impl.argnames]


async def first_result(hook: pluggy.HookCaller, **kwargs: Any) -> Any:
    """The first non-``None`` answer of ``hook``, awaiting each implementation's answer in turn (last
    registered and ``tryfirst`` first, ``trylast`` last, as pluggy orders them)."""
    for impl in reversed(hook.get_hookimpls()):
        result = impl.function(*_arguments(impl, kwargs))
        if inspect.isawaitable(result):
            result = await result
        if result is not None:
            return result
    return None


async def all_results(hook: pluggy.HookCaller, **kwargs: Any) -> list[Any]:
    """Every non-``None`` answer of ``hook``, each awaited when it is awaitable, in pluggy's order."""
    results = []
    for result in hook(**kwargs):
        if inspect.isawaitable(result):
            result = await result
        if result is not None:
            results.append(result)
    return results


async def notify_each(hook: pluggy.HookCaller, **kwargs: Any) -> list[Exception]:
    """Call every implementation of ``hook``, awaiting async ones; one that fails does not stop the others.
    Returns the exceptions raised, for the caller to log."""
    failures = []
    for impl in reversed(hook.get_hookimpls()):
        try:
            result = impl.function(*_arguments(impl, kwargs))
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            failures.append(exc)
    return failures
