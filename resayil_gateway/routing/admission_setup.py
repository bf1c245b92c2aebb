"""Which waiting line a gateway uses: shared through Redis when its state is Redis, otherwise in-process."""

from __future__ import annotations

from ..state import RedisState, SharedState
from .admission import Admission, LocalAdmission
from .admission_redis import RedisAdmission


def make_admission(state: SharedState, lease_s: float = 10.0) -> Admission:
    """One line shared through Redis when the state is Redis, otherwise an in-process line."""
    if isinstance(state, RedisState):
        return RedisAdmission(state, lease_s=lease_s)
    return LocalAdmission()
