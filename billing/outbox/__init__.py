"""The durable outbox: every side effect on another system (PaperCut, OfficeRnD).

``store`` holds the rows (enqueue, claim, finish, postpone, fail); ``runner``
carries them out, once (see its docstring). ``new_marker`` makes the
unguessable marker a posting carries, by which a later attempt finds out
whether an earlier one was applied.
"""

from __future__ import annotations

import uuid

from .runner import (
    DEFAULT_CONCURRENCY,
    MAX_ERRORS,
    RETRY,
    DrainResult,
    GiveUp,
    Handler,
    Outcome,
    Retry,
    drain,
    may_have_been_applied,
    run_items,
)
from .store import CLAIM_FOR, claim, enqueue, enqueue_many, pending_count

__all__ = [
    "CLAIM_FOR",
    "DEFAULT_CONCURRENCY",
    "MAX_ERRORS",
    "RETRY",
    "DrainResult",
    "GiveUp",
    "Handler",
    "Outcome",
    "Retry",
    "claim",
    "drain",
    "enqueue",
    "enqueue_many",
    "may_have_been_applied",
    "new_marker",
    "pending_count",
    "run_items",
]


def new_marker() -> str:
    """``[pp:<uuid>]`` for a posting's comment or description: unguessable, so a job
    title or a member's name can never make another posting look applied."""
    return f"[pp:{uuid.uuid4().hex}]"
