"""The deadlines of all of a client's calls, served by one timer on the event loop.

``asyncio.timeout`` around each call creates a timer handle, pushes it on the loop's heap and
cancels it again: several microseconds per request, a tenth of the client's CPU time per
request on loopback. Deadlines of calls are nearly always far away (600 s for headers by
default) and the calls finish long before, so one timer can serve them all: it is armed for
the earliest deadline known when it is set, a later deadline only joins the set, and when the
timer fires it cancels the overdue calls' tasks and re-arms itself for the earliest deadline
still pending. Overdue tasks are cancelled exactly as ``asyncio.timeout`` does it (the
cancellation is taken back with ``uncancel``), so a cancellation from outside still wins.

Use::

    deadline = deadlines.start(loop.time() + seconds)
    try:
        ...  # awaits
        deadlines.move(deadline, loop.time() + more_seconds)
        ...
    except asyncio.CancelledError:
        if deadlines.expired(deadline):
            raise TheTimeoutError from None
        raise
    finally:
        deadlines.finish(deadline)
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["Deadline", "Deadlines", "current_task_getter"]


def current_task_getter(loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Task[Any] | None]:
    """``asyncio.current_task`` for ``loop``, as cheap as the Python version allows.

    Up to 3.11 it is Python code (about 0.2 us, paid on every request with a deadline) over
    a dict kept in C; from 3.12 on it is C itself.
    """
    current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
    if sys.version_info < (3, 12) and isinstance(current_tasks, dict):
        return functools.partial(current_tasks.get, loop)
    return functools.partial(asyncio.current_task, loop)


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The loop's clock as a cheap callable: ``time.monotonic`` itself when that is all the
    loop's ``time()`` is (the same numbers, without a Python-level call on every read)."""
    # The bound method, not the class: a test tool may replace `time` on the loop object, and
    # timers then run on that clock (`call_at` reads it), so deadlines must too.
    method = getattr(loop.time, "__func__", None)
    return time.monotonic if method is asyncio.BaseEventLoop.time else loop.time


class Deadline:
    """One call's deadline: a loop time, the task to cancel, and whether it fired."""

    __slots__ = ("cancelling", "expired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[Any]) -> None:
        self.when = when
        self.task = task
        # Cancellations already requested from outside: only ours is taken back later.
        self.cancelling = task.cancelling()
        self.expired = False


class Deadlines:
    """The pending deadlines of one client, and the single timer that serves them."""

    __slots__ = ("__weakref__", "_active", "_current_task", "_loop", "_timer", "_timer_at")

    def __init__(self) -> None:
        self._active: set[Deadline] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current_task: Callable[[], asyncio.Task[Any] | None] = asyncio.current_task
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, when: float) -> Deadline:
        """Watch the current task until :meth:`finish`: cancelled at loop time ``when``."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        task = self._current_task()
        if task is None:
            raise RuntimeError("A deadline needs to run inside an asyncio task.")
        deadline = Deadline(when, task)
        self._active.add(deadline)
        if when < self._timer_at:
            self._arm(when)
        return deadline

    def move(self, deadline: Deadline, when: float) -> None:
        """A new deadline for the same call (the next phase), earlier or later."""
        deadline.when = when
        if when < self._timer_at:
            self._arm(when)

    def finish(self, deadline: Deadline) -> None:
        self._active.discard(deadline)

    def expired(self, deadline: Deadline) -> bool:
        """Call when the watched task got ``CancelledError``: ``True`` when that was this
        deadline alone (it is then taken back, and the caller raises its timeout error)."""
        if not deadline.expired:
            return False
        return deadline.task.uncancel() <= deadline.cancelling

    def close(self) -> None:
        """Stop the timer, unless calls still wait on it: ``aclose()`` leaves a borrowed
        session open, and the calls in flight on it keep their deadlines."""
        if not self._active:
            self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # A client is used in one loop at a time; deadlines left from another loop are dead.
        self._stop_timer()
        self._active.clear()
        self._loop = loop
        self._current_task = current_task_getter(loop)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        assert self._loop is not None
        # A weak reference, so that a pending timer does not keep a dropped client alive.
        self._timer = self._loop.call_at(when, _fire, weakref.ref(self))

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        assert self._loop is not None
        now = self._loop.time()
        earliest = math.inf
        for deadline in self._active:
            if deadline.expired:
                continue
            when = deadline.when
            if when <= now:
                deadline.expired = True
                deadline.task.cancel()
            elif when < earliest:
                earliest = when
        if earliest < math.inf:
            self._arm(earliest)


def _fire(deadlines_ref: weakref.ref[Deadlines]) -> None:
    deadlines = deadlines_ref()
    if deadlines is not None:
        deadlines._fire()
