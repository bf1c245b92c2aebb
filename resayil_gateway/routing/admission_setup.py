"""Which waiting line a gateway uses: shared through Redis when its state is Redis, otherwise in-process."""

from __future__ import annotations

from ..state import RedisState, SharedState
from .admission import Admission, LocalAdmission


def make_admission(state: SharedState, lease_s: float = 10.0) -> Admission:
    """One line shared through Redis when the state is Redis, otherwise an in-process line."""
    if isinstance(state, RedisState):
        from .admission_redis import RedisAdmission  # the Redis client loads only where Redis is configured

        return RedisAdmission(state, lease_s=lease_s)
    return LocalAdmission()
