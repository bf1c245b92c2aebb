"""Plugin loading: default plugins plus entry points, the load and disable lists, broken plugins failing
loudly, and installed plugins winning over the core's ``trylast`` defaults."""

from __future__ import annotations

import importlib.metadata
from types import SimpleNamespace
from typing import Any

import pytest
import resayil_ollama.plugin

from resayil_gateway import hookimpl
from resayil_gateway.app import create_app
from resayil_gateway.cli import main
from resayil_gateway.domain import Caller
from resayil_gateway.plugins import DEFAULT_PLUGINS, PluginError, make_plugin_manager, plugin_list
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, build_gateway, seed_account

CATALOG = {"models": {"catalog": {"fake-small": {"backend": "local", "size": "small"}}}}
CHAT = {"model": "fake-small", "messages": [{"role": "user", "content": "Hi"}]}


def names(pm) -> set[str]:
    return {row["name"] for row in plugin_list(pm)}


class MisspeltHook:
    """A plugin whose author typed ``authentcate``: it must not be silently ignored."""

    @hookimpl
    def authentcate(self, request: Any, gateway: Any) -> None:
        return None


class WrongArgument:
    """A plugin whose hook asks for an argument the hook does not pass."""

    @hookimpl
    def authenticate(self, req: Any, gateway: Any) -> None:
        return None


class HeaderAuth:
    """Authenticates ``X-Account: <id>`` (a made-up scheme); abstains when the header is absent."""

    @hookimpl
    def authenticate(self, request: Any, gateway: Any) -> Caller | None:
        account = request.headers.get("X-Account")
        if account is None:
            return None
        return Caller(account_id=int(account), key_id=None, key_prefix="header", plan="basic")


class FlatPrice:
    """Every request costs 7 credits, whatever it used."""

    @hookimpl
    def price_usage(self, caller: Any, model: Any, backend: str, usage: Any, gateway: Any) -> int:
        return 7


def with_entry_points(monkeypatch, *extra: Any) -> None:
    """Make ``extra`` (name, plugin) pairs look installed, beside the real entry points."""
    real = importlib.metadata.entry_points(group="resayil_gateway")
    fakes = [
        SimpleNamespace(name=name, value=f"fake:{name}", dist=None, load=load, group="resayil_gateway")
        for name, load in extra
    ]

    def entry_points(**params: Any) -> Any:
        assert params == {"group": "resayil_gateway"}
        return [*real, *fakes]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


# -- what gets loaded -------------------------------------------------------------------------------------


def test_plugin_manager_loads_the_default_plugins_and_every_entry_point():
    pm = make_plugin_manager(env={})
    assert names(pm) >= {*DEFAULT_PLUGINS, "ollama", "hello"}
    assert pm.get_plugin("ollama") is resayil_ollama.plugin


def test_plugin_manager_without_entry_points_has_only_the_default_plugins():
    assert names(make_plugin_manager(load_entrypoints=False, env={})) == set(DEFAULT_PLUGINS)


def test_resayil_load_plugins_loads_only_the_named_entry_points():
    pm = make_plugin_manager(env={"RESAYIL_LOAD_PLUGINS": "ollama"})
    assert names(pm) == {*DEFAULT_PLUGINS, "ollama"}


def test_resayil_disable_plugins_blocks_an_entry_point():
    pm = make_plugin_manager(env={"RESAYIL_DISABLE_PLUGINS": "ollama"})
    assert "ollama" not in names(pm)
    assert "hello" in names(pm)
    assert pm.is_blocked("ollama")


def test_disable_wins_over_load():
    pm = make_plugin_manager(env={"RESAYIL_LOAD_PLUGINS": "ollama, hello", "RESAYIL_DISABLE_PLUGINS": "hello"})
    assert names(pm) == {*DEFAULT_PLUGINS, "ollama"}


def test_blocked_argument_can_leave_out_a_default_plugin():
    pricing = "resayil_gateway.default_plugins.pricing"
    pm = make_plugin_manager(load_entrypoints=False, blocked=[pricing], env={})
    assert names(pm) == set(DEFAULT_PLUGINS) - {pricing}


def test_disabled_plugin_contributes_nothing_to_a_gateway(stack_info):
    env = {"RESAYIL_DISABLE_PLUGINS": "ollama"}
    gateway = build_gateway(stack_info.database_url, load_entrypoints=True, env=env)
    assert "ollama" not in gateway.backends
    assert "ollama" not in gateway.settings.plugin_sections


def test_enabled_plugin_registers_its_backend_and_settings(stack_info):
    gateway = build_gateway(stack_info.database_url, load_entrypoints=True, env={})
    assert gateway.backends["ollama"].kind == "local"
    assert gateway.settings.section("ollama").max_concurrency == 1


# -- broken plugins fail loudly ---------------------------------------------------------------------------


def test_misspelt_hook_raises_plugin_error_naming_the_hook():
    with pytest.raises(PluginError, match="unknown hook 'authentcate'"):
        make_plugin_manager(load_entrypoints=False, env={}, extra=[MisspeltHook()])


def test_misspelt_hook_raises_plugin_error_when_the_gateway_is_built(stack_info):
    with pytest.raises(PluginError, match="authentcate"):
        build_gateway(stack_info.database_url, plugins=[MisspeltHook()])


def test_misspelt_hook_in_an_installed_plugin_raises_plugin_error(monkeypatch):
    with_entry_points(monkeypatch, ("typo", MisspeltHook))
    with pytest.raises(PluginError, match="unknown hook 'authentcate'"):
        make_plugin_manager(env={})


def test_misspelt_hook_in_a_disabled_plugin_is_not_loaded_at_all(monkeypatch):
    with_entry_points(monkeypatch, ("typo", MisspeltHook))
    assert "typo" not in names(make_plugin_manager(env={"RESAYIL_DISABLE_PLUGINS": "typo"}))


def test_installed_plugin_that_cannot_be_imported_is_named_in_one_line(monkeypatch):
    def load() -> Any:
        raise ImportError("No module named 'resayil_missing'")

    with_entry_points(monkeypatch, ("missing", load))
    with pytest.raises(PluginError) as caught:
        make_plugin_manager(env={})
    assert str(caught.value) == "plugin 'missing' (fake:missing) failed to load: No module named 'resayil_missing'"


def test_cli_with_a_broken_installed_plugin_exits_2_in_one_line(monkeypatch, capsys):
    with_entry_points(monkeypatch, ("typo", MisspeltHook))
    with pytest.raises(SystemExit) as exited:
        main(["--help"])  # --version answers before plugins load; every other command loads them
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: plugin ") and "unknown hook 'authentcate'" in line


def test_hook_with_a_wrong_argument_in_an_installed_plugin_is_one_line(monkeypatch):
    with_entry_points(monkeypatch, ("wrong", WrongArgument))
    with pytest.raises(PluginError) as caught:
        make_plugin_manager(env={})
    assert "req" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_hook_with_a_wrong_argument_raises_plugin_error_when_the_gateway_is_built(stack_info):
    with pytest.raises(PluginError):
        build_gateway(stack_info.database_url, plugins=[WrongArgument()])


# -- installed plugins win over the core's defaults -------------------------------------------------------


@pytest.fixture
async def api(make_gateway, aiohttp_client):
    """A client factory: the app of a gateway with a fake backend, ``plugins`` and an account holding 100
    credits; ``client.auth`` carries its key."""

    async def start(*plugins: Any) -> Any:
        gateway = make_gateway(plugins=[FakeBackendPlugin(FakeBackend()), *plugins], overrides=CATALOG)
        client = await aiohttp_client(create_app(gateway))
        client.gateway = gateway
        client.account = await seed_account(gateway, credits=100)
        client.auth = {"Authorization": f"Bearer {client.account.key}"}
        return client

    return start


async def balance(client) -> int:
    await client.gateway.drain()
    return (await client.gateway.ledger.balance(client.account.id)).total


async def test_installed_authenticate_wins_over_the_api_key_default(api):
    client = await api(HeaderAuth())
    response = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Account": str(client.account.id)})
    assert response.status == 200, await response.text()
    assert await balance(client) == 99


async def test_installed_authenticate_that_abstains_lets_the_api_key_default_decide(api):
    client = await api(HeaderAuth())
    good = await client.post("/v1/chat/completions", json=CHAT, headers=client.auth)
    missing = await client.post("/v1/chat/completions", json=CHAT)
    assert good.status == 200
    assert missing.status == 401
    assert (await missing.json())["error"]["code"] == "missing_api_key"


async def test_installed_price_usage_wins_over_the_default_pricing(api):
    client = await api(FlatPrice())
    response = await client.post("/v1/chat/completions", json=CHAT, headers=client.auth)
    assert response.status == 200, await response.text()
    assert await balance(client) == 93


async def test_without_installed_plugins_the_defaults_answer(api):
    client = await api()
    unauthenticated = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"X-Account": str(client.account.id)}
    )
    charged = await client.post("/v1/chat/completions", json=CHAT, headers=client.auth)
    assert unauthenticated.status == 401
    assert charged.status == 200
    assert await balance(client) == 99
