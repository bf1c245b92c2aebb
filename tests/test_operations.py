"""Operations: health and readiness, Prometheus metrics, the OpenAPI document, request ids, JSON logs."""

from __future__ import annotations

import json
import logging

import pytest

from resayil_gateway.app import create_app
from resayil_gateway.logs import JsonFormatter
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, seed_account

CATALOG = {"models": {"catalog": {"fake-small": {"backend": "local", "size": "small"}}}}


@pytest.fixture
async def ops(make_gateway, aiohttp_client):
    backend = FakeBackend()
    gateway = make_gateway(plugins=[FakeBackendPlugin(backend)], overrides=CATALOG)
    client = await aiohttp_client(create_app(gateway))
    client.gateway, client.backend = gateway, backend
    return client


async def test_healthz_answers_while_the_process_is_alive(ops):
    response = await ops.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_checks_database_state_and_backends(ops, stack):
    body = await (await ops.get("/readyz")).json()
    assert body == {"status": "ok", "checks": {"database": "ok", "state": "ok", "backend:fake": "ok"}}


async def test_readyz_is_503_naming_what_is_not_ready(ops):
    async def not_ready():
        return False

    ops.backend.ready = not_ready
    response = await ops.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["backend:fake"] == "error: not ready"


async def test_metrics_count_requests_tokens_and_credits_in_prometheus_format(ops):
    account = await seed_account(ops.gateway, credits=10)
    body = {"model": "fake-small", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        await ops.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {account.key}"})
    ).status == 200
    await ops.gateway.drain()
    text = await (await ops.get("/metrics")).text()
    assert 'resayil_requests_total{model="fake-small",route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'resayil_tokens_total{kind="completion",model="fake-small"} 5.0' in text
    assert 'resayil_credits_charged_total{model="fake-small"} 1.0' in text
    assert "resayil_request_duration_seconds_bucket" in text
    assert 'resayil_backend_in_flight{backend="fake"} 0.0' in text
    assert 'resayil_backend_queue_depth{backend="fake"} 0.0' in text


async def test_openapi_document_describes_every_api_route(ops):
    document = await (await ops.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    for prefix in ("/v1", "/api/v1"):
        assert set(document["paths"]) >= {
            f"{prefix}/chat/completions",
            f"{prefix}/embeddings",
            f"{prefix}/models",
            f"{prefix}/models/{{model}}",
        }


async def test_json_logs_are_one_object_per_line_with_extra_fields():
    record = logging.LogRecord("resayil.access", logging.INFO, __file__, 1, "GET %s", ("/v1/models",), None)
    record.request_id = "req_1"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["msg"], line["request_id"]) == (
        "info",
        "resayil.access",
        "GET /v1/models",
        "req_1",
    )


async def test_auth_failures_are_logged_in_one_fixed_line_for_fail2ban(ops, caplog):
    caplog.set_level(logging.WARNING, logger="resayil.auth")
    await ops.get("/v1/models", headers={"Authorization": "Bearer rsk-" + "Z" * 43})
    assert "AUTH_FAILURE ip=127.0.0.1 kind=api_key reason=invalid_api_key path=/v1/models" in caplog.text
    assert "rsk-ZZZZ" not in caplog.text.replace("AUTH_FAILURE", "")  # the key itself is never logged
