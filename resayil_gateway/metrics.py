"""Prometheus metrics of the gateway: requests, latency, tokens, credits, in-flight requests, upstream errors
and the notification outbox.

With ``resayil serve --workers N`` every worker writes to ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``
aggregates them, so a scrape sees the whole gateway whichever worker answers.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The gateway's metric families, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter("resayil_requests", "API requests answered", ["route", "status", "model"], registry=r)
        self.latency = Histogram(
            "resayil_request_duration_seconds",
            "Time to answer an API request (to the last byte for streams)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "resayil_time_to_first_token_seconds",
            "Time from request to the first streamed token",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("resayil_tokens", "Tokens processed", ["model", "kind"], registry=r)
        self.credits = Counter("resayil_credits_charged", "Credits charged", ["model"], registry=r)
        self.uncollected = Counter(
            "resayil_credits_uncollected", "Credits that could not be collected", ["model"], registry=r
        )
        self.in_flight = Gauge(
            "resayil_backend_in_flight",
            "Requests running on a backend",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        # Depth and budget are read from the shared state at scrape time: every worker reports the same value.
        self.queue_depth = Gauge(
            "resayil_backend_queue_depth",
            "Requests waiting for or running on a backend, in all workers",
            ["backend"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.cloud_budget_used = Gauge(
            "resayil_cloud_budget_used",
            "Requests sent to the cloud today (Asia/Kuwait day)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.cloud_budget_limit = Gauge(
            "resayil_cloud_budget_limit", "Daily cloud request budget", registry=r, multiprocess_mode="livemax"
        )
        self.upstream_errors = Counter(
            "resayil_upstream_errors", "Errors from backends", ["backend", "code"], registry=r
        )
        self.outbox_depth = Gauge(
            "resayil_outbox_messages",
            "Notification messages in the outbox by status (pending and sending are the depth)",
            ["status"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.notifications = Counter(
            "resayil_notifications",
            "Notification delivery attempts by channel, event and outcome (sent, retried, failed)",
            ["channel", "event", "outcome"],
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, memoised: the request path asks for the same few children every time."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        """The exposition text, aggregated over workers when running multiprocess."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
