"""The hello plugin, found the way the gateway finds it: through its ``resayil_gateway`` entry point."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from click.testing import CliRunner
from resayil_hello import plugin

from resayil_gateway.cli import build_cli
from resayil_gateway.plugins import make_plugin_manager, plugin_list
from resayil_gateway.testing import build_gateway


def run_cli(*args: str, env: dict[str, str] | None = None):
    """``resayil ARGS`` in-process, with the plugins installed, in a clean ``RESAYIL_*`` environment plus ``env``."""
    unset: dict[str, str | None] = {
        "RESAYIL_CONFIG": None,
        "RESAYIL_LOAD_PLUGINS": None,
        "RESAYIL_DISABLE_PLUGINS": None,
    }
    cli = build_cli(make_plugin_manager(env=env or {}))
    return CliRunner().invoke(cli, list(args), env={**unset, **(env or {})})


def test_entry_point_names_the_plugin_module():
    (entry,) = [e for e in entry_points(group="resayil_gateway") if e.name == "hello"]
    assert entry.value == "resayil_hello.plugin"


def test_plugin_manager_lists_hello_with_its_three_hooks():
    pm = make_plugin_manager(env={})
    rows = {row["name"]: row for row in plugin_list(pm)}
    assert pm.get_plugin("hello") is plugin
    assert rows["hello"]["hooks"] == ["on_event", "register_commands", "register_settings"]
    assert rows["hello"]["version"] == "0.1.0"


def test_resayil_hello_greets_the_name_with_the_default_greeting():
    result = run_cli("hello", "Amal")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hello, Amal!\n"


def test_greeting_comes_from_the_environment():
    result = run_cli("hello", "Amal", env={"RESAYIL_HELLO__GREETING": "Marhaba"})
    assert result.exit_code == 0, result.output
    assert result.stdout == "Marhaba, Amal!\n"


def test_greeting_comes_from_the_config_file_and_the_environment_wins(tmp_path):
    config = tmp_path / "resayil.toml"
    config.write_text('[hello]\ngreeting = "Ahlan"\n')
    from_file = run_cli("hello", "Amal", "--config", str(config))
    from_env = run_cli("hello", "Amal", "--config", str(config), env={"RESAYIL_HELLO__GREETING": "Marhaba"})
    assert from_file.stdout == "Ahlan, Amal!\n"
    assert from_env.stdout == "Marhaba, Amal!\n"


def test_unknown_hello_key_is_one_line_naming_it_and_exit_2():
    result = run_cli("hello", "Amal", env={"RESAYIL_HELLO__COLOUR": "green"})
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: hello.colour: unknown key"]


async def test_observer_sees_account_created_in_a_gateway_loaded_from_entry_points(stack_info, caplog):
    gateway = build_gateway(stack_info.database_url, redis_url=stack_info.redis_url, load_entrypoints=True)
    before = plugin.seen["account.created"]
    try:
        with caplog.at_level(logging.INFO, logger="resayil.hello"):
            account = await gateway.accounts.create("amal@example.com", "50000001", "a-good-password")
    finally:
        await gateway.store.dispose()
    assert plugin.seen["account.created"] == before + 1
    assert [r.getMessage() for r in caplog.records if r.name == "resayil.hello"] == [
        f"hello: saw account.created for account {account.id} ({before + 1} so far)"
    ]


async def test_disabling_hello_leaves_it_out_everywhere(stack_info):
    env = {"RESAYIL_DISABLE_PLUGINS": "hello"}
    pm = make_plugin_manager(env=env)
    cli = build_cli(pm)
    gateway = build_gateway(stack_info.database_url, redis_url=stack_info.redis_url, load_entrypoints=True, env=env)
    before = plugin.seen["account.created"]
    try:
        await gateway.accounts.create("amal@example.com", "50000001", "a-good-password")
    finally:
        await gateway.store.dispose()
    assert pm.get_plugin("hello") is None
    assert "hello" not in cli.commands
    assert plugin.seen["account.created"] == before
    assert "hello" not in gateway.settings.plugin_sections
