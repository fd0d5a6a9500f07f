"""Sans-IO framer for ``text/event-stream`` bodies.

Implements WHATWG HTML "Server-sent events", "Parsing an event stream" and
"Interpreting an event stream", directly on bytes: feed it raw body chunks as
they arrive and it hands back the events each chunk completes. It does no I/O
and never decodes payloads, so ``data`` stays raw UTF-8 bytes for msgspec.
"""

import sys
from typing import NoReturn

import msgspec

__all__ = ["EventTooLargeError", "SSEDecoder", "ServerSentEvent"]

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D
_COLON = 0x3A


class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event."""

    data: bytes = b""
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class EventTooLargeError(ValueError):
    """A single event buffered more than ``max_event_size`` bytes.

    ``events`` holds the events the same ``feed()`` call completed before the oversized one,
    so a caller loses nothing that arrived whole.
    """

    def __init__(self, limit: int, events: list[ServerSentEvent] | None = None) -> None:
        super().__init__(f"server-sent event exceeds max_event_size={limit} bytes")
        self.limit = limit
        self.events: list[ServerSentEvent] = events if events is not None else []


class SSEDecoder:
    """Incremental, linear-time event-stream parser.

    ``feed()`` accepts arbitrary cut points: lines, CRLF pairs, the BOM and UTF-8
    sequences may all be split across chunks. ``last_event_id`` survives
    ``flush()`` so a reconnecting client can send it as ``Last-Event-ID``.
    """

    __slots__ = (
        "_at_start",
        "_cr_pending",
        "_data",
        "_data_len",
        "_event",
        "_event_retry",
        "_fixup",
        "_head",
        "_last_id",
        "_limit",
        "_max_event_size",
        "_open",
        "_retry",
        "_scanned",
        "_tail",
    )

    def __init__(self, *, max_event_size: int | None = None) -> None:
        if max_event_size is not None and max_event_size < 0:
            raise ValueError("max_event_size must be >= 0 or None")
        self._max_event_size = max_event_size
        self._limit = sys.maxsize if max_event_size is None else max_event_size
        self._last_id: str | None = None
        self._retry: int | None = None
        # Bytes handed to C-level scans (find/split/replace/in). Only tests read it:
        # it proves linearity without timing (each input byte is scanned O(1) times).
        self._scanned = 0
        self._reset()

    def _reset(self) -> None:
        self._at_start = True
        self._head = b""
        self._cr_pending = False
        # True while _at_start or _cr_pending: one attribute test on the hot path.
        self._fixup = True
        # Partial last line: the bytes slice itself, or a bytearray once it grows.
        self._tail: bytes | bytearray = b""
        self._clear_event()

    def _clear_event(self) -> None:
        self._data: list[bytes] = []
        self._data_len = 0
        # Whether an event is partly built (data, event or retry seen).
        self._open = False
        self._event: str | None = None
        self._event_retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The last ``id`` seen (WHATWG "last event ID buffer"); kept across events."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The last valid ``retry`` value (ms) seen, even in an undispatched event."""
        return self._retry

    @property
    def buffered(self) -> int:
        """Bytes held: partial line (incl. a partial BOM) plus pending event data."""
        return len(self._head) + len(self._tail) + self._data_len

    @property
    def at_boundary(self) -> bool:
        """True when nothing is held: no partial line, no half-built event.

        A caller may then handle a run of plain ``data:`` events itself (see the stream's
        fast path) and resume feeding this decoder later without losing anything.
        """
        return not (self._tail or self._head or self._open or self._cr_pending)

    def mark_started(self) -> None:
        """Note that the stream's first bytes were consumed elsewhere: a BOM is only
        stripped at the very start of a stream."""
        if self._at_start and not self._head:
            self._at_start = False
            self._fixup = self._cr_pending

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume ``chunk``; return every event it completes, in stream order."""
        if self._fixup:
            chunk = self._fix_start(chunk)
        if not chunk:
            return []
        tail = self._tail
        if tail:
            self._scanned += len(chunk)
            # ``int in bytes`` is a bare memchr; ``bytes in bytes`` is several times slower.
            if _LF not in chunk and _CR not in chunk:
                # Still inside one long line: grow a bytearray (amortised O(len(chunk)))
                # and do not rescan the tail until a terminator shows up.
                if isinstance(tail, bytes):
                    tail = self._tail = bytearray(tail)
                tail += chunk
                if self._data_len + len(tail) > self._limit:
                    self._too_large([])
                return []
            chunk = b"".join((tail, chunk))
            self._tail = b""
        # From here ``chunk`` starts at a line start.
        self._scanned += len(chunk)
        if _CR in chunk:
            # CR never occurs inside a line, so rewriting CRLF and lone CR to LF is
            # exact. A trailing CR ends its line now; remember it to eat a following LF.
            if chunk[-1] == _CR:
                self._cr_pending = self._fixup = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # Each piece before the last is a run of lines ended by a blank line, i.e.
        # exactly one event block. The last piece is complete lines plus the tail.
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()
        events: list[ServerSentEvent] = []
        if blocks:
            it = iter(blocks)
            if self._open:
                # The first block continues an event begun in an earlier chunk.
                self._block(next(it), events)
            append = events.append
            limit = self._limit
            last_id = self._last_id
            # After any block the event buffers are empty again, so a block that is a
            # single ``data: `` line is a whole event: slice it, no per-line parsing.
            for block in it:
                if block.startswith(b"data: ") and _LF not in block and len(block) <= limit:
                    append(ServerSentEvent(block[6:], "message", last_id))
                else:
                    self._block(block, events)
                    last_id = self._last_id
        if rest:
            if _LF in rest:
                lines = rest.split(b"\n")
                rest = lines.pop()
                for line in lines:
                    self._line(line, events)
            if rest:
                self._tail = rest
                if self._data_len + len(rest) > self._limit:
                    self._too_large(events)
        return events

    def flush(self) -> list[ServerSentEvent]:
        """Signal end of input and reset for a new stream.

        A final unterminated line is processed like any other line (so a trailing
        ``id:`` still counts), but the event it belongs to is not dispatched: WHATWG
        discards an event not closed by a blank line, and a stream cut mid-event
        must not yield a truncated payload. Hence this always returns ``[]``.
        """
        events: list[ServerSentEvent] = []
        if self._tail or self._head:
            self._line(self._head + bytes(self._tail), events)
        self._reset()
        return events

    def _fix_start(self, chunk: bytes) -> bytes:
        if self._at_start:
            # The UTF-8 decode step strips one leading BOM; hold up to two bytes
            # until we know whether they begin one.
            if self._head:
                chunk = self._head + chunk
                self._head = b""
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._head = bytes(chunk)
                return b""
            self._at_start = False
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if self._cr_pending and chunk:
            # The previous chunk ended in CR, already treated as a line end; an LF
            # right after it is the second half of that CRLF, not a blank line.
            self._cr_pending = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        self._fixup = self._at_start or self._cr_pending
        return chunk

    def _too_large(self, events: list[ServerSentEvent]) -> NoReturn:
        # The stream cannot be resynchronised reliably, so drop everything held.
        self._reset()
        assert self._max_event_size is not None
        raise EventTooLargeError(self._max_event_size, events)

    def _block(self, block: bytes, events: list[ServerSentEvent]) -> None:
        for line in block.split(b"\n"):
            self._line(line, events)
        self._line(b"", events)

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        # Raw line length counts, so the limit trips at the same point however the
        # input was chunked (a partial line is checked against the same sum).
        if self._data_len + len(line) > self._limit:
            self._too_large(events)
        if not line:
            # WHATWG "dispatch the event": nothing is dispatched without a data field.
            if self._data:
                data = self._data
                events.append(
                    ServerSentEvent(
                        data[0] if len(data) == 1 else b"\n".join(data),
                        self._event or "message",
                        self._last_id,
                        self._event_retry,
                    )
                )
            self._clear_event()
            return
        if line[0] == _COLON:
            return
        colon = line.find(b":")
        if colon < 0:
            name = line
            value = b""
        else:
            name = line[:colon]
            value = line[colon + 2 :] if line.startswith(b" ", colon + 1) else line[colon + 1 :]
        if name == b"data":
            self._data.append(value)
            self._data_len += len(value) + 1
            self._open = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
            self._open = True
        elif name == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            try:
                retry = int(value)
            except ValueError:
                # More digits than int() accepts (sys.int_info.str_digits_check_threshold):
                # no sane reconnection time, so ignore the field.
                return
            self._retry = retry
            self._event_retry = retry
            self._open = True
