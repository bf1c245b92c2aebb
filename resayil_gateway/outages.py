"""One answer to "is this the store or Redis being unreachable or refusing right now?".

The API turns such a failure into a 503 with ``Retry-After``, ``/readyz`` reports it, the CLI prints one line
naming the problem, and the request-path pools replace the connection. Everything else is a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import sqlalchemy.exc

# asyncpg and redis are looked up, never imported, here: an exception of theirs exists only once its module was
# imported, and a SQLite gateway without Redis then never loads them (~9 MB resident per worker).


def _driver(name: str) -> Any:
    return sys.modules.get(name)


def _unavailable() -> tuple[type[BaseException], ...]:
    """The server or the network is down, refusing, restarting or full: a retry later may work."""
    kinds: list[type[BaseException]] = []
    if (asyncpg := _driver("asyncpg")) is not None:
        kinds += [
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,  # shutdown, restart, terminated session
            asyncpg.exceptions.InsufficientResourcesError,  # too many connections, out of disk or memory
            asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # database not accepting connections
            asyncpg.exceptions.InvalidCatalogNameError,  # the database does not exist (yet)
            asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # wrong user or password
            asyncpg.exceptions.InvalidPasswordError,
            asyncpg.InterfaceError,
        ]
    kinds += [
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.TimeoutError,  # no pooled connection became free in time
    ]
    if (redis_errors := _driver("redis.exceptions")) is not None:
        kinds += [redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError]
    return (*kinds, ConnectionError, TimeoutError, OSError)


def _descriptions() -> list[tuple[type[BaseException], str]]:
    described: list[tuple[type[BaseException], str]] = []
    if (asyncpg := _driver("asyncpg")) is not None:
        errors = asyncpg.exceptions
        described += [
            (errors.InvalidCatalogNameError, "the database does not exist"),
            (errors.InvalidPasswordError, "the database refused the user name or password"),
            (errors.InvalidAuthorizationSpecificationError, "the database refused the user name or password"),
            (errors.TooManyConnectionsError, "the database has no free connections (max_connections)"),
            (errors.CannotConnectNowError, "the database is starting up or shutting down"),
            (errors.ObjectNotInPrerequisiteStateError, "the database is not accepting connections"),
            (errors.OperatorInterventionError, "the database ended the session (restart or shutdown)"),
            (errors.InsufficientResourcesError, "the database is out of resources"),
        ]
    if (redis_errors := _driver("redis.exceptions")) is not None:
        described += [
            (redis_errors.AuthenticationError, "Redis refused the password"),
            (redis_errors.BusyLoadingError, "Redis is loading its data"),
            (redis_errors.TimeoutError, "Redis did not answer in time"),
            (redis_errors.ConnectionError, "Redis cannot be reached"),
        ]
    return [
        *described,
        (sqlalchemy.exc.TimeoutError, "no database connection became free in time"),
        (ConnectionRefusedError, "the connection was refused"),
        (TimeoutError, "the connection timed out"),
    ]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (SQLAlchemy wraps the driver's error in ``orig`` and ``__cause__``)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend((getattr(current, "orig", None), current.__cause__, current.__context__))


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the store or Redis cannot be reached or used right now (retry later)."""
    unavailable = _unavailable()
    return any(isinstance(link, unavailable) for link in _chain(exc))


def describe_outage(exc: BaseException) -> str:
    """A short phrase naming the problem, safe to show and log (no address, password or query)."""
    descriptions = _descriptions()
    for link in _chain(exc):
        for kind, text in descriptions:
            if isinstance(link, kind):
                return text
    for link in _chain(exc):
        if isinstance(link, sqlalchemy.exc.OperationalError) and "locked" in str(link.orig):
            return "the database is locked by another process"
        if isinstance(link, OSError) and link.strerror:
            return f"cannot connect ({link.strerror.lower()})"
    return "cannot connect"
