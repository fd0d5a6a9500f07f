import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncclient._sse import EventTooLargeError, ServerSentEvent, SSEDecoder

E = ServerSentEvent
BOM = b"\xef\xbb\xbf"


def decode(chunks: list[bytes], **kwargs: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def pieces(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def cut(raw: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


# A transliteration of the WHATWG algorithm on the whole input at once, on str:
# no chunking, no fast path. surrogateescape keeps arbitrary bytes round-trippable.
_EOL = re.compile(r"\r\n|\r|\n")


def reference(raw: bytes) -> tuple[list[ServerSentEvent], str | None]:
    text = raw.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    lines = _EOL.split(text)
    final = lines.pop()
    events: list[ServerSentEvent] = []
    data = ""
    event_type = ""
    retry: int | None = None
    last_id: str | None = None
    for line in [*lines, None, final]:
        if line is None:
            # EOF: the pending event is discarded; the unterminated line still counts.
            data, event_type, retry = "", "", None
            continue
        if line == "":
            if data:
                events.append(
                    E(
                        data.removesuffix("\n").encode("utf-8", "surrogateescape"),
                        event_type or "message",
                        last_id,
                        retry,
                    )
                )
            data, event_type, retry = "", "", None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        raw_value = value.encode("utf-8", "surrogateescape")
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event_type = raw_value.decode("utf-8", "replace")
        elif name == "id":
            if "\0" not in value:
                last_id = raw_value.decode("utf-8", "replace")
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return events, last_id


# --- line endings -----------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(eol: bytes) -> None:
    raw = b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    expected = [E(b"a\nb"), E(b"c")]
    assert decode([raw]) == expected
    assert decode(pieces(raw, 1)) == expected


def test_mixed_line_endings() -> None:
    assert decode([b"data: a\rdata: b\r\ndata: c\n\r\n"]) == [E(b"a\nb\nc")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # If the LF were a second line end, this would dispatch "a" as an event.
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [E(b"a\nb")]
    assert decoder.feed(b"\n") == []
    assert decoder.flush() == []


def test_cr_then_lf_in_separate_chunks_after_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [E(b"a")]
    assert decoder.feed(b"\ndata: b\n\n") == [E(b"b")]


def test_lone_cr_is_resolved_without_waiting() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [E(b"a")]


def test_trailing_cr_at_eof() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [E(b"a")]
    assert decoder.flush() == []
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 7\r") == []
    assert decoder.flush() == []
    assert decoder.last_event_id == "7"


# --- fields -----------------------------------------------------------------------


def test_multiline_data() -> None:
    assert decode([b"data: a\ndata: b\ndata: c\n\n"]) == [E(b"a\nb\nc")]


def test_comments_only_dispatch_nothing() -> None:
    assert decode([b": hello\n\n:\n\n: keep-alive\n\n"]) == []


def test_comment_inside_event_is_ignored() -> None:
    assert decode([b"data: a\n: note\ndata: b\n\n"]) == [E(b"a\nb")]


def test_event_field() -> None:
    raw = b"event: add\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n"
    assert decode([raw]) == [E(b"1", "add"), E(b"2"), E(b"3")]


def test_id_carries_over_and_nul_is_ignored() -> None:
    raw = b"id: 1\ndata: a\n\ndata: b\n\nid: x\x00y\ndata: c\n\nid\ndata: d\n\n"
    decoder = SSEDecoder()
    assert decoder.feed(raw) == [E(b"a", id="1"), E(b"b", id="1"), E(b"c", id="1"), E(b"d", id="")]
    assert decoder.last_event_id == ""


def test_id_without_data_updates_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 42\n\n") == []
    assert decoder.last_event_id == "42"
    assert decoder.feed(b"data: x\n\n") == [E(b"x", id="42")]


def test_id_survives_flush() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 5\ndata: x\n\n")
    decoder.flush()
    assert decoder.last_event_id == "5"
    assert decoder.feed(b"data: y\n\n") == [E(b"y", id="5")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"retry: 3000", 3000),
        (b"retry:0", 0),
        (b"retry: 0010", 10),
        (b"retry: 1.5", None),
        (b"retry: -1", None),
        (b"retry: 10 ", None),
        (b"retry:", None),
        (b"retry: \xd9\xa3", None),  # ARABIC-INDIC DIGIT THREE is not an ASCII digit
        (b"retry: " + b"9" * 5000, None),
    ],
)
def test_retry(line: bytes, expected: int | None) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(line + b"\ndata: x\n\n") == [E(b"x", retry=expected)]
    assert decoder.retry == expected
    # Per-event: the next event does not inherit it.
    assert decoder.feed(b"data: y\n\n") == [E(b"y")]


def test_retry_in_event_without_data() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 500\n\n") == []
    assert decoder.retry == 500


def test_field_without_colon() -> None:
    assert decode([b"data\n\n"]) == [E(b"")]
    assert decode([b"event\ndata: x\n\n"]) == [E(b"x")]
    assert decode([b"unknown\n\n"]) == []


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data:x", b"x"),
        (b"data: x", b"x"),
        (b"data:  x", b" x"),
        (b"data:\tx", b"\tx"),
        (b"data: x ", b"x "),
        (b"data: a: b", b"a: b"),
        (b"data:", b""),
        (b"data: ", b""),
    ],
)
def test_value_space_stripping(line: bytes, data: bytes) -> None:
    assert decode([line + b"\n\n"]) == [E(data)]


def test_unknown_and_case_sensitive_fields_ignored() -> None:
    assert decode([b"Data: x\nfoo: bar\ndata : y\n\n"]) == []


def test_empty_data_line() -> None:
    assert decode([b"data:\n\n"]) == [E(b"")]
    assert decode([b"data: \ndata: \n\n"]) == [E(b"\n")]


def test_done_sentinel() -> None:
    raw = b'data: {"a":1}\n\ndata: [DONE]\n\n'
    assert decode([raw]) == [E(b'{"a":1}'), E(b"[DONE]")]


def test_blank_lines_between_events() -> None:
    assert decode([b"\n\n\ndata: a\n\n\n\ndata: b\n\n\n"]) == [E(b"a"), E(b"b")]


# --- BOM and UTF-8 ----------------------------------------------------------------


def test_bom_stripped_at_start() -> None:
    assert decode([BOM + b"data: x\n\n"]) == [E(b"x")]


@pytest.mark.parametrize("split", [1, 2, 3])
def test_bom_split_across_chunks(split: int) -> None:
    raw = BOM + b"data: x\n\n"
    assert decode([raw[:split], raw[split:]]) == [E(b"x")]
    assert decode(pieces(raw, 1)) == [E(b"x")]


def test_bom_split_with_empty_chunks() -> None:
    assert decode([b"", b"\xef", b"", b"\xbb", b"\xbfdata: x\n\n"]) == [E(b"x")]


def test_only_one_bom_stripped_and_not_later() -> None:
    # A second BOM becomes part of the field name, so that line is an unknown field.
    assert decode([BOM + BOM + b"data: x\n\n"]) == []
    assert decode([b"data: " + BOM + b"x\n\n" + BOM + b"data: y\n\n"]) == [E(BOM + b"x")]


def test_bom_prefix_lookalike_is_kept() -> None:
    assert decode([b"\xef", b"\xbbdata: x\n\n"]) == []
    assert decode([b"data: \xef", b"\xbb\n\n"]) == [E(b"\xef\xbb")]


def test_utf8_split_across_chunks() -> None:
    payload = "héllo €😀".encode()
    raw = b"event: \xc3\xa9v\nid: \xe2\x82\xac\ndata: " + payload + b"\n\n"
    expected = [E(payload, "év", "€")]
    for size in (1, 2, 3, 5):
        assert decode(pieces(raw, size)) == expected


def test_invalid_utf8_kept_raw_in_data_replaced_in_event() -> None:
    raw = b"event: a\xffb\ndata: \xff\xfe\n\n"
    assert decode([raw]) == [E(b"\xff\xfe", "a\ufffdb")]


# --- EOF ----------------------------------------------------------------------------


def test_event_at_eof_without_blank_line_is_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"partial": ') == []
    assert decoder.flush() == []
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete line\n") == []
    assert decoder.flush() == []


def test_flush_resets() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"event: e\ndata: a\ndata: b")
    assert decoder.flush() == []
    assert decoder.buffered == 0
    assert decoder.feed(BOM + b"data: c\n\n") == [E(b"c")]


def test_buffered() -> None:
    decoder = SSEDecoder()
    assert decoder.buffered == 0
    decoder.feed(b"\xef")
    assert decoder.buffered == 1
    decoder.feed(b"\xbb\xbfdata: abc")
    assert decoder.buffered == len(b"data: abc")
    decoder.feed(b"def\n")
    assert decoder.buffered >= len(b"abcdef")
    decoder.feed(b"data")
    assert decoder.buffered >= len(b"abcdefdata")
    decoder.feed(b"\n\n")
    assert decoder.buffered == 0


# --- WHATWG examples --------------------------------------------------------------


def test_whatwg_stock_ticker() -> None:
    assert decode([b"data: YHOO\ndata: +2\ndata: 10\n\n"]) == [E(b"YHOO\n+2\n10")]


def test_whatwg_first_second_third() -> None:
    raw = (
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n\n"
    )
    assert decode([raw]) == [
        E(b"first event", id="1"),
        E(b"second event", id=""),
        E(b" third event", id=""),
    ]


def test_whatwg_empty_data_blocks() -> None:
    # The last block is not followed by a blank line, so it is never fired.
    raw = b"data\n\ndata\ndata\n\ndata:"
    assert decode([raw]) == [E(b""), E(b"\n")]


def test_whatwg_data_with_and_without_space() -> None:
    assert decode([b"data:test\n\ndata: test\n\n"]) == [E(b"test"), E(b"test")]


def test_whatwg_event_types() -> None:
    raw = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n"
    assert decode([raw]) == [
        E(b"73857293", "add"),
        E(b"2153", "remove"),
        E(b"113411", "add"),
    ]


# --- size limit and long lines ------------------------------------------------------


def test_max_event_size_exceeded_in_one_chunk() -> None:
    decoder = SSEDecoder(max_event_size=100)
    with pytest.raises(EventTooLargeError, match="100"):
        decoder.feed(b"data: " + b"x" * 200 + b"\n\n")


def test_max_event_size_exceeded_by_partial_line() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    assert decoder.feed(b"data: " + b"x" * 900) == []
    with pytest.raises(EventTooLargeError, match="1000"):
        decoder.feed(b"x" * 200)
    assert decoder.buffered == 0


def test_max_event_size_exceeded_by_many_lines() -> None:
    decoder = SSEDecoder(max_event_size=100)
    line = b"data: " + b"x" * 20 + b"\n"
    for _ in range(4):
        assert decoder.feed(line) == []
    with pytest.raises(EventTooLargeError):
        decoder.feed(line)


def test_max_event_size_boundary_counts_raw_line() -> None:
    assert decode([b"data: 1234\n\n"], max_event_size=10) == [E(b"1234")]
    with pytest.raises(EventTooLargeError):
        decode([b"data: 12345\n\n"], max_event_size=10)
    with pytest.raises(EventTooLargeError):
        decode(pieces(b"data: 12345\n\n", 1), max_event_size=10)


def test_max_event_size_is_per_event() -> None:
    raw = b"data: " + b"x" * 50 + b"\n\n"
    assert decode([raw * 100], max_event_size=64) == [E(b"x" * 50)] * 100


def test_negative_max_event_size_rejected() -> None:
    with pytest.raises(ValueError, match="max_event_size"):
        SSEDecoder(max_event_size=-1)


def test_error_is_value_error() -> None:
    assert issubclass(EventTooLargeError, ValueError)


def test_5mb_single_line_in_1kb_chunks() -> None:
    payload = bytes(range(32, 127)) * (5 * 1024 * 1024 // 95)
    raw = b"data: " + payload + b"\n\ndata: next\n\n"
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in pieces(raw, 1024):
        events.extend(decoder.feed(chunk))
    assert events == [E(payload), E(b"next")]
    # Linearity without a clock: each input byte went through C-level scans O(1) times.
    assert decoder._scanned <= 3 * len(raw)


def test_long_line_in_1_byte_chunks_is_scanned_linearly() -> None:
    payload = b"x" * 200_000
    raw = b"data: " + payload + b"\r\n\r\n"
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for i in range(len(raw)):
        events.extend(decoder.feed(raw[i : i + 1]))
        if i == len(raw) // 2:
            assert decoder.buffered == i + 1
    assert events == [E(payload)]
    # A decoder that re-scanned its buffer on every feed would be at ~len(raw)**2 / 2.
    assert decoder._scanned <= 3 * len(raw)


def test_many_events_in_small_chunks_are_scanned_linearly() -> None:
    raw = b"".join(b'id: %d\r\ndata: {"n": %d}\r\n\r\n' % (i, i) for i in range(2000))
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in pieces(raw, 7):
        events.extend(decoder.feed(chunk))
    assert len(events) == 2000
    assert events[-1] == E(b'{"n": 1999}', id="1999")
    assert decoder._scanned <= 3 * len(raw)


def test_fast_path_and_slow_path_agree_across_chunk_boundaries() -> None:
    raw = b"".join(
        b"data: %d\n\n" % i if i % 3 else b"event: e\nid: %d\ndata: %d\ndata: z\n\n" % (i, i)
        for i in range(300)
    )
    whole = decode([raw])
    assert len(whole) == 300
    for size in (1, 2, 3, 5, 8, 13, 64, 4096):
        assert decode(pieces(raw, size)) == whole


# --- property tests -----------------------------------------------------------------

_text_values = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12).map(
    str.encode
)
_byte_values = st.binary(max_size=10).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_values = st.one_of(
    _text_values,
    _byte_values,
    st.sampled_from([b"", b" ", b"  x", b"[DONE]", b'{"t": "\xc3\xa9"}', BOM, b"1\x00", b"123"]),
)
_names = st.sampled_from([b"data", b"data", b"data", b"event", b"id", b"retry", b"", b"x", b"Data"])
_fields = st.one_of(
    st.tuples(_names, st.sampled_from([b":", b": ", b":  "]), _values).map(b"".join),
    st.tuples(st.sampled_from([b"data: ", b"data:"]), _values).map(b"".join),
    st.sampled_from([b"id: 7", b"id: 8\x00", b"id", b"retry: 1000", b"retry: 1x", b"event: e"]),
    _names,
    _values.map(lambda v: b":" + v),
    st.just(b""),
)
_eols = st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"])
# Mostly well-formed events (fields then a blank line) so the single-line fast path,
# multi-line blocks and carried-over state are all exercised, plus stray lines.
_events = st.tuples(st.lists(st.tuples(_fields, _eols), max_size=4), _eols).map(
    lambda e: b"".join(line + eol for line, eol in e[0]) + e[1]
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    prefix = draw(st.sampled_from([b"", b"", BOM, BOM + BOM, b"\xef\xbb"]))
    body = b"".join(draw(st.lists(_events, max_size=12)))
    final = draw(st.sampled_from([b"", b"", b"data: cut", b"id: last", b"\r", b"retry: 9"]))
    return prefix + body + final


@st.composite
def split_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    raw = draw(streams())
    points = draw(st.lists(st.integers(0, len(raw)), max_size=max(1, len(raw))))
    return raw, cut(raw, points)


@settings(max_examples=300, deadline=None)
@given(split_streams())
def test_any_split_matches_whole_and_reference(case: tuple[bytes, list[bytes]]) -> None:
    raw, chunks = case
    expected, expected_id = reference(raw)
    whole = SSEDecoder()
    assert whole.feed(raw) + whole.flush() == expected
    assert whole.last_event_id == expected_id
    split = SSEDecoder()
    assert [e for c in chunks for e in split.feed(c)] + split.flush() == expected
    assert split.last_event_id == expected_id


@settings(max_examples=100, deadline=None)
@given(streams())
def test_one_byte_split_matches_reference(raw: bytes) -> None:
    assert decode(pieces(raw, 1)) == reference(raw)[0]


@settings(max_examples=200, deadline=None)
@given(split_streams(), st.integers(0, 40))
def test_size_limit_is_split_independent(case: tuple[bytes, list[bytes]], limit: int) -> None:
    raw, chunks = case
    expected, _ = reference(raw)
    try:
        whole = decode([raw], max_event_size=limit)
    except EventTooLargeError:
        whole = None
    if whole is not None:
        assert whole == expected
    split = SSEDecoder(max_event_size=limit)
    got: list[ServerSentEvent] = []
    try:
        for chunk in chunks:
            got.extend(split.feed(chunk))
        got.extend(split.flush())
    except EventTooLargeError:
        assert whole is None
        assert got == expected[: len(got)]
    else:
        assert whole is not None
        assert got == expected
        assert all(len(e.data) <= limit for e in got)
