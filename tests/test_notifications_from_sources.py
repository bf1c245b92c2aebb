"""Notifications as their real sources raise them, rendered and paced by the delivery worker: the cloud budget's
own crossings render (its events carry a key, so the percentage must still be filled in), and a provider's
``Retry-After`` is waited for even when it is longer than the backoff. The WhatsApp plugin's end-to-end tests
prove the same through the sink; these keep the core honest on its own."""

from __future__ import annotations

from test_notifications_channel import ChannelPlugin, FakeChannel, worker_for

from resayil_gateway.events.channels import TransientDeliveryError
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin

ADMIN_PHONE = "+96550000009"
RETRIES = {"notifications": {"max_attempts": 3, "backoff_base_s": 10, "backoff_max_s": 3600}}


async def test_the_cloud_budgets_own_crossings_render_with_their_percentage(make_gateway, clock):
    channel = FakeChannel(extra_admins=())
    cloud = FakeBackend(name="cloud", kind="cloud", model_names=("cloud-big",))
    cloud.daily_request_budget = 10  # type: ignore[attr-defined]
    gateway = make_gateway(clock=clock, plugins=[ChannelPlugin(channel), FakeBackendPlugin(cloud)])
    await gateway.accounts.create("boss@example.com", ADMIN_PHONE, "test-password-123", name="Boss", role="admin")
    for _ in range(11):
        await gateway.cloud_budget.try_spend()
    await worker_for(gateway).deliver_all()
    assert [row.status for row in await gateway.events.outbox.list()] == ["sent"] * 3
    warning, exhausted = (m.text.split("\n\n") for m in channel.sent if m.event.startswith("cloud."))
    assert warning == [
        "استهلاك السحابة بلغ 80% من الحد اليومي (8/10) ليوم 2026-01-15.",
        "Cloud usage reached 80% of the daily cap (8/10) on 2026-01-15.",
    ]
    assert exhausted[1] == "Daily cloud cap reached (10/10) on 2026-01-15; cloud routing is off until tomorrow."


async def test_a_providers_retry_after_is_waited_for_even_beyond_the_backoff(make_gateway, clock):
    channel = FakeChannel()
    gateway = make_gateway(clock=clock, plugins=[ChannelPlugin(channel)], overrides=RETRIES)
    worker = worker_for(gateway)
    await gateway.events.bans.report("192.0.2.1", "resayil-auth", "test")
    channel.failures = [
        TransientDeliveryError("HTTP 429 (retry after 300s)", retry_after=300),
        TransientDeliveryError("HTTP 503 (retry after 1s)", retry_after=1),
    ]
    assert await worker.deliver_due() == 1
    (row,) = await gateway.events.outbox.list()
    assert (row.next_attempt_at - clock.now()).total_seconds() == 300  # not the 5–10 s backoff
    clock.advance(seconds=299)
    assert await worker.deliver_due() == 0
    clock.advance(seconds=1)
    assert await worker.deliver_due() == 1
    (row,) = await gateway.events.outbox.list()
    assert 10 <= (row.next_attempt_at - clock.now()).total_seconds() <= 20  # a shorter hint never hurries it
    clock.advance(seconds=20)
    assert await worker.deliver_due() == 1
    assert [m.event for m in channel.sent] == ["ip.banned"]
