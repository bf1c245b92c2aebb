"""``resayil notify …`` (the outbox) and ``resayil bans …`` (fail2ban's reports) commands.

Built by :func:`notification_commands` from the CLI's own runner (``run_with_gateway``), its ``--config``
option and its one-line failure, so this module depends on nothing above the events layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from ..auth.phones import normalize_phone
from .bans import BanError
from .channels import DeliveryFailed, Message
from .outbox import STATUSES

TEST_TEXT = "رسالة تجريبية من Resayil: قناة الإشعارات تعمل.\n\nA test message from Resayil: notifications work."

Decorator = Callable[[Any], Any]


def notification_commands(
    run_with_gateway: Decorator, config_option: Decorator, fail: Callable[[str, int], None]
) -> list[click.Group]:
    """The ``notify`` and ``bans`` command groups; ``fail(message, code)`` prints one line and exits."""

    @click.group()
    def notify() -> None:
        """Notifications: the outbox and the channel."""

    @notify.command("test")
    @click.argument("phone")
    @config_option
    @run_with_gateway
    async def notify_test(gateway: Any, phone: str) -> None:
        """Send a test message to PHONE through the notification channel now (not through the outbox)."""
        try:
            recipient = normalize_phone(phone)
        except ValueError as exc:
            fail(f"PHONE: {exc}", 2)
            return
        channel = next(iter(gateway.channels.values()), None)
        if channel is None:
            fail("no notification channel is configured (install and configure a channel plugin)", 2)
            return
        await channel.start()
        try:
            receipt = await channel.send(Message(recipient, TEST_TEXT, "notify.test"))
        except DeliveryFailed as exc:
            kind = "permanent" if exc.permanent else "transient"
            fail(f"{channel.name} refused the message ({kind}): {exc.detail}", 1)
            return
        finally:
            await channel.close()
        click.echo(f"sent to {recipient} through {channel.name}; provider id {receipt.provider_id or '-'}")

    @notify.command("list")
    @click.option("--status", type=click.Choice(STATUSES), default=None, help="Only messages in this status.")
    @click.option("--limit", type=click.IntRange(1, 10000), default=100, help="How many (newest first).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @config_option
    @run_with_gateway
    async def notify_list(gateway: Any, status: str | None, limit: int, as_json: bool) -> None:
        """List outbox messages, newest first, with their status, attempts and last error."""
        rows = await gateway.events.outbox.list(status, limit)
        if as_json:
            click.echo(json.dumps([row.as_dict() for row in rows], ensure_ascii=False))
            return
        for row in rows:
            error = f"  {row.last_error}" if row.last_error else ""
            click.echo(
                f"{row.id:>6}  {row.created_at.isoformat(timespec='seconds')}  {row.status:<7} {row.attempts:>2}x  "
                f"{row.event:<22} {row.recipient:<16}{error}"
            )

    @notify.command("retry")
    @config_option
    @run_with_gateway
    async def notify_retry(gateway: Any) -> None:
        """Put every failed message back in line (due now, attempts reset); a running server sends them."""
        count = await gateway.events.outbox.retry_failed()
        click.echo(f"{count} failed message(s) queued again")

    @click.group()
    def bans() -> None:
        """Addresses banned by fail2ban."""

    @bans.command("report")
    @click.argument("ip")
    @click.option("--jail", default="", help="The fail2ban jail that banned it.")
    @click.option("--reason", default="", help="Why (e.g. the number of failures).")
    @config_option
    @run_with_gateway
    async def bans_report(gateway: Any, ip: str, jail: str, reason: str) -> None:
        """Record a ban (fail2ban's action calls this): kept, alerted to admins, refused when enabled."""
        try:
            ban = await gateway.events.bans.report(ip, jail, reason)
        except BanError as exc:
            fail(str(exc), 2)
            return
        click.echo(f"recorded ban {ban.id} of {ban.ip} ({ban.jail or '-'})")

    @bans.command("list")
    @click.option("--all", "include_lifted", is_flag=True, help="Include lifted bans.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @config_option
    @run_with_gateway
    async def bans_list(gateway: Any, include_lifted: bool, as_json: bool) -> None:
        """List bans, newest first."""
        rows = await gateway.events.bans.list(include_lifted)
        if as_json:
            click.echo(json.dumps([ban.as_dict() for ban in rows]))
            return
        for ban in rows:
            state = "lifted" if ban.lifted_at else "active"
            click.echo(f"{ban.id:>5}  {ban.ip:<39} {state:<6} {ban.jail or '-':<16} {ban.reason}")

    @bans.command("unban")
    @click.argument("ip")
    @config_option
    @run_with_gateway
    async def bans_unban(gateway: Any, ip: str) -> None:
        """Lift the bans of IP: the gateway serves it again."""
        try:
            count = await gateway.events.bans.unban(ip)
        except BanError as exc:
            fail(str(exc), 2)
            return
        click.echo(f"lifted {count} ban(s) of {ip}")

    return [notify, bans]
