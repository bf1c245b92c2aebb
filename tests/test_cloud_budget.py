"""The daily cloud budget (SPEC §5.5): one atomic counter per Asia/Kuwait day shared by every worker, never
past the limit, alerts exactly once per day at 80 % and 100 %, and ``resayil cloud status|reset``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from resayil_gateway.app import create_app
from resayil_gateway.cli import build_cli
from resayil_gateway.domain import Event
from resayil_gateway.gateway import Gateway
from resayil_gateway.plugins import hookimpl, make_plugin_manager
from resayil_gateway.store import Store
from resayil_gateway.store.tables import audit
from resayil_gateway.testing import TEST_SECRET, FakeBackend, FakeBackendPlugin, FakeClock, build_gateway


class EventLog:
    """A plugin that keeps every event it observes."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def on_event(self, event: Event, gateway: Gateway) -> None:
        """Keep the event."""
        self.events.append(event)

    def named(self, prefix: str) -> list[str]:
        return [event.name for event in self.events if event.name.startswith(prefix)]


def cloud_backend(budget: int) -> FakeBackend:
    cloud = FakeBackend(name="cloud", kind="cloud", model_names=("cloud-big",))
    cloud.daily_request_budget = budget  # type: ignore[attr-defined]
    cloud.budget_alert_ratios = (0.8, 1.0)  # type: ignore[attr-defined]
    return cloud


async def test_the_budget_is_read_from_the_cloud_backend_and_defaults_to_500(make_gateway: Any, clock: Any) -> None:
    assert make_gateway(clock=clock).cloud_budget.limit == 500
    assert make_gateway(clock=clock, plugins=[FakeBackendPlugin(cloud_backend(7))]).cloud_budget.limit == 7


async def test_many_workers_racing_never_pass_the_limit_and_alert_exactly_once(make_gateway: Any, clock: Any) -> None:
    log = EventLog()
    workers = [make_gateway(clock=clock, plugins=[FakeBackendPlugin(cloud_backend(50)), log]) for _ in range(3)]
    results = await asyncio.gather(*(workers[i % 3].cloud_budget.try_spend() for i in range(120)))
    assert results.count(True) == 50 if workers[0].state.shared else results.count(True) >= 50
    if workers[0].state.shared:  # one counter for all three workers
        assert sorted(log.named("cloud.")) == ["cloud.budget_exhausted", "cloud.budget_warning"]  # racing: any order
        status = await workers[1].cloud_budget.status()
        assert (status.used, status.limit, status.state) == (50, 50, "exhausted")
    warning = next(event for event in log.events if event.name == "cloud.budget_warning")
    assert warning.data["used"] == 40 and warning.data["limit"] == 50
    for worker in workers:  # a worker whose spends all came before the line learns at its next try
        if worker.state.shared and not worker.cloud_budget.known_exhausted():
            assert await worker.cloud_budget.try_spend() is False
    assert all(worker.cloud_budget.known_exhausted() for worker in workers if worker.state.shared)


async def test_an_in_process_budget_alerts_once_at_80_and_once_at_100_percent(make_gateway: Any, clock: Any) -> None:
    log = EventLog()
    budget = make_gateway(clock=clock, plugins=[FakeBackendPlugin(cloud_backend(10)), log]).cloud_budget
    states = []
    for _ in range(12):
        await budget.try_spend()
        states.append((await budget.status()).state)
    assert log.named("cloud.") == ["cloud.budget_warning", "cloud.budget_exhausted"]
    assert states[:7] == ["ok"] * 7 and states[7:9] == ["warning"] * 2 and states[9:] == ["exhausted"] * 3
    assert budget.known_exhausted()


async def test_the_budget_day_rolls_over_at_midnight_in_kuwait_not_utc(make_gateway: Any) -> None:
    clock = FakeClock(datetime(2026, 1, 15, 20, 59, tzinfo=UTC))  # 23:59 in Kuwait (UTC+3)
    log = EventLog()
    budget = make_gateway(clock=clock, plugins=[FakeBackendPlugin(cloud_backend(2)), log]).cloud_budget
    assert [await budget.try_spend() for _ in range(3)] == [True, True, False]
    assert budget.today() == "2026-01-15" and budget.known_exhausted()
    clock.advance(minutes=1)  # 00:00 in Kuwait, still the 15th in UTC
    assert budget.today() == "2026-01-16" and not budget.known_exhausted()
    assert (await budget.status()).used == 0
    assert await budget.try_spend()
    assert log.named("cloud.budget_exhausted") == ["cloud.budget_exhausted"]


async def test_reset_reopens_the_cloud_for_today(make_gateway: Any, clock: Any) -> None:
    budget = make_gateway(clock=clock, plugins=[FakeBackendPlugin(cloud_backend(1))]).cloud_budget
    assert await budget.try_spend() and not await budget.try_spend()
    assert await budget.reset() == 1
    assert not budget.known_exhausted()
    assert await budget.try_spend()


def test_cli_cloud_status_and_reset_which_is_audited(stack_info: Any) -> None:
    env = {
        "RESAYIL_CONFIG": None,
        "RESAYIL_LOAD_PLUGINS": None,
        "RESAYIL_DISABLE_PLUGINS": None,
        "RESAYIL_DATABASE_URL": stack_info.database_url,
        "RESAYIL_REDIS_URL": stack_info.redis_url,
        "RESAYIL_GATEWAY__REDIS_PREFIX": stack_info.redis_prefix,
        "RESAYIL_SECRET_KEY": TEST_SECRET,
    }
    cli = build_cli(make_plugin_manager(env={}))

    def resayil(*args: str) -> Any:
        result = CliRunner().invoke(cli, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    async def spend(times: int) -> None:
        worker = build_gateway(
            stack_info.database_url, redis_url=stack_info.redis_url, redis_prefix=stack_info.redis_prefix
        )
        for _ in range(times):
            await worker.cloud_budget.try_spend()
        await worker.state.close()
        await worker.store.dispose()

    asyncio.run(spend(3))
    used = 3 if stack_info.redis_url else 0  # in-process state is not seen by another process
    status = json.loads(resayil("cloud", "status", "--json"))
    assert status["used"] == used and status["limit"] == 500 and status["state"] == "ok"
    assert status["day"] == datetime.now(UTC).astimezone(FakeClock().zone).date().isoformat()
    assert f"{used} / 500 requests, ok" in resayil("cloud", "status")
    assert f"reset: {used} -> 0 of 500" in resayil("cloud", "reset")
    assert json.loads(resayil("cloud", "status", "--json"))["used"] == 0

    async def audited() -> list[Any]:
        store = Store(stack_info.database_url)
        try:
            async with store.connect() as conn:
                return list((await conn.execute(select(audit.c.actor, audit.c.action, audit.c.detail))).all())
        finally:
            await store.dispose()

    ((actor, action, detail),) = asyncio.run(audited())
    assert (actor, action, detail) == ("cli", "cloud.budget_reset", {"used_before": used})


async def test_metrics_show_todays_cloud_budget(make_gateway: Any, clock: Any, aiohttp_client: Any) -> None:
    gateway = make_gateway(clock=clock, plugins=[FakeBackendPlugin(cloud_backend(40))])
    client = await aiohttp_client(create_app(gateway))
    for _ in range(3):
        await gateway.cloud_budget.try_spend()
    text = await (await client.get("/metrics")).text()
    assert "resayil_cloud_budget_used 3.0" in text
    assert "resayil_cloud_budget_limit 40.0" in text
