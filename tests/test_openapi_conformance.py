"""The OpenAPI document matches what the server accepts: schemathesis generates requests from
``/openapi.json`` and checks that no answer is a 5xx and every answer conforms to the document."""

from __future__ import annotations

import asyncio

import jsonschema_rs
import pytest
import schemathesis
from e2e_support import LiveDeployment
from hypothesis import HealthCheck, settings

from resayil_gateway.api.openapi import build_openapi
from resayil_gateway.testing import FakeBackend, create_sqlite_template, seed_account

schema = schemathesis.openapi.from_dict(build_openapi())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    path = tmp_path_factory.mktemp("openapi") / "resayil.db"
    asyncio.run(create_sqlite_template(path))
    deployment = LiveDeployment(f"sqlite+aiosqlite:///{path}", "").start()
    deployment.account = deployment.run(seed_account(deployment.gateway, credits=10_000_000))
    yield deployment
    deployment.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document_and_never_answers_5xx(case, live):
    case.call_and_validate(base_url=live.base_url, headers={"Authorization": f"Bearer {live.account.key}"})


# -- the headers the document promises, on the answers schemathesis does not provoke (429, 503, 402) ----------

DOCUMENT = build_openapi()
RATE_LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


def header_problems(path: str, method: str, response) -> list[str]:
    """What in ``response``'s headers the document's entry for its status does not allow: a required header
    missing, or a value its schema refuses."""
    declared = DOCUMENT["paths"][path][method]["responses"][str(response.status)].get("headers", {})
    problems = []
    for name, header in declared.items():
        value = response.headers.get(name)
        if value is None:
            if header["required"]:
                problems.append(f"{response.status}: {name} missing")
            continue
        schema = header["schema"]
        coerced = int(value) if schema.get("type") == "integer" and value.isdigit() else value
        problems += [
            f"{response.status}: {name}={value!r}: {e.message}"
            for e in jsonschema_rs.validator_for(schema).iter_errors(coerced)
        ]
    return problems


def test_every_counted_answer_documents_the_rate_limit_headers_and_every_refusal_when_to_retry():
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                headers = response.get("headers", {})
                assert headers["x-request-id"]["required"], (path, status)
                counted = status not in ("401", "503") and (status, method) != ("404", "get")
                for name in RATE_LIMIT_HEADERS:
                    assert (name in headers and headers[name]["required"]) == counted, (path, method, status, name)
                if status in ("429", "503"):
                    assert headers["Retry-After"]["required"], (path, status)
            assert "429" in operation["responses"] and "503" in operation["responses"], (path, method)
    chat = DOCUMENT["paths"]["/v1/chat/completions"]["post"]
    assert chat["responses"]["429"]["headers"]["retry-after-ms"]["required"]
    assert chat["responses"]["200"]["headers"]["x-resayil-backend"]["schema"] == {"enum": ["local", "cloud"]}
    assert [p["name"] for p in chat["parameters"]] == ["x-resayil-failover"]


async def test_rate_limited_busy_and_unpaid_answers_carry_the_headers_the_document_promises(gateway_client):
    backend = FakeBackend(max_concurrency=1, gate=asyncio.Event())
    overrides = {
        "models": {"catalog": {"fake-small": {"backend": "local", "size": "small"}}},
        "plans": {"basic": {"requests_per_minute": 3}},
        "routing": {"max_queue_wait_s": 0.05},
    }
    client = await gateway_client(backends=[backend], overrides=overrides)
    chat = {"model": "fake-small", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    chat_path, model_path = "/v1/chat/completions", "/v1/models/{model}"
    held = asyncio.ensure_future(client.post(chat_path, json=chat, headers=client.auth))
    while backend.started == 0:  # the first request holds the only slot, on the gate
        await asyncio.sleep(0.01)
    answers = [
        (chat_path, await client.post(chat_path, json=chat, headers=client.auth)),  # waits 0.05 s: 503
        (chat_path, await client.post(chat_path, json={**chat, "max_tokens": 900_000}, headers=client.auth)),  # 402
        (chat_path, await client.post(chat_path, json=chat, headers=client.auth)),  # the fourth in a minute: 429
        (model_path, await client.get("/v1/models/fake-small", headers=client.auth)),  # 429
        (model_path, await client.get("/v1/models/fake-small", headers={"Authorization": "Bearer rsk-" + "A" * 43})),
    ]
    backend.gate.set()
    answers.append((chat_path, await held))
    assert [response.status for _, response in answers] == [503, 402, 429, 429, 401, 200]
    for path, response in answers:
        await response.read()
        assert header_problems(path, "post" if path == chat_path else "get", response) == []
    assert answers[-1][1].headers["x-resayil-backend"] == "local"
