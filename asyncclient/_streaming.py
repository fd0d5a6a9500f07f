"""The stream object: an async iterator of chunks and an async context manager.

Data path per network read: bytes -> the data of its complete events (split in one call on a
plain stream, by :class:`SSEDecoder`, sans-IO, otherwise) -> one msgspec decode per event,
mapped with no Python frame per event -> chunks queued for the caller. The connection is
released on every exit path: ``[DONE]``, exhaustion, ``break`` inside ``async with``, an
exception, cancellation, the client's ``aclose()``, and (with a ``ResourceWarning``) garbage
collection of a stream that was never closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import warnings
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Final, NamedTuple, Self

import msgspec

from ._accumulate import CompletionAccumulator
from ._deadlines import loop_clock
from ._decode import (
    DONE,
    decode_chunk,
    decode_chunks,
    decode_error,
    validation_error_path,
)
from ._exceptions import (
    DECODE_ERRORS,
    APIConnectionError,
    AsyncClientError,
    IncompleteStreamError,
    ServerStreamError,
    StreamDecodeError,
    StreamError,
    StreamTimeoutError,
    excerpt,
)
from ._models import Completion, CompletionChunk, ResponseInfo
from ._sse import EventTooLargeError, ServerSentEvent, SSEDecoder
from ._transport import ClientClosedError, Response, Timeout

__all__ = ["CompletionStream", "StreamRestart"]

logger = logging.getLogger("asyncclient")

# After [DONE], the rest of the body (usually just the chunked-encoding terminator) is read so
# the connection can go back to the pool; past these limits it is closed instead.
_DRAIN_SECONDS: Final = 1.0
_DRAIN_BYTES: Final = 64 * 1024

_DATA_PREFIX: Final = b"data: "
_LF_BLANK_LINE: Final = b"\n\n"
_CRLF_BLANK_LINE: Final = b"\r\n\r\n"
_CRLF_BLANK_CR: Final = b"\r\n\r"  # the CR ends the blank line, whatever follows it
# The plain path's CRLF states (`_crlf_end`): an event's line ends so far (the key) and what
# completes it; or, with no carry, an event that ended at a read's last byte, a CR, whose
# LF may start the next read.
_CRLF_UNFINISHED_ENDS: Final = (b"\r", b"\r\n")
_CRLF_END_REST: Final = {b"\r": b"\n\r", b"\r\n": b"\r", _CRLF_BLANK_CR: b"\n"}
# `int in bytes` is a bare memchr; `bytes in bytes` runs a general search, several times
# slower on the short reads of a live stream.
_CR: Final = 0x0D
_LF: Final = 0x0A
_SLICE_BYTES: Final = 16 * 1024
# Past this, an unfinished event is handed to the framer, whose buffer grows in linear time
# (re-concatenating a carry on every read would be quadratic).
_MAX_CARRY: Final = 64 * 1024

_TIMEOUT_MESSAGES: Final = {
    "first_event": "No content event arrived within Timeout.first_event after the headers.",
    "idle": "No content event arrived within Timeout.idle (keep-alives do not count).",
    "total": "The stream did not finish within Timeout.total.",
}

REQUEST_ID_HEADERS: Final = ("x-request-id", "x-orq-request-id", "request-id")


def request_id_from(headers: Mapping[str, str]) -> str | None:
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


class StreamRestart(NamedTuple):
    """What ``on_restart`` is told when a broken stream is re-sent.

    ``restart`` counts from 1; ``error`` is what broke the stream; ``discarded`` is the
    output received before (now dropped from the stream's accumulation).
    """

    restart: int
    error: AsyncClientError
    discarded: Completion | None


class CompletionStream:
    """Chunks of a streamed completion, as they arrive.

    Use it as ``async with stream: async for chunk in stream: ...``. Besides the chunks it
    offers :meth:`text_deltas`, :meth:`final_completion` (the same type a non-streamed call
    returns), :attr:`completion_so_far`, the response's ``status_code``, ``headers`` and
    ``request_id``, and :attr:`info` (those plus the attempts and retry waits it took).

    The chunks it yields are the ones it accumulates, not copies: treat them as read-only.
    """

    def __init__(
        self,
        response: Response | None,
        *,
        max_event_size: int | None = None,
        timeout: Timeout | None = None,
        total_deadline: float | None = None,
        info: ResponseInfo | None = None,
        chunks: list[CompletionChunk] | None = None,
        reconnect: Callable[[], Awaitable[Response]] | None = None,
        on_restart: Callable[[StreamRestart], object] | None = None,
        max_restarts: int = 0,
        accumulate: bool = True,
    ) -> None:
        self._response = response
        self._read_chunk = response.read_chunk if response is not None else _no_more_bytes
        self._max_event_size = max_event_size
        self._plain_limit = max_event_size if max_event_size is not None else sys.maxsize
        self._carry_limit = min(_MAX_CARRY, self._plain_limit)
        self._reconnect = reconnect
        self._on_restart = on_restart
        self._max_restarts = max_restarts
        self.restarts = 0
        self._framer = SSEDecoder(max_event_size=max_event_size)
        self._framer_fed = False  # until then the framer holds nothing (no at_boundary call)
        self._pending: deque[CompletionChunk] = deque()
        self._pending_error: AsyncClientError | None = None
        # Without accumulation memory stays flat however long the stream, at the price of
        # completion_so_far, final_completion() and partial output on errors.
        self._accumulator = CompletionAccumulator() if accumulate else None
        self._carry = b""  # plain path: the start of an event whose end has not arrived
        self._crlf_end = b""  # plain path: how much of its CRLF blank line the carry holds
        self._crlf = False  # plain path: the backlog's line ends are CRLF (else LF)
        self._backlog = b""  # plain path: complete events not decoded yet
        self._backlog_at = 0
        self._backlog_end = 0
        self._started = False
        self._done = response is None
        self._complete = response is None  # [DONE] seen (or a whole JSON answer)
        self._closed = response is None
        if info is None:
            info = ResponseInfo(
                status_code=response.status if response is not None else 200,
                headers=response.headers if response is not None else {},
                request_id=request_id_from(response.headers) if response is not None else None,
            )
        self.info = info
        self.status_code = info.status_code
        self.headers = info.headers
        self.request_id = info.request_id
        # Deadlines are loop times. `idle` restarts only when content arrives, never on a
        # comment or keep-alive, so a server that only sends keep-alives still times out.
        loop = asyncio.get_running_loop()
        self._loop_time = loop_clock(loop)  # read on every read with content
        self._idle = timeout.idle if timeout is not None else None
        first_event = timeout.first_event if timeout is not None else None
        if first_event is None:
            first_event = self._idle
        self._first_event = first_event
        self._total_deadline = total_deadline
        # The content deadline is `_last_content + _content_limit`: first_event from the
        # start, idle from the first content event on. A read with content only stores the
        # time; the deadline is worked out when the timer is armed or fires.
        self._seen_content = False
        self._content_limit = first_event
        self._last_content = self._loop_time()
        self._untimed = first_event is None and total_deadline is None  # reads need no timer
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._reading = False  # a read under a deadline is in progress
        self._deadline_passed = False
        if chunks:
            self._queue(chunks)

    # -- iteration ----------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> CompletionChunk:
        # The whole per-read path lives in this one coroutine (no helper coroutines, no timer
        # per read): with one event per read, as a live token stream sends them, each extra
        # await layer or timer handle is a visible share of the client's CPU per chunk.
        pending = self._pending
        if pending:
            return pending.popleft()
        while not pending:
            if self._done:  # (also set whenever an error is pending)
                error = self._pending_error
                if error is None:
                    await self._finish()
                    raise StopAsyncIteration
                self._pending_error = None
                if await self._restart(error):
                    continue
                await self.aclose()
                raise error
            try:
                if self._backlog:
                    self._decode_backlog_slice()
                else:
                    if self._untimed:
                        data = await self._read_chunk()
                    else:
                        if self._timer is None:
                            self._arm_timer(self._deadline())
                        self._reading = True
                        data = await self._read_chunk()
                        self._reading = False
                        if self._deadline_passed:
                            # Data came in the same loop turn as the deadline: too late, as
                            # with asyncio.timeout (and the connection is interrupted).
                            raise _DeadlinePassedError
                    self._consume(data)
            except BaseException as exc:
                self._reading = False
                failure = self._read_error(exc)
                if isinstance(failure, IncompleteStreamError):
                    if self._closed:
                        # aclose() from another task broke the read: a deliberate end.
                        raise StopAsyncIteration from None
                    if await self._restart(failure):
                        continue
                await self.aclose()
                if failure is exc:
                    raise
                if isinstance(failure, StreamTimeoutError):
                    raise failure from None  # our own timer interrupted the read: no cause
                raise failure from exc
            if pending:
                self._last_content = self._loop_time()
                if not self._seen_content:
                    self._first_content()
        return pending.popleft()

    def _read_error(self, exc: BaseException) -> BaseException:
        """What a failed read means to the caller: the stream's own timeout (our timer
        interrupted the read), a broken stream, or ``exc`` itself (a cancellation above
        all: the deadline never turns one into a timeout)."""
        if isinstance(exc, _DeadlinePassedError) and self._deadline_passed:
            phase = self._deadline_phase()
            url = self._response.url if self._response is not None else None
            return self._with_partial(
                StreamTimeoutError(_TIMEOUT_MESSAGES[phase], phase=phase, url=url)
            )
        if isinstance(exc, APIConnectionError):
            return self._with_partial(
                IncompleteStreamError(f"The stream broke before it ended: {exc.message}")
            )
        if isinstance(exc, ClientClosedError):
            return self._with_partial(
                IncompleteStreamError("The client was closed while this stream was open.")
            )
        return exc

    # -- deadlines: one lazily re-armed timer per stream ---------------------------------------
    #
    # An `asyncio.timeout` around every read creates, schedules and cancels a timer handle
    # per read: several microseconds, most of the client's CPU per chunk on a live token
    # stream. The idle deadline only ever moves later as content arrives, so one timer is
    # enough, and a read with content only stores the time it arrived. A read arms the timer
    # when none is armed (the deadline is worked out then); the first content event re-arms
    # it when idle's deadline comes before first_event's. When it fires early (content came
    # since), it re-arms itself for the current deadline; when the deadline has passed during
    # a read, it interrupts the response (the read in progress fails), which `_read_error`
    # turns into StreamTimeoutError. No task is cancelled, so there is no cancellation to
    # take back, and none from outside to confuse with ours.

    def _arm_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        # A weak reference: a pending timer must not keep an abandoned stream (and its
        # connection) alive until the deadline; __del__ releases it.
        self._timer = asyncio.get_running_loop().call_at(when, _timer_fired, weakref.ref(self))

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        response = self._response
        if not self._reading or self._closed or response is None:
            return  # between reads: the next read arms the timer again
        deadline = self._deadline()
        if self._loop_time() < deadline:
            self._arm_timer(deadline)
            return
        self._deadline_passed = True
        response.interrupt(_DeadlinePassedError())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf

    async def _restart(self, error: AsyncClientError) -> bool:
        """Re-send the request after a broken stream, if the caller opted in (``on_restart``).

        The output received so far is discarded (``final_completion`` covers only the new
        attempt) and the callback is told first, with what was discarded, so a caller that
        displayed text can take it back: text is never silently duplicated.
        """
        if (
            self._closed
            or self._on_restart is None
            or self._reconnect is None
            or not isinstance(error, IncompleteStreamError)
            or self.restarts >= self._max_restarts
            # The total deadline is for the whole call: a restart would start out past it.
            or (isinstance(error, StreamTimeoutError) and error.phase == "total")
        ):
            return False
        accumulator = self._accumulator
        discarded = accumulator.snapshot() if accumulator is not None else None
        if self._response is not None:
            self._response.release()
        self.restarts += 1
        logger.warning(
            "Stream broke (%s); restarting it (restart %d of %d), discarding what it sent.",
            error.message,
            self.restarts,
            self._max_restarts,
        )
        try:
            self._response = await self._reconnect()
            self._read_chunk = self._response.read_chunk
        except AsyncClientError as exc:
            # The restart failed: report the break itself, which carries the partial output.
            self._closed = True
            self._cancel_timer()
            raise error from exc
        except BaseException:
            self._closed = True
            raise
        self._framer = SSEDecoder(max_event_size=self._max_event_size)
        self._framer_fed = False
        self._carry = self._backlog = self._crlf_end = b""
        self._started = False
        self._complete = False
        if accumulator is not None:
            self._accumulator = CompletionAccumulator()
        self._done = False
        self._seen_content = False
        self._deadline_passed = False  # the deadline that passed was the old response's
        self._content_limit = self._first_event
        self._last_content = self._loop_time()
        self._untimed = self._first_event is None and self._total_deadline is None
        self._cancel_timer()  # the next read arms it for the new deadline
        self._on_restart(StreamRestart(self.restarts, error, discarded))
        return True

    def _first_content(self) -> None:
        """first_event is met: from now on the content deadline is idle's (maybe none)."""
        self._seen_content = True
        self._content_limit = self._idle
        if self._idle is None and self._total_deadline is None:
            self._untimed = True
            self._cancel_timer()
        elif self._timer is not None and self._deadline() < self._timer_at:
            self._arm_timer(self._deadline())  # idle is shorter than first_event

    def _deadline(self) -> float:
        """What a read is under now: the earlier of the content deadline and ``total``
        (only called while one of them is set)."""
        limit = self._content_limit
        total = self._total_deadline
        if limit is None:
            assert total is not None
            return total
        content = self._last_content + limit
        return content if total is None or content < total else total

    def _deadline_phase(self) -> str:
        """Which deadline a read was under: the earlier one, ``total`` on a tie."""
        limit = self._content_limit
        total = self._total_deadline
        if total is not None and (limit is None or total <= self._last_content + limit):
            return "total"
        return "idle" if self._seen_content else "first_event"

    # -- decoding: the plain fast path and the general framer --------------------------------
    #
    # Nearly every OpenAI-compatible server sends "plain" streams: events that are one
    # `data: {json}` line each, every line ended the same way, LF or CRLF. For those, the
    # complete events of a read are split on the known separator in one call and their
    # payloads decoded by `map`, with no event objects and no Python frame per event; a read
    # that completes exactly one event (a live token stream's usual read) decodes it inline.
    # Anything else (a lone CR or LF, a mix of the two styles, comments, `event:`/`id:`
    # lines, multi-line data, a payload that does not decode) goes to the general SSE
    # framer, which produces the exact events and errors. Each read picks its path anew,
    # whenever the framer holds nothing.

    def _consume(self, data: bytes) -> None:
        while True:
            carry = self._carry
            crlf_end = self._crlf_end
            if crlf_end:
                # A CRLF event's blank line is arriving (the carry is the event, `crlf_end`
                # what has come of its line ends), or the last one ended at a read's final CR
                # (no carry): a read that goes on with it costs a comparison, however the
                # reads split a CR from its LF.
                rest = _CRLF_END_REST[crlf_end]
                if not data.startswith(rest):
                    if not carry:  # no LF after that final CR: nothing to drop
                        self._crlf_end = b""
                        continue
                    if data and rest.startswith(data):  # more of the blank line, not all yet
                        self._carry = carry + data
                        self._crlf_end = crlf_end + data
                    else:
                        self._feed_framer(self._take_carry() + data, at_end=not data)
                    return
                self._carry = self._crlf_end = b""
                after = data[len(rest) :]
                if not carry:  # the LF was that final CR's other half
                    if not after:
                        return
                    if (
                        _LF not in after
                        and after.find(_CR) == len(after) - 1
                        and len(after) <= self._carry_limit
                    ):
                        # The next event's data line, up to its CR (see below): kept.
                        self._carry = after
                        self._crlf_end = b"\r"
                        return
                    data = after
                    continue
                if not carry.startswith(_DATA_PREFIX):
                    self._hand_to_framer(carry + data)
                    return
                # The blank line's CR completes the event: it is never held back for an LF.
                event = carry
                end = len(carry) - len(crlf_end)
            else:
                if (
                    carry
                    and _LF not in data
                    and _CR not in data
                    and data
                    and len(carry) + len(data) <= self._carry_limit
                ):
                    # Still inside one event (small reads): nothing completes without an LF.
                    self._carry = carry + data
                    return
                if not data or (self._framer_fed and not self._framer.at_boundary):
                    self._feed_framer(self._take_carry() + data, at_end=not data)
                    return
                if _CR in data:
                    if (
                        not carry
                        and _LF not in data
                        and data.find(_CR) == len(data) - 1
                        and len(data) <= self._carry_limit
                    ):
                        # A CRLF event's data line up to its CR (a live stream whose reads
                        # split CR from LF): the event has begun, nothing more to see yet.
                        self._carry = data
                        self._crlf_end = b"\r"
                    else:
                        self._consume_crlf(carry, data)
                    return
                self._carry = b""
                buffer = carry + data if carry else data
                # A read larger than max_event_size goes to the framer, which checks each one.
                cut = buffer.rfind(_LF_BLANK_LINE) if len(buffer) <= self._plain_limit else -2
                if cut == -1 and len(buffer) <= _MAX_CARRY:
                    self._carry = buffer  # no complete event yet
                    return
                if cut < 0 or not buffer.startswith(_DATA_PREFIX):
                    self._hand_to_framer(buffer)
                    return
                self._carry = buffer[cut + 2 :]
                if buffer.find(_LF) != cut:
                    self._crlf = False
                    self._start_backlog(buffer, cut)
                    return
                # Exactly one event (a live token stream sends one per read): decoded here,
                # inline, as the CRLF one below (this is the hottest path).
                body = buffer[6:cut]
                if body == DONE:
                    self._done = self._complete = True
                    return
                try:
                    chunk = decode_chunk(body)
                except DECODE_ERRORS:
                    self._hand_to_framer(buffer)  # not plain after all: the framer finds why
                    return
                accumulator = self._accumulator
                if accumulator is not None:
                    accumulator.add(chunk)
                self._pending.append(chunk)
                if not self._started:
                    self._started = True
                    self._framer.mark_started()
                return
            # Exactly one complete CRLF event, `event[:end]`: decoded here, inline.
            body = event[6:end]
            if body == DONE:
                self._done = self._complete = True
                return
            try:
                chunk = decode_chunk(body)
            except DECODE_ERRORS:
                # Not plain after all: the framer takes all of it and finds out why.
                self._hand_to_framer(event + rest + after)
                return
            accumulator = self._accumulator
            if accumulator is not None:
                accumulator.add(chunk)
            self._pending.append(chunk)
            if not self._started:
                self._started = True
                self._framer.mark_started()
            # A CRLF event ended at its blank line's CR: an LF next is that CR's other half.
            self._crlf_end = _CRLF_BLANK_CR
            if not after:
                return
            data = after

    def _consume_crlf(self, carry: bytes, data: bytes) -> None:
        """The plain path for a read with a CR in it: every line end must be CRLF."""
        if carry and _LF in carry:
            self._hand_to_framer(carry + data)  # LF line ends, then a CR: a mix
            return
        self._carry = b""
        buffer = carry + data if carry else data
        if len(buffer) > self._plain_limit:
            cut = -2
        elif buffer.endswith(_CRLF_BLANK_CR):
            cut = len(buffer) - 3  # the last event is complete at the read's final CR
        else:
            cut = buffer.rfind(_CRLF_BLANK_LINE)
        if cut == -1 and len(buffer) <= _MAX_CARRY:
            crlf_end = _crlf_unfinished_end(buffer)
            if crlf_end is None:
                self._hand_to_framer(buffer)
            else:
                self._carry = buffer  # no complete event yet
                self._crlf_end = crlf_end
            return
        if cut < 0 or not buffer.startswith(_DATA_PREFIX):
            self._hand_to_framer(buffer)
            return
        if buffer.find(_CR) == cut and buffer.find(_LF) == cut + 1:
            # Exactly one event: it goes the way of a CRLF event completed across reads.
            self._carry = buffer[: cut + 1]
            self._crlf_end = b"\r"
            self._consume(buffer[cut + 1 :])
            return
        carry = buffer[cut + 4 :]
        if carry:
            # Unlike an LF one, a CRLF carry could hold a complete event (`\n\n`, `\r\r`, ...):
            # it must be the start of one plain CRLF event.
            crlf_end = _crlf_unfinished_end(carry)
            if crlf_end is None:
                self._hand_to_framer(buffer)
                return
            self._carry = carry
            self._crlf_end = crlf_end
        elif cut + 3 == len(buffer):
            self._crlf_end = _CRLF_BLANK_CR  # an LF next is the final CR's other half
        self._crlf = True
        self._start_backlog(buffer, cut)

    def _take_carry(self) -> bytes:
        """The plain path's unfinished bytes, for the framer to continue."""
        carry = self._carry
        self._carry = self._crlf_end = b""
        return carry

    def _hand_to_framer(self, buffer: bytes) -> None:
        """The framer continues from ``buffer``, which already includes the carry."""
        self._carry = self._crlf_end = b""
        self._feed_framer(buffer, at_end=False)

    def _start_backlog(self, buffer: bytes, end: int) -> None:
        """Decode the complete events of ``buffer[:end]`` (more than one), slice by slice."""
        if not self._started:
            self._started = True
            self._framer.mark_started()
        self._backlog = buffer
        self._backlog_at = 0
        self._backlog_end = end
        self._decode_backlog_slice()

    def _decode_backlog_slice(self) -> None:
        """Decode the next slice of complete plain events (about 16 KiB of them).

        Slicing keeps a large read (on loopback a whole stream can arrive at once) from
        becoming thousands of objects at once, which would fall out of the CPU caches before
        the caller reaches them.
        """
        backlog = self._backlog
        start = self._backlog_at
        end = self._backlog_end
        crlf = self._crlf
        blank_line = _CRLF_BLANK_LINE if crlf else _LF_BLANK_LINE
        if end - start > _SLICE_BYTES:
            cut = backlog.find(blank_line, start + _SLICE_BYTES, end)
            if cut >= 0:
                end = cut
        if end >= self._backlog_end:
            self._backlog = b""
        else:
            self._backlog_at = end + len(blank_line)
        chunks = None
        if backlog.startswith(_DATA_PREFIX, start):
            payloads = backlog[start + 6 : end].split(blank_line + _DATA_PREFIX)
            for payload in payloads:
                if _LF in payload or (crlf and _CR in payload):
                    break  # a multi-line event, a comment, an `id:` line: the framer's job
            else:
                chunks = self._decode_plain(payloads)
        if chunks is None:
            # Not plain after all: the framer takes over from this slice, exactly.
            self._backlog = b""
            self._hand_to_framer(backlog[start : self._backlog_end + len(blank_line)] + self._carry)
        elif chunks:
            self._queue(chunks)

    def _decode_plain(self, payloads: list[bytes]) -> list[CompletionChunk] | None:
        """One chunk per event's data, or ``None`` when one does not decode as exactly one
        chunk (the framer then finds out which and why)."""
        if payloads[-1] == DONE:
            self._done = self._complete = True
            payloads.pop()
            if not payloads:
                return []
        try:
            return decode_chunks(payloads)
        except DECODE_ERRORS:
            self._done = self._complete = False
            return None

    def _feed_framer(self, data: bytes, *, at_end: bool) -> None:
        framer = self._framer
        self._framer_fed = True
        try:
            events = framer.feed(data) if data else []
            if at_end:
                events += framer.flush()
        except EventTooLargeError as exc:
            # Events completed before the oversized one still reach the caller, then this.
            self._done = True
            if exc.events:
                self._handle_events(exc.events)
            if not self._complete:  # an oversized event after [DONE] is ignored like others
                error = StreamDecodeError(str(exc))
                error.__cause__ = exc
                self._fail(error)
            return
        self._started = True
        if events:
            self._handle_events(events)
        if at_end and not self._done:
            self._done = True
            self._fail(
                IncompleteStreamError(
                    "The stream ended before `data: [DONE]`: the server closed the connection "
                    "without finishing the response."
                )
            )

    def _handle_events(self, events: list[ServerSentEvent]) -> None:
        payloads: list[bytes] = []
        for event in events:
            if event.event != "message":
                if event.event == "error":
                    self._decode_and_queue(payloads)
                    payloads = []
                    self._fail(_server_error(event.data))
                    return
                continue  # unknown event types (ping, ...) are not part of the completion
            data = event.data
            if data == DONE:
                self._done = self._complete = True
                break
            if data:
                payloads.append(data)
        self._decode_and_queue(payloads)

    def _decode_and_queue(self, payloads: list[bytes]) -> None:
        if not payloads:
            return
        try:
            chunks = decode_chunks(payloads)
        except DECODE_ERRORS:
            chunks = []
            for data in payloads:
                try:
                    chunks.append(decode_chunk(data))
                except DECODE_ERRORS as exc:
                    self._queue(chunks)
                    self._fail(_bad_event(data, exc))
                    return
        self._queue(chunks)

    def _queue(self, chunks: list[CompletionChunk]) -> None:
        accumulator = self._accumulator
        if accumulator is not None:
            accumulator.add_many(chunks)
        self._pending.extend(chunks)

    def _fail(self, error: AsyncClientError) -> None:
        """Stop reading; ``error`` is raised once every chunk before it has been yielded."""
        self._done = True
        if self._pending_error is None:
            self._pending_error = (
                self._with_partial(error) if isinstance(error, StreamError) else error
            )

    def _with_partial(self, error: StreamError) -> StreamError:
        if self._accumulator is not None:
            error.partial = self._accumulator.snapshot()
        return error

    # -- conveniences -------------------------------------------------------------------------

    async def text_deltas(self, index: int = 0) -> AsyncIterator[str]:
        """The new text of choice ``index`` from each chunk, skipping empty pieces."""
        async for chunk in self:
            for choice in chunk.choices:
                if choice.index == index and choice.text:
                    yield choice.text

    async def final_completion(self) -> Completion:
        """Read the rest of the stream and return the whole completion.

        The result has one choice per index with its full text, its finish reason and merged
        logprobs, and the usage of the last chunk that carried usage.
        """
        if self._accumulator is None:
            raise RuntimeError("final_completion() needs a stream made with accumulate=True.")
        async for _ in self:
            pass
        if not self._complete:
            raise self._with_partial(
                IncompleteStreamError(
                    "The stream was closed before `data: [DONE]`: the completion is partial."
                )
            )
        completion = self._accumulator.snapshot()
        if completion is None:
            raise IncompleteStreamError("The stream ended without any completion chunk.")
        return completion

    @property
    def completion_so_far(self) -> Completion | None:
        """Everything received so far, as a completion (``None`` before the first chunk, or
        when the stream does not accumulate)."""
        return self._accumulator.snapshot() if self._accumulator is not None else None

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def _finish(self) -> None:
        """After ``[DONE]``: drain what is left so the connection can be reused, then release."""
        response = self._response
        if self._closed or response is None:
            return
        try:
            if not response.at_eof:
                received = 0
                async with asyncio.timeout(_DRAIN_SECONDS):
                    while received <= _DRAIN_BYTES:
                        piece = await response.read_chunk()
                        if not piece:
                            break
                        received += len(piece)
        except (TimeoutError, AsyncClientError):
            pass  # the drain is best effort: the completion is whole either way
        finally:
            # Also on cancellation mid-drain: the connection is released either way.
            await self.aclose()

    async def aclose(self) -> None:
        """Release the connection. Safe to call any number of times."""
        if self._closed:
            return
        self._closed = True
        self._done = True
        self._cancel_timer()
        if self._response is not None:
            self._response.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._cancel_timer()
            if self._response is not None:
                self._response.release()
            warnings.warn(
                "CompletionStream was not closed: use `async with` or call `aclose()`. "
                "Its connection has been released.",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )


class _DeadlinePassedError(Exception):
    """Raised into a read by the stream's own timer; never leaves the stream."""


def _timer_fired(stream_ref: weakref.ref[CompletionStream]) -> None:
    stream = stream_ref()
    if stream is not None:
        stream._on_timer()


async def _no_more_bytes() -> bytes:
    return b""


def _crlf_unfinished_end(data: bytes) -> bytes | None:
    """The line ends ``data`` finishes with, if it can be the start of one plain CRLF event
    (``b""`` when it has no line end yet); ``None`` if it cannot."""
    cr = data.find(_CR)
    if cr < 0:
        return None if _LF in data else b""
    end = data[cr:]
    return end if end in _CRLF_UNFINISHED_ENDS and data.find(_LF, 0, cr) < 0 else None


def _server_error(data: bytes) -> ServerStreamError:
    detail = decode_error(data) if data else None
    message = detail.message if detail is not None and detail.message else excerpt(data)
    return ServerStreamError(f"The server reported an error mid-stream: {message}", error=detail)


def _bad_event(data: bytes, exc: Exception) -> StreamError:
    detail = decode_error(data)
    if detail is not None:
        return _server_error(data)
    path = validation_error_path(exc) if isinstance(exc, msgspec.ValidationError) else None
    return StreamDecodeError(
        f"A stream event could not be decoded as a completion chunk: {exc}. Data: {excerpt(data)}",
        body=data,
        path=path,
    )
