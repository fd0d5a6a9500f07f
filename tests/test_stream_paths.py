"""The stream's two decode paths give the same result for any stream and any chunking.

Plain streams (LF, one ``data:`` line per event) take a fast path that decodes the events of
a read as one JSON array; everything else goes through the SSE framer. Each read chooses its
path anew, so a stream may switch back and forth. These tests drive a real
``CompletionStream`` over an in-memory response, cut at random points, and compare what the
caller gets with a reference built from the whole body by the framer alone.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncclient import (
    AsyncClientError,
    CompletionChunk,
    CompletionStream,
    IncompleteStreamError,
    ServerStreamError,
    StreamDecodeError,
)
from asyncclient._sse import SSEDecoder
from asyncclient._transport import ClientClosedError, Response

_encoder = msgspec.json.Encoder()


class FakeResponse:
    """Just enough of ``_transport.Response`` for a stream: pieces of a body, in order."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = list(pieces)
        self.status = 200
        self.headers: dict[str, str] = {"content-type": "text/event-stream"}
        self.url = "http://127.0.0.1/v1/completions"
        self.released = False

    @property
    def at_eof(self) -> bool:
        return not self._pieces

    async def read_chunk(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""

    def interrupt(self, error: BaseException) -> None:
        raise AssertionError("no read here ever waits, so no deadline can pass during one")

    def release(self) -> None:
        self.released = True


def chunk_event(index: int, text: str, finish: str | None = None) -> bytes:
    payload = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": index, "text": text, "finish_reason": finish}],
    }
    return _encoder.encode(payload)


def cut(body: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(body), *(p % (len(body) + 1) for p in points)})
    return [body[a:b] for a, b in itertools.pairwise(edges) if b > a]


async def run(pieces: list[bytes], **options: Any) -> tuple[list[str], BaseException | None]:
    response = FakeResponse(pieces)
    stream = CompletionStream(cast(Response, response), **options)
    texts: list[str] = []
    error: BaseException | None = None
    try:
        async with stream:
            async for chunk in stream:
                texts.extend(f"{c.index}:{c.text}" for c in chunk.choices)
    except AsyncClientError as exc:
        error = exc
    assert response.released
    return texts, error


def reference(body: bytes) -> tuple[list[str], type[BaseException] | None]:
    """What the caller must get: the framer alone, fed the whole body."""
    decoder = SSEDecoder()
    texts: list[str] = []
    for event in decoder.feed(body) + decoder.flush():
        if event.event == "error":
            return texts, ServerStreamError
        if event.event != "message" or not event.data:
            continue
        if event.data == b"[DONE]":
            return texts, None
        try:
            chunk = msgspec.json.decode(event.data, type=CompletionChunk)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
            return texts, StreamDecodeError
        texts.extend(f"{c.index}:{c.text}" for c in chunk.choices)
    return texts, IncompleteStreamError


events = st.lists(
    st.one_of(
        st.tuples(st.just("chunk"), st.integers(0, 2), st.text(max_size=8)),
        st.tuples(st.just("comment"), st.just(0), st.just("")),
        st.tuples(st.just("named"), st.integers(0, 2), st.text(max_size=8)),
        st.tuples(st.just("multiline"), st.just(0), st.just("")),
        st.tuples(st.just("bad"), st.just(0), st.just("")),
        # Data that is two JSON values, or a chunk then [DONE], in one event: a decode
        # error for the framer, so for every path, however the events are joined.
        st.tuples(st.just("pair"), st.integers(0, 2), st.text(max_size=8)),
        st.tuples(st.just("done_suffix"), st.just(0), st.just("")),
    ),
    max_size=12,
)


def render(spec: list[tuple[str, int, str]], newline: bytes | list[bytes], done: bool) -> bytes:
    """The body for ``spec``; a list of newlines is used in turn, one per event."""
    newlines = itertools.cycle([newline] if isinstance(newline, bytes) else newline)
    out = []
    for kind, index, text in spec:
        newline = next(newlines)
        if kind == "chunk":
            out.append(b"data: " + chunk_event(index, text) + newline * 2)
        elif kind == "comment":
            out.append(b": keep-alive" + newline * 2)
        elif kind == "named":
            out.append(b"event: message" + newline + b"data: " + chunk_event(index, text))
            out.append(newline * 2)
        elif kind == "multiline":
            payload = chunk_event(0, "ml").replace(b",", b"," + newline + b"data: ", 1)
            out.append(b"data: " + payload + newline * 2)
        elif kind == "pair":
            pair = chunk_event(index, text) + b"," + chunk_event(index, text)
            out.append(b"data: " + pair + newline * 2)
        elif kind == "done_suffix":
            out.append(b"data: " + chunk_event(0, "d") + b",[DONE]" + newline * 2)
        else:
            out.append(b"data: {not json" + newline * 2)
    if done:
        out.append(b"data: [DONE]" + next(newlines) * 2)
    return b"".join(out)


def render_line_by_line(
    spec: list[tuple[str, int, str]], line_ends: list[bytes], done: bool
) -> bytes:
    """Like :func:`render`, with the line ends used in turn one per line end, not per event:
    one event can end in CRLF then LF, or CR then CRLF."""
    *lines, last = render(spec, b"\x00", done).split(b"\x00")
    ends = itertools.cycle(line_ends)
    return b"".join(line + next(ends) for line in lines) + last


@settings(max_examples=250, deadline=None)
@given(
    spec=events,
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    done=st.booleans(),
    points=st.lists(st.integers(0, 10_000), max_size=10),
)
async def test_any_stream_any_chunking_matches_the_framer(
    spec: list[tuple[str, int, str]], newline: bytes, done: bool, points: list[int]
) -> None:
    body = render(spec, newline, done)
    expected_texts, expected_error = reference(body)
    texts, error = await run(cut(body, points))
    assert texts == expected_texts
    assert (type(error) if error is not None else None) is expected_error


@settings(max_examples=250, deadline=None)
@given(
    spec=events,
    newlines=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=4),
    done=st.booleans(),
    points=st.lists(st.integers(0, 10_000), max_size=10),
)
async def test_mixed_line_ends_any_chunking_match_the_framer(
    spec: list[tuple[str, int, str]], newlines: list[bytes], done: bool, points: list[int]
) -> None:
    # CRLF takes the plain path as LF, a CR ending a read waits for the next one, and a lone
    # CR hands the stream to the framer: every mix and split must come out the same.
    body = render(spec, newlines, done)
    expected_texts, expected_error = reference(body)
    texts, error = await run(cut(body, points))
    assert texts == expected_texts
    assert (type(error) if error is not None else None) is expected_error


async def test_crlf_streams_stay_on_the_plain_path_split_anywhere() -> None:
    body = b"".join(b"data: " + chunk_event(0, f"{i}") + b"\r\n\r\n" for i in range(5))
    body += b"data: [DONE]\r\n\r\n"
    for pieces in (
        [body[i : i + 1] for i in range(len(body))],
        [piece + b"\r" for piece in body.split(b"\r")[:-1]] + [body.split(b"\r")[-1]],
        [piece + b"\n" for piece in body.split(b"\n")[:-1]] + [body.split(b"\n")[-1]],
    ):
        response = FakeResponse(pieces)
        stream = CompletionStream(cast(Response, response))
        async with stream:
            texts = [chunk.choices[0].text async for chunk in stream]
        assert texts == [f"{i}" for i in range(5)]
        assert not stream._framer_fed


async def test_a_cr_ending_the_body_is_a_line_end() -> None:
    body = b"data: " + chunk_event(0, "a") + b"\r\rdata: [DONE]\r\r"
    texts, error = await run([body[:-1], body[-1:]])
    assert error is None
    assert texts == ["0:a"]
    # The held CR completes the blank line at the end of the body: the event is dispatched.
    texts, error = await run([b"data: " + chunk_event(0, "a") + b"\r", b"\r"])
    assert isinstance(error, IncompleteStreamError)
    assert texts == ["0:a"]


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.integers(0, 10_000), max_size=30))
async def test_plain_stream_split_anywhere(points: list[int]) -> None:
    body = b"".join(b"data: " + chunk_event(0, f"t{i} ") + b"\n\n" for i in range(40))
    body += b"data: [DONE]\n\n"
    texts, error = await run(cut(body, points))
    assert error is None
    assert texts == [f"0:t{i} " for i in range(40)]


async def test_one_byte_reads() -> None:
    body = b"".join(b"data: " + chunk_event(0, f"{i}") + b"\n\n" for i in range(5))
    body += b"data: [DONE]\n\n"
    texts, error = await run([body[i : i + 1] for i in range(len(body))])
    assert error is None
    assert texts == [f"0:{i}" for i in range(5)]


async def test_a_large_read_is_decoded_in_slices_without_losing_order() -> None:
    body = b"".join(b"data: " + chunk_event(i % 3, f"{i}") + b"\n\n" for i in range(3000))
    body += b"data: [DONE]\n\n"
    texts, error = await run([body])
    assert error is None
    assert texts == [f"{i % 3}:{i}" for i in range(3000)]


@pytest.mark.parametrize("reads", ["one", "last LF apart"])
async def test_a_large_crlf_read_is_decoded_in_slices_without_losing_order(reads: str) -> None:
    body = b"".join(b"data: " + chunk_event(i % 3, f"{i}") + b"\r\n\r\n" for i in range(3000))
    body += b"data: [DONE]\r\n\r\n"
    # Cut before the last LF, the read ends at a blank line's CR: its event is complete.
    pieces = [body] if reads == "one" else [body[:-1], body[-1:]]
    response = FakeResponse(pieces)
    stream = CompletionStream(cast(Response, response))
    async with stream:
        texts = [f"{c.index}:{c.text}" async for chunk in stream for c in chunk.choices]
    assert texts == [f"{i % 3}:{i}" for i in range(3000)]
    assert not stream._framer_fed


async def test_events_after_done_are_ignored() -> None:
    body = b"data: " + chunk_event(0, "a") + b"\n\ndata: [DONE]\n\ndata: "
    body += chunk_event(0, "b") + b"\n\n"
    texts, error = await run([body])
    assert error is None
    assert texts == ["0:a"]


async def test_a_bom_before_plain_events_is_stripped() -> None:
    body = b"\xef\xbb\xbfdata: " + chunk_event(0, "a") + b"\n\ndata: [DONE]\n\n"
    texts, error = await run([body[:2], body[2:]])
    assert error is None
    assert texts == ["0:a"]


async def test_the_max_event_size_holds_on_the_plain_path() -> None:
    body = b"data: " + chunk_event(0, "x" * 5000) + b"\n\ndata: [DONE]\n\n"
    texts, error = await run([body], max_event_size=1000)
    assert texts == []
    assert isinstance(error, StreamDecodeError)


async def test_without_accumulation_memory_is_not_kept() -> None:
    body = b"data: " + chunk_event(0, "a") + b"\n\n"
    response = FakeResponse([body])
    stream = CompletionStream(cast(Response, response), accumulate=False)
    async with stream:
        with pytest.raises(IncompleteStreamError) as caught:
            async for _ in stream:
                pass
        assert caught.value.partial is None
        assert stream.completion_so_far is None
    async with CompletionStream(cast(Response, FakeResponse([])), accumulate=False) as empty:
        with pytest.raises(RuntimeError, match="accumulate=True"):
            await empty.final_completion()


async def test_events_before_an_oversized_one_in_the_same_read_are_kept() -> None:
    body = b"".join(b"data: " + chunk_event(0, f"{i} ") + b"\n\n" for i in range(2))
    body += b"data: " + chunk_event(0, "x" * 5000) + b"\n\ndata: [DONE]\n\n"
    texts, error = await run([body], max_event_size=1000)
    assert texts == ["0:0 ", "0:1 "]
    assert isinstance(error, StreamDecodeError)
    assert "max_event_size" in str(error)
    assert error.partial_text == "0 1 "


class EndlessAfterDone(FakeResponse):
    """A body that goes on after ``[DONE]``: trailing bytes forever, or silence."""

    def __init__(self, pieces: list[bytes], *, stall: bool) -> None:
        super().__init__(pieces)
        self.stall = stall
        self.extra_reads = 0

    async def read_chunk(self) -> bytes:
        if self._pieces:
            return self._pieces.pop(0)
        self.extra_reads += 1
        if self.stall:
            await asyncio.sleep(3600)
        return b": trailing\n\n" * 100


class ClosedAfterDone(FakeResponse):
    """The client is closed while the stream drains what follows ``[DONE]``."""

    @property
    def at_eof(self) -> bool:
        return False

    async def read_chunk(self) -> bytes:
        if self._pieces:
            return self._pieces.pop(0)
        raise ClientClosedError("The client was closed while this stream was open.")


async def test_a_client_closed_during_the_drain_does_not_spoil_a_whole_completion() -> None:
    body = b"data: " + chunk_event(0, "whole") + b"\n\ndata: [DONE]\n\n"
    response = ClosedAfterDone([body])
    async with CompletionStream(cast(Response, response)) as stream:
        completion = await stream.final_completion()
    assert completion.text == "whole"
    assert response.released


@pytest.mark.parametrize("stall", [False, True], ids=["endless-bytes", "silence"])
async def test_the_drain_after_done_is_bounded(
    stall: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncclient import _streaming

    monkeypatch.setattr(_streaming, "_DRAIN_SECONDS", 0.05)
    body = b"data: " + chunk_event(0, "a") + b"\n\ndata: [DONE]\n\n"
    response = EndlessAfterDone([body], stall=stall)
    stream = CompletionStream(cast(Response, response))
    async with stream:
        texts = [chunk.text async for chunk in stream]
    assert texts == ["a"]
    assert response.released
    # Endless bytes stop at the byte budget (64 KiB of 1.2 KB reads); silence at the time one.
    assert response.extra_reads <= (1 if stall else 60)


@settings(max_examples=300, deadline=None)
@given(
    spec=events,
    line_ends=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=16),
    done=st.booleans(),
    points=st.lists(st.integers(0, 10_000), max_size=12),
)
async def test_line_ends_drawn_one_by_one_any_chunking_match_the_framer(
    spec: list[tuple[str, int, str]], line_ends: list[bytes], done: bool, points: list[int]
) -> None:
    # Each line end on its own, so one event can end in CRLF then LF, or CR then CRLF: the
    # CRLF path's half-finished blank lines must give way to the framer exactly when SSE does.
    body = render_line_by_line(spec, line_ends, done)
    expected_texts, expected_error = reference(body)
    texts, error = await run(cut(body, points))
    assert texts == expected_texts
    assert (type(error) if error is not None else None) is expected_error


_A = b"data: " + chunk_event(0, "a")
_B = b"data: " + chunk_event(0, "b")


@pytest.mark.parametrize(
    "pieces",
    [
        # A blank line cut short by the end of the body: the CR there still ends it.
        [_A + b"\r", b"\n\r"],
        [_A + b"\r\n\r"],
        # The blank line goes on as LF only, or as a second CR.
        [_A + b"\r", b"\n", b"\n", _B + b"\n\n"],
        [_A + b"\r", b"\r", _B + b"\r\r"],
        [_A + b"\r\n", b"\r", b"\r" + _B + b"\r\n\r\n"],
        # What completes the event is followed by events with other line ends.
        [_A + b"\r\n\r", b"\n" + _B + b"\n\ndata: [DONE]\n\n"],
        [_A + b"\r\n\r", b"\n" + _B + b"\r" + _A[6:] + b"\r\n\r\n"],
        [_A + b"\r\n\r", b"\n" + _B + b"\rdata: [DONE]\r\r"],
        # Lines that are not `data:` but look like events once cut at six bytes.
        [b"retry: " + chunk_event(0, "r") + b"\r", b"\n\r\n", _B + b"\r\n\r\n"],
        [b": comment\r", b"\n\r", b"\n" + _B + b"\r\n\r\ndata: [DONE]\r\n\r\n"],
        # Data that does not decode, found only when its blank line completes.
        [b"data: {not json\r", b"\n\r\n", _B + b"\r\n\r\n"],
        [_A[:-1] + b"\r", b"\n\r", b"\n" + _B + b"\r\n\r\n"],
    ],
)
async def test_crlf_blank_lines_split_across_reads_match_the_framer(pieces: list[bytes]) -> None:
    expected_texts, expected_error = reference(b"".join(pieces))
    texts, error = await run(pieces)
    assert texts == expected_texts
    assert (type(error) if error is not None else None) is expected_error


valid_events = st.lists(
    st.one_of(
        st.tuples(st.just("chunk"), st.integers(0, 2), st.text(max_size=8)),
        st.tuples(st.just("comment"), st.just(0), st.just("")),
        st.tuples(st.just("named"), st.integers(0, 2), st.text(max_size=8)),
        st.tuples(st.just("multiline"), st.just(0), st.just("")),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    spec=valid_events,
    line_ends=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=16),
    points=st.lists(st.integers(0, 10_000), max_size=12),
)
async def test_each_event_is_out_after_the_read_that_completes_it(
    spec: list[tuple[str, int, str]], line_ends: list[bytes], points: list[int]
) -> None:
    # No path may sit on a complete event waiting for more bytes (a live stream may pause
    # right after it): after every read, as many chunks as the framer has events.
    body = render_line_by_line(spec, line_ends, done=False)
    stream = CompletionStream(cast(Response, FakeResponse([])), accumulate=False)
    framer = SSEDecoder()
    ready = expected = 0
    try:
        for piece in cut(body, points):
            stream._consume(piece)
            while stream._backlog:
                stream._decode_backlog_slice()
            ready += len(stream._pending)
            stream._pending.clear()
            for event in framer.feed(piece):
                if event.data:
                    try:
                        msgspec.json.decode(event.data, type=CompletionChunk)
                    except msgspec.DecodeError:
                        return  # two events' lines merged into one: a decode error (above)
                    expected += 1
            assert ready == expected
    finally:
        await stream.aclose()


async def test_an_event_nested_deeper_than_msgspec_goes_is_a_decode_error() -> None:
    # msgspec raises a bare RecursionError there; it must not leak from the stream.
    deep = b'{"id":"c","model":"m","choices":[],"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    one = b"data: " + deep + b"\n\n"
    for pieces in ([one], [one + one], [one.replace(b"\n", b"\r\n")]):
        texts, error = await run(pieces)
        assert texts == []
        assert isinstance(error, StreamDecodeError)
