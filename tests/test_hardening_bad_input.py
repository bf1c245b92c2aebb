"""Bad input is the client's 4xx, never a 500 or an error blamed on the model server: integers beyond what
the store or the backend can hold, and ``Authorization`` bytes that are not UTF-8."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from resayil_ollama.translate import chat_body

from resayil_gateway.api.parsing import parse_chat_request
from resayil_gateway.app import create_app
from resayil_gateway.errors import InvalidRequest
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin, seed_account

INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
TOO_BIG = [INT32_MAX + 1, 2**53 + 1, INT64_MAX + 1, 2**64 - 1, 1e30]
CATALOG = {
    "models": {
        "catalog": {
            "fake-small": {"backend": "local", "size": "small"},
            "fake-embed": {"backend": "local", "size": "small", "capabilities": ["embeddings"]},
        }
    },
    "plans": {"basic": {"requests_per_minute": 1_000_000}},  # many bad requests here; rate limits have their tests
}


@pytest.fixture
async def api(make_gateway, aiohttp_client):
    backend = FakeBackend(model_names=("fake-small", "fake-embed"))
    gateway = make_gateway(plugins=[FakeBackendPlugin(backend)], overrides=CATALOG)
    client = await aiohttp_client(create_app(gateway))
    account = await seed_account(gateway, credits=100)
    client.gateway, client.account = gateway, account
    client.auth = {"Authorization": f"Bearer {account.key}"}
    return client


def chat(**fields):
    return {"model": "fake-small", "messages": [{"role": "user", "content": "Hi"}], **fields}


async def assert_400_naming(api, path, body, param):
    response = await api.post(path, json=body, headers=api.auth)
    text = await response.text()
    assert response.status == 400, (param, body.get(param), response.status, text)
    assert orjson.loads(text)["error"]["param"] == param, text


OUT_OF_RANGE = {
    "max_tokens": [0, -1, *TOO_BIG],
    "max_completion_tokens": [0, -1, *TOO_BIG],
    "seed": [INT64_MAX + 1, 2**64 - 1, 1e30, -1e30],
    "top_logprobs": [-1, 21, INT64_MAX + 1],
    "n": [0, 2, INT64_MAX + 1, True],
    "logit_bias": [{"50256": 101}, {"50256": -1e30}, {"9999999999": 1}, {"token": 1}, [1]],
    "temperature": [1e308, -1e308],
    "presence_penalty": [1e308],
}


async def test_chat_numbers_out_of_range_get_400_naming_the_parameter_and_cost_nothing(api):
    for param, values in OUT_OF_RANGE.items():
        for value in values:
            await assert_400_naming(api, "/v1/chat/completions", chat(**{param: value}), param)
    await api.gateway.drain()
    assert (await api.gateway.ledger.balance(api.account.id)).total == 100


async def test_embedding_dimensions_out_of_range_get_400_naming_the_parameter(api):
    for value in [0, -1, *TOO_BIG]:
        await assert_400_naming(
            api, "/v1/embeddings", {"model": "fake-embed", "input": "x", "dimensions": value}, "dimensions"
        )


async def test_the_largest_values_the_backends_hold_are_accepted(api):
    for fields in ({"seed": INT64_MAX}, {"seed": -(2**63)}, {"max_tokens": 8, "top_logprobs": 20, "logprobs": True}):
        response = await api.post("/v1/chat/completions", json=chat(**fields), headers=api.auth)
        assert response.status == 200, (fields, await response.text())
    response = await api.post("/v1/chat/completions", json=chat(max_tokens=INT32_MAX), headers=api.auth)
    assert response.status == 402  # a hold that large is more than the balance: the client's problem, said so


@pytest.mark.parametrize("param", ["seed", "max_tokens"])
def test_every_value_the_parser_accepts_can_be_sent_to_ollama(param):
    for value in [*OUT_OF_RANGE[param], INT32_MAX, INT64_MAX, -(2**63)]:
        try:
            request = parse_chat_request(chat(**{param: value}))
        except InvalidRequest:
            continue
        options = orjson.loads(orjson.dumps(chat_body(request, "llama3.2:3b", stream=False)))["options"]
        assert options.get("num_predict", 1) <= INT32_MAX  # llama.cpp's n_predict is 32-bit


async def test_authorization_bytes_that_are_not_utf8_get_401_not_500(api):
    reader, writer = await asyncio.open_connection("127.0.0.1", api.server.port)
    writer.write(
        b"GET /v1/models HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        b"Authorization: Bearer rsk-\xff\xfe\xc3\x28" + b"A" * 40 + b"\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer
    assert orjson.loads(body)["error"]["code"] == "malformed_authorization"
