"""Prototypes of decode-path changes, measured side by side with the library as it is.

Nothing here is used by ``asyncclient``: these are candidate designs. Each one is measured by
``python -m benchmarks`` against the current code, and the report names the change to make.

1. :func:`lazy_decode_completion`: opt-in lazy logprobs for large bodies.
2. :func:`fused_stream_decode`: the sans-IO core of the idea below: all complete ``data:``
   events of one read become a single JSON array, with no event object per event.
3. :class:`FusedCompletionStream`: ``CompletionStream`` with that fast path for plain
   streams, decoded in slices of about 16 KiB as the caller consumes them, and
   :class:`LeanAccumulator` (one call per slice, linear-time text accumulation).
"""

from __future__ import annotations

import asyncio
import types
from typing import Any, Final

import msgspec

from asyncclient import _streaming
from asyncclient._accumulate import _COMPACT_AT, CompletionAccumulator, _ChoiceState
from asyncclient._exceptions import (
    APIConnectionError,
    IncompleteStreamError,
    StreamDecodeError,
    StreamTimeoutError,
)
from asyncclient._models import Completion, CompletionChunk, CompletionUsage, Created, Logprobs
from asyncclient._sse import EventTooLargeError
from asyncclient._streaming import CompletionStream

__all__ = [
    "FusedCompletionStream",
    "LazyChoice",
    "LazyCompletion",
    "LeanAccumulator",
    "fused_stream_decode",
    "lazy_decode_completion",
]

_NULL: Final = msgspec.Raw(b"null")
_MARK: Final = msgspec.Raw(b"0")
# Below this size eager decoding costs a few microseconds: not worth a byte search.
LAZY_MIN_BYTES: Final = 16 * 1024


class LazyChoice(msgspec.Struct, kw_only=True, gc=False):
    """A choice whose logprobs stay as raw JSON until :meth:`logprobs` is called."""

    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    raw_logprobs: msgspec.Raw = msgspec.field(default=_NULL, name="logprobs")

    def logprobs(self) -> Logprobs | None:
        """Decode the logprobs now (each call decodes again: keep the result)."""
        raw = self.raw_logprobs
        if raw == _NULL:
            return None
        return _logprobs_decoder.decode(raw)


class LazyCompletion(msgspec.Struct, kw_only=True, gc=False):
    id: str
    choices: list[LazyChoice]
    model: str
    object: str
    created: Created | None = None
    system_fingerprint: str | None = None
    usage: CompletionUsage | None = None


class _AnyObject(msgspec.Struct):
    """Decoding into this only checks JSON syntax (every field is unknown, so skipped)."""


_lazy_decoder: Final = msgspec.json.Decoder(LazyCompletion, strict=False)
_logprobs_decoder: Final = msgspec.json.Decoder(Logprobs, strict=False)
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
    """Decode a body, leaving each choice's logprobs undecoded.

    Fast path (one choice with logprobs, the common case): locate the logprobs object with
    byte searches, decode the body with it cut out, and keep a zero-copy view of it. Any
    doubt falls back to the exact path: msgspec skipping the logprobs as ``Raw``, which
    still has to scan every byte of them.
    """
    start = body.find(_KEY) if len(body) >= LAZY_MIN_BYTES else -1
    if start >= 0:
        start += len(_KEY) - 1
        end = _span_end(body, start)
        if end > 0 and _single_logprobs_object(body, start, end):
            try:
                completion = _lazy_decoder.decode(body[:start] + b"0" + body[end:])
            except msgspec.DecodeError:
                completion = None
            if completion is not None:
                marked = [c for c in completion.choices if c.raw_logprobs == _MARK]
                if len(marked) == 1:
                    marked[0].raw_logprobs = msgspec.Raw(memoryview(body)[start:end])
                    return completion
    return _lazy_decoder.decode(body)


def fused_stream_decode(
    buffer: bytes, decode_list: msgspec.json.Decoder[list[object]]
) -> tuple[list[object], bytes, bool] | None:
    """Decode every complete event in ``buffer`` with one decoder call, if it is plain.

    "Plain" is the shape every OpenAI-compatible server sends: LF line ends, events that
    are a single ``data: `` line, no comments, ids or event names. Then the complete part
    ``data: A\\n\\ndata: B\\n\\n`` becomes ``[A,B]`` with one ``replace``: no event object,
    no per-event slice. Returns ``(items, rest, done)`` or ``None`` when the buffer is not
    plain (the caller then uses the general framer).
    """
    if b"\r" in buffer:
        return None
    cut = buffer.rfind(b"\n\n")
    if cut < 0:
        return [], buffer, False
    complete = buffer[: cut + 2]
    rest = buffer[cut + 2 :]
    if not complete.startswith(b"data: ") or b"\r" in complete:
        return None
    body = complete[6:-2]
    done = False
    if body.endswith(b"data: [DONE]") or body == b"[DONE]":
        done = True
        body = body[: -len(b"[DONE]")]
        body = body[: -len(b"\n\ndata: ")] if body else body
    joined = body.replace(b"\n\ndata: ", b",")
    # A single-line event each: any newline left means a multi-line event or another field.
    if b"\n" in joined:
        return None
    if not joined:
        return [], rest, done
    return decode_list.decode(b"[" + joined + b"]"), rest, done


# -- a proposed CompletionStream ------------------------------------------------------------

_chunk_decoder: Final = msgspec.json.Decoder(CompletionChunk, strict=False)
_chunk_list_decoder: Final = msgspec.json.Decoder(list[CompletionChunk], strict=False)
_SEPARATOR: Final = b"\n\n"
_PREFIX: Final = b"data: "
_JOIN: Final = b"\n\ndata: "
_DONE_EVENT: Final = b"data: [DONE]"
DONE: Final = b"[DONE]"
# The fast path holds an unfinished event between reads by concatenation; past this size
# the framer (which grows a bytearray) is the better tool, so the stream hands over to it.
_MAX_CARRY: Final = 64 * 1024
# Complete events are decoded this many bytes at a time (about 80 typical chunks): large
# enough to amortise the decoder call, small enough that the objects stay in cache.
_SLICE_BYTES: Final = 16 * 1024
# ``int in bytes`` is a bare memchr; ``bytes in bytes`` runs the general substring search,
# several times slower on short inputs (this matters when reads are a few bytes each).
_LF: Final = 0x0A
_CR: Final = 0x0D


def _timeout_message(phase: str) -> str:
    # The library's own wording when it has it (a private table that may move).
    messages = getattr(_streaming, "_TIMEOUT_MESSAGES", {})
    return str(messages.get(phase, f"The stream timed out ({phase})."))


# Stands for "no choice seen yet in this batch"; never written to.
_NO_STATE: Final = _ChoiceState()


class LeanAccumulator(CompletionAccumulator):
    """The same accumulator with one call per batch instead of two per chunk, and text kept
    in blocks of about 512 fragments, so a long stream costs linear, not quadratic, copying
    (``CompletionAccumulator`` re-joins the whole text every 512 chunks)."""

    __slots__ = ("_blocks",)

    def __init__(self) -> None:
        super().__init__()
        self._blocks: dict[int, list[str]] = {}

    def add_many(self, chunks: list[CompletionChunk]) -> None:
        if not chunks:
            return
        if self._first is None:
            self._first = chunks[0]
        self.chunk_count += len(chunks)
        states = self._choices
        # Consecutive chunks almost always carry the same single choice: keep its state and
        # fragment list in locals instead of looking them up per chunk.
        last_index = -1
        state = _NO_STATE
        fragments = state.fragments
        usage = None
        for chunk in chunks:
            for choice in chunk.choices:
                if choice.index != last_index:
                    last_index = choice.index
                    found = states.get(last_index)
                    if found is None:
                        found = states[last_index] = _ChoiceState()
                    state = found
                    fragments = state.fragments
                fragments.append(choice.text)
                if choice.finish_reason is not None:
                    state.finish_reason = choice.finish_reason
                if choice.logprobs is not None:
                    state._add_logprobs(choice.logprobs)
            if chunk.usage is not None:
                usage = chunk.usage
        if usage is not None:
            self.usage = usage
        for index, each in states.items():
            if len(each.fragments) >= _COMPACT_AT:
                self._blocks.setdefault(index, []).append("".join(each.fragments))
                each.fragments.clear()

    def add_one(self, chunk: CompletionChunk) -> None:
        """``add_many([chunk])`` without the list, for streams that bring one per read."""
        if self._first is None:
            self._first = chunk
        self.chunk_count += 1
        for choice in chunk.choices:
            state = self._choices.get(choice.index)
            if state is None:
                state = self._choices[choice.index] = _ChoiceState()
            fragments = state.fragments
            fragments.append(choice.text)
            if choice.finish_reason is not None:
                state.finish_reason = choice.finish_reason
            if choice.logprobs is not None:
                state._add_logprobs(choice.logprobs)
            if len(fragments) >= _COMPACT_AT:
                self._blocks.setdefault(choice.index, []).append("".join(fragments))
                fragments.clear()
        if chunk.usage is not None:
            self.usage = chunk.usage

    def add(self, chunk: CompletionChunk) -> None:
        self.add_one(chunk)

    def _fold_blocks(self) -> None:
        for index, blocks in self._blocks.items():
            state = self._choices[index]
            state.fragments[:0] = ["".join(blocks)]
            blocks.clear()

    def text(self, index: int = 0) -> str:
        self._fold_blocks()
        return super().text(index)

    def snapshot(self) -> Completion | None:
        self._fold_blocks()
        return super().snapshot()


class FusedCompletionStream(CompletionStream):
    """``CompletionStream`` with a fast path for plain streams.

    While the stream is plain (LF line ends, one ``data: `` line per event, nothing else),
    the complete events of a read are decoded a slice of about 16 KiB at a time: one
    ``replace`` turns ``data: A\n\ndata: B\n\n`` into ``[A,B]`` and one decoder call makes the
    chunks, with no event object per event. Slices are decoded only when the caller has
    consumed the previous one, so a large read (a whole stream arriving at once) is not
    turned into thousands of objects up front, which would evict them from the CPU caches
    before they are used. The first slice or read that is not plain (a comment, an
    ``event:``/``id:`` line, CR, a BOM, an event that does not decode as a chunk, an event
    larger than the carry limit) hands the rest of the stream to the general framer, so
    the behaviour matches the general path exactly.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accumulator = LeanAccumulator()
        self._plain = True
        self._plain_consumed = False
        self._carry = bytearray()
        # Complete events not decoded yet: ``_backlog[_backlog_at:_backlog_end]``.
        self._backlog = b""
        self._backlog_at = 0
        self._backlog_end = 0

    def _queue(self, chunks: list[CompletionChunk]) -> None:
        accumulator = self._accumulator
        assert isinstance(accumulator, LeanAccumulator)
        accumulator.add_many(chunks)
        self._pending.extend(chunks)

    async def _fill(self) -> None:
        if self._backlog:
            self._next_slice()
            return None
        if not self._plain:
            return await super()._fill()
        # Reading: the same as CompletionStream._fill (deadlines, error mapping).
        response = self._response
        assert response is not None
        deadline, phase = self._next_deadline()
        try:
            if deadline is None:
                data = await response.read_chunk()
            else:
                async with asyncio.timeout_at(deadline):
                    data = await response.read_chunk()
        except TimeoutError as exc:
            raise self._with_partial(
                StreamTimeoutError(_timeout_message(phase), phase=phase, url=response.url)
            ) from exc
        except APIConnectionError as exc:
            raise self._with_partial(
                IncompleteStreamError(f"The stream broke before it ended: {exc.message}")
            ) from exc
        self._consume(data)
        return None

    def _queued(self, before: int) -> None:
        if len(self._pending) > before and self._idle is not None:
            self._seen_content = True
            self._content_deadline = self._loop_time() + self._idle

    def _consume(self, data: bytes) -> None:
        carry = self._carry
        if (
            not carry
            and data.startswith(_PREFIX)
            and data.find(b"\n", 6) == len(data) - 2
            and data.endswith(_SEPARATOR)
            and self._one_event(data[6:-2])
        ):
            # The usual read of a live stream: exactly one whole single-line event.
            return
        if data and _CR not in data:
            if carry:
                if _LF not in data and len(carry) + len(data) <= _MAX_CARRY:
                    # Cannot complete an event: no new blank line without a new LF.
                    carry += data
                    return
                buffer = bytes(carry) + data
                self._carry = carry = bytearray()
            else:
                buffer = data
            cut = buffer.rfind(_SEPARATOR)
            if cut < 0:
                if len(buffer) <= _MAX_CARRY and buffer.startswith(_PREFIX[: len(buffer)]):
                    self._carry = bytearray(buffer)
                    self._plain_consumed = True
                    return
            elif len(buffer) - cut - 2 <= _MAX_CARRY:
                if cut + 2 < len(buffer):
                    self._carry = bytearray(buffer[cut + 2 :])
                self._backlog = buffer
                self._backlog_at = 0
                self._backlog_end = cut + 2
                self._next_slice()
                return
        else:
            buffer = bytes(carry) + data
            self._carry = bytearray()
        self._fall_back(buffer, at_end=not data)

    def _one_event(self, body: bytes) -> bool:
        if body == DONE:
            self._done = True
            return True
        if not body or len(body) > self._framer._limit:
            return False
        try:
            chunk = _chunk_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False
        self._plain_consumed = True
        accumulator = self._accumulator
        assert isinstance(accumulator, LeanAccumulator)
        accumulator.add_one(chunk)
        self._pending.append(chunk)
        if self._idle is not None:
            self._seen_content = True
            self._content_deadline = self._loop_time() + self._idle
        return True

    def _next_slice(self) -> None:
        """Decode the next slice of the backlog (complete plain events, in order)."""
        backlog = self._backlog
        start = self._backlog_at
        end = self._backlog_end
        if end - start > _SLICE_BYTES:
            end = backlog.find(_SEPARATOR, start + _SLICE_BYTES) + 2
        body = backlog[start + len(_PREFIX) : end - 2]
        done = body.endswith(_DONE_EVENT) or body == DONE
        if done:
            body = body[: -len(_DONE_EVENT) - 2] if body != DONE else b""
        chunks: list[CompletionChunk] | None = None
        if backlog.startswith(_PREFIX, start) and end - start <= self._framer._limit:
            try:
                if _LF not in body:
                    # One event (the usual read of a live stream): no replace, no join.
                    chunks = [_chunk_decoder.decode(body)] if body else []
                else:
                    joined = body.replace(_JOIN, b",")
                    if _LF not in joined:
                        chunks = _chunk_list_decoder.decode(b"[" + joined + b"]")
            except (msgspec.ValidationError, msgspec.DecodeError):
                chunks = None
        if chunks is None:
            rest = backlog[start : self._backlog_end]
            self._backlog = b""
            self._fall_back(rest + bytes(self._carry), at_end=False)
            self._carry = bytearray()
            return
        self._plain_consumed = True
        if end >= self._backlog_end or done:
            self._backlog = b""
        else:
            self._backlog_at = end
        before = len(self._pending)
        if chunks:
            self._queue(chunks)
        self._queued(before)
        if done:
            self._done = True

    def _fall_back(self, buffer: bytes, *, at_end: bool) -> None:
        """From here on the general framer handles the stream, starting with ``buffer``."""
        self._plain = False
        # Later reads go straight to the general path, without this class's checks.
        self._fill = types.MethodType(CompletionStream._fill, self)  # type: ignore[method-assign]
        framer = self._framer
        before = len(self._pending)
        try:
            if self._plain_consumed:
                # The framer starts mid-stream: a blank line dispatches nothing and ends its
                # "start of stream" state, so a BOM is stripped only at the true start.
                framer.feed(b"\n")
            events = framer.feed(buffer) if buffer else []
            if at_end:
                events += framer.flush()
        except EventTooLargeError as exc:
            raise self._with_partial(StreamDecodeError(str(exc))) from exc
        if events:
            self._handle_events(events)
        self._queued(before)
        if at_end and not self._done:
            self._done = True
            self._fail(
                IncompleteStreamError(
                    "The stream ended before `data: [DONE]`: the server closed the "
                    "connection without finishing the response."
                )
            )
