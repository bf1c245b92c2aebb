"""``resayil orders list|reconcile`` and ``resayil plans list``.

Added by :func:`resayil_gateway.cli.build_cli` through :func:`add_order_commands`, which is handed the
CLI's own ``run_with_gateway`` and ``--config`` option so this module stays below the gateway in the layers
(it sees the gateway only through :class:`OrderCommandsGateway`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import click

from .orders import format_kwd

if TYPE_CHECKING:
    from ..config import Settings
    from .orders import OrderService

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
STATUSES = ("pending", "paid", "failed")


class OrderCommandsGateway(Protocol):
    """What these commands use of the gateway."""

    settings: Settings
    orders: OrderService
    payment_providers: dict[str, Any]


def add_order_commands(cli: click.Group, run_with_gateway: Decorator, config_option: Decorator) -> None:
    """Add the ``orders`` and ``plans`` groups to ``cli``."""

    @click.group()
    def orders() -> None:
        """Payment orders (plans and top-ups)."""

    @orders.command("list")
    @click.option("--status", type=click.Choice(STATUSES), default=None, help="Only orders in this status.")
    @click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @config_option
    @run_with_gateway
    async def orders_list(gateway: OrderCommandsGateway, status: str | None, limit: int, as_json: bool) -> None:
        """List orders, newest first."""
        found = await gateway.orders.list(status=status, limit=limit)
        if as_json:
            click.echo(json.dumps([order.as_json() for order in found], ensure_ascii=False))
            return
        for order in found:
            created = order.created_at.isoformat(timespec="seconds")
            click.echo(
                f"{order.id}  {order.status:<7}  account {order.account_id:<6} {order.kind:<5} {order.item:<12} "
                f"{format_kwd(order.amount_fils):>10} {order.currency}  {created}"
            )

    @orders.command("reconcile")
    @click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True)
    @config_option
    @run_with_gateway
    async def orders_reconcile(gateway: OrderCommandsGateway, limit: int) -> None:
        """Ask the payment provider about pending orders older than ``reconcile_after_s`` and settle them."""
        providers: Mapping[str, Any] = gateway.payment_providers
        if not providers:
            click.echo("error: no payment provider is configured (enable [myfatoorah])", err=True)
            sys.exit(1)
        for provider in providers.values():
            await provider.start()
        try:
            counts = await gateway.orders.reconcile(limit)
        finally:
            for provider in providers.values():
                with contextlib.suppress(Exception):
                    await provider.close()
        summary = ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "nothing to do"
        click.echo(f"reconciled: {summary}")

    @click.group()
    def plans() -> None:
        """Plans on sale."""

    @plans.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @config_option
    @run_with_gateway
    async def plans_list(gateway: OrderCommandsGateway, as_json: bool) -> None:
        """Every plan: id, name, price in KWD, credits and period."""
        rows = [
            {
                "id": pid,
                "name": plan.name.en,
                "name_ar": plan.name.ar,
                "price_kwd": format_kwd(plan.price_fils),
                "price_fils": plan.price_fils,
                "credits": plan.credits,
                "period_days": plan.period_days,
            }
            for pid, plan in gateway.settings.plans.items()
        ]
        if as_json:
            click.echo(json.dumps(rows, ensure_ascii=False))
            return
        for row in rows:
            click.echo(
                f"{row['id']:<12} {row['name']:<12} {row['price_kwd']:>8} KWD  {row['credits']:>6} credits  "
                f"{row['period_days']} days"
            )

    cli.add_command(orders)
    cli.add_command(plans)
