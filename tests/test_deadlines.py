"""The client's shared deadline timer behaves like ``asyncio.timeout`` for every call.

One timer serves all of a client's pending deadlines (see ``asyncclient/_deadlines.py``);
these tests check what a call sees: a ``TimeoutError`` when its own deadline passes, nothing
when it finishes in time, only overdue calls cut, moved deadlines honoured, and a
cancellation from outside never turned into a timeout.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable

import pytest

from asyncclient._deadlines import Deadlines


async def within(
    deadlines: Deadlines,
    seconds: float,
    work: Awaitable[object],
    *,
    then: float | None = None,
) -> object:
    """``work`` under a deadline of ``seconds``, moved to ``then`` seconds from now before
    the work starts when given: the way the client's attempts use it."""
    loop = asyncio.get_running_loop()
    deadline = deadlines.start(loop.time() + seconds)
    try:
        if then is not None:
            deadlines.move(deadline, loop.time() + then)
        return await work
    except asyncio.CancelledError:
        if deadlines.expired(deadline):
            raise TimeoutError from None
        raise
    finally:
        deadlines.finish(deadline)


async def test_a_passed_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines()
    async with asyncio.timeout(10):  # bounds the test if the timer never fired
        with pytest.raises(TimeoutError):
            await within(deadlines, 0.01, asyncio.Event().wait())
    assert not deadlines._active


async def test_work_finished_in_time_is_left_alone() -> None:
    deadlines = Deadlines()
    assert await within(deadlines, 60.0, asyncio.sleep(0, "done")) == "done"
    assert not deadlines._active
    deadlines.close()
    assert deadlines._timer is None


async def test_moving_a_deadline_earlier_fires_it() -> None:
    deadlines = Deadlines()
    async with asyncio.timeout(10):
        with pytest.raises(TimeoutError):
            await within(deadlines, 600.0, asyncio.Event().wait(), then=0.01)


async def test_only_overdue_calls_are_cut() -> None:
    deadlines = Deadlines()
    finished = asyncio.Event()

    async def long() -> object:
        return await within(deadlines, 60.0, finished.wait())

    async with asyncio.timeout(10):
        long_task = asyncio.create_task(long())
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            await within(deadlines, 0.01, asyncio.Event().wait())
        finished.set()
        assert await long_task is True


async def test_a_later_deadline_is_served_after_an_earlier_one_fired() -> None:
    deadlines = Deadlines()

    async def short_then_long() -> None:
        with pytest.raises(TimeoutError):
            await within(deadlines, 0.01, asyncio.Event().wait())

    async with asyncio.timeout(10):
        slow = asyncio.create_task(within(deadlines, 0.05, asyncio.Event().wait()))
        await short_then_long()
        # The timer re-armed itself for the pending 0.05 s deadline after the first fired.
        with pytest.raises(TimeoutError):
            await slow


@pytest.mark.parametrize("order", ["outside only", "ours then outside", "outside then ours"])
async def test_outside_cancellation_is_never_turned_into_a_timeout(order: str) -> None:
    deadlines = Deadlines()
    started = asyncio.Event()

    async def waiter() -> None:
        async def work() -> None:
            started.set()
            await asyncio.Event().wait()

        await within(deadlines, 600.0, work())

    async with asyncio.timeout(10):
        task = asyncio.create_task(waiter())
        await started.wait()
        (deadline,) = deadlines._active
        if order == "outside then ours":
            task.cancel()
        if order != "outside only":
            deadline.when = 0.0  # as if 600 s had passed
            deadlines._fire()  # our cancellation, in the same loop turn as the outside one
        if order != "outside then ours":
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_pending_timer_does_not_keep_its_owner_alive() -> None:
    deadlines = Deadlines()
    await within(deadlines, 600.0, asyncio.sleep(0))  # done; its timer stays armed
    timer = deadlines._timer
    assert timer is not None
    alive = weakref.ref(deadlines)
    del deadlines
    gc.collect()
    assert alive() is None  # a dropped client is not kept for 600 s by its timer
    timer.cancel()


def test_starting_a_deadline_outside_a_task_is_an_error() -> None:
    deadlines = Deadlines()
    with pytest.raises(RuntimeError):
        deadlines.start(1.0)  # no running loop at all
