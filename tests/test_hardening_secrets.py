"""No API key, password or token ever reaches a log (at any level) or an error message: malformed requests
carrying a real bearer key, configured secrets, and bad database or Redis URLs."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from aiohttp import web
from pydantic import SecretStr

from resayil_gateway.app import create_app
from resayil_gateway.client_timeouts import ReadTimeouts, TimedAppRunner
from resayil_gateway.config import ConfigError, Section, load_settings
from resayil_gateway.logs import JsonFormatter, SecretsFilter, configure_logging
from resayil_gateway.testing import build_gateway, create_sqlite_template, seed_account

PASSWORD = "hunter2-db-pass"


def masked(key: str) -> str:
    """How a key appears once masked: its 12-character display prefix, then ``***``."""
    return key[:12] + "***"


@pytest.fixture
def debug_logs():
    """Logging exactly as ``resayil serve --log-level DEBUG`` configures it, into a buffer it yields."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("text", "DEBUG", stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


@pytest.fixture
async def served(tmp_path, debug_logs):
    """The gateway served as ``resayil serve`` serves it, and a real key of a real account."""
    database = await create_sqlite_template(tmp_path / "resayil.db")
    gateway = build_gateway(f"sqlite+aiosqlite:///{database}")
    runner = TimedAppRunner(
        create_app(gateway),
        timeouts=ReadTimeouts(5, 5),
        handler_cancellation=True,
        access_log=logging.getLogger("resayil.access"),
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    account = await seed_account(gateway, credits=10)
    yield runner.addresses[0][1], account.key
    await runner.cleanup()
    await gateway.store.dispose()


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


def malformed_requests(key: str) -> dict[str, bytes]:
    bearer = b"Authorization: Bearer " + key.encode()
    return {
        "control character in a header": b"GET /v1/models HTTP/1.1\r\nHost: g\r\n" + bearer + b"\x01\r\n\r\n",
        "header without a colon": b"GET /v1/models HTTP/1.1\r\nHost: g\r\nAuthorization Bearer "
        + key.encode()
        + b"\r\n\r\n",
        "malformed request line": b"GET /v1/models?" + key.encode() + b" HTTP/1.1 junk\r\nHost: g\r\n\r\n",
        "header over the size limit": b"GET /v1/models HTTP/1.1\r\nHost: g\r\n" + bearer + b"A" * 9000 + b"\r\n\r\n",
        "bad method": b"G\x01T /v1/models HTTP/1.1\r\n" + bearer + b"\r\n\r\n",
        "bytes that are not UTF-8 after the key": b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n"
        + bearer
        + b"\xff\r\n\r\n",
        "token header with a bad byte": b"GET / HTTP/1.1\r\nHost: g\r\nX-Token: Token: "
        + key.encode()
        + b"\x7f\r\n\r\n",
        "key in the path": b"GET /v1/models/" + key.encode() + b" HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
        "invalid Content-Length": b"POST /v1/embeddings HTTP/1.1\r\n" + bearer + b"\r\nContent-Length: x\r\n\r\n",
    }


async def test_malformed_requests_carrying_a_real_key_never_put_it_in_a_log_or_an_answer(served, debug_logs):
    port, key = served
    answers = {name: await exchange(port, raw) for name, raw in malformed_requests(key).items()}
    await asyncio.sleep(0)  # let the access log of the last exchange be written
    logs = debug_logs.getvalue()

    assert key not in logs
    assert key[12:] not in logs
    for name, answer in answers.items():
        assert answer.startswith((b"HTTP/1.0 4", b"HTTP/1.1 4")), (name, answer[:80])
        assert key.encode() not in answer and key[12:].encode() not in answer, name
    assert "Error handling request" in logs  # aiohttp did log the malformed requests, masked
    assert masked(key) in logs


def capture(record_filter: logging.Filter, formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(record_filter)
    logger = logging.getLogger(f"test.secrets.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


@pytest.mark.parametrize("formatter", [logging.Formatter("%(message)s"), JsonFormatter()], ids=["text", "json"])
def test_the_filter_masks_secrets_in_arguments_tracebacks_and_extra_fields(formatter):
    key = "rsk-" + "k" * 43
    logger, stream = capture(SecretsFilter(), formatter)
    logger.debug("header %r", f"Authorization: Bearer {key}", extra={"upstream": f"redis://:{PASSWORD}@cache:6379/0"})
    try:
        raise RuntimeError(f"connect failed: postgresql://app:{PASSWORD}@db/resayil password={PASSWORD}")
    except RuntimeError:
        logger.exception("store down (token: %s)", "abc123token")
    logger.info("plain text, the basic plan and 12 prompt_tokens stay readable")

    text = stream.getvalue()
    for secret in (key, key[12:], PASSWORD, "abc123token"):
        assert secret not in text
    assert "app:***@db" in text and "RuntimeError" in text
    assert "the basic plan and 12 prompt_tokens stay readable" in text


def test_the_fail2ban_line_passes_through_unchanged():
    logger, stream = capture(SecretsFilter(), logging.Formatter("%(message)s"))
    line = "AUTH_FAILURE ip=203.0.113.9 kind=api_key reason=invalid_api_key path=/v1/models"
    logger.warning(line)
    assert stream.getvalue().strip() == line


class MessagingSettings(Section):
    """A plugin section with a secret, as the WhatsApp and MyFatoorah plugins have."""

    api_token: SecretStr = SecretStr("")


def test_configured_secret_values_are_masked_wherever_they_appear():
    load_settings(
        overrides={"gateway": {"secret_key": "server-secret-value-42"}, "messaging": {"api_token": "wa-token-777"}},
        plugin_sections={"messaging": MessagingSettings},
    )
    logger, stream = capture(SecretsFilter(), logging.Formatter("%(message)s"))
    logger.debug("calling with wa-token-777 and server-secret-value-42")
    assert stream.getvalue().strip() == "calling with *** and ***"


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("database_url", f"mysql://app:{PASSWORD}@db/resayil"),
        ("database_url", f"postgresql://app:{PASSWORD}@db:notaport/resayil"),
        ("database_url", f"postgresql+asyncpg://app:{PASSWORD}@[::1/resayil"),
        ("database_url", f"sqlite+aiosqlite://app:{PASSWORD}@/resayil.db"),
        ("redis_url", f"http://:{PASSWORD}@cache:6379/0"),
        ("redis_url", f"redis://:{PASSWORD}@cache:notaport/0"),
        ("redis_url", f"redis://:{PASSWORD}@[::1:6379/0"),
        ("redis_url", f"redis://:{PASSWORD}@cache:6379/zero"),
    ],
)
def test_a_bad_database_or_redis_url_is_a_one_line_config_error_without_its_password(key, url):
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"gateway": {key: url}})
    message = str(caught.value)
    assert message.startswith(f"gateway.{key}: ") and "\n" not in message
    assert PASSWORD not in message


def test_settings_never_show_urls_or_secrets_in_their_repr():
    settings = load_settings(
        overrides={"gateway": {"database_url": f"postgresql://app:{PASSWORD}@db/x", "secret_key": "repr-secret-1"}}
    )
    shown = repr(settings) + str(settings.gateway)
    assert PASSWORD not in shown and "repr-secret-1" not in shown


def test_a_config_error_about_a_secret_names_the_key_and_the_problem_but_not_the_value():
    with pytest.raises(ConfigError) as caught:
        load_settings(
            overrides={"messaging": {"api_token": 12345678}}, plugin_sections={"messaging": MessagingSettings}
        )
    message = str(caught.value)
    assert message.startswith("messaging.api_token: ") and "string" in message
    assert "12345678" not in message
