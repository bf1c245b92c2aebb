"""The daily cloud budget: how many requests may be sent to the cloud per calendar day (Asia/Kuwait).

One counter per local day, shared by every worker (Redis) or kept in memory (one process). Spending is an
atomic check-and-increment that never passes the limit, so the increment that reaches an alert threshold
happens exactly once per day whatever the number of racing workers: that increment emits the event
(``cloud.budget_warning`` below 100 %, ``cloud.budget_exhausted`` at 100 %). At the limit the cloud is off
until the next local day: failover stops and cloud-only models answer 503 ``cloud_budget_exhausted``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..domain import Event
from ..errors import NoCapacity
from .admission import state_unavailable

if TYPE_CHECKING:
    from ..clock import Clock
    from ..state import RedisState, SharedState

DEFAULT_DAILY_REQUESTS = 500
DEFAULT_ALERT_RATIOS = (0.8, 1.0)
RESET_TOPIC = "cloud_budget.reset"
_KEY_TTL_S = 3 * 24 * 3600

BudgetState = Literal["ok", "warning", "exhausted"]
Emit = Callable[[Event], Awaitable[None]]


class CloudBudgetExhausted(NoCapacity):
    """503: today's cloud budget is spent; the cloud is off until the next day."""

    code = "cloud_budget_exhausted"


def cloud_budget_exhausted() -> CloudBudgetExhausted:
    """The error a cloud-only model answers with once today's budget is spent."""
    return CloudBudgetExhausted(
        "Today's cloud request budget is spent; cloud models are available again tomorrow (Asia/Kuwait).",
        headers={"Retry-After": "3600"},
    )


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Today's use of the cloud budget."""

    day: str
    used: int
    limit: int
    warning_at: int

    @property
    def state(self) -> BudgetState:
        """``exhausted`` at the limit, ``warning`` from the first alert threshold, otherwise ``ok``."""
        if self.used >= self.limit:
            return "exhausted"
        return "warning" if self.used >= self.warning_at else "ok"

    def as_dict(self) -> dict[str, Any]:
        """What ``resayil cloud status --json`` prints."""
        return {"day": self.day, "used": self.used, "limit": self.limit, "state": self.state}


class CloudBudget(ABC):
    """Counts today's cloud requests against the limit; one interface, in-process and Redis."""

    def __init__(self, clock: Clock, emit: Emit) -> None:
        self.clock = clock
        self.emit = emit
        self.limit = DEFAULT_DAILY_REQUESTS
        self.ratios: tuple[float, ...] = DEFAULT_ALERT_RATIOS
        self._exhausted_day: str | None = None

    def configure(self, limit: int, ratios: tuple[float, ...] = DEFAULT_ALERT_RATIOS) -> None:
        """Set the daily limit and the alert ratios (e.g. ``(0.8, 1.0)``)."""
        self.limit = max(0, int(limit))
        self.ratios = tuple(sorted(float(ratio) for ratio in ratios if ratio > 0))

    def configure_from(self, backend: object) -> None:
        """Read ``daily_request_budget`` and ``budget_alert_ratios`` from a cloud backend (defaults 500 and
        (0.8, 1.0) when it does not say)."""
        self.configure(
            getattr(backend, "daily_request_budget", DEFAULT_DAILY_REQUESTS),
            tuple(getattr(backend, "budget_alert_ratios", DEFAULT_ALERT_RATIOS)),
        )

    def today(self) -> str:
        """Today's date in the gateway's calendar (Asia/Kuwait by default), ``YYYY-MM-DD``."""
        return self.clock.local_date().date().isoformat()

    def known_exhausted(self) -> bool:
        """True when this process has seen today's budget run out (no I/O: failover reads this)."""
        return self._exhausted_day == self.today()

    def _threshold(self, ratio: float) -> int:
        return max(1, math.ceil(self.limit * ratio))

    async def try_spend(self) -> bool:
        """Count one request sent to the cloud; False (and nothing counted) when today's budget is spent."""
        day = self.today()
        spent, used = await self._spend(day)
        if used >= self.limit:
            self._exhausted_day = day
        if spent:
            await self._alert_if_crossing(day, used)
        return spent

    async def _alert_if_crossing(self, day: str, used: int) -> None:
        for ratio in self.ratios:
            if used == self._threshold(ratio):
                name = "cloud.budget_exhausted" if ratio >= 1 else "cloud.budget_warning"
                data = {"day": day, "used": used, "limit": self.limit, "ratio": ratio}
                await self.emit(Event(name, data, key=f"{name}:{day}:{ratio}"))

    async def status(self) -> BudgetStatus:
        """Today's use, limit and state."""
        day = self.today()
        used = await self._used(day)
        if used >= self.limit:
            self._exhausted_day = day
        warning_at = self._threshold(self.ratios[0]) if self.ratios else self.limit
        return BudgetStatus(day, used, self.limit, min(warning_at, self.limit))

    async def reset(self) -> int:
        """Set today's count back to zero in every worker; returns the count it replaced."""
        day = self.today()
        before = await self._reset(day)
        self._forget_exhaustion(day)
        return before

    def _forget_exhaustion(self, day: str) -> None:
        if self._exhausted_day == day:
            self._exhausted_day = None

    @abstractmethod
    async def _spend(self, day: str) -> tuple[bool, int]:
        """Atomically: if ``day``'s count is below the limit, add one. Returns (added, count after)."""

    @abstractmethod
    async def _used(self, day: str) -> int:
        """``day``'s count."""

    @abstractmethod
    async def _reset(self, day: str) -> int:
        """Zero ``day``'s count and tell the other workers; returns the old count."""


class LocalCloudBudget(CloudBudget):
    """One process: the counter lives in memory."""

    def __init__(self, clock: Clock, emit: Emit) -> None:
        super().__init__(clock, emit)
        self._counts: dict[str, int] = {}

    async def _spend(self, day: str) -> tuple[bool, int]:
        used = self._counts.get(day, 0)
        if used >= self.limit:
            return False, used
        self._counts = {day: used + 1}  # older days are not needed any more
        return True, used + 1

    async def _used(self, day: str) -> int:
        return self._counts.get(day, 0)

    async def _reset(self, day: str) -> int:
        return self._counts.pop(day, 0)


_SPEND = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return {0, used} end
used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return {1, used}
"""


class RedisCloudBudget(CloudBudget):
    """Every worker: one counter per day in Redis, spent by a Lua script (one round trip)."""

    def __init__(self, state: RedisState, clock: Clock, emit: Emit) -> None:
        super().__init__(clock, emit)
        self.state = state
        self._spend_script = state.redis.register_script(_SPEND)
        state.on_broadcast(self._on_broadcast)

    def _key(self, day: str) -> str:
        return self.state.key("cloud_budget", day)

    async def _spend(self, day: str) -> tuple[bool, int]:
        try:
            spent, used = await self.state.scripts.run(self._spend_script, [self._key(day)], [self.limit, _KEY_TTL_S])
        except Exception as exc:
            if not _from_redis(exc):
                raise
            raise state_unavailable() from exc
        return bool(spent), int(used)

    async def _used(self, day: str) -> int:
        return int(await self.state.redis.get(self._key(day)) or 0)

    async def _reset(self, day: str) -> int:
        before = await self.state.redis.getdel(self._key(day))
        await self.state.broadcast(RESET_TOPIC, day)
        return int(before or 0)

    def _on_broadcast(self, topic: str, day: str) -> None:
        if topic == RESET_TOPIC:
            self._forget_exhaustion(day)


def make_cloud_budget(state: SharedState, clock: Clock, emit: Emit) -> CloudBudget:
    """A budget shared through Redis when the state is Redis, otherwise an in-process one."""
    from ..state import RedisState

    if isinstance(state, RedisState):
        return RedisCloudBudget(state, clock, emit)
    return LocalCloudBudget(clock, emit)


def _from_redis(exc: BaseException) -> bool:
    """True for the Redis client's own errors (checked by module, so this file never loads the client)."""
    return type(exc).__module__.startswith("redis.")
