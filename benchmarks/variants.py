"""Prototypes measured by the suite, not part of ``asyncclient``.

1. :func:`lazy_decode_completion`: lazy logprobs found by byte search. Measured and NOT
   adopted (see below).
2. :class:`SharedDeadlines`: one timer per client instead of one ``asyncio.timeout`` per
   request; measured in the overhead ladder as a proposal.
3. :class:`LazyTimerStream`: one timer per stream instead of one per network read; measured
   in the stream design tables and the overhead ladder as a proposal.

About the first: the library ships lazy logprobs as the exact path only
(:func:`asyncclient._decode.decode_completion_lazy`, public as
``client.completions.create_lazy``): msgspec skips each choice's logprobs as ``msgspec.Raw``,
which still scans every byte of them. This prototype goes further: it finds the logprobs
object with byte searches (``memchr``/``memrchr``), never parsing its bytes, and keeps a
zero-copy view of it. It is many times faster on a large body, but it decides where the
object ends from the bytes *after* it, not by parsing it, so it cannot be shown exact without
the parse it avoids. It stays here so the benchmark shows the trade-off; it returns the
library's own :class:`~asyncclient.LazyCompletion`, and takes the library's exact path
whenever anything is unusual.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Any, Final, Self

import msgspec

from asyncclient._decode import decode_completion_lazy
from asyncclient._exceptions import APIConnectionError, IncompleteStreamError, StreamTimeoutError
from asyncclient._models import LazyCompletion
from asyncclient._streaming import _TIMEOUT_MESSAGES, CompletionStream
from asyncclient._transport import Response

__all__ = [
    "LAZY_MIN_BYTES",
    "DeadlineScope",
    "LazyTimerStream",
    "SharedDeadlines",
    "lazy_decode_completion",
]

_MARK: Final = msgspec.Raw(b"0")
# Below this size eager decoding costs a few microseconds: not worth a byte search.
LAZY_MIN_BYTES: Final = 16 * 1024


class _AnyObject(msgspec.Struct):
    """Decoding into this only checks JSON syntax (every field is unknown, so skipped)."""


_cut_decoder: Final = msgspec.json.Decoder(LazyCompletion, strict=False)
_syntax_check: Final = msgspec.json.Decoder(_AnyObject)

_KEY: Final = b'"logprobs":{'
# The context a choice's logprobs value sits in: $.choices[i].logprobs.
_CHOICE_CONTEXT: Final = b'{"choices":[{"logprobs":0'
_MAX_CANDIDATES: Final = 32
_ARRAYS_IN_LOGPROBS: Final = 4


def _span_end(body: bytes, start: int) -> int:
    """End (exclusive) of the logprobs object starting at ``start``, or -1 if unsure.

    The search runs backwards from the end of the body with ``rfind`` (memrchr: it never
    parses the logprobs bytes, which is the whole point). A candidate end is a ``}`` right
    after a ``]`` (a logprobs object ends with one of its arrays) such that the rest of the
    body is valid JSON in a choice's context.
    """
    end = len(body)
    for _ in range(_MAX_CANDIDATES):
        end = body.rfind(b"}", start, end)
        if end < 0:
            return -1
        if body[end - 1] != 0x5D:  # "]"
            continue
        try:
            _syntax_check.decode(_CHOICE_CONTEXT + body[end + 1 :])
        except msgspec.DecodeError:
            continue
        return end + 1
    return -1


def _single_logprobs_object(body: bytes, start: int, end: int) -> bool:
    # One logprobs object holds exactly four arrays (tokens, token_logprobs, top_logprobs,
    # text_offset; top_logprobs holds objects). More "[" means the span swallowed further
    # choices, or a token contains "[": either way take the exact path.
    position = start
    for _ in range(_ARRAYS_IN_LOGPROBS):
        position = body.find(b"[", position, end) + 1
        if position == 0:
            return True
    return body.find(b"[", position, end) < 0


def lazy_decode_completion(body: bytes) -> LazyCompletion:
    """Decode a body, leaving each choice's logprobs undecoded (prototype, not adopted).

    Fast path (one choice with logprobs, the common case): locate the logprobs object with
    byte searches, decode the body with it cut out, and keep a zero-copy view of it. Any
    doubt falls back to the library's exact path, ``decode_completion_lazy``.
    """
    start = body.find(_KEY) if len(body) >= LAZY_MIN_BYTES else -1
    if start >= 0:
        start += len(_KEY) - 1
        end = _span_end(body, start)
        if end > 0 and _single_logprobs_object(body, start, end):
            try:
                completion = _cut_decoder.decode(body[:start] + b"0" + body[end:])
            except (msgspec.DecodeError, msgspec.ValidationError):
                completion = None
            if completion is not None:
                marked = [c for c in completion.choices if c.raw_logprobs == _MARK]
                if len(marked) == 1:
                    marked[0].raw_logprobs = msgspec.Raw(memoryview(body)[start:end])
                    return completion
    return decode_completion_lazy(body)


# -- one timer per client instead of one per request ----------------------------------------


class DeadlineScope:
    """``async with deadlines.scope(seconds) as scope:`` behaves like ``asyncio.timeout``
    (``TimeoutError`` when the deadline passes, ``scope.reschedule(when)``), but costs a set
    insertion and removal instead of creating and cancelling timer handles."""

    __slots__ = ("_cancelling", "_owner", "_task", "expired", "when")

    def __init__(self, owner: SharedDeadlines, when: float | None) -> None:
        self._owner = owner
        self.when = when
        self.expired = False
        self._cancelling = 0
        self._task: asyncio.Task[object] | None = None

    def reschedule(self, when: float | None) -> None:
        self.when = when
        if when is not None and when < self._owner._next:
            self._owner._wake_at(when)

    async def __aenter__(self) -> Self:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline scope needs a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._owner._scopes.add(self)
        when = self.when
        if when is not None and when < self._owner._next:
            self._owner._wake_at(when)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner._scopes.discard(self)
        if self.expired and exc_type is asyncio.CancelledError:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling:
                raise TimeoutError from exc


class SharedDeadlines:
    """The deadlines of all of a client's requests, served by a single timer.

    The timer is set for the earliest deadline known when it was set; a later deadline
    (the usual case: every request gets the same generous ``headers`` timeout) only joins
    the set. When the timer fires it cancels the overdue tasks, and sets itself for the
    earliest deadline still pending (a scan of the requests in flight, once per firing).
    """

    __slots__ = ("_handle", "_loop", "_next", "_scopes")

    def __init__(self) -> None:
        self._scopes: set[DeadlineScope] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._next = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def scope(self, seconds: float | None) -> DeadlineScope:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return DeadlineScope(self, loop.time() + seconds if seconds is not None else None)

    def _wake_at(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._next = when
        loop = self._loop
        assert loop is not None
        self._handle = loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        self._next = math.inf
        assert self._loop is not None
        now = self._loop.time()
        earliest = math.inf
        for scope in self._scopes:
            when = scope.when
            if when is None or scope.expired:
                continue
            if when <= now:
                scope.expired = True
                assert scope._task is not None
                scope._task.cancel()
            elif when < earliest:
                earliest = when
        if earliest < math.inf:
            self._wake_at(earliest)


# -- a stream whose read deadline costs no timer per read -----------------------------------


class LazyTimerStream(CompletionStream):
    """:class:`CompletionStream` with one lazily re-armed timer per stream for its deadlines.

    ``CompletionStream._read`` enters ``asyncio.timeout_at`` around every network read: a
    timer handle created, pushed on the loop's heap and cancelled per read, several
    microseconds each, which is most of the client's CPU per chunk when each read holds one
    event (a live token stream). The idle deadline only moves later as content arrives, so
    one timer suffices: a read re-arms it only when its deadline is *earlier* than the
    pending timer's; when the timer fires before the real deadline it re-arms itself for it;
    at or after the deadline it cancels the read in progress, which becomes the same
    :class:`StreamTimeoutError` (the cancellation is taken back with ``uncancel`` exactly as
    ``asyncio.timeout`` does, so an outside cancellation still propagates).
    """

    def __init__(self, response: Response | None, **options: Any) -> None:
        super().__init__(response, **options)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._deadline = math.inf
        self._reader: asyncio.Task[Any] | None = None
        self._fired = False
        self._cancelling_before = 0

    async def _read(self) -> bytes:
        content = self._content_deadline
        total = self._total_deadline
        if content is None and total is None:
            return await super()._read()  # no deadline: no timer either
        # The same choice as _next_deadline (the earlier one; total on a tie), inline.
        if total is not None and (content is None or total <= content):
            deadline = total
        else:
            assert content is not None
            deadline = content
        self._deadline = deadline
        if deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)
        self._reader = asyncio.current_task()
        response = self._response
        assert response is not None
        try:
            return await response.read_chunk()
        except asyncio.CancelledError as exc:
            reader = self._reader
            if self._fired and reader is not None:
                self._fired = False
                if reader.uncancel() <= self._cancelling_before:
                    _, phase = self._next_deadline()
                    raise self._with_partial(
                        StreamTimeoutError(_TIMEOUT_MESSAGES[phase], phase=phase, url=response.url)
                    ) from exc
            raise
        except APIConnectionError as exc:
            raise self._with_partial(
                IncompleteStreamError(f"The stream broke before it ended: {exc.message}")
            ) from exc
        finally:
            self._reader = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        reader = self._reader
        if reader is None:
            return  # between reads: the next read arms the timer again
        if self._loop_time() < self._deadline:
            self._timer_at = self._deadline
            self._timer = asyncio.get_running_loop().call_at(self._deadline, self._on_timer)
            return
        # Remember the outside cancellations so far: only ours is taken back.
        self._cancelling_before = reader.cancelling()
        self._fired = True
        reader.cancel()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = math.inf
        await super().aclose()
