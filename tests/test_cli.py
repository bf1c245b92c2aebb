"""The ``resayil`` command line: every command form is a contract that docs and scripts rely on.

Each test runs the real click group (core commands plus installed plugins) in-process on SQLite and on
PostgreSQL + Redis. Errors are one line on stderr, a non-zero exit and never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update

from resayil_gateway import __version__
from resayil_gateway.cli import build_cli
from resayil_gateway.plugins import DEFAULT_PLUGINS, make_plugin_manager
from resayil_gateway.state import RedisState, SharedState
from resayil_gateway.store import Store
from resayil_gateway.store.tables import accounts, audit, balances, ledger, metadata
from resayil_gateway.testing import TEST_SECRET

PASSWORD = "a-good-password\n"
KEY_SHAPE = re.compile(r"^rsk-[A-Za-z0-9_-]{43}$")
# Variables from the developer's shell that would change what the commands load.
UNSET = {"RESAYIL_CONFIG": None, "RESAYIL_LOAD_PLUGINS": None, "RESAYIL_DISABLE_PLUGINS": None}


class Resayil:
    """``resayil ARGS`` against one test database, and direct reads and writes of that database."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.database_url = database_url
        self.env: dict[str, str | None] = {
            **UNSET,
            "RESAYIL_DATABASE_URL": database_url,
            "RESAYIL_REDIS_URL": redis_url,
            "RESAYIL_SECRET_KEY": TEST_SECRET,
        }
        self.cli = build_cli(make_plugin_manager(env={}))

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        return CliRunner().invoke(self.cli, list(args), input=input, env={**self.env, **env})

    def create_user(self, email: str = "amal@example.com", phone: str = "50001234", *flags: str) -> Result:
        result = self("users", "create", email, "--phone", phone, "--password-stdin", *flags, input=PASSWORD)
        assert result.exit_code == 0, result.output
        return result

    def create_key(self, email: str = "amal@example.com", *flags: str) -> str:
        result = self("keys", "create", email, *flags)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()[-1]

    def rows(self, statement: Any) -> list[Any]:
        return asyncio.run(self._database(lambda conn: conn.execute(statement), read=True))

    def execute(self, statement: Any) -> None:
        asyncio.run(self._database(lambda conn: conn.execute(statement), read=False))

    async def _database(self, action: Any, read: bool) -> list[Any]:
        store = Store(self.database_url)
        try:
            async with store.connect() if read else store.begin() as conn:
                result = await action(conn)
                return result.all() if read else []
        finally:
            await store.dispose()


@pytest.fixture
def resayil(stack_info) -> Resayil:
    return Resayil(stack_info.database_url, stack_info.redis_url)


def assert_one_line_error(result: Result, fragment: str, code: int = 1) -> None:
    """A refused command: the exit code, exactly one line on stderr naming the problem, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def account_id(resayil: Resayil, email: str = "amal@example.com") -> int:
    (row,) = resayil.rows(select(accounts.c.id).where(accounts.c.email == email))
    return int(row.id)


# -- resayil --version, db upgrade, plugins ---------------------------------------------------------------


def test_version_prints_the_installed_version(resayil):
    result = resayil("--version")
    assert result.exit_code == 0
    assert result.stdout == f"resayil, version {__version__}\n"


def test_db_upgrade_migrates_a_fresh_database_and_says_so(tmp_path):
    fresh = Resayil(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}", "")
    result = fresh("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"database sqlite+aiosqlite:///{tmp_path / 'fresh.db'} is up to date\n"
    assert fresh.rows(select(accounts.c.id)) == []


def test_db_upgrade_on_an_up_to_date_database_changes_nothing(resayil):
    resayil.create_user()
    result = resayil("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("is up to date\n")
    assert account_id(resayil) > 0


def test_plugins_lists_ollama_and_the_default_plugins_with_their_hooks(resayil):
    result = resayil("plugins")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["ollama 0.1.0"] == "register_backends, register_commands, register_settings"
    assert lines["resayil_gateway.default_plugins.api_key_auth"] == "authenticate"
    assert lines["resayil_gateway.default_plugins.model_access"] == "check_access"
    assert lines["resayil_gateway.default_plugins.pricing"] == "price_usage"
    assert lines["resayil_gateway.default_plugins.routing"] == "choose_backend"
    assert set(DEFAULT_PLUGINS) <= {name.split(" ")[0] for name in lines}


# -- resayil users ----------------------------------------------------------------------------------------


def test_users_create_reads_the_password_from_stdin_and_stores_the_phone_in_e164(resayil):
    result = resayil.create_user("Amal@Example.com", "5000 1234")
    (row,) = resayil.rows(select(accounts.c.email, accounts.c.phone, accounts.c.role, accounts.c.password_hash))
    assert (row.email, row.phone, row.role) == ("amal@example.com", "+96550001234", "user")
    assert row.password_hash.startswith("$argon2id$")
    assert "a-good-password" not in row.password_hash
    assert result.stdout.startswith("created user amal@example.com (+96550001234), id ")


def test_users_create_admin_gives_the_admin_role(resayil):
    result = resayil.create_user("boss@example.com", "+96560001234", "--admin")
    (row,) = resayil.rows(select(accounts.c.role))
    assert row.role == "admin"
    assert result.stdout.startswith("created admin boss@example.com (+96560001234)")


def test_users_create_with_a_taken_email_is_refused_in_one_line(resayil):
    resayil.create_user("amal@example.com", "50001234")
    result = resayil("users", "create", "AMAL@example.com", "--phone", "50009999", "--password-stdin", input=PASSWORD)
    assert_one_line_error(result, "email is already registered")
    assert len(resayil.rows(select(accounts.c.id))) == 1


@pytest.mark.parametrize(
    ("phone", "password", "fragment"),
    [
        ("12", PASSWORD, "not a valid phone number: '12'"),
        ("50001234", "short\n", "password must be at least 8 characters"),
        ("50001234", "", "password must be at least 8 characters"),
    ],
)
def test_users_create_with_a_bad_phone_or_password_names_the_problem(resayil, phone, password, fragment):
    result = resayil("users", "create", "amal@example.com", "--phone", phone, "--password-stdin", input=password)
    assert_one_line_error(result, fragment)
    assert resayil.rows(select(accounts.c.id)) == []


def test_users_create_without_password_stdin_is_a_usage_error(resayil):
    result = resayil("users", "create", "amal@example.com", "--phone", "50001234", input=PASSWORD)
    assert result.exit_code == 2
    assert "--password-stdin" in result.stderr
    assert "Traceback" not in result.output
    assert resayil.rows(select(accounts.c.id)) == []


def test_users_list_shows_each_account_with_role_and_plan_newest_first(resayil):
    resayil.create_user("amal@example.com", "50001234")
    resayil.create_user("boss@example.com", "60001234", "--admin")
    result = resayil("users", "list")
    assert result.exit_code == 0, result.output
    first, second = result.stdout.splitlines()
    assert first.split()[1:] == ["boss@example.com", "+96560001234", "admin", "active", "basic"]
    assert second.split()[1:] == ["amal@example.com", "+96550001234", "user", "active", "basic"]


def test_users_list_json_is_machine_readable(resayil):
    resayil.create_user()
    result = resayil("users", "list", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row == {
        "id": account_id(resayil),
        "email": "amal@example.com",
        "phone": "+96550001234",
        "role": "user",
        "status": "active",
        "plan": "basic",
        "plan_ends": None,
    }


def test_users_set_plan_grants_the_plan_credits_and_is_audited(resayil):
    resayil.create_user()
    result = resayil("users", "set-plan", "amal@example.com", "pro")
    assert result.exit_code == 0, result.output
    assert "pro until" in result.stdout
    assert "(+500 plan credits)" in result.stdout
    shown = json.loads(resayil("credits", "show", "amal@example.com", "--json").stdout)
    assert shown == {"balance": 500, "plan_credits": 500, "topup_credits": 0}
    (entry,) = resayil.rows(select(audit.c.actor, audit.c.action, audit.c.target, audit.c.detail))
    assert (entry.actor, entry.action, entry.target) == ("cli", "plan.activated", f"account:{account_id(resayil)}")
    assert entry.detail["plan"] == "pro"


def test_users_set_plan_days_sets_the_period_length(resayil):
    resayil.create_user()
    before = datetime.now(UTC)
    result = resayil("users", "set-plan", "amal@example.com", "enterprise", "--days", "7")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(resayil("users", "list", "--json").stdout)
    ends = datetime.fromisoformat(row["plan_ends"])
    assert row["plan"] == "enterprise"
    assert before + timedelta(days=7) <= ends <= datetime.now(UTC) + timedelta(days=7)


def test_users_set_plan_with_an_unknown_plan_is_refused_and_grants_nothing(resayil):
    resayil.create_user()
    result = resayil("users", "set-plan", "amal@example.com", "gold")
    assert_one_line_error(result, "unknown plan 'gold'; plans: basic, pro, enterprise")
    assert resayil.rows(select(ledger.c.id)) == []
    assert resayil.rows(select(audit.c.id)) == []


def test_users_set_plan_for_an_unknown_account_is_refused(resayil):
    result = resayil("users", "set-plan", "nobody@example.com", "pro")
    assert_one_line_error(result, "no account with e-mail or phone 'nobody@example.com'")


# -- resayil keys -----------------------------------------------------------------------------------------


def test_keys_create_prints_the_key_alone_on_the_last_line(resayil):
    resayil.create_user()
    result = resayil("keys", "create", "amal@example.com", "--label", "laptop")
    assert result.exit_code == 0, result.output
    *_, last = result.stdout.splitlines()
    assert KEY_SHAPE.match(last), last
    assert result.stdout == last + "\n"
    assert "shown once" in result.stderr
    assert last not in result.stderr


def test_keys_create_stores_the_key_nowhere_in_plain_text(resayil):
    resayil.create_user()
    key = resayil.create_key("amal@example.com", "--label", "laptop")
    secret_part = key[12:]
    for table in metadata.sorted_tables:
        for row in resayil.rows(select(table)):
            text = " ".join(str(value) for value in row)
            assert key not in text, table.name
            assert secret_part not in text, table.name


def test_keys_create_beyond_the_plan_allowance_is_refused(resayil):
    resayil.create_user()
    resayil.create_key()
    result = resayil("keys", "create", "amal@example.com")
    assert_one_line_error(result, "the basic plan allows 1 active key(s)")
    assert result.stdout == ""


def test_keys_create_for_an_unknown_account_is_refused(resayil):
    result = resayil("keys", "create", "nobody@example.com")
    assert_one_line_error(result, "no account with e-mail or phone 'nobody@example.com'")


def test_keys_list_shows_the_12_character_prefix_and_never_the_key(resayil):
    resayil.create_user()
    key = resayil.create_key("amal@example.com", "--label", "laptop")
    result = resayil("keys", "list", "amal@example.com")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert line.split()[:4] == [key[:12], "active", "0", "requests"]
    assert line.endswith("last used never  laptop")
    assert key[:13] not in result.output


def test_keys_revoke_by_prefix_hides_the_key_from_the_active_list(resayil):
    resayil.create_user()
    key = resayil.create_key()
    result = resayil("keys", "revoke", key[:12])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"revoked {key[:12]}\n"
    assert resayil("keys", "list", "amal@example.com").stdout == ""
    assert resayil("keys", "list", "amal@example.com", "--all").stdout.split()[:2] == [key[:12], "revoked"]
    actions = [row.action for row in resayil.rows(select(audit.c.action).order_by(audit.c.id))]
    assert actions == ["key.created", "key.revoked"]


def test_keys_revoke_with_an_unknown_prefix_is_refused(resayil):
    result = resayil("keys", "revoke", "rsk-NoSuchKe")
    assert_one_line_error(result, "no active key with prefix 'rsk-NoSuchKe'")


def test_keys_revoke_twice_is_refused_the_second_time(resayil):
    resayil.create_user()
    key = resayil.create_key()
    resayil("keys", "revoke", key[:12])
    result = resayil("keys", "revoke", key[:12])
    assert_one_line_error(result, f"no active key with prefix {key[:12]!r}")


# -- resayil credits --------------------------------------------------------------------------------------


def test_credits_grant_adds_top_up_credits_with_the_reason_in_the_ledger_and_audit(resayil):
    resayil.create_user()
    result = resayil("credits", "grant", "amal@example.com", "50", "--reason", "welcome gift")
    assert result.exit_code == 0, result.output
    assert result.stdout == "amal@example.com: +50 credits; balance 50\n"
    (entry,) = resayil.rows(select(ledger.c.reason, ledger.c.actor, ledger.c.topup_delta, ledger.c.memo))
    assert tuple(entry) == ("adjustment", "cli", 50, "welcome gift")
    (record,) = resayil.rows(select(audit.c.action, audit.c.detail))
    assert record.action == "credits.adjusted"
    assert {name: record.detail[name] for name in ("delta", "reason", "bucket")} == {
        "delta": 50,
        "reason": "welcome gift",
        "bucket": "topup",
    }


def test_credits_grant_with_a_repeated_ref_applies_once(resayil):
    resayil.create_user()
    resayil("credits", "grant", "amal@example.com", "50", "--reason", "gift", "--ref", "gift-1")
    again = resayil("credits", "grant", "amal@example.com", "50", "--reason", "gift", "--ref", "gift-1")
    assert again.exit_code == 0, again.output
    assert again.stdout == "amal@example.com: +50 credits (already applied); balance 50\n"
    assert json.loads(resayil("credits", "show", "amal@example.com", "--json").stdout)["balance"] == 50


def test_credits_grant_negative_amount_after_double_dash_removes_credits(resayil):
    resayil.create_user()
    resayil("credits", "grant", "amal@example.com", "10", "--reason", "gift")
    result = resayil("credits", "grant", "amal@example.com", "--reason", "correction", "--", "-4")
    assert result.exit_code == 0, result.output
    assert result.stdout == "amal@example.com: -4 credits; balance 6\n"


def test_credits_grant_accepts_a_negative_amount_as_documented(resayil):
    resayil.create_user()
    resayil("credits", "grant", "amal@example.com", "10", "--reason", "gift")
    result = resayil("credits", "grant", "amal@example.com", "-4", "--reason", "correction")
    assert result.exit_code == 0, result.output
    assert result.stdout == "amal@example.com: -4 credits; balance 6\n"


def test_credits_grant_below_zero_is_refused(resayil):
    resayil.create_user()
    resayil("credits", "grant", "amal@example.com", "10", "--reason", "gift")
    result = resayil("credits", "grant", "amal@example.com", "--reason", "correction", "--", "-11")
    assert_one_line_error(result, "the topup bucket would go below zero")
    assert json.loads(resayil("credits", "show", "amal@example.com", "--json").stdout)["balance"] == 10


def test_credits_grant_without_a_reason_is_a_usage_error(resayil):
    resayil.create_user()
    result = resayil("credits", "grant", "amal@example.com", "10")
    assert result.exit_code == 2
    assert "Missing option '--reason'" in result.stderr
    assert resayil.rows(select(ledger.c.id)) == []


def test_credits_show_json_is_exactly_balance_plan_and_top_up(resayil):
    resayil.create_user()
    resayil("users", "set-plan", "amal@example.com", "basic")
    resayil("credits", "grant", "amal@example.com", "25", "--reason", "gift")
    result = resayil("credits", "show", "amal@example.com", "--json")
    assert result.exit_code == 0, result.output
    assert result.stdout == '{"balance": 125, "plan_credits": 100, "topup_credits": 25}\n'


def test_credits_show_text_says_both_buckets(resayil):
    resayil.create_user()
    resayil("credits", "grant", "amal@example.com", "25", "--reason", "gift")
    result = resayil("credits", "show", "amal@example.com")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("amal@example.com: 25 credits = 0 plan + 25 top-up; 0 held")


def test_credits_show_for_an_unknown_account_is_refused(resayil):
    result = resayil("credits", "show", "nobody@example.com", "--json")
    assert_one_line_error(result, "no account with e-mail or phone 'nobody@example.com'")
    assert result.stdout == ""


# -- resayil ledger check ---------------------------------------------------------------------------------


def test_ledger_check_passes_when_every_balance_equals_its_ledger(resayil):
    resayil.create_user()
    resayil("users", "set-plan", "amal@example.com", "pro")
    resayil("credits", "grant", "amal@example.com", "25", "--reason", "gift")
    result = resayil("ledger", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout == "ledger ok: every balance equals its ledger sum and no hold is past its lease\n"


def test_ledger_check_fails_naming_the_account_whose_balance_was_tampered_with(resayil):
    resayil.create_user()
    resayil("credits", "grant", "amal@example.com", "25", "--reason", "gift")
    owner = account_id(resayil)
    resayil.execute(update(balances).where(balances.c.account_id == owner).values(topup_credits=1000))
    result = resayil("ledger", "check")
    assert result.exit_code == 1
    assert result.stderr == f"account {owner}: topup_credits is 1000, ledger says 25\n"
    assert "ledger ok" not in result.stdout


# -- failures that are not the user's input ---------------------------------------------------------------


def test_bad_configuration_in_the_environment_exits_2_in_one_line(resayil):
    result = resayil("users", "list", RESAYIL_GATEWAY__PORT="eighty")
    assert_one_line_error(result, "gateway.port", code=2)


def test_missing_config_file_exits_2_in_one_line(resayil, tmp_path):
    result = resayil("credits", "show", "amal@example.com", "--config", str(tmp_path / "missing.toml"))
    assert_one_line_error(result, "missing.toml: not found", code=2)


def test_commands_close_the_shared_state_they_used(resayil, monkeypatch):
    resayil.create_user()
    key = resayil.create_key()
    closed: list[SharedState] = []

    async def close(state: SharedState) -> None:
        closed.append(state)

    monkeypatch.setattr(SharedState, "close", close)
    monkeypatch.setattr(RedisState, "close", close)
    result = resayil("keys", "revoke", key[:12])
    assert result.exit_code == 0, result.output
    assert len(closed) == 1


def test_unreachable_database_exits_1_in_one_line(resayil):
    result = resayil("users", "list", RESAYIL_DATABASE_URL="postgresql+asyncpg://resayil@127.0.0.1:1/resayil")
    assert_one_line_error(result, "cannot reach")
