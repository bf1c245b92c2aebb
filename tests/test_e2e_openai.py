"""End to end with the official ``openai`` SDK: the gateway and the Ollama simulator on real sockets."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from e2e_support import LiveDeployment

from resayil_gateway.testing import seed_account

LARGE = {"models": {"catalog": {"llama3.3:70b": {"backend": "local", "size": "large"}}}}


@pytest.fixture
def live(stack_info):
    deployment = LiveDeployment(stack_info.database_url, stack_info.redis_url, overrides=LARGE).start()
    deployment.account = deployment.run(seed_account(deployment.gateway, credits=1000))
    yield deployment
    deployment.stop()


def client(live, prefix="/v1", **kwargs):
    return openai.OpenAI(base_url=live.base_url + prefix, api_key=live.account.key, **kwargs)


def balance(live):
    async def read():
        await live.gateway.drain()
        return (await live.gateway.ledger.balance(live.account.id)).total

    return live.run(read())


def test_sync_client_gets_a_chat_completion_and_is_charged(live):
    completion = client(live).chat.completions.create(
        model="llama3.2:3b", messages=[{"role": "user", "content": "مرحبا"}], max_tokens=8
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 8
    assert balance(live) == 999


def test_api_v1_base_url_works_the_same(live):
    completion = client(live, "/api/v1").chat.completions.create(
        model="llama3.2:3b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert completion.choices[0].message.content
    assert [model.id for model in client(live, "/api/v1").models.list()] == [
        "llama3.2:3b",
        "qwen2.5-coder:14b",
        "smollm2:135m",
    ]


def test_models_list_hides_restricted_models_the_simulator_has(live):
    listed = [model.id for model in client(live).models.list()]
    assert listed == ["llama3.2:3b", "qwen2.5-coder:14b", "smollm2:135m"]
    with pytest.raises(openai.NotFoundError):
        client(live).models.retrieve("bge-m3:latest")


async def test_async_client_streams_chunk_by_chunk_without_usage(live):
    aclient = openai.AsyncOpenAI(base_url=live.base_url + "/v1", api_key=live.account.key)
    stream = await aclient.chat.completions.create(
        model="llama3.2:3b", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content) == 6
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(chunk.usage is None for chunk in chunks)
    await aclient.close()
    assert balance(live) == 999


def test_stream_with_include_usage_ends_with_a_usage_chunk(live):
    stream = client(live).chat.completions.create(
        model="llama3.2:3b",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 5


def test_embeddings_through_the_sdk(live):
    result = client(live).embeddings.create(model="llama3.2:3b", input=["hello", "world"])
    assert [item.index for item in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 0
    assert balance(live) == 999


@pytest.mark.parametrize(
    ("call", "exception", "status"),
    [
        (
            lambda c: c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}]),
            openai.NotFoundError,
            404,
        ),
        (
            lambda c: c.chat.completions.create(model="bge-m3", messages=[{"role": "user", "content": "x"}]),
            openai.NotFoundError,
            404,
        ),
        (
            lambda c: c.chat.completions.create(model="llama3.2:3b", messages=[], max_tokens=3),
            openai.BadRequestError,
            400,
        ),
        (
            lambda c: c.chat.completions.create(
                model="llama3.2:3b", messages=[{"role": "user", "content": "x"}], temperature=7
            ),
            openai.BadRequestError,
            400,
        ),
        (
            lambda c: c.chat.completions.create(model="llama3.3:70b", messages=[{"role": "user", "content": "x"}]),
            openai.PermissionDeniedError,
            403,
        ),
        (
            lambda c: c.chat.completions.create(
                model="llama3.2:3b", messages=[{"role": "user", "content": "__sim_http_500__"}]
            ),
            openai.InternalServerError,
            502,
        ),
    ],
)
def test_each_error_maps_to_the_sdk_exception_class(live, call, exception, status):
    with pytest.raises(exception) as raised:
        call(client(live, max_retries=0))
    assert raised.value.status_code == status
    assert balance(live) == 1000


def test_bad_keys_raise_authentication_error(live):
    for key in ("rsk-" + "x" * 43, "not-a-key"):
        bad = openai.OpenAI(base_url=live.base_url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_402_is_not_retried_by_the_sdk(live):
    sdk = client(live)  # default max_retries=2
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.chat.completions.create(
            model="llama3.2:3b", messages=[{"role": "user", "content": "x"}], max_tokens=5_000_000
        )
    assert raised.value.status_code == 402
    assert raised.value.body["code"] == "insufficient_credits"
    assert raised.value.body["top_up_url"].startswith("http")
    counted = live.gateway.metrics.requests.labels("/v1/chat/completions", "402", "llama3.2:3b")._value.get()
    assert counted == 1


def test_300_concurrent_requests_with_100_credits_give_100_answers_and_200_402s(live, stack_info):
    async def scenario():
        account = await seed_account(live.gateway, credits=100, email="race@example.com", phone="+96550000123")
        return account

    account = live.run(scenario())

    async def burst():
        aclient = openai.AsyncOpenAI(base_url=live.base_url + "/v1", api_key=account.key, max_retries=0)

        async def one():
            try:
                await aclient.chat.completions.create(
                    model="llama3.2:3b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code

        results = await asyncio.gather(*(one() for _ in range(300)))
        await aclient.close()
        return results

    results = asyncio.run(burst())
    assert results.count(200) == 100
    assert results.count(402) == 200

    async def check():
        await live.gateway.drain()
        return (await live.gateway.ledger.balance(account.id)).total, await live.gateway.ledger.check()

    total, problems = live.run(check())
    assert total == 0
    assert problems == []


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


def test_tool_calls_come_back_in_openai_shape_whole_and_streamed(live):
    messages = [{"role": "user", "content": "__sim_tool_call__ weather in Kuwait City"}]
    completion = client(live).chat.completions.create(model="llama3.2:3b", messages=messages, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["query"].startswith("__sim_tool_call__")
    chunks = list(
        client(live).chat.completions.create(model="llama3.2:3b", messages=messages, tools=TOOLS, stream=True)
    )
    streamed = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert streamed and streamed[0][0].function.name == "get_weather"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the tool's answer goes back as a tool message, which the gateway passes on
    followup = client(live).chat.completions.create(
        model="llama3.2:3b",
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "31°C, sunny"},
        ],
        max_tokens=5,
    )
    assert followup.choices[0].message.content


def test_client_leaving_mid_stream_frees_the_ollama_slot_and_pays_for_what_was_produced(stack_info):
    slow = LiveDeployment(stack_info.database_url, stack_info.redis_url, tokens_per_second=20, reply_tokens=200)
    slow.start()
    try:
        account = slow.run(seed_account(slow.gateway, credits=1000))
        stream = openai.OpenAI(base_url=slow.base_url + "/v1", api_key=account.key).chat.completions.create(
            model="llama3.2:3b", messages=[{"role": "user", "content": "tell me a long story"}], stream=True
        )
        received = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received += 1
            if received == 3:
                break
        stream.close()

        async def settled():
            async with asyncio.timeout(10):
                while slow.simulator_stats.snapshot()["cancelled"] < 1:
                    await asyncio.sleep(0.02)
            await slow.gateway.drain()
            return (
                slow.simulator_stats.snapshot(),
                await slow.gateway.ledger.balance(account.id),
                slow.gateway.admission.running("ollama"),
            )

        stats, balance, running = slow.run(settled())
        assert stats["cancelled"] == 1 and stats["in_flight"] == 0
        assert running == 0
        assert (balance.total, balance.held) == (999, 0)  # a few tokens produced: one credit
    finally:
        slow.stop()
