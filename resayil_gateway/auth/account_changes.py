"""Telling every worker that an account changed (a key revoked, a plan bought, the account disabled), so
each drops the callers it cached for that account."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..outages import describe_outage, is_unavailable
from ..state import SharedState

log = logging.getLogger("resayil.auth")
TOPIC = "account"

Listener = Callable[[int], None]


class AccountChanges:
    """Local listeners hear of a change at once; other workers through the shared state's broadcast."""

    def __init__(self, state: SharedState) -> None:
        self._state = state
        self._listeners: list[Listener] = []
        state.on_broadcast(self._on_broadcast)

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(account_id)`` whenever an account changes, here or on another worker."""
        self._listeners.append(listener)

    @property
    def trustworthy(self) -> bool:
        """True while a change made elsewhere is sure to reach this worker (the channel is alive)."""
        return self._state.channel_alive

    async def announce(self, account_id: int) -> bool:
        """Tell this worker and every other one, after the change has committed. Returns False when the other
        workers could not be told now (they stop trusting their caches once the channel is down, and forget
        cached callers within ``auth_cache_ttl_s`` at most)."""
        self._notify(account_id)
        try:
            await self._state.broadcast(TOPIC, str(account_id))
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("could not tell other workers that account %d changed: %s", account_id, describe_outage(exc))
            return False
        return True

    def _on_broadcast(self, topic: str, value: str) -> None:
        if topic == TOPIC:
            self._notify(int(value))

    def _notify(self, account_id: int) -> None:
        for listener in self._listeners:
            listener(account_id)
