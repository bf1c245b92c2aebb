"""The traffic rules of SPEC §5 end to end, as operators run the gateway: two ``serve --workers 2`` processes
(four workers) sharing PostgreSQL and Redis, the Ollama simulator with ``max_concurrency = 1`` held behind a
gate (slow for as long as a test needs), the cloud simulator, and a clock the test moves (``FileClock``) for
rate-limit windows and the Kuwaiti day.

- the rate limit is one limit whichever process and worker answers;
- a burst of Pro requests fails over to the cloud only past depth 3, never past the daily budget, and the
  budget's two alerts fire once each although four workers race for its last requests; the budget comes
  back on the next day in Asia/Kuwait (which is not the next day in UTC);
- Enterprise requests overtake waiting Basic ones, and Basic never reaches the cloud;
- a worker killed with SIGKILL while it holds the only slot leaves no phantom in the line once its lease
  has run out.

These need PostgreSQL and Redis: they are skipped, with the reason, where either is unreachable.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import openai
import pytest
from traffic_support import (
    CLOUD_MODEL,
    DAILY_BUDGET,
    DEPTH_CACHE_S,
    FAILOVER_DEPTH,
    LOCAL_MODEL,
    QUEUE_LEASE_S,
    TrafficDeployment,
    connection_owner,
    wait_until,
)

from resayil_gateway.testing import _postgres_reachable

RATE_LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    stacks = [name.strip() for name in os.environ.get("RESAYIL_TEST_STACKS", "sqlite,postgres").split(",")]
    if "postgres" not in stacks:
        pytest.skip("RESAYIL_TEST_STACKS leaves out PostgreSQL + Redis, which several processes need")
    reason = asyncio.run(_postgres_reachable())
    if reason:
        pytest.skip(reason)
    deployment = TrafficDeployment(tmp_path_factory.mktemp("traffic"))
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


@pytest.fixture
def fresh(deployment):
    """A day of its own on the gateways' clock, the gate closed, the simulators' records empty, and at the end
    the line empty again."""
    deployment.next_day()
    deployment.close_gate()
    deployment.reset_observers()
    yield deployment
    deployment.open_gate()
    wait_until(lambda: deployment.depth() == 0, "the local line to empty")


def sdk(deployment, server, account) -> openai.OpenAI:
    """The official SDK on ``server``, a new connection per request (so requests spread over its workers),
    never retrying on its own."""
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1",
        api_key=account.key,
        max_retries=0,
        default_headers={"Connection": "close"},
    )


def test_the_rate_limit_is_one_limit_across_both_processes_and_all_their_workers(fresh):
    fresh.open_gate()
    account = fresh.seed()  # Basic rules: 10 requests per minute
    clients = [sdk(fresh, server, account) for server in fresh.servers]
    remaining = []
    for sent in range(10):
        raw = clients[sent % 2].chat.completions.with_raw_response.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": f"limit-{sent}"}], max_tokens=3
        )
        assert raw.http_response.status_code == 200
        assert raw.headers["x-ratelimit-limit-requests"] == "10"
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
    assert remaining == list(range(9, -1, -1))  # one window, counted down whichever process answered
    for client in clients:  # the eleventh, and the twelfth on the other process
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model=LOCAL_MODEL, messages=[{"role": "user", "content": "over"}])
        response = refused.value.response
        assert refused.value.code == "rate_limit_exceeded"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert int(response.headers["retry-after-ms"]) > 0
        assert [response.headers[name] for name in RATE_LIMIT_HEADERS[:2]] == ["10", "0"]
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    fresh.advance(61)  # the window has slid past every admission
    for client in reversed(clients):
        raw = client.chat.completions.with_raw_response.create(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": "again"}], max_tokens=3
        )
        assert raw.http_response.status_code == 200
    assert raw.headers["x-ratelimit-remaining-requests"] == "8"
    assert fresh.cloud.arrivals == []


def test_a_pro_burst_fails_over_only_past_depth_three_never_past_the_budget_which_returns_the_next_kuwaiti_day(
    fresh,
):
    pro = fresh.seed("pro")
    a, b = fresh.servers
    day, utc_day = fresh.kuwait_day(), fresh.clock.now().date()
    # Four requests fill the line one by one: each finds it at most 3 deep, so each stays local.
    queued = []
    for k in range(1, FAILOVER_DEPTH + 2):
        queued.append(fresh.send((a, b)[k % 2], pro, f"queued-{k}"))
        wait_until(lambda k=k: fresh.depth() == k, f"depth {k}")
        time.sleep(DEPTH_CACHE_S + 0.01)  # no worker decides on a depth read before this one
    assert fresh.local.arrivals == ["queued-1"]  # the first runs (held at the gate), three wait
    assert not any(call.answer.done() for call in queued)

    # Now the line is 4 deep: a burst over four workers races for the cloud's five requests of today.
    burst = [fresh.send((a, b)[i % 2], pro, f"burst-{i}") for i in range(12)]
    done = wait_until(
        lambda: (
            sum(call.answer.done() for call in burst) + fresh.depth() - len(queued) == len(burst)
            and [call for call in burst if call.answer.done()]
        ),
        "every burst request to run in the cloud or wait in the local line",
    )
    answers = [call.result() for call in done]
    assert [(answer.status, answer.backend) for answer in answers] == [(200, "cloud")] * DAILY_BUDGET
    assert sorted(fresh.cloud.arrivals) == sorted(call.marker for call in done)
    assert fresh.budget_used(day) == DAILY_BUDGET
    assert fresh.depth() == len(queued) + len(burst) - DAILY_BUDGET

    # Each alert once, from whichever worker spent the request that crossed it, and one outbox row each.
    events = fresh.budget_events()
    assert sorted((event["name"], event["data"]["used"]) for event in events) == [
        ("cloud.budget_exhausted", DAILY_BUDGET),
        ("cloud.budget_warning", DAILY_BUDGET - 1),  # 80 % of 5
    ]
    assert {event["data"]["day"] for event in events} == {day}
    for name in ("cloud.budget_warning", "cloud.budget_exhausted"):
        assert [row["recipient"] for row in fresh.outbox_rows(name)] == [fresh.admin_phone]

    # The cloud is off for the rest of the Kuwaiti day: failover stops, a cloud model answers 503.
    late = fresh.send(a, pro, "late")
    wait_until(lambda: fresh.depth() == len(queued) + len(burst) - DAILY_BUDGET + 1, "the late request to queue")
    refused = fresh.send(b, pro, "cloud-today", model=CLOUD_MODEL).result()
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "cloud_budget_exhausted"
    assert int(refused.headers["retry-after"]) > 0
    assert len(fresh.cloud.arrivals) == DAILY_BUDGET

    fresh.open_gate()
    local = [*queued, *(call for call in burst if call not in done), late]
    assert [(call.result().status, call.result().backend) for call in local] == [(200, "local")] * len(local)
    assert sorted(fresh.local.arrivals) == sorted(call.marker for call in local)
    assert fresh.local.most_held == 1  # max_concurrency 1 held across four workers

    # 00:00:30 in Kuwait is 21:00:30 UTC of the same UTC day: the budget is Kuwait's.
    fresh.past_midnight()
    tomorrow = fresh.kuwait_day()
    assert tomorrow != day and fresh.clock.now().date() == utc_day
    answer = fresh.send(a, pro, "cloud-tomorrow", model=CLOUD_MODEL).result()
    assert (answer.status, answer.backend) == (200, "cloud")
    assert fresh.budget_used(tomorrow) == 1
    assert len(fresh.budget_events()) == 2


def test_enterprise_overtakes_waiting_basic_requests_and_basic_never_reaches_the_cloud(fresh):
    basic, enterprise = fresh.seed(), fresh.seed("enterprise")
    a, b = fresh.servers
    sent = []

    def queue(server, account, marker, **options):
        sent.append(fresh.send(server, account, marker, **options))
        wait_until(lambda: fresh.depth() == len(sent), f"{marker} to join the line")

    for k in range(1, 5):  # the first runs, three wait: the line is 4 deep
        queue((a, b)[k % 2], basic, f"basic-{k}")
    # Past depth 3 an Enterprise request would fail over; these two opt out to wait in the line.
    queue(a, enterprise, "enterprise-1", headers={"x-resayil-failover": "off"})
    queue(b, enterprise, "enterprise-2", headers={"x-resayil-failover": "off"})
    queue(a, basic, "basic-5")  # 6 deep, and still local: Basic has no cloud
    refused = fresh.send(b, basic, "basic-cloud", model=CLOUD_MODEL).result()
    assert refused.status == 403

    fresh.open_gate()
    assert [(call.result().status, call.result().backend) for call in sent] == [(200, "local")] * len(sent)
    assert fresh.local.arrivals == [
        "basic-1",
        "enterprise-1",
        "enterprise-2",
        "basic-2",
        "basic-3",
        "basic-4",
        "basic-5",
    ]
    assert fresh.cloud.arrivals == []
    assert fresh.local.most_held == 1


def test_a_worker_killed_while_it_holds_the_only_slot_leaves_no_phantom_once_its_lease_runs_out(fresh):
    basic, other = fresh.seed(), fresh.seed()
    a, b = fresh.servers
    first = fresh.send(a, basic, "held-by-the-victim")
    wait_until(lambda: fresh.local.arrivals == ["held-by-the-victim"], "the first request to hold the slot")
    victim = wait_until(lambda: connection_owner(a, first.local_port), "the worker holding the first request")
    (sibling,) = set(a.workers()) - {victim}
    # The victim also gets two waiting places: its sibling, stopped meanwhile, cannot accept their connections.
    os.kill(sibling, signal.SIGSTOP)
    try:
        waiting = []
        for k, (server, account) in enumerate([(a, basic), (b, other), (a, basic), (b, other)]):
            waiting.append(fresh.send(server, account, f"waiting-{k}"))
            wait_until(lambda: fresh.depth() == len(waiting) + 1, f"waiting-{k} to join the line")
    finally:
        os.kill(sibling, signal.SIGCONT)
    assert [connection_owner(a, call.local_port) for call in waiting[::2]] == [victim, victim]

    os.kill(victim, signal.SIGKILL)
    assert first.result().status == 0  # its client lost the connection
    assert fresh.running() == 1 and fresh.depth() == 5  # nobody renews the dead worker's slot, nobody frees it
    assert [call.result().status for call in waiting[::2]] == [0, 0]
    survivors = waiting[1::2]

    # Within a lease (and one renewal of a live worker's, which purges), the phantoms are gone: the next live
    # request in line has the slot and reaches the simulator.
    wait_until(
        lambda: fresh.depth() == len(survivors) and len(fresh.local.arrivals) == 2,
        "the dead worker's slot and places to be purged",
        timeout=QUEUE_LEASE_S * 3,
    )
    assert fresh.local.arrivals[1] == survivors[0].marker
    assert fresh.local.holding == 1  # the victim's request was cancelled at the simulator when it died

    fresh.open_gate()
    assert [call.result().status for call in survivors] == [200] * len(survivors)
    wait_until(lambda: fresh.depth() == 0, "the line to empty")
    # The whole of max_concurrency is free again: a new request runs at once, on either process.
    fresh.close_gate()
    for server in (a, b):
        call = fresh.send(server, other, f"after-{server.port}")
        wait_until(lambda call=call: fresh.local.arrivals[-1] == call.marker, "a new request to run")
        assert fresh.running() == 1 and fresh.depth() == 1
        fresh.open_gate()
        assert call.result().status == 200
        wait_until(lambda: fresh.depth() == 0, "the line to empty")
        fresh.close_gate()
    assert fresh.local.most_held == 1
