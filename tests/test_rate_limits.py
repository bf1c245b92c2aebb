"""Rate limits per account and plan: a sliding minute, exact, in-process and in Redis alike; what happens when
Redis is unreachable; the Go-style reset durations OpenAI's headers use."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from resayil_gateway.config import ConfigError, load_settings
from resayil_gateway.errors import ServiceUnavailable
from resayil_gateway.limits import LocalRateLimiter, RedisRateLimiter, go_duration
from resayil_gateway.testing import REDIS_URL, FakeClock

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused at once


def redis_limiter(clock, prefix=None, url=REDIS_URL, on_redis_error="open", **options):
    client = Redis.from_url(url, decode_responses=True)
    prefix = prefix or "t" + uuid.uuid4().hex[:12]
    return RedisRateLimiter(client, lambda subject: f"{prefix}:ratelimit:{subject}", clock, on_redis_error, **options)


@pytest.fixture(params=["in-process", "redis"])
async def limiter(request, clock):
    if request.param == "in-process":
        yield LocalRateLimiter(clock)
        return
    made = redis_limiter(clock)
    try:
        await made.redis.ping()
    except Exception as exc:  # pragma: no cover - the suite runs with Redis up
        pytest.skip(f"Redis is not reachable: {exc}")
    await made.start()
    yield made
    await made.redis.aclose()


async def test_a_whole_minute_of_requests_may_come_at_once_then_the_next_waits_for_the_oldest(limiter, clock):
    for sent in range(10):
        decision = await limiter.acquire("7", 10)
        assert decision.allowed
        assert decision.remaining == 9 - sent
        clock.advance(1)
    refused = await limiter.acquire("7", 10)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(50)  # the first one, sent at 0 s, leaves at 60 s
    assert refused.reset_s == pytest.approx(59)  # the last one, sent at 9 s, leaves at 69 s
    clock.advance(50)
    assert (await limiter.acquire("7", 10)).allowed
    assert not (await limiter.acquire("7", 10)).allowed


async def test_no_double_burst_at_a_minute_boundary(limiter, clock):
    clock.advance(59)
    assert all([(await limiter.acquire("1", 10)).allowed for _ in range(10)])
    clock.advance(2)  # a fixed window would have reset at the minute here
    assert not (await limiter.acquire("1", 10)).allowed
    clock.advance(58.001)
    assert (await limiter.acquire("1", 10)).allowed


async def test_accounts_have_separate_windows_and_refusals_are_not_counted(limiter, clock):
    for _ in range(3):
        assert (await limiter.acquire("a", 3)).allowed
    for _ in range(20):
        assert not (await limiter.acquire("a", 3)).allowed
    assert (await limiter.acquire("b", 3)).allowed
    clock.advance(60)
    assert [(await limiter.acquire("a", 3)).allowed for _ in range(4)] == [True, True, True, False]


async def test_a_lowered_limit_waits_until_enough_admissions_leave_the_window(limiter, clock):
    for _ in range(6):
        assert await limiter.acquire("9", 30)
        clock.advance(1)
    refused = await limiter.acquire("9", 3)  # six in the window, three allowed: the fourth oldest must leave
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(60 + 3 - 6)


def test_in_process_windows_of_idle_accounts_are_forgotten(clock):
    limiter = LocalRateLimiter(clock)
    for account in range(100):
        limiter.acquire_now(str(account), 10)
    clock.advance(61)
    limiter.acquire_now("active", 10)
    assert list(limiter._windows) == ["active"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.012, "12ms"),
        (0.0004, "1ms"),
        (1, "1s"),
        (6.5, "6.5s"),
        (59.9984, "59.999s"),
        (59.9994, "1m0s"),
        (60, "1m0s"),
        (61.25, "1m1.25s"),
    ],
)
def test_reset_durations_are_written_go_style_like_openai(seconds, text):
    assert go_duration(seconds) == text


def test_retry_headers_round_up_to_whole_seconds_and_milliseconds(clock):
    limiter = LocalRateLimiter(clock)
    limiter.acquire_now("x", 1)
    clock.advance(58.5)
    refused = limiter.acquire_now("x", 1)
    assert refused.retry_headers() == {"Retry-After": "2", "retry-after-ms": "1500"}
    assert refused.headers() == {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1.5s",
    }


# -- the property: no window of 60 s ever admits more than the limit, and nothing is refused needlessly ------

arrivals = st.lists(st.integers(0, 15_000), min_size=1, max_size=120)  # gaps between requests, in ms
limits = st.integers(1, 12)


def check_sliding_minute(limit: int, times_ms: list[int], admitted: list[bool]) -> None:
    """Every 60 s window holds at most ``limit`` admissions, and a request was refused only when the minute
    before it (``(t - 60 s, t]``) already held ``limit`` admissions."""
    taken = [t for t, ok in zip(times_ms, admitted, strict=True) if ok]
    for index, start in enumerate(taken):
        assert sum(1 for t in taken[index:] if t < start + 60_000) <= limit
    for t, ok in zip(times_ms, admitted, strict=True):
        before = sum(1 for u in taken if t - 60_000 < u <= t and (u < t or not ok))
        if not ok:
            assert before >= limit


def times_of(gaps: list[int]) -> list[int]:
    times, now = [], 0
    for gap in gaps:
        now += gap
        times.append(now)
    return times


@settings(max_examples=300, deadline=None)
@given(limit=limits, gaps=arrivals)
def test_property_in_process_never_admits_more_than_the_limit_in_any_minute(limit, gaps):
    clock = FakeClock()
    limiter = LocalRateLimiter(clock)
    admitted = []
    for gap in gaps:
        clock.advance(gap / 1000)
        admitted.append(limiter.acquire_now("p", limit).allowed)
    check_sliding_minute(limit, times_of(gaps), admitted)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=limits, gaps=arrivals)
def test_property_redis_never_admits_more_than_the_limit_in_any_minute(limit, gaps):
    async def run():
        clock = FakeClock()
        limiter = redis_limiter(clock)
        admitted = []
        try:
            for gap in gaps:
                clock.advance(gap / 1000)
                admitted.append((await limiter.acquire("p", limit)).allowed)
        finally:
            await limiter.redis.aclose()
        return admitted

    check_sliding_minute(limit, times_of(gaps), asyncio.run(run()))


# -- Redis unreachable: the configured choice, logged once, never a 500 -------------------------------------


async def test_redis_unreachable_and_open_limits_each_worker_on_its_own_and_logs_once(clock, caplog):
    limiter = redis_limiter(clock, url=UNREACHABLE_REDIS, on_redis_error="open")
    caplog.set_level(logging.WARNING, "resayil.limits")
    await limiter.start()
    decisions = [await limiter.acquire("5", 3) for _ in range(5)]
    assert [decision.allowed for decision in decisions] == [True, True, True, False, False]
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1
    assert "Redis is unreachable" in lines[0] and "on_redis_error = open" in lines[0]
    await limiter.redis.aclose()


async def test_redis_unreachable_and_closed_refuses_with_503_and_logs_once(clock, caplog):
    limiter = redis_limiter(clock, url=UNREACHABLE_REDIS, on_redis_error="closed")
    caplog.set_level(logging.WARNING, "resayil.limits")
    for _ in range(3):
        with pytest.raises(ServiceUnavailable) as refused:
            await limiter.acquire("5", 3)
        assert refused.value.status == 503
        assert refused.value.headers["Retry-After"] == "2"
    assert len(caplog.records) == 1
    assert "on_redis_error = closed" in caplog.records[0].getMessage()
    await limiter.redis.aclose()


async def test_redis_coming_back_is_logged_once_and_windows_are_shared_again(clock, caplog):
    limiter = redis_limiter(clock)
    reachable = limiter.redis
    limiter.redis = Redis.from_url(UNREACHABLE_REDIS, decode_responses=True)
    limiter._script.registered_client = limiter.redis
    caplog.set_level(logging.WARNING, "resayil.limits")
    assert (await limiter.acquire("5", 3)).allowed
    assert (await limiter.acquire("5", 3)).allowed
    await limiter.redis.aclose()
    limiter.redis = reachable
    limiter._script.registered_client = reachable
    assert (await limiter.acquire("5", 3)).remaining == 2  # the shared window, not the fallback's
    assert (await limiter.acquire("5", 3)).allowed
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "rate limiter: Redis is unreachable (ConnectionError)",
        "rate limiter: Redis is reachable again",
    ]
    await reachable.aclose()


# -- Redis hung: it takes the connection and never answers ------------------------------------------------


@pytest.fixture
async def hung_redis():
    """A server that accepts connections and reads what it is sent, but never answers; its URL."""
    connections = []

    async def swallow(reader, writer):
        connections.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0", connections
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("choice", ["open", "closed"])
async def test_a_hung_redis_is_given_up_after_the_timeout_like_an_unreachable_one(clock, caplog, hung_redis, choice):
    url, connections = hung_redis
    limiter = redis_limiter(clock, url=url, on_redis_error=choice, timeout_s=0.05)
    caplog.set_level(logging.WARNING, "resayil.limits")
    async with asyncio.timeout(5):  # without the bound each call would wait forever
        await limiter.start()
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append((await limiter.acquire("5", 3)).allowed)
            except ServiceUnavailable as refused:
                assert refused.headers["Retry-After"] == "2"
                outcomes.append("503")
    assert outcomes == ([True, True, True, False] if choice == "open" else ["503"] * 4)
    assert connections, "the limiter never reached the hung server"
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "rate limiter: Redis is unreachable (no answer within 0.05 s); "
        + (
            "limiting each worker on its own until it is back (on_redis_error = open)"
            if choice == "open"
            else "refusing API requests with 503 until it is back (on_redis_error = closed)"
        )
    ]
    await limiter.redis.aclose()


def redis_reply(command: bytes, admitted: int) -> bytes:
    """What a Redis 7 server answers to the commands the limiter's client sends (one command per read here)."""
    if b"HELLO" in command:
        return b"%1\r\n+proto\r\n:3\r\n"
    if b"EVALSHA" in command:  # the sliding-window script: {admitted, count, newest, blocking}
        return f"*4\r\n:{admitted}\r\n:{1 if admitted else 3}\r\n:1\r\n:1\r\n".encode()
    return b"+OK\r\n"


async def test_a_call_given_up_on_leaves_no_late_reply_for_the_next_call(clock):
    """A reply that arrives after the timeout is never read as the answer to a later call: the script batch
    matches every reply to the call that sent it, whichever connection carries the next one."""
    connections: list[asyncio.StreamWriter] = []
    scripts_seen = 0

    async def late_then_prompt(reader, writer):
        nonlocal scripts_seen
        connections.append(writer)
        while command := await reader.read(65536):
            first = False
            if b"EVALSHA" in command:
                scripts_seen += 1
                first = scripts_seen == 1
            if first:
                await asyncio.sleep(0.2)  # too late for the call's 0.05 s: "admitted", to a call gone
            writer.write(redis_reply(command, admitted=1 if first else 0))
            await writer.drain()

    server = await asyncio.start_server(late_then_prompt, "127.0.0.1", 0)
    url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    limiter = redis_limiter(clock, url=url, timeout_s=0.05)
    try:
        async with asyncio.timeout(5):
            fallback = await limiter.acquire("5", 3)
            assert fallback.allowed and fallback.remaining == 2  # the local fallback's window
            await asyncio.sleep(0.3)  # the late "admitted" reply has reached the first connection by now
            shared = await limiter.acquire("5", 3)
        assert scripts_seen == 2
        assert not shared.allowed  # the second call's own answer, not the stale one
    finally:
        await limiter.scripts.drain()
        await limiter.redis.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


def test_the_redis_timeout_is_a_setting_with_a_quarter_second_default():
    assert load_settings().limits.redis_timeout_s == 0.25
    assert load_settings(env={"RESAYIL_LIMITS__REDIS_TIMEOUT_S": "0.1"}).limits.redis_timeout_s == 0.1
    with pytest.raises(ConfigError, match=r"^limits\.redis_timeout_s: .*greater than 0"):
        load_settings(overrides={"limits": {"redis_timeout_s": 0}})
