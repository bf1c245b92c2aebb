"""``resayil cloud status`` and ``resayil cloud reset``: today's cloud request budget (SPEC §5.5)."""

from __future__ import annotations

import json

import click

from .cli import config_option, run_with_gateway
from .gateway import Gateway


@click.group()
def cloud() -> None:
    """The daily cloud request budget."""


@cloud.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: day, used, limit, state.")
@config_option
@run_with_gateway
async def cloud_status(gateway: Gateway, as_json: bool) -> None:
    """Show today's cloud requests: used / limit and state (ok, warning, exhausted)."""
    status = await gateway.cloud_budget.status()
    if as_json:
        click.echo(json.dumps(status.as_dict()))
        return
    click.echo(
        f"cloud budget {status.day} ({gateway.clock.zone.key}): {status.used} / {status.limit} requests, {status.state}"
    )


@cloud.command("reset")
@config_option
@run_with_gateway
async def cloud_reset(gateway: Gateway) -> None:
    """Set today's cloud request count back to zero (audited): failover and cloud models resume."""
    day = gateway.cloud_budget.today()
    before = await gateway.cloud_budget.reset()
    async with gateway.store.begin() as conn:
        await gateway.audit(conn, "cli", "cloud.budget_reset", f"cloud_budget:{day}", {"used_before": before})
    click.echo(f"cloud budget {day} reset: {before} -> 0 of {gateway.cloud_budget.limit}")
