"""fail2ban (SPEC §7.1): one documented line per authentication failure with the real client address, a filter
that matches the gateway's real log output, and reported bans that are recorded, alerted and refused."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import Application
from click.testing import CliRunner
from sqlalchemy import select
from test_notifications_channel import ChannelPlugin, FakeChannel

from resayil_gateway.app import create_app
from resayil_gateway.cli import build_cli
from resayil_gateway.events.auth_failures import forwarded_client, record_login_failure
from resayil_gateway.logs import TEXT_FORMAT, JsonFormatter
from resayil_gateway.plugins import make_plugin_manager
from resayil_gateway.store.tables import audit
from resayil_gateway.testing import TEST_SECRET
from resayil_gateway.web_keys import GATEWAY

FILTER = Path(__file__).parent.parent / "examples" / "fail2ban" / "filter.d" / "resayil-gateway.conf"
BAD_KEY = {"Authorization": "Bearer rsk-" + "Z" * 43}
PROXIES = {"gateway": {"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]}}


def once_per_suite(stack: str) -> None:
    """The log line does not depend on the store: one stack proves it."""
    if stack != "sqlite":
        pytest.skip("store-independent; proven on SQLite")


# -- the client address ------------------------------------------------------------------------------------


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    trusted = ("10.0.0.0/8",)
    assert forwarded_client("203.0.113.5", ["198.51.100.1"], trusted) == "203.0.113.5"
    assert forwarded_client("10.0.0.2", ["198.51.100.1"], ()) == "10.0.0.2"


def test_forwarded_for_is_read_from_the_right_skipping_trusted_proxies():
    trusted = ("10.0.0.0/8",)
    assert forwarded_client("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.9"], trusted) == "198.51.100.1"
    assert forwarded_client("10.0.0.2", ["6.6.6.6", "198.51.100.1"], trusted) == "198.51.100.1"
    assert forwarded_client("10.0.0.2", ["not-an-ip, 10.0.0.7"], trusted) == "10.0.0.7"
    assert forwarded_client("10.0.0.2", [], trusted) == "10.0.0.2"


def test_trusted_proxies_must_be_networks(make_gateway, stack):
    once_per_suite(stack)
    from resayil_gateway.config import ConfigError

    with pytest.raises(ConfigError, match=r"gateway\.trusted_proxies: 'nope' is not an IP address"):
        make_gateway(overrides={"gateway": {"trusted_proxies": ["nope"]}})


# -- the AUTH_FAILURE line and the fail2ban filter ---------------------------------------------------------


async def test_a_bad_api_key_is_logged_with_the_forwarded_client_of_a_trusted_proxy(
    make_gateway, aiohttp_client, caplog, stack
):
    once_per_suite(stack)
    caplog.set_level(logging.WARNING, logger="resayil.auth")
    client = await aiohttp_client(create_app(make_gateway(overrides=PROXIES)))
    await client.get("/v1/models", headers={**BAD_KEY, "X-Forwarded-For": "198.51.100.23"})
    assert "AUTH_FAILURE ip=198.51.100.23 kind=api_key reason=invalid_api_key path=/v1/models" in caplog.text


def login_request(gateway, forwarded_for: str):
    """A portal login request arriving through the local proxy."""
    app = Application()
    app[GATEWAY] = gateway
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        ("127.0.0.1", 40000) if name == "peername" else default
    )
    headers = {"X-Forwarded-For": forwarded_for}
    return make_mocked_request("POST", "/login", headers=headers, app=app, transport=transport)


def test_a_failed_portal_login_is_logged_in_the_same_line(make_gateway, caplog, stack):
    once_per_suite(stack)
    caplog.set_level(logging.WARNING, logger="resayil.auth")
    trusted = PROXIES["gateway"]["trusted_proxies"]
    record_login_failure(login_request(make_gateway(overrides=PROXIES), "2001:db8::7"), trusted, "bad credentials")
    assert "AUTH_FAILURE ip=2001:db8::7 kind=password reason=bad_credentials path=/login" in caplog.text


async def test_the_fail2ban_filter_matches_the_gateways_real_log_output(make_gateway, aiohttp_client, tmp_path, stack):
    once_per_suite(stack)
    if shutil.which("fail2ban-regex") is None:
        pytest.skip("fail2ban-regex is not installed (apt-get install fail2ban; .ci/run installs it)")
    text_log, json_log = tmp_path / "gateway.log", tmp_path / "gateway.json.log"
    handlers = [logging.FileHandler(text_log), logging.FileHandler(json_log)]
    handlers[0].setFormatter(logging.Formatter(TEXT_FORMAT))
    handlers[1].setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    try:
        gateway = make_gateway(overrides=PROXIES)
        client = await aiohttp_client(create_app(gateway))
        await client.get("/v1/models", headers={**BAD_KEY, "X-Forwarded-For": "198.51.100.23"})
        await client.get("/v1/models", headers={"X-Forwarded-For": "2001:db8::7"})
        await client.get("/healthz", headers={"X-Forwarded-For": "192.0.2.99"})  # not a failure
        record_login_failure(login_request(gateway, "192.0.2.5"), gateway.settings.gateway.trusted_proxies)
        logging.getLogger("resayil.app").info("AUTH_FAILURE is mentioned here but not in the line format")
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    for log in (text_log, json_log):
        process = await asyncio.create_subprocess_exec(
            "fail2ban-regex", "-o", "ip", str(log), str(FILTER), stdout=asyncio.subprocess.PIPE
        )
        matched, _ = await process.communicate()
        assert process.returncode == 0
        assert matched.decode().split() == ["198.51.100.23", "2001:db8::7", "192.0.2.5"], log.read_text()


# -- reported bans ------------------------------------------------------------------------------------------


async def test_a_reported_ban_is_recorded_audited_and_refused_with_403_until_unbanned(
    make_gateway, aiohttp_client, clock
):
    channel = FakeChannel()
    gateway = make_gateway(
        clock=clock, plugins=[ChannelPlugin(channel)], overrides={"gateway": {"refuse_banned_ips": True}}
    )
    client = await aiohttp_client(create_app(gateway))
    assert (await client.get("/healthz")).status == 200
    ban = await gateway.events.bans.report("127.0.0.1", "resayil-auth", "5 failures")
    response = await client.get("/v1/models", headers=BAD_KEY)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "ip_banned"
    assert [b.ip for b in await gateway.events.bans.list()] == ["127.0.0.1"]
    async with gateway.store.connect() as conn:
        actions = [row.action for row in await conn.execute(select(audit.c.action))]
    assert "ip.banned" in actions
    (alert,) = await gateway.events.outbox.list()
    assert (alert.event, alert.dedupe_key) == ("ip.banned", f"ban:{ban.id}>+96599990000")
    assert await gateway.events.bans.unban("127.0.0.1") == 1
    assert (await client.get("/healthz")).status == 200
    assert await gateway.events.bans.list() == []


async def test_banned_addresses_are_served_when_refusing_is_disabled(make_gateway, aiohttp_client):
    gateway = make_gateway()
    client = await aiohttp_client(create_app(gateway))
    await gateway.events.bans.report("127.0.0.1", "j", "r")
    assert (await client.get("/healthz")).status == 200


async def test_a_ban_reported_on_one_worker_is_refused_by_another_at_once(make_gateway, stack):
    if stack != "postgres":
        pytest.skip("one worker only with in-process state")
    first, second = make_gateway(), make_gateway()
    await first.state.start()
    await second.state.start()
    try:
        assert not await second.events.bans.is_banned("203.0.113.7")  # now cached
        await first.events.bans.report("203.0.113.7", "j", "r")
        for _ in range(100):  # the broadcast arrives within milliseconds
            if second.events.bans._loaded_at is None:
                break
            await asyncio.sleep(0.01)
        assert await second.events.bans.is_banned("203.0.113.7")
    finally:
        await first.state.close()
        await second.state.close()


# -- the commands -------------------------------------------------------------------------------------------


@pytest.fixture
def resayil(stack_info):
    cli = build_cli(make_plugin_manager(env={}))
    env = {
        "RESAYIL_CONFIG": None,
        "RESAYIL_LOAD_PLUGINS": None,
        "RESAYIL_DISABLE_PLUGINS": None,
        "RESAYIL_DATABASE_URL": stack_info.database_url,
        "RESAYIL_REDIS_URL": stack_info.redis_url,
        "RESAYIL_SECRET_KEY": TEST_SECRET,
    }
    return lambda *args: CliRunner().invoke(cli, list(args), env=env)


def test_bans_report_list_and_unban_from_the_command_line(resayil):
    result = resayil("bans", "report", "203.0.113.9", "--jail", "resayil-auth", "--reason", "5 failures")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("recorded ban 1 of 203.0.113.9 (resayil-auth)")
    listed = json.loads(resayil("bans", "list", "--json").stdout)
    assert [(b["ip"], b["jail"], b["reason"]) for b in listed] == [("203.0.113.9", "resayil-auth", "5 failures")]
    assert resayil("bans", "unban", "203.0.113.9").stdout == "lifted 1 ban(s) of 203.0.113.9\n"
    assert json.loads(resayil("bans", "list", "--json").stdout) == []
    assert len(json.loads(resayil("bans", "list", "--all", "--json").stdout)) == 1
    refused = resayil("bans", "report", "not-an-ip")
    assert refused.exit_code == 2
    assert refused.stderr == "error: 'not-an-ip' is not an IP address\n"


def test_notify_list_retry_and_test_from_the_command_line(resayil):
    resayil("bans", "report", "203.0.113.9")  # no admin yet: nothing to send
    rows = json.loads(resayil("notify", "list", "--json").stdout)
    assert rows == []
    assert resayil("notify", "retry").stdout == "0 failed message(s) queued again\n"
    refused = resayil("notify", "test", "50001234")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: no notification channel is configured")
    assert resayil("notify", "list", "--status", "nope").exit_code == 2
