"""Wake-ups reach the loops they name, and only those."""

from __future__ import annotations

from proxy.pipeline.wake import DISPATCH, TRACKER, Waker


async def test_a_wake_up_reaches_only_the_loops_it_names() -> None:
    waker = Waker()
    dispatch, tracker, outbox = (waker.subscribe(n) for n in (DISPATCH, TRACKER, "outbox"))
    waker.wake(DISPATCH)
    assert (dispatch.is_set(), tracker.is_set(), outbox.is_set()) == (True, False, False)
    dispatch.clear()
    waker.wake(TRACKER, "nobody-listens")
    assert (dispatch.is_set(), tracker.is_set(), outbox.is_set()) == (False, True, False)
    waker.wake()  # no name: every loop
    assert dispatch.is_set() and tracker.is_set() and outbox.is_set()
