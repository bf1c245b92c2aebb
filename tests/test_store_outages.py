"""When the store refuses connections for a while: a served request is still charged once it is back, a hold
nobody will settle stops being renewed and is released, and ``resayil ledger check`` reports stuck holds."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import sqlalchemy.exc
from click.testing import CliRunner

from resayil_gateway import hookimpl
from resayil_gateway.billing import metering
from resayil_gateway.cli import build_cli
from resayil_gateway.domain import Caller, ModelInfo, Usage
from resayil_gateway.plugins import make_plugin_manager
from resayil_gateway.store.connection_budget import connection_budget
from resayil_gateway.testing import TEST_SECRET, seed_account

MODEL = ModelInfo("fake-small", "fake", "local", "small")


def refusing(ledger, times: int):
    """Make the ledger's settle fail like a database refusing connections, ``times`` times in a row."""
    real = ledger._settle
    calls = {"n": 0}

    async def settle(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise ConnectionRefusedError(111, "Connection refused")
        return await real(*args, **kwargs)

    ledger._settle = settle
    return calls


async def test_a_settle_waits_for_the_store_and_charges_once_it_is_back(gateway, monkeypatch):
    monkeypatch.setattr(metering, "SETTLE_BACKOFF_S", 0.001)
    monkeypatch.setattr(metering, "SETTLE_BACKOFF_MAX_S", 0.002)
    account = await seed_account(gateway, credits=50)
    caller = Caller(account.id, None, "", "basic")
    meter = gateway.metering.meter(caller, MODEL, "fake", "req_outage", "chat", False)
    await meter.reserve(10, 20)
    calls = refusing(gateway.ledger, times=12)  # more than any fixed retry budget would allow
    charge = await meter.finish(Usage(500, 500), 200)
    assert calls["n"] == 13
    assert charge is not None and charge.charged == 1
    assert (await gateway.ledger.balance(account.id)).total == 49
    assert gateway.ledger.open_holds == set()
    assert await gateway.ledger.check() == []


async def test_a_handler_does_not_wait_for_a_settle_that_waits_for_the_store(gateway, monkeypatch):
    monkeypatch.setattr(metering, "SETTLE_BACKOFF_S", 0.01)
    monkeypatch.setattr(metering, "SETTLE_BACKOFF_MAX_S", 0.02)
    monkeypatch.setattr(metering, "FINISH_WAIT_S", 0.05)
    account = await seed_account(gateway, credits=50)
    meter = gateway.metering.meter(Caller(account.id, None, "", "basic"), MODEL, "fake", "req_slow", "chat", False)
    await meter.reserve(10, 20)
    refusing(gateway.ledger, times=30)
    assert await meter.finish(Usage(10, 10), 200) is None  # the client is answered; the charge goes on
    await gateway.drain()
    assert (await gateway.ledger.balance(account.id)).total == 49


async def test_a_hold_nobody_will_settle_is_not_renewed_and_is_released(gateway, clock):
    account = await seed_account(gateway, credits=50)
    await gateway.ledger.reserve("req_kept", account.id, 5)
    await gateway.ledger.reserve("req_given_up", account.id, 7)
    gateway.ledger.abandon("req_given_up")
    clock.advance(gateway.ledger.lease.total_seconds() - 1)
    assert await gateway.ledger.renew_leases() == 1  # only the hold this process still means to settle
    clock.advance(2)
    assert await gateway.ledger.release_stale_holds() == 1
    balance = await gateway.ledger.balance(account.id)
    assert (balance.total, balance.held) == (50, 5)


async def test_concurrent_renewals_and_settles_never_deadlock(gateway):
    account = await seed_account(gateway, credits=1000)
    others = [
        await seed_account(gateway, credits=1000, email=f"u{i}@example.com", phone=f"+9655100000{i}") for i in range(3)
    ]
    ids = []
    for index, owner in enumerate([account, *others] * 10):
        hold_id = f"req_{index}"
        await gateway.ledger.reserve(hold_id, owner.id, 3)
        ids.append(hold_id)
    work = [gateway.ledger.settle(hold_id, 1) for hold_id in ids] + [gateway.ledger.renew_leases() for _ in range(10)]
    await asyncio.gather(*work)
    assert await gateway.ledger.check() == []
    assert gateway.ledger.open_holds == set()


async def test_ledger_check_reports_holds_past_their_lease_and_exits_1(gateway, stack_info):
    account = await seed_account(gateway, credits=50)
    await gateway.ledger.reserve("req_stuck", account.id, 5)  # leased on the fake clock: long past in real time
    env = {
        "RESAYIL_CONFIG": None,
        "RESAYIL_LOAD_PLUGINS": None,
        "RESAYIL_DISABLE_PLUGINS": None,
        "RESAYIL_DATABASE_URL": stack_info.database_url,
        "RESAYIL_REDIS_URL": stack_info.redis_url,
        "RESAYIL_SECRET_KEY": TEST_SECRET,
    }
    cli = build_cli(make_plugin_manager(env={}))
    # the command runs its own event loop: give it a thread
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["ledger", "check"], env=env)
    assert result.exit_code == 1, result.output
    assert "hold req_stuck" in result.stderr and "past its lease" in result.stderr
    await gateway.ledger.release("req_stuck")
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["ledger", "check"], env=env)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("error", [ConnectionRefusedError(111, "refused"), OSError(101, "Network is unreachable")])
def test_store_outages_are_classified_as_unavailable(error):
    from resayil_gateway.outages import describe_outage, is_unavailable

    assert is_unavailable(error)
    assert describe_outage(error)


class Refusing:
    """A plugin whose authentication meets a store that refuses: ``error`` is raised on every request."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @hookimpl
    def authenticate(self, request, gateway):
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.ObjectNotInPrerequisiteStateError("database is not accepting connections"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_a_store_that_refuses_connections_is_a_503_to_retry(gateway_client, error, caplog):
    client = await gateway_client(Refusing(error))
    response = await client.get("/v1/models", headers=client.auth)
    assert response.status == 503
    assert response.headers["Retry-After"]
    body = await response.json()
    assert body["error"]["type"] and "temporarily unavailable" in body["error"]["message"]


async def test_a_database_that_stops_existing_is_a_503_and_readyz_says_so(gateway_client, stack):
    if stack != "postgres":
        pytest.skip("PostgreSQL refuses a database that does not exist")
    client = await gateway_client()
    store = client.gateway.store
    client.gateway.keys.forget_account(client.account.id)
    await store.dispose()
    store.url = store.url.rsplit("/", 1)[0] + "/resayil_no_such_db"  # as if it had been dropped
    response = await client.get("/v1/models", headers=client.auth)
    assert response.status == 503
    assert response.headers["Retry-After"]
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["database"].startswith("error")


async def test_the_connection_budget_says_when_many_workers_would_exhaust_postgresql(gateway, stack):
    if stack != "postgres":
        pytest.skip("SQLite has no connection limit")
    modest = await connection_budget(gateway.store, workers=1)
    assert modest is not None and modest.fits
    greedy = await connection_budget(gateway.store, workers=500)
    assert greedy is not None and not greedy.fits
    line = greedy.describe(500)
    assert "500 worker(s)" in line and f"allows {greedy.max_connections}" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/resayil_no_such_db", "the database does not exist"),
        (
            "postgresql+asyncpg://no_such_role:secretpw@127.0.0.1:5432/test",
            "the database refused the user name or password",
        ),
        ("postgresql+asyncpg://postgres:secretpw@127.0.0.1:1/test", "the connection was refused"),
    ],
    ids=["missing-database", "unknown-user", "unreachable-host"],
)
@pytest.mark.parametrize("command", [["db", "upgrade"], ["ledger", "check"], ["users", "list"]])
def test_every_command_says_in_one_line_why_the_database_cannot_be_used(url, reason, command):
    env = {
        "RESAYIL_CONFIG": None,
        "RESAYIL_LOAD_PLUGINS": None,
        "RESAYIL_DISABLE_PLUGINS": None,
        "RESAYIL_DATABASE_URL": url,
        "RESAYIL_REDIS_URL": "",
        "RESAYIL_SECRET_KEY": TEST_SECRET,
    }
    result = CliRunner().invoke(build_cli(make_plugin_manager(env={})), command, env=env)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"error: cannot reach the database or Redis: {reason}"
    assert "secretpw" not in result.output
