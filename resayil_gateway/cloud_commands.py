"""``resayil cloud status`` and ``resayil cloud reset``: today's cloud request budget (SPEC §5.5)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from .gateway import Gateway

Decorator = Callable[[Any], Any]


async def show_status(gateway: Gateway, as_json: bool) -> None:
    """Print today's cloud requests: used / limit and state (ok, warning, exhausted)."""
    status = await gateway.cloud_budget.status()
    if as_json:
        click.echo(json.dumps(status.as_dict()))
        return
    zone = gateway.clock.zone.key
    click.echo(f"cloud budget {status.day} ({zone}): {status.used} / {status.limit} requests, {status.state}")


async def reset_budget(gateway: Gateway) -> None:
    """Set today's count back to zero in every worker, recorded in the audit table."""
    day = gateway.cloud_budget.today()
    before = await gateway.cloud_budget.reset()
    async with gateway.store.begin() as conn:
        await gateway.audit(conn, "cli", "cloud.budget_reset", f"cloud_budget:{day}", {"used_before": before})
    click.echo(f"cloud budget {day} reset: {before} -> 0 of {gateway.cloud_budget.limit}")


def cloud_group(config_option: Decorator, run_with_gateway: Decorator) -> click.Group:
    """The ``cloud`` group, built with the command line's ``--config`` option and its runner (passed in, so
    that this module does not import ``cli``)."""

    @click.group()
    def cloud() -> None:
        """The daily cloud request budget."""

    @cloud.command("status")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON: day, used, limit, state.")
    @config_option
    @run_with_gateway
    async def status(gateway: Gateway, as_json: bool) -> None:
        """Show today's cloud requests: used / limit and state (ok, warning, exhausted)."""
        await show_status(gateway, as_json)

    @cloud.command("reset")
    @config_option
    @run_with_gateway
    async def reset(gateway: Gateway) -> None:
        """Set today's cloud request count back to zero (audited): failover and cloud models resume."""
        await reset_budget(gateway)

    return cloud
