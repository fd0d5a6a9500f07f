"""A stream's deadlines (first_event, idle, total) run on one lazily re-armed timer.

The timer is armed by a read when none is armed, and re-armed when it fires early or when
idle's deadline comes before first_event's; these tests drive a
real ``CompletionStream`` over an in-memory response that can hang, and check what the caller
gets: the chunks, then the right ``StreamTimeoutError`` phase with the partial text; outside
cancellation untouched; and a pending timer that never keeps an abandoned stream alive.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Mapping
from typing import cast

import pytest

from asyncclient import CompletionStream, StreamTimeoutError, Timeout
from asyncclient._transport import Response
from benchmarks.payloads import event_stream


class HangingResponse:
    """Pieces of a body, then (with ``hang``) a read that never returns until cancelled."""

    status = 200
    headers: Mapping[str, str] = {"Content-Type": "text/event-stream"}
    url = "http://127.0.0.1/v1/completions"

    def __init__(self, pieces: list[bytes], *, hang: bool) -> None:
        self._pieces = list(pieces)
        self._hang = hang
        self.reading = asyncio.Event()
        self.released = False
        self.interrupted: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def at_eof(self) -> bool:
        return not self._pieces and not self._hang

    async def read_chunk(self) -> bytes:
        if self.interrupted is not None:
            raise self.interrupted
        if self._pieces:
            return self._pieces.pop(0)
        if self._hang:
            self.reading.set()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter  # until interrupted (or cancelled)
        return b""

    def interrupt(self, error: BaseException) -> None:
        # As the real Response: the read in progress and every later one raise `error`.
        self.interrupted = error
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def release(self) -> None:
        self.released = True
        self._pieces.clear()


def open_stream(response: HangingResponse, timeout: Timeout) -> CompletionStream:
    # The client turns Timeout.total into an absolute deadline; so does this helper.
    total = timeout.total
    return CompletionStream(
        cast(Response, response),
        timeout=timeout,
        total_deadline=asyncio.get_running_loop().time() + total if total is not None else None,
    )


STREAM = event_stream(30).data
EVENTS = [block + b"\n\n" for block in STREAM.split(b"\n\n") if block]
TEXTS = [line for line in EVENTS if b"[DONE]" not in line]


@pytest.mark.parametrize(
    ("pieces", "hang", "timeout", "phase", "chunks"),
    [
        (EVENTS, False, Timeout(), None, len(TEXTS)),
        ([STREAM], False, Timeout(), None, len(TEXTS)),
        (
            [STREAM[i : i + 97] for i in range(0, len(STREAM), 97)],
            False,
            Timeout(idle=60.0),
            None,
            len(TEXTS),
        ),
        ([], True, Timeout(idle=0.01), "first_event", 0),
        (EVENTS[:5], True, Timeout(idle=0.01), "idle", 5),
        (EVENTS[:5], True, Timeout(first_event=60.0, idle=0.01), "idle", 5),
        ([], True, Timeout(first_event=0.01, idle=60.0), "first_event", 0),
        (EVENTS[:5], True, Timeout(idle=60.0, total=0.01), "total", 5),
    ],
    ids=[
        "per-event",
        "whole",
        "97-bytes",
        "first-event-by-idle",
        "idle",
        "idle-after-first",
        "first-event",
        "total",
    ],
)
async def test_deadlines_end_the_stream_with_the_right_phase_and_keep_the_text(
    pieces: list[bytes], hang: bool, timeout: Timeout, phase: str | None, chunks: int
) -> None:
    response = HangingResponse(pieces, hang=hang)
    stream = open_stream(response, timeout)
    received = []
    caught: StreamTimeoutError | None = None
    try:
        async with asyncio.timeout(10), stream:  # bounds the test if the timer never fired
            async for chunk in stream:
                received.append("".join(choice.text for choice in chunk.choices))
    except StreamTimeoutError as exc:
        caught = exc
    assert len(received) == chunks
    assert (caught.phase if caught is not None else None) == phase
    if caught is not None and chunks:
        assert caught.partial_text == "".join(received)
    assert stream.closed
    assert response.released
    assert stream._timer is None


async def test_the_timer_is_armed_once_for_a_whole_stream() -> None:
    armed = []
    response = HangingResponse(EVENTS, hang=False)
    stream = open_stream(response, Timeout(idle=600.0))
    original = stream._arm_timer

    def arm(when: float) -> None:
        armed.append(when)
        original(when)

    stream._arm_timer = arm  # type: ignore[method-assign]
    async with stream:
        count = sum([1 async for _ in stream])
    assert count == len(TEXTS)
    assert len(armed) == 1


async def test_an_early_firing_rearms_instead_of_timing_out() -> None:
    response = HangingResponse([], hang=True)
    stream = open_stream(response, Timeout(idle=600.0))
    reader = asyncio.create_task(stream.__anext__())
    async with asyncio.timeout(10):
        await response.reading.wait()
    stream._on_timer()  # early: the deadline is 600 s away
    await asyncio.sleep(0)
    assert not reader.done()
    assert stream._timer is not None
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert stream.closed
    assert stream._timer is None


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    response = HangingResponse(EVENTS[:3], hang=True)
    stream = open_stream(response, Timeout(idle=600.0))

    async def consume() -> None:
        async with stream:
            async for _ in stream:
                pass

    task = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        await response.reading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.closed
    assert response.released


@pytest.mark.parametrize("outside_first", [False, True], ids=["ours-first", "outside-first"])
async def test_an_outside_cancellation_in_the_same_loop_turn_as_the_deadline_propagates(
    outside_first: bool,
) -> None:
    # Whichever lands first, the caller's cancellation wins: the deadline interrupts the
    # response, it never cancels the task, so there is nothing to mistake for the other.
    response = HangingResponse([], hang=True)
    stream = open_stream(response, Timeout(idle=600.0))
    reader = asyncio.create_task(stream.__anext__())
    async with asyncio.timeout(10):
        await response.reading.wait()
    if outside_first:
        reader.cancel()
    stream._last_content -= 601.0  # as if 600 s had passed
    stream._on_timer()  # ours, before the task runs again
    if not outside_first:
        reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert stream.closed


async def test_data_in_the_same_loop_turn_as_the_deadline_is_too_late() -> None:
    # As with asyncio.timeout: the deadline passed before the read was resumed.
    response = HangingResponse([], hang=True)
    stream = open_stream(response, Timeout(idle=600.0))
    reader = asyncio.create_task(stream.__anext__())
    async with asyncio.timeout(10):
        await response.reading.wait()
    assert response._waiter is not None
    response._waiter.set_result(None)  # the read completes...
    stream._last_content -= 601.0
    stream._on_timer()  # ...but the deadline passed first
    with pytest.raises(StreamTimeoutError):
        await reader
    assert stream.closed


async def test_a_slow_consumer_of_buffered_chunks_does_not_time_out() -> None:
    # The deadline is about content arriving; reads that return at once are never cut.
    response = HangingResponse(EVENTS, hang=False)
    stream = open_stream(response, Timeout(idle=0.01))
    count = 0
    async with asyncio.timeout(10), stream:
        async for _ in stream:
            count += 1
            if count <= 3:
                await asyncio.sleep(0.03)
    assert count == len(TEXTS)


async def test_a_pending_timer_does_not_keep_an_abandoned_stream_alive() -> None:
    response = HangingResponse(EVENTS, hang=True)
    stream = open_stream(response, Timeout(idle=600.0))
    await stream.__anext__()
    assert stream._timer is not None
    timer = stream._timer
    alive = weakref.ref(stream)
    with pytest.warns(ResourceWarning, match="not closed"):
        del stream  # the timer holds only a weak reference: this is the last one
    gc.collect()
    assert alive() is None
    assert response.released
    assert timer.cancelled()
