"""Every hook: documented, tested, called, and its answer used; and the order a request's hooks run in.

Each hook ``H`` has a test named ``test_hook_<H>_...`` (here or in a plugin's tests); a meta-test fails when
a hook is added without one, or without a docstring, or without a mention in the README's plugin section.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import types
from pathlib import Path
from typing import Any

import click
import pytest
from aiohttp import web
from click.testing import CliRunner

from resayil_gateway import hookimpl, hookspecs
from resayil_gateway.app import create_app
from resayil_gateway.cli import build_cli
from resayil_gateway.config import ConfigError, Section
from resayil_gateway.domain import Caller, Usage
from resayil_gateway.errors import AuthenticationFailed, PermissionDenied
from resayil_gateway.gateway import Gateway
from resayil_gateway.plugins import PluginError, make_plugin_manager
from resayil_gateway.routing.backends import Route
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, build_gateway, seed_account
from resayil_gateway.web_keys import GATEWAY

ROOT = Path(__file__).resolve().parents[1]
CATALOG = {
    "models": {
        "catalog": {
            "fake-small": {"backend": "local", "size": "small"},
            "fake-medium": {"backend": "local", "size": "medium"},
        }
    }
}
HOOKS = sorted(
    name
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(function, "resayil_gateway_spec")
)


def chat(model: str = "fake-small", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], **extra}


def offline_gateway(tmp_path: Path, *plugins: Any, env: dict[str, str] | None = None) -> Gateway:
    """A gateway for hooks that run while it is built: its database is never opened."""
    return build_gateway(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}", plugins=plugins, env=env)


@pytest.fixture
def serve(gateway_client):
    """``await serve(*plugins)``: a client of the app of a gateway with a fake backend, the given plugins and
    an account holding ``credits`` (100 by default); ``client.auth`` carries its key."""

    async def start(*plugins: Any, credits: int = 100, backends: tuple[Any, ...] | None = None) -> Any:
        return await gateway_client(*plugins, backends=backends, credits=credits, overrides=CATALOG)

    return start


async def balance(client: Any) -> int:
    await client.gateway.drain()
    return (await client.gateway.ledger.balance(client.account.id)).total


# -- (a, d) meta-tests: every hook is documented and tested ------------------------------------------------


def test_hookspecs_define_the_documented_hooks():
    assert sorted(hookspecs.__all__) == HOOKS
    assert len(HOOKS) == 13


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook):
    assert (inspect.getdoc(getattr(hookspecs, hook)) or "").strip(), f"hook {hook} has no docstring"


def test_every_hook_has_a_test_named_after_it():
    folders = [ROOT / "tests", *ROOT.glob("plugins/*/tests"), *ROOT.glob("examples/*/tests")]
    source = "\n".join(path.read_text(encoding="utf-8") for folder in folders for path in folder.rglob("*.py"))
    untested = [hook for hook in HOOKS if not re.search(rf"def test_hook_{hook}(_\w*)?\(", source)]
    assert untested == [], f"hooks without a test_hook_<name>... test: {untested}"


def test_every_hook_is_named_in_the_readme_plugin_section():
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet; its plugin section must name every hook once it does")
    text = re.sub(r"^```.*?^```", "", readme.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    heading = re.search(r"^(#+)[^\n]*plugin[^\n]*$", text, re.IGNORECASE | re.MULTILINE)
    assert heading, "README.md has no heading mentioning plugins"
    level = len(heading.group(1))
    rest = text[heading.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    section = rest[: end.start()] if end else rest
    missing = [hook for hook in HOOKS if not re.search(rf"\b{hook}\b", section)]
    assert missing == [], f"hooks not named in README.md's plugin section: {missing}"


# -- (b) one test per hook: it is called and its answer is used --------------------------------------------


class Configured:
    def __init__(self) -> None:
        self.seen: list[Gateway] = []

    @hookimpl
    def configure(self, gateway: Gateway) -> None:
        self.seen.append(gateway)


def test_hook_configure_sees_the_built_gateway(tmp_path):
    plugin = Configured()
    gateway = offline_gateway(tmp_path, plugin)
    assert plugin.seen == [gateway]


def test_hook_configure_is_historic_so_a_plugin_registered_late_sees_the_gateway(tmp_path):
    gateway = offline_gateway(tmp_path)
    late = Configured()
    gateway.pm.register(late)
    assert late.seen == [gateway]


class GreeterSettings(Section):
    word: str = "Hello"
    times: int = 1


class Greeter:
    @hookimpl
    def register_settings(self, register: Any) -> None:
        register("greeter", GreeterSettings)


def test_hook_register_settings_section_is_loaded_and_validated(tmp_path):
    env = {"RESAYIL_GREETER__WORD": "Marhaba", "RESAYIL_GREETER__TIMES": "3"}
    gateway = offline_gateway(tmp_path, Greeter(), env=env)
    assert gateway.settings.section("greeter") == GreeterSettings(word="Marhaba", times=3)
    with pytest.raises(ConfigError, match=r"greeter\.times"):
        offline_gateway(tmp_path, Greeter(), env={"RESAYIL_GREETER__TIMES": "often"})


def test_hook_register_settings_by_two_plugins_for_one_section_is_refused(tmp_path):
    class Other:
        @hookimpl
        def register_settings(self, register: Any) -> None:
            register("greeter", type("OtherSettings", (Section,), {}))

    with pytest.raises(ConfigError, match=r"\[greeter\] is registered by two plugins"):
        offline_gateway(tmp_path, Greeter(), Other())


async def test_hook_register_backends_backend_serves_requests(serve):
    backend = FakeBackend(name="mine", reply="from my backend")
    client = await serve(backends=(backend,))
    response = await client.post("/v1/chat/completions", json=chat(), headers=client.auth)
    assert response.status == 200
    assert (await response.json())["choices"][0]["message"]["content"] == "from my backend"
    assert client.gateway.backends == {"mine": backend}
    assert len(backend.requests) == 1


def test_hook_register_backends_refuses_what_is_not_a_backend(tmp_path):
    with pytest.raises(TypeError, match="does not implement"):
        offline_gateway(tmp_path, FakeBackendPlugin(object()))


class Named:
    def __init__(self, name: str | None) -> None:
        self.name = name


class Providers:
    def __init__(self, *items: Named) -> None:
        self.items = items

    @hookimpl
    def register_payment_providers(self, register: Any, gateway: Gateway) -> None:
        for item in self.items:
            register(item)

    @hookimpl
    def register_channels(self, register: Any, gateway: Gateway) -> None:
        for item in self.items:
            register(item)


def test_hook_register_payment_providers_are_kept_by_name(tmp_path):
    provider = Named("fakepay")
    gateway = offline_gateway(tmp_path, Providers(provider))
    assert gateway.payment_providers == {"fakepay": provider}


def test_hook_register_payment_providers_need_a_unique_name(tmp_path):
    with pytest.raises(ConfigError, match="needs a unique name"):
        offline_gateway(tmp_path, Providers(Named("fakepay"), Named("fakepay")))


def test_hook_register_channels_are_kept_by_name(tmp_path):
    channel = Named("pigeon")
    gateway = offline_gateway(tmp_path, Providers(channel))
    assert gateway.channels == {"pigeon": channel}


def test_hook_register_channels_without_a_name_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs a unique name"):
        offline_gateway(tmp_path, Providers(Named(None)))


class Lifecycle:
    """A route and a lifespan that record when each runs."""

    def __init__(self) -> None:
        self.log: list[str] = []

    @hookimpl
    def register_routes(self, gateway: Gateway) -> list[web.RouteDef]:
        async def hello(request: web.Request) -> web.Response:
            self.log.append("request")
            same = request.app[GATEWAY] is gateway
            return web.json_response({"hello": "world", "same_gateway": same})

        return [web.get("/hello", hello)]

    @hookimpl
    async def lifespan(self, gateway: Gateway) -> Any:
        self.log.append("setup")
        yield
        self.log.append("teardown")


async def test_hook_register_routes_are_served_and_reach_the_gateway(serve):
    client = await serve(Lifecycle())
    response = await client.get("/hello")
    assert response.status == 200
    assert await response.json() == {"hello": "world", "same_gateway": True}


async def test_hook_lifespan_sets_up_before_serving_and_tears_down_after(serve):
    plugin = Lifecycle()
    client = await serve(plugin)
    assert plugin.log == ["setup"]
    await client.get("/hello")
    await client.close()
    assert plugin.log == ["setup", "request", "teardown"]


def test_hook_lifespan_returning_none_adds_nothing(tmp_path):
    class Nothing:
        @hookimpl
        def lifespan(self, gateway: Gateway) -> None:
            return None

    bare = create_app(offline_gateway(tmp_path))
    with_nothing = create_app(offline_gateway(tmp_path, Nothing()))
    assert len(with_nothing.cleanup_ctx) == len(bare.cleanup_ctx)


def test_hook_register_commands_adds_a_command_to_the_cli():
    class Commands:
        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            @cli.command("greet")
            @click.argument("name")
            def greet(name: str) -> None:
                click.echo(f"Marhaba, {name}")

    cli = build_cli(make_plugin_manager(load_entrypoints=False, env={}, extra=[Commands()]))
    result = CliRunner().invoke(cli, ["greet", "Amal"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Marhaba, Amal\n"


class HeaderAuth:
    """``X-Account: <id>`` authenticates; ``X-Blocked`` refuses; otherwise abstain."""

    @hookimpl
    def authenticate(self, request: web.Request, gateway: Gateway) -> Caller | None:
        if "X-Blocked" in request.headers:
            raise AuthenticationFailed("Blocked by the test plugin.", code="blocked")
        account = request.headers.get("X-Account")
        if account is None:
            return None
        return Caller(account_id=int(account), key_id=None, key_prefix="header", plan="basic")


async def test_hook_authenticate_caller_is_the_one_charged(serve):
    client = await serve(HeaderAuth())
    response = await client.post("/v1/chat/completions", json=chat(), headers={"X-Account": str(client.account.id)})
    assert response.status == 200
    assert await balance(client) == 99


async def test_hook_authenticate_refusal_is_the_answer_even_with_a_valid_key(serve):
    client = await serve(HeaderAuth())
    response = await client.post("/v1/chat/completions", json=chat(), headers={**client.auth, "X-Blocked": "1"})
    assert response.status == 401
    error = (await response.json())["error"]
    assert (error["message"], error["code"]) == ("Blocked by the test plugin.", "blocked")
    assert await balance(client) == 100


class NoMedium:
    @hookimpl
    def check_access(self, caller: Caller, model: Any, gateway: Gateway) -> PermissionDenied | None:
        if model.id == "fake-medium":
            return PermissionDenied("Medium models are closed today.", param="model")
        return None


async def test_hook_check_access_veto_refuses_the_request_and_hides_the_model(serve):
    client = await serve(NoMedium())
    refused = await client.post("/v1/chat/completions", json=chat("fake-medium"), headers=client.auth)
    listed = await client.get("/v1/models", headers=client.auth)
    assert refused.status == 403
    assert (await refused.json())["error"]["message"] == "Medium models are closed today."
    assert [model["id"] for model in (await listed.json())["data"]] == ["fake-small"]
    assert await balance(client) == 100


async def test_hook_choose_backend_route_is_where_the_request_runs(serve):
    local = FakeBackend(name="local-box", reply="from local")
    spare = FakeBackend(name="spare", kind="cloud", reply="from the spare", model_names=())

    class ToSpare:
        @hookimpl
        def choose_backend(self, caller: Caller, chat_request: Any, model: Any, gateway: Gateway) -> Route:
            return Route(gateway.backends["spare"], "spare-model", model, reason="test")

    client = await serve(ToSpare(), backends=(local, spare))
    response = await client.post("/v1/chat/completions", json=chat(), headers=client.auth)
    assert response.status == 200
    assert response.headers["x-resayil-backend"] == "cloud"
    assert (await response.json())["choices"][0]["message"]["content"] == "from the spare"
    assert (len(local.requests), len(spare.requests)) == (0, 1)


class FlatPrice:
    def __init__(self, credits: int) -> None:
        self.credits = credits

    @hookimpl
    def price_usage(self, caller: Caller, model: Any, backend: str, usage: Usage, gateway: Gateway) -> int:
        return self.credits


async def test_hook_price_usage_answer_is_what_is_charged(serve):
    client = await serve(FlatPrice(7))
    response = await client.post("/v1/chat/completions", json=chat(), headers=client.auth)
    assert response.status == 200
    assert await balance(client) == 93


async def test_hook_price_usage_also_sizes_the_hold(serve):
    client = await serve(FlatPrice(7), credits=6)
    response = await client.post("/v1/chat/completions", json=chat(), headers=client.auth)
    assert response.status == 402
    assert (await response.json())["error"]["credits_needed"] == 7
    assert await balance(client) == 6


class Observer:
    def __init__(self) -> None:
        self.events: list[tuple[str, int | None]] = []

    @hookimpl
    def on_event(self, event: Any, gateway: Gateway) -> None:
        self.events.append((event.name, event.account_id))


class Broken:
    @hookimpl
    async def on_event(self, event: Any, gateway: Gateway) -> None:
        raise RuntimeError("observer is broken")


async def test_hook_on_event_sees_account_and_key_events(make_gateway):
    observer = Observer()
    gateway = make_gateway(plugins=[observer])
    account = await seed_account(gateway)
    assert observer.events == [("account.created", account.id), ("key.created", account.id)]


async def test_hook_on_event_failure_is_logged_and_never_reaches_the_caller(make_gateway, caplog):
    observer = Observer()
    gateway = make_gateway(plugins=[Broken(), observer])
    with caplog.at_level(logging.ERROR, logger="resayil.gateway"):
        account = await gateway.accounts.create("amal@example.com", "50001234", "a-good-password")
    assert observer.events == [("account.created", account.id)]
    assert "an on_event hook failed for account.created" in caplog.text


# -- (c) the lifecycle of one request, as a test -----------------------------------------------------------


class Recorder:
    """One implementation of every per-request hook; each records its call and leaves the decision to the
    core's defaults."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.priced: list[Usage] = []

    @hookimpl
    def authenticate(self, request: web.Request, gateway: Gateway) -> None:
        self.calls.append("authenticate")

    @hookimpl
    def check_access(self, caller: Caller, model: Any, gateway: Gateway) -> None:
        self.calls.append("check_access")

    @hookimpl
    def choose_backend(self, caller: Caller, chat_request: Any, model: Any, gateway: Gateway) -> None:
        self.calls.append("choose_backend")

    @hookimpl
    def price_usage(self, caller: Caller, model: Any, backend: str, usage: Usage, gateway: Gateway) -> None:
        self.calls.append("price_usage")
        self.priced.append(usage)

    @hookimpl
    def on_event(self, event: Any, gateway: Gateway) -> None:
        self.calls.append(f"on_event:{event.name}")


async def test_a_request_runs_its_hooks_in_lifecycle_order(serve):
    recorder = Recorder()
    client = await serve(recorder)
    recorder.calls.clear()
    response = await client.post("/v1/chat/completions", json=chat(max_tokens=50), headers=client.auth)
    await client.gateway.drain()
    assert response.status == 200
    assert recorder.calls == [
        "authenticate",
        "check_access",
        "choose_backend",
        "price_usage",
        "price_usage",
        "on_event:request.charged",
    ]
    hold, charge = recorder.priced[-2:]
    assert hold.completion_tokens == 50
    assert charge == Usage(prompt_tokens=10, completion_tokens=5)


def test_hook_arguments_are_named_as_the_specification_says():
    """Implementations receive keyword arguments by name, so the names in hookspecs are the contract."""
    expected = {
        "configure": ["gateway"],
        "register_settings": ["register"],
        "register_backends": ["register", "gateway"],
        "register_payment_providers": ["register", "gateway"],
        "register_channels": ["register", "gateway"],
        "register_routes": ["gateway"],
        "register_commands": ["cli"],
        "lifespan": ["gateway"],
        "authenticate": ["request", "gateway"],
        "check_access": ["caller", "model", "gateway"],
        "choose_backend": ["caller", "chat_request", "model", "gateway"],
        "price_usage": ["caller", "model", "backend", "usage", "gateway"],
        "on_event": ["event", "gateway"],
    }
    actual = {hook: list(inspect.signature(getattr(hookspecs, hook)).parameters) for hook in HOOKS}
    assert actual == expected


def test_firstresult_hooks_are_exactly_the_decisions():
    firstresult = {hook for hook in HOOKS if getattr(hookspecs, hook).resayil_gateway_spec.get("firstresult")}
    assert firstresult == {"authenticate", "choose_backend", "price_usage"}


# -- every per-request and lifecycle hook may be async; registration hooks may not ------------------------


class AsyncRecorder:
    """An ``async def`` implementation of every hook that may be async. The firstresult ones answer ``None``
    (after awaiting), so the core's defaults must still decide; ``check_access`` vetoes one model."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lifespan_ran = False

    @hookimpl
    async def authenticate(self, request: web.Request, gateway: Gateway) -> None:
        await asyncio.sleep(0)
        self.calls.append("authenticate")

    @hookimpl
    async def check_access(self, caller: Caller, model: Any, gateway: Gateway) -> Any:
        await asyncio.sleep(0)
        self.calls.append("check_access")
        return PermissionDenied("not this one", param="model") if model.id == "fake-medium" else None

    @hookimpl
    async def choose_backend(self, caller: Caller, chat_request: Any, model: Any, gateway: Gateway) -> None:
        await asyncio.sleep(0)
        self.calls.append("choose_backend")

    @hookimpl
    async def price_usage(self, caller: Caller, model: Any, backend: str, usage: Usage, gateway: Gateway) -> None:
        await asyncio.sleep(0)
        self.calls.append("price_usage")

    @hookimpl
    async def on_event(self, event: Any, gateway: Gateway) -> None:
        await asyncio.sleep(0)
        self.calls.append(f"on_event:{event.name}")

    @hookimpl
    def lifespan(self, gateway: Gateway) -> Any:
        async def run() -> Any:
            self.lifespan_ran = True
            yield

        return run()


async def test_async_implementations_of_every_per_request_hook_are_awaited_in_a_request(serve):
    recorder = AsyncRecorder()
    client = await serve(recorder)
    assert recorder.lifespan_ran
    recorder.calls.clear()
    response = await client.post("/v1/chat/completions", json=chat(max_tokens=50), headers=client.auth)
    await client.gateway.drain()
    assert response.status == 200, await response.text()
    assert recorder.calls == [
        "authenticate",
        "check_access",
        "choose_backend",
        "price_usage",
        "price_usage",
        "on_event:request.charged",
    ]
    assert await balance(client) == 99  # the core's default pricing decided after the async None
    refused = await client.post("/v1/chat/completions", json=chat("fake-medium"), headers=client.auth)
    assert refused.status == 403
    listed = await (await client.get("/v1/models", headers=client.auth)).json()
    assert [model["id"] for model in listed["data"]] == ["fake-small"]


async def test_an_async_firstresult_answer_wins_over_the_defaults(serve):
    class Pricing:
        @hookimpl
        async def price_usage(self, caller: Caller, model: Any, backend: str, usage: Usage, gateway: Gateway) -> int:
            await asyncio.sleep(0)
            return 7

    client = await serve(Pricing())
    response = await client.post("/v1/chat/completions", json=chat(max_tokens=5), headers=client.auth)
    assert response.status == 200
    assert await balance(client) == 93


@pytest.mark.parametrize("hook", sorted(hookspecs.SYNC_ONLY - {"register_settings", "register_commands"}))
def test_an_async_registration_hook_is_refused_when_registered(hook):
    namespace: dict[str, Any] = {}
    parameters = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    exec(f"async def {hook}({parameters}):\n    return None", namespace)
    plugin = types.SimpleNamespace(**{hook: hookimpl(namespace[hook])})
    with pytest.raises(PluginError, match=f"hook {hook} must be a plain function"):
        make_plugin_manager(load_entrypoints=False, extra=[plugin])


def test_every_hook_is_either_async_capable_or_declared_sync_only():
    async_capable = {"authenticate", "check_access", "choose_backend", "price_usage", "on_event", "lifespan"}
    assert set(HOOKS) == async_capable | hookspecs.SYNC_ONLY
    assert not async_capable & hookspecs.SYNC_ONLY
