"""The ``resayil`` command line. Its command forms are a contract that docs and scripts rely on.

Every error is one clear line on stderr and a non-zero exit: 2 for configuration and usage problems, 1 for
refused operations and unreachable services. Plugins add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click
import pluggy

from . import __version__

if TYPE_CHECKING:
    from .gateway import Gateway

# Only what every command needs is imported up here: a command imports what it uses when it runs, so
# ``resayil --version`` answers at once and an idle worker does not carry Alembic and the like.

T = TypeVar("T")
HOLD_SWEEP_GRACE_S = 60  # housekeeping runs every 30 s: a hold past its lease longer than this is stuck

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="RESAYIL_CONFIG",
    help="TOML configuration file (default: $RESAYIL_CONFIG).",
)


def fail(message: str, code: int = 1) -> None:
    """Print one line on stderr, with any secret in it masked, and exit."""
    from .logs import redact

    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


def _gateway(config_path: str | None) -> Gateway:
    from .bootstrap import gateway_from_config

    return gateway_from_config(config_path)


def run_with_gateway(func: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T | None]:
    """Run an async command body with a gateway (``--config`` honoured), disposing of it afterwards and turning
    every failure into one line."""

    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None = None, **kwargs: Any) -> T | None:
        import asyncio

        async def body() -> T:
            gateway = _gateway(config_path)
            try:
                return await func(gateway, *args, **kwargs)
            finally:
                with contextlib.suppress(Exception):
                    await gateway.close()

        return guarded(lambda: asyncio.run(body()))

    return wrapper


def guarded(action: Callable[[], T]) -> T | None:
    """Run ``action``; known failures become one line on stderr and an exit code."""
    from .auth.accounts import AccountError
    from .auth.api_keys import KeyRefused
    from .billing.ledger import LedgerError
    from .config import ConfigError
    from .outages import describe_outage, is_unavailable
    from .plugins import PluginError

    try:
        return action()
    except (ConfigError, PluginError) as exc:
        fail(str(exc), 2)
    except (AccountError, KeyRefused, LedgerError) as exc:
        fail(str(exc), 1)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        fail(f"cannot reach the database or Redis: {describe_outage(exc)}", 1)
    return None


def build_cli(pm: pluggy.PluginManager | None) -> click.Group:
    """The ``resayil`` group with the core commands, then each plugin's through ``register_commands``."""

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="resayil")
    def cli() -> None:
        """Resayil Gateway: a paid, OpenAI-compatible LLM API."""

    cli.add_command(serve)
    cli.add_command(db)
    cli.add_command(users)
    cli.add_command(keys)
    cli.add_command(credits)
    cli.add_command(ledger)
    cli.add_command(plugins)
    from .billing.orders_cli import add_order_commands

    add_order_commands(cli, run_with_gateway, config_option)

    from .cloud_commands import cloud_group

    cli.add_command(cloud_group(config_option, run_with_gateway))

    from .events.commands import notification_commands

    for group in notification_commands(run_with_gateway, config_option, fail):
        cli.add_command(group)
    if pm is not None:
        pm.hook.register_commands(cli=cli)
    return cli


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: gateway.host).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: gateway.port).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Worker processes.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--no-access-log", is_flag=True, help="Do not log every request.")
@click.option(
    "--loop",
    "event_loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    show_default=True,
    help="Event loop: auto = uvloop when installed.",
)
@config_option
def serve(
    host: str | None,
    port: int | None,
    workers: int,
    log_format: str,
    log_level: str,
    no_access_log: bool,
    event_loop: str,
    config_path: str | None,
) -> None:
    """Migrate the database and serve the gateway (and every plugin's pages)."""
    from .logs import configure_logging
    from .server import serve as run_server

    configure_logging(log_format, log_level)

    def start() -> None:
        gateway = _gateway(config_path)
        settings = gateway.settings.gateway
        status = run_server(
            gateway,
            functools.partial(_gateway, config_path),
            host or settings.host,
            settings.port if port is None else port,
            workers,
            access_log=not no_access_log,
            loop=event_loop,
        )
        if status:
            fail("workers kept failing at start; the log above says why", status)

    guarded(start)


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@config_option
@run_with_gateway
async def db_upgrade(gateway: Gateway) -> None:
    """Apply every pending migration."""
    from .store import upgrade

    await upgrade(gateway.store)
    click.echo(f"database {gateway.store.describe()} is up to date")


@click.group()
def users() -> None:
    """Accounts."""


@users.command("create")
@click.argument("email")
@click.option("--phone", required=True, help="Phone number (E.164, or 8 digits for Kuwait).")
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@config_option
@run_with_gateway
async def users_create(gateway: Gateway, email: str, phone: str, password_stdin: bool, name: str, admin: bool) -> None:
    """Create an account; the password is read from standard input (never an argument)."""
    password = sys.stdin.readline().rstrip("\r\n")
    account = await gateway.accounts.create(email, phone, password, name=name, role="admin" if admin else "user")
    click.echo(f"created {account.role} {account.email} ({account.phone}), id {account.id}")


@users.command("list")
@click.option("--search", default="", help="Filter by e-mail, phone or name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_option
@run_with_gateway
async def users_list(gateway: Gateway, search: str, as_json: bool) -> None:
    """List accounts, newest first."""
    rows: list[dict[str, Any]] = []
    for account in await gateway.accounts.list(search, limit=1000):
        plan, ends = await gateway.accounts.plan_of(account.id)
        rows.append(
            {
                "id": account.id,
                "email": account.email,
                "phone": account.phone,
                "role": account.role,
                "status": account.status,
                "plan": plan,
                "plan_ends": ends.isoformat() if ends else None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        click.echo(
            f"{row['id']:>5}  {row['email']:<32} {row['phone']:<14} {row['role']:<6} {row['status']:<8} "
            f"{row['plan']}{' until ' + row['plan_ends'][:10] if row['plan_ends'] else ''}"
        )


@users.command("set-plan")
@click.argument("email")
@click.argument("plan")
@click.option("--days", type=click.IntRange(1, 3660), default=None, help="Period length (default: the plan's).")
@config_option
@run_with_gateway
async def users_set_plan(gateway: Gateway, email: str, plan: str, days: int | None) -> None:
    """Grant a plan without payment (an audited admin action): tier, period and plan credits."""
    from .auth.accounts import AccountError

    account = await gateway.accounts.require(email)
    if plan not in gateway.settings.plans:
        raise AccountError(f"unknown plan {plan!r}; plans: {', '.join(gateway.settings.plans)}", "plan")
    period = timedelta(days=days) if days else None
    result = await gateway.plans.activate(
        account.id,
        plan,
        ref=f"admin-plan:{account.id}:{os.urandom(6).hex()}",
        actor="cli",
        period=period,
    )
    click.echo(f"{account.email}: {plan} until {result.period_end.isoformat()} (+{result.credits} plan credits)")


@click.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.argument("email")
@click.option("--label", default="", help="A name for the key.")
@config_option
@run_with_gateway
async def keys_create(gateway: Gateway, email: str, label: str) -> None:
    """Create a key; the key alone is printed on the last line (shown once, never stored)."""
    account = await gateway.accounts.require(email)
    new = await gateway.keys.create(account.id, label, actor="cli")
    click.echo(f"created key {new.key.prefix}… for {account.email}; it is shown once:", err=True)
    click.echo(new.secret)


@keys.command("list")
@click.argument("email")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@config_option
@run_with_gateway
async def keys_list(gateway: Gateway, email: str, include_revoked: bool) -> None:
    """List an account's keys: prefix, label, last use, request count."""
    account = await gateway.accounts.require(email)
    for key in await gateway.keys.list(account.id, include_revoked):
        used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        state = "revoked" if key.revoked_at else "active"
        click.echo(f"{key.prefix}  {state:<7}  {key.request_count:>8} requests  last used {used}  {key.label}")


@keys.command("revoke")
@click.argument("key_prefix")
@config_option
@run_with_gateway
async def keys_revoke(gateway: Gateway, key_prefix: str) -> None:
    """Revoke a key by its prefix; every worker refuses it from the next request on."""
    key = await gateway.keys.revoke(key_prefix, actor="cli")
    if gateway.keys.last_announced:
        click.echo(f"revoked {key.prefix}")
        return
    ttl = gateway.settings.gateway.auth_cache_ttl_s
    click.echo(
        f"revoked {key.prefix}: the revocation is stored; Redis could not be reached to tell the workers now, "
        f"so it reaches them within {ttl:g} s"
    )


@click.group()
def credits() -> None:
    """Credit balances."""


@credits.command("grant", context_settings={"ignore_unknown_options": True})
@click.argument("email")
@click.argument("amount", type=int)
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
@click.option("--ref", default=None, help="Idempotency reference (a repeat is a no-op).")
@config_option
@run_with_gateway
async def credits_grant(gateway: Gateway, email: str, amount: int, reason: str, ref: str | None) -> None:
    """Add (or, with a negative AMOUNT, remove) top-up credits, as an audited adjustment."""
    account = await gateway.accounts.require(email)
    reference = ref or f"cli-grant:{account.id}:{os.urandom(8).hex()}"
    entry = await gateway.ledger.adjust(account.id, amount, reason=reason, actor="cli", ref=reference)
    note = " (already applied)" if entry.replayed else ""
    click.echo(f"{account.email}: {amount:+d} credits{note}; balance {entry.plan_after + entry.topup_after}")


@credits.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_option
@run_with_gateway
async def credits_show(gateway: Gateway, email: str, as_json: bool) -> None:
    """Show an account's balance: usable total, plan credits, top-up credits."""
    account = await gateway.accounts.require(email)
    balance = await gateway.ledger.balance(account.id)
    data = {
        "balance": balance.total,
        "plan_credits": balance.plan_usable,
        "topup_credits": balance.topup_credits,
    }
    if as_json:
        click.echo(json.dumps(data))
        return
    ends = balance.plan_expires_at
    expiry = f" (expire {ends.isoformat(timespec='minutes')})" if ends and balance.plan_usable else ""
    click.echo(
        f"{account.email}: {data['balance']} credits = {data['plan_credits']} plan{expiry} + "
        f"{data['topup_credits']} top-up; {balance.held} held by requests in flight"
    )


@click.group()
def ledger() -> None:
    """The credit ledger."""


@ledger.command("check")
@config_option
@run_with_gateway
async def ledger_check(gateway: Gateway) -> None:
    """Exit 1 when any balance differs from its ledger sum (or its holds), or a hold is older than its lease
    allows (credits locked for a request nobody will settle)."""
    problems = await gateway.ledger.check()
    for problem in problems:
        click.echo(
            f"account {problem.account_id}: {problem.field} is {problem.stored}, ledger says {problem.expected}",
            err=True,
        )
    # a healthy gateway releases an expired hold within one housekeeping pass
    overdue = await gateway.ledger.overdue_holds(grace=timedelta(seconds=HOLD_SWEEP_GRACE_S))
    for hold in overdue:
        click.echo(
            f"hold {hold.hold_id} (account {hold.account_id}, {hold.amount} credits) is past its lease since "
            f"{hold.lease_until.isoformat(timespec='seconds')}",
            err=True,
        )
    if problems or overdue:
        sys.exit(1)
    click.echo("ledger ok: every balance equals its ledger sum and no hold is past its lease")


@click.command()
def plugins() -> None:
    """List loaded plugins and the hooks each implements."""
    from .plugins import make_plugin_manager, plugin_list

    def show() -> None:
        for row in plugin_list(make_plugin_manager()):
            version = f" {row['version']}" if row["version"] else ""
            click.echo(f"{row['name']}{version}: {', '.join(row['hooks'])}")

    guarded(show)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``resayil`` command. ``--version`` answers before any plugin is loaded."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:
        click.echo(f"resayil, version {__version__}")
        return
    from .plugins import PluginError, make_plugin_manager

    try:
        pm = make_plugin_manager()
    except PluginError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    build_cli(pm).main(args=argv, prog_name="resayil")
