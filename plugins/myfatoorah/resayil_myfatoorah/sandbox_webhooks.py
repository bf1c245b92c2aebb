"""The simulator's outgoing webhooks: signed V2 events POSTed in the background, retried until a 200."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .money import encode_json
from .sandbox import SandboxStats, SimulatorConfig
from .signature import canonical_v2, sign
from .webhooks import SIGNATURE_HEADER, VERSION_HEADER

log = logging.getLogger("resayil.myfatoorah.simulator")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST of a webhook: the event's reference and the receiver's answer (0 when it did not answer)."""

    reference: str
    transaction_status: str
    url: str
    attempt: int
    status: int


class WebhookSender:
    """Delivers events in order, one background task per batch; :meth:`close` stops every task."""

    def __init__(self, config: SimulatorConfig, stats: SandboxStats) -> None:
        self.config = config
        self.stats = stats
        self.deliveries: list[Delivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Cancel undelivered webhooks and close the HTTP session."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, url: str, events: Sequence[Mapping[str, Any]]) -> None:
        """Deliver ``events`` to ``url`` in order (each ``duplicates`` times) from a background task."""
        if not url:
            self.stats.webhooks_skipped += len(events)
            self.stats.touch()
            return
        task = asyncio.create_task(self._deliver_all(url, list(events)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every webhook sent so far was delivered or given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _deliver_all(self, url: str, events: list[Mapping[str, Any]]) -> None:
        if self.config.webhook_delay_s:
            await asyncio.sleep(self.config.webhook_delay_s)  # the "late webhook" switch: a deliberate delay
        for event in events:
            for _ in range(self.config.duplicates):
                await self._deliver(url, event)

    async def _deliver(self, url: str, event: Mapping[str, Any]) -> None:
        body = encode_json(event)
        headers = {"Content-Type": "application/json", VERSION_HEADER: "v2"}
        if self.config.webhook_secret:
            headers[SIGNATURE_HEADER] = sign(self.config.webhook_secret, canonical_v2(1, event["Data"]))
        reference = str(event["Event"]["Reference"])
        status_word = str(event["Data"]["Transaction"]["Status"])
        for attempt in range(1, self.config.webhook_retries + 2):
            if attempt > 1:
                await asyncio.sleep(self.config.webhook_retry_delay_s)  # the retry policy's spacing
            status = await self._post(url, body, headers)
            self.deliveries.append(Delivery(reference, status_word, url, attempt, status))
            self.stats.webhooks_attempted += 1
            if status == 200:
                self.stats.webhooks_delivered += 1
                self.stats.touch()
                return
            self.stats.touch()
        log.warning("webhook %s to %s given up after %d attempts", reference, url, self.config.webhook_retries + 1)
        self.stats.webhooks_failed += 1
        self.stats.touch()

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.webhook_timeout_s)
            async with self._session.post(url, data=body, headers=headers, timeout=timeout) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0
