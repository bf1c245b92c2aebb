"""One answer to "is this the store or Redis being unreachable or refusing right now?".

The API turns such a failure into a 503 with ``Retry-After``, ``/readyz`` reports it, the CLI prints one line
naming the problem, and the request-path pools replace the connection. Everything else is a bug.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import redis.exceptions
import sqlalchemy.exc

# The server or the network is down, refusing, restarting or full: a retry later may work.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, restart, terminated session
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, out of disk or memory
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # database not accepting connections
    asyncpg.exceptions.InvalidCatalogNameError,  # the database does not exist (yet)
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # wrong user or password
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.InterfaceError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection became free in time
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    TimeoutError,
    OSError,
)

_DESCRIPTIONS: tuple[tuple[type[BaseException], str], ...] = (
    (asyncpg.exceptions.InvalidCatalogNameError, "the database does not exist"),
    (asyncpg.exceptions.InvalidPasswordError, "the database refused the user name or password"),
    (asyncpg.exceptions.InvalidAuthorizationSpecificationError, "the database refused the user name or password"),
    (asyncpg.exceptions.TooManyConnectionsError, "the database has no free connections (max_connections)"),
    (asyncpg.exceptions.CannotConnectNowError, "the database is starting up or shutting down"),
    (asyncpg.exceptions.ObjectNotInPrerequisiteStateError, "the database is not accepting connections"),
    (asyncpg.exceptions.OperatorInterventionError, "the database ended the session (restart or shutdown)"),
    (asyncpg.exceptions.InsufficientResourcesError, "the database is out of resources"),
    (redis.exceptions.AuthenticationError, "Redis refused the password"),
    (redis.exceptions.BusyLoadingError, "Redis is loading its data"),
    (redis.exceptions.TimeoutError, "Redis did not answer in time"),
    (redis.exceptions.ConnectionError, "Redis cannot be reached"),
    (sqlalchemy.exc.TimeoutError, "no database connection became free in time"),
    (ConnectionRefusedError, "the connection was refused"),
    (TimeoutError, "the connection timed out"),
)


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
    return any(isinstance(link, UNAVAILABLE) for link in _chain(exc))


def describe_outage(exc: BaseException) -> str:
    """A short phrase naming the problem, safe to show and log (no address, password or query)."""
    for link in _chain(exc):
        for kind, text in _DESCRIPTIONS:
            if isinstance(link, kind):
                return text
    for link in _chain(exc):
        if isinstance(link, sqlalchemy.exc.OperationalError) and "locked" in str(link.orig):
            return "the database is locked by another process"
        if isinstance(link, OSError) and link.strerror:
            return f"cannot connect ({link.strerror.lower()})"
    return "cannot connect"
