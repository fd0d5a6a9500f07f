"""Stream parse and decode: the same event stream, cut several ways, through each library.

Each competitor is a function ``pieces -> number of chunks decoded``; the count is checked,
so a competitor that silently drops events is reported, not timed. Times are per event.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, cast

import msgspec

from asyncclient._decode import DONE, decode_chunks
from asyncclient._models import CompletionChunk
from asyncclient._sse import SSEDecoder
from asyncclient._streaming import CompletionStream
from asyncclient._transport import DEFAULT_TIMEOUT, Response, Timeout

from . import floor
from .competitors import Missing, require
from .harness import Case, Mode, Table, measure, median, ratio_text
from .payloads import CHUNKINGS, EventStream, chunk_stream, event_stream

__all__ = ["StreamCompetitor", "run_stream", "stream_competitors"]

StreamRun = Callable[[list[bytes]], int]

OURS: Final = "asyncclient (CompletionStream)"
OURS_FLAT: Final = "asyncclient (CompletionStream, accumulate=False)"
OURS_UNTIMED: Final = "asyncclient (CompletionStream, timeout=None)"
OURS_SANS_IO: Final = "asyncclient plain path, sans-IO (no accumulator)"
FRAMER_PATH: Final = "asyncclient framer path (SSEDecoder + decode_chunks)"
FLOOR: Final = "floor: bytes framer + msgspec"
ASYNC_FLOOR: Final = "the floor made async: an await per read, a generator step per chunk"
CEILING: Final = "ceiling: read bytes, no decode"

_chunk_decoder: Final = msgspec.json.Decoder(CompletionChunk)


# -- ours ------------------------------------------------------------------------------------


def framer_path(pieces: list[bytes]) -> int:
    """The general path (``_feed_framer`` / ``_handle_events``) that every stream that is not
    plain takes (CR line ends, comments, ``event:``/``id:`` lines), without the iterator."""
    framer = SSEDecoder()
    count = 0
    for piece in pieces:
        payloads: list[bytes] = []
        done = False
        for event in framer.feed(piece):
            if event.event != "message":
                continue
            data = event.data
            if data == DONE:
                done = True
                break
            if data:
                payloads.append(data)
        if payloads:
            count += len(decode_chunks(payloads))
        if done:
            break
    return count


def ours_per_event(pieces: list[bytes]) -> int:
    """Design variant: the same framer, one decoder call per event (no batching)."""
    framer = SSEDecoder()
    decode = _chunk_decoder.decode
    count = 0
    for piece in pieces:
        for event in framer.feed(piece):
            if event.data == DONE:
                return count
            decode(event.data)
            count += 1
    return count


def framer_only(pieces: list[bytes]) -> int:
    """Reference: our framer alone, payloads not decoded."""
    framer = SSEDecoder()
    count = 0
    for piece in pieces:
        for event in framer.feed(piece):
            if event.data == DONE:
                return count
            count += 1
    return count


class _PiecesResponse:
    """Enough of ``asyncclient._transport.Response`` for a :class:`CompletionStream`."""

    status = 200
    headers: Mapping[str, str] = {"Content-Type": "text/event-stream"}
    url = "http://127.0.0.1/v1/completions"

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = deque(pieces)

    @property
    def at_eof(self) -> bool:
        return not self._pieces

    async def read_chunk(self) -> bytes:
        return self._pieces.popleft() if self._pieces else b""

    def interrupt(self, error: BaseException) -> None:
        self._pieces.clear()  # never happens: no read here waits for a deadline to pass

    def release(self) -> None:
        self._pieces.clear()


def _real_stream_runner(
    accumulate: bool = True, timeout: Timeout | None = DEFAULT_TIMEOUT
) -> StreamRun:
    """A real :class:`CompletionStream` over the pieces, with the client's defaults (an idle
    deadline on every read) unless told otherwise."""
    loop = asyncio.new_event_loop()

    async def consume(pieces: list[bytes]) -> int:
        stream = CompletionStream(
            cast(Response, _PiecesResponse(pieces)), accumulate=accumulate, timeout=timeout
        )
        count = 0
        async with stream:
            async for _ in stream:
                count += 1
        return count

    def run(pieces: list[bytes]) -> int:
        return loop.run_until_complete(consume(pieces))

    return run


def _plain_path_runner() -> StreamRun:
    """The library's own decode path (``_consume`` and ``_decode_backlog_slice``), driven
    without ``async for`` and without the accumulator: what decoding costs inside the stream."""
    loop = asyncio.new_event_loop()

    async def consume(pieces: list[bytes]) -> int:
        stream = CompletionStream(cast(Response, _PiecesResponse([])), accumulate=False)
        pending = stream._pending
        count = 0
        for piece in pieces:
            stream._consume(piece)
            count += len(pending)
            pending.clear()
            while stream._backlog:
                stream._decode_backlog_slice()
                count += len(pending)
                pending.clear()
            if stream._done:
                break
        await stream.aclose()
        return count

    def run(pieces: list[bytes]) -> int:
        return loop.run_until_complete(consume(pieces))

    return run


# -- competitors -----------------------------------------------------------------------------


def _openai() -> StreamRun:
    streaming = require("openai._streaming")
    models = require("openai._models")
    completion_type = require("openai.types").Completion
    construct_type = models.construct_type

    def run(pieces: list[bytes]) -> int:
        # openai.Stream.__stream__ for a legacy completion: SSE -> sse.json() -> model.
        count = 0
        for sse in streaming.SSEDecoder().iter_bytes(iter(pieces)):
            if sse.data.startswith("[DONE]"):
                break
            data = sse.json()
            if isinstance(data, dict) and data.get("error"):
                raise RuntimeError("error event")
            construct_type(type_=completion_type, value=data)
            count += 1
        return count

    return run


class _OrqResponse:
    """What the Orq SDK's ``stream_events`` reads: ``iter_bytes()`` and ``close()``."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    def iter_bytes(self) -> Iterator[bytes]:
        return iter(self._pieces)

    def close(self) -> None:
        pass


def _orq() -> StreamRun:
    eventstreaming = require("orq_ai_sdk.utils.eventstreaming")
    serializers = require("orq_ai_sdk.utils.serializers")
    body_type = require("orq_ai_sdk.models").CreateCompletionRouterCompletionsResponseBody

    def decoder(raw: str) -> Any:
        return serializers.unmarshal_json(raw, body_type)

    def run(pieces: list[bytes]) -> int:
        # Exactly what Completions.create(stream=True) builds: EventStream(http_res, ...).
        count = 0
        events = eventstreaming.stream_events(
            _OrqResponse(pieces), decoder, sentinel="[DONE]", data_required=False
        )
        for _ in events:
            count += 1
        return count

    return run


def _httpx_sse() -> StreamRun:
    httpx = require("httpx")
    httpx_sse = require("httpx_sse")
    decode = _chunk_decoder.decode

    def run(pieces: list[bytes]) -> int:
        response = httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=iter(pieces)
        )
        count = 0
        for sse in httpx_sse.EventSource(response).iter_sse():
            if sse.data == "[DONE]":
                break
            decode(sse.data)
            count += 1
        return count

    return run


class StreamCompetitor:
    def __init__(
        self, name: str, factory: Callable[[], StreamRun], *, orq_variant: bool = False
    ) -> None:
        self.name = name
        self.factory = factory
        self.orq_variant = orq_variant


def stream_competitors() -> list[StreamCompetitor]:
    return [
        StreamCompetitor(OURS, _real_stream_runner),
        StreamCompetitor(OURS_FLAT, lambda: _real_stream_runner(accumulate=False)),
        StreamCompetitor(FLOOR, lambda: floor_stream_run),
        StreamCompetitor("httpx-sse + msgspec", _httpx_sse),
        StreamCompetitor("openai-python (SSEDecoder + models)", _openai),
        StreamCompetitor("orq-ai-sdk (EventStream)*", _orq, orq_variant=True),
    ]


def design_variants() -> list[StreamCompetitor]:
    """Where a stream's time goes: the iterator, the accumulator, the decode paths."""
    return [
        StreamCompetitor(OURS, _real_stream_runner),
        StreamCompetitor(OURS_UNTIMED, lambda: _real_stream_runner(timeout=None)),
        StreamCompetitor(OURS_FLAT, lambda: _real_stream_runner(accumulate=False)),
        StreamCompetitor(OURS_SANS_IO, _plain_path_runner),
        StreamCompetitor(FRAMER_PATH, lambda: framer_path),
        StreamCompetitor("SSEDecoder + one decode per event", lambda: ours_per_event),
        StreamCompetitor(FLOOR, lambda: floor_stream_run),
        StreamCompetitor(ASYNC_FLOOR, _async_floor_runner),
        StreamCompetitor("SSEDecoder alone, no decode", lambda: framer_only),
    ]


_separator = b"\n\n"


def _async_floor_runner() -> StreamRun:
    loop = asyncio.new_event_loop()

    async def consume(pieces: list[bytes]) -> int:
        response = _PiecesResponse(pieces)
        count = 0
        async for _ in floor.async_floor_stream(response.read_chunk, _separator_of(pieces)):
            count += 1
        return count

    def run(pieces: list[bytes]) -> int:
        return loop.run_until_complete(consume(pieces))

    return run


def _separator_of(pieces: list[bytes]) -> bytes:
    if any(b"\r" in piece for piece in pieces[:3]):
        return b"\r\n\r\n"
    return _separator


def floor_stream_run(pieces: list[bytes]) -> int:
    return floor.floor_stream(pieces, _separator_of(pieces))


def run_stream(
    mode: Mode,
    *,
    competitors: list[StreamCompetitor] | None = None,
    streams: dict[str, tuple[EventStream, EventStream]] | None = None,
    title: str = "Stream parse and decode",
    chunkings: list[str] | None = None,
) -> tuple[list[Table], dict[str, dict[str, float]], list[str]]:
    """One table per chunking. Returns the tables, ``{chunking: {name: s/event}}``, skips."""
    competitors = competitors if competitors is not None else stream_competitors()
    if streams is None:
        lf = event_stream(mode.stream_chunks)
        lf_orq = event_stream(mode.stream_chunks, always_finish_reason=True)
        crlf = event_stream(mode.stream_chunks, newline=b"\r\n")
        crlf_orq = event_stream(mode.stream_chunks, newline=b"\r\n", always_finish_reason=True)
        streams = {
            name: ((crlf, crlf_orq) if name == "cr|lf" else (lf, lf_orq)) for name in CHUNKINGS
        }
    chunkings = chunkings if chunkings is not None else list(streams)
    runners: list[tuple[StreamCompetitor, StreamRun]] = []
    skips: list[str] = []
    for competitor in competitors:
        try:
            runners.append((competitor, competitor.factory()))
        except Missing as exc:
            skips.append(f"skipped {competitor.name}: {exc}")
    tables: list[Table] = []
    results: dict[str, dict[str, float]] = {}
    for chunking in chunkings:
        stream, orq_stream = streams[chunking]
        pieces = chunk_stream(stream, chunking)
        orq_pieces = chunk_stream(orq_stream, chunking)
        cases = []
        for competitor, runner in runners:
            used = orq_pieces if competitor.orq_variant else pieces
            cases.append(
                Case(
                    competitor.name,
                    (lambda r=runner, p=used: r(p)),  # type: ignore[misc]
                    units=stream.chunks,
                    check=_count_check(stream.chunks, competitor.name == CEILING),
                )
            )
        measure(cases, mode)
        per_event = {case.name: median(case.samples) for case in cases if case.samples}
        results[chunking] = per_event
        ours = per_event.get(OURS, float("nan"))
        table = Table(
            f"{title}: {stream.chunks:,} chunks, {CHUNKINGS[chunking]} ({len(pieces):,} pieces)",
            [("us", "us/event"), ("events_s", "events/s"), ("vs", "vs ours")],
        )
        for case in cases:
            if case.error:
                table.add(case.name, us=None, events_s=None, vs=f"failed: {case.error}")
                continue
            seconds = per_event[case.name]
            table.add(
                case.name,
                us=seconds * 1e6,
                events_s=1 / seconds,
                vs=ratio_text(seconds / ours),
            )
        tables.append(table)
    return tables, results, skips


def _count_check(expected: int, is_ceiling: bool) -> Callable[[Any], str | None]:
    def check(result: Any) -> str | None:
        if is_ceiling:
            return None
        if result != expected:
            return f"decoded {result} chunks, expected {expected}"
        return None

    return check
