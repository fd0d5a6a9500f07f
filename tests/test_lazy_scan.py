"""The lazy logprobs path: the compiled structural scan (``asyncclient/_scan.c``) and the
decode around what it finds must give exactly what msgspec alone gives, on any body."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncclient import LazyCompletion, ResponseDecodeError, _decode
from asyncclient._decode import decode_completion, decode_completion_lazy


@pytest.fixture(autouse=True)
def scan_every_body(monkeypatch: pytest.MonkeyPatch) -> None:
    # In production small bodies, and bodies with little logprobs, skip the scan (msgspec is
    # as fast there); here every body takes it, so small generated bodies test it.
    monkeypatch.setattr(_decode, "_SCAN_FROM_BYTES", 0)
    monkeypatch.setattr(_decode, "_CUT_FROM_SHARE", 0)


def msgspec_alone(body: bytes) -> LazyCompletion | ResponseDecodeError:
    """The reference: the same call with the scan switched off."""
    scan = _decode._find_logprobs
    _decode._find_logprobs = None
    try:
        return decode_completion_lazy(body)
    except ResponseDecodeError as exc:
        return exc
    finally:
        _decode._find_logprobs = scan


def lazy(body: bytes) -> LazyCompletion | ResponseDecodeError:
    try:
        return decode_completion_lazy(body)
    except ResponseDecodeError as exc:
        return exc


def completion_body(*choices: dict[str, Any]) -> bytes:
    """A completion body around ``choices``, encoded compactly."""
    return msgspec.json.encode(
        {"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": choices}
    )


def reference_spans(body: bytes) -> list[tuple[int, int, int]] | None:
    """What the scan must find, by the standard library's JSON parser (on latin-1 text, so
    string offsets are byte offsets), with the same rules for giving up."""
    text = body.decode("latin-1")
    decoder = json.JSONDecoder()
    spans: list[tuple[int, int, int]] = []

    def space(at: int) -> int:
        while at < len(text) and text[at] in " \t\n\r":
            at += 1
        return at

    def members(at: int) -> Iterator[tuple[str, int, int]]:
        """(key, value start, value end) of the object at ``at``; returns past it."""
        at = space(at + 1)
        if text[at] == "}":
            return
        while True:
            _, key_end = decoder.raw_decode(text, at)
            key = text[at + 1 : key_end - 1]
            if "\\" in key:
                raise LookupError("an escaped key")
            at = space(space(key_end) + 1)
            _, end = decoder.raw_decode(text, at)
            yield key, at, end
            at = space(end)
            if text[at] == "}":
                return
            at = space(at + 1)

    try:
        start = space(0)
        if text[start] != "{" or space(decoder.raw_decode(text, start)[1]) != len(text):
            return None
        keys = []
        for key, value, _ in members(start):
            keys.append(key)
            if key != "choices" or text[value] != "[":
                continue
            position, at = 0, space(value + 1)
            while text[at] != "]":
                if text[at] == "{":
                    found = [(position, s, e) for k, s, e in members(at) if k == "logprobs"]
                    if len(found) > 1:
                        return None
                    spans.extend(found)
                at = space(decoder.raw_decode(text, at)[1])
                at = space(at + 1) if text[at] == "," else at
                position += 1
        if keys.count("choices") > 1:
            return None
    except LookupError:
        return None
    return spans


def test_the_scan_is_built() -> None:
    # The test command installs with a C compiler: the scan must be there, or every other
    # test here would only test msgspec against itself.
    assert _decode._find_logprobs is not None


# JSON text built to trip a scanner: quotes, backslashes (runs of them too) and brackets
# inside strings, multi-byte characters, and control characters that json.dumps escapes.
tricky_text = st.lists(
    st.sampled_from([*'"\\{}[]:,ab \n\té€😀', "\\\\", '\\"', "\x00", "logprobs"]),
    max_size=24,
).map("".join)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            tricky_text | st.sampled_from(["logprobs", "choices"]), children, max_size=6
        )
    ),
    max_leaves=40,
)


# Keys the scan reads as they are; backslashes in them make it give up (tested apart).
plain_keys = st.sampled_from(["x", "extra", "meta", "logprobs", "choices"])
containers = st.dictionaries(tricky_text, json_values, min_size=1, max_size=6) | st.lists(
    json_values, min_size=1, max_size=6
)


@st.composite
def completions(draw: st.DrawFn, escaped_keys: bool = True) -> dict[str, Any]:
    """A completion whose first choice has logprobs that are an object or an array (so the
    decode around the scan runs), with fields the model does not know at both levels."""
    keys = plain_keys | tricky_text if escaped_keys else plain_keys
    choices = []
    for index in range(draw(st.integers(1, 3))):
        choice: dict[str, Any] = {"index": index, "text": draw(tricky_text)}
        if draw(st.booleans()):
            choice[draw(keys)] = draw(json_values)
        if index == 0:
            choice["logprobs"] = draw(containers)
        elif draw(st.booleans()):
            choice["logprobs"] = draw(json_values)
        if draw(st.booleans()):
            choice["finish_reason"] = draw(st.none() | tricky_text)
        choices.append(dict(draw(st.permutations(list(choice.items())))))
    body: dict[str, Any] = {
        "id": draw(tricky_text),
        "object": "text_completion",
        "created": 1,
        "model": draw(tricky_text),
        "choices": choices,
    }
    if draw(st.booleans()):
        extra = draw(keys)
        if extra != "choices":
            body[extra] = draw(json_values)
    return dict(draw(st.permutations(list(body.items()))))


def renderings(document: dict[str, Any]) -> Iterator[bytes]:
    """The same document as compact bytes, spaced and indented, and with every non-ASCII
    character escaped (surrogate pairs included)."""
    yield msgspec.json.encode(document)
    yield json.dumps(document, ensure_ascii=False).encode()
    yield json.dumps(document, indent=2, ensure_ascii=True).encode()
    yield json.dumps(document, indent="\t", separators=(" ,", " :  ")).encode()


@settings(max_examples=300, deadline=None)
@given(document=completions())
def test_any_completion_decodes_as_msgspec_alone_decodes_it(document: dict[str, Any]) -> None:
    assert _decode._find_logprobs is not None
    for body in renderings(document):
        expected = msgspec_alone(body)
        assert not isinstance(expected, ResponseDecodeError)
        assert lazy(body) == expected
        assert _decode._find_logprobs(body) == reference_spans(body)


@settings(max_examples=200, deadline=None)
@given(document=completions(escaped_keys=False))
def test_completions_with_plain_keys_are_cut_where_their_logprobs_lie(
    document: dict[str, Any],
) -> None:
    # No escaped or repeated keys: the scan must not give up (when it does, msgspec decodes
    # the body whole and the result is equal anyway, which alone would prove nothing).
    assert _decode._find_logprobs is not None
    for body in renderings(document):
        spans = _decode._find_logprobs(body)
        assert spans
        assert spans == reference_spans(body)
        assert _decode._decode_around(body, spans) == msgspec_alone(body)


def _outside_logprobs(completion: LazyCompletion) -> tuple[Any, ...]:
    choices = [(c.index, c.text, c.finish_reason) for c in completion.choices]
    return (completion.id, completion.object, completion.model, completion.usage, choices)


@settings(max_examples=200, deadline=None)
@given(document=completions(escaped_keys=False), data=st.data())
def test_damage_inside_logprobs_never_changes_the_fields_around_them(
    document: dict[str, Any], data: st.DataObject
) -> None:
    body = msgspec.json.encode(document)
    original = msgspec_alone(body)
    assert isinstance(original, LazyCompletion)
    assert _decode._find_logprobs is not None
    spans = _decode._find_logprobs(body)
    assert spans
    _, start, end = spans[0]
    damaged = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        damaged[data.draw(st.integers(start, end - 1))] = data.draw(
            st.sampled_from(b'"\\{}[],: x\xff')
        )
    expected = msgspec_alone(bytes(damaged))
    got = lazy(bytes(damaged))
    if isinstance(expected, LazyCompletion):
        assert got == expected
    elif isinstance(got, LazyCompletion):
        # Accepted now, reported by logprobs(): everything else must be as it was sent.
        assert _outside_logprobs(got) == _outside_logprobs(original)


@settings(max_examples=150, deadline=None)
@given(document=completions(), data=st.data())
def test_damaged_bodies_fail_now_or_when_their_logprobs_are_read(
    document: dict[str, Any], data: st.DataObject
) -> None:
    body = bytearray(msgspec.json.encode(document))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(body) - 1))
        body[position] = data.draw(st.sampled_from(b'"\\{}[],: x\xff'))
    cut = data.draw(st.integers(0, len(body)))
    damaged = bytes(body[:cut])
    expected = msgspec_alone(damaged)
    got = lazy(damaged)
    if isinstance(expected, LazyCompletion):
        assert got == expected
    elif isinstance(got, LazyCompletion):
        # The scan does not check the JSON inside logprobs: the damage is there, and
        # reading them reports it.
        failures = []
        for choice in got.choices:
            try:
                choice.logprobs()
            except ResponseDecodeError as exc:
                failures.append(exc)
        assert failures


@pytest.mark.parametrize("typo", [b'["a"}', b"1]"])
def test_a_bracket_typo_in_logprobs_does_not_swallow_the_fields_after_them(typo: bytes) -> None:
    # Counted as one kind of bracket, the logprobs would end at the choice's own "}", and
    # text and finish_reason would vanish into them without an error.
    body = (
        b'{"id":"c","object":"o","model":"m","choices":[{"index":0,'
        b'"logprobs":{"tokens":' + typo + b',"text":"hello","finish_reason":"stop"}}]}'
    )
    assert _decode._find_logprobs is not None
    assert _decode._find_logprobs(body) is None
    assert isinstance(lazy(body), ResponseDecodeError)


def test_nesting_deeper_than_msgspec_goes_is_a_decode_error() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    body = (
        b'{"id":"c","object":"o","model":"m","choices":[{"index":0,"text":"t",'
        b'"logprobs":{"tokens":["a"],"x":' + deep + b"}}]}"
    )
    with pytest.raises(ResponseDecodeError, match="nested too deeply"):
        decode_completion(body)
    assert isinstance(msgspec_alone(body), ResponseDecodeError)
    completion = lazy(body)  # the nesting is inside the logprobs: reported when read
    assert isinstance(completion, LazyCompletion)
    assert completion.choices[0].text == "t"
    with pytest.raises(ResponseDecodeError):
        completion.choices[0].logprobs()


def test_the_scan_stays_in_bounds_at_the_end_of_any_prefix() -> None:
    assert _decode._find_logprobs is not None
    body = b'{"choices": [{"logprobs": {"a": ["\\"", 1]}, "x": 2}], "y": "z"}'
    for end in range(len(body)):
        # bytearray and memoryview slices end exactly at the data (bytes have a hidden NUL).
        for prefix in (bytearray(body[:end]), memoryview(body)[:end]):
            assert _decode._find_logprobs(prefix) is None  # type: ignore[arg-type]
    assert _decode._find_logprobs(body) is not None


def test_every_truncation_of_a_body_fails_as_msgspec_alone_fails() -> None:
    body = completion_body(
        {
            "index": 0,
            "text": 'a "quoted" {text} \\',
            "logprobs": {"tokens": ["a", '"', "\\"], "token_logprobs": [-0.5, -1.0, -2e-3]},
            "finish_reason": "stop",
        }
    )
    assert lazy(body) == msgspec_alone(body)
    for end in range(len(body)):
        assert isinstance(lazy(body[:end]), ResponseDecodeError), end


@pytest.mark.parametrize("run", range(1, 70))
def test_backslash_runs_across_block_edges(run: int) -> None:
    # The scan works in 64-byte blocks: runs of backslashes of every length, ending at
    # every offset, including runs that straddle a block edge (an odd run escapes a quote).
    rng = random.Random(run)
    tokens = ["x" * rng.randint(0, 63) + "\\" * run + '"' * rng.randint(0, 2) for _ in range(8)]
    body = completion_body({"index": 0, "text": "t", "logprobs": {"tokens": tokens}})
    assert _decode._find_logprobs is not None
    assert _decode._find_logprobs(body) == reference_spans(body) != []
    completion = lazy(body)
    assert isinstance(completion, LazyCompletion)
    assert completion == msgspec_alone(body)
    logprobs = completion.choices[0].logprobs()
    assert logprobs is not None
    assert logprobs.tokens == tokens


@pytest.mark.parametrize(
    "body",
    [
        # Keys the raw bytes cannot vouch for: an escaped spelling, and repeats.
        b'{"id":"c","object":"o","model":"m","choices":[{"index":0,"text":"t",'
        b'"logprob\\u0073":{"tokens":["a"]}}]}',
        b'{"id":"c","object":"o","model":"m","choices":[{"index":0,"text":"t",'
        b'"logprobs":{"tokens":["a"]},"logprobs":{"tokens":["b"]}}]}',
        b'{"id":"c","object":"o","model":"m","choices":[{"index":0,"text":"t",'
        b'"logprobs":{"tokens":["a"]}}],"choices":[{"index":1,"text":"u","logprobs":null}]}',
        b'{"id":"c","object":"o","model":"m","choice\\u0073":[{"index":0,"text":"t",'
        b'"logprobs":{"tokens":["a"]}}]}',
        b'{"id":"c","object":"o","model":"m","choices":[{"index":0,"text":"t",'
        b'"logprobs":{"tokens":["a"]}}],"choice\\u0073":[{"index":1,"text":"u"}]}',
        b'{"id":"c","object":"o","model":"m","choices":[{"index":0,"text":"t",'
        b'"logprobs":{"tokens":["a"]}}],"choices":[{"index":1,"text":"u"}]}',
        # Not an object, trailing bytes, and choices that are not objects.
        b'[{"choices":[{"logprobs":{}}]}]',
        b'{"id":"c","object":"o","model":"m","choices":[{"logprobs":{}}]} x',
        b'{"id":"c","object":"o","model":"m","choices":[1,{"index":0,"logprobs":[]}]}',
        b'{"id":"c","object":"o","model":"m","choices":{"logprobs":{}}}',
    ],
)
def test_bodies_the_scan_gives_up_on_decode_as_msgspec_alone_decodes_them(body: bytes) -> None:
    assert _decode._find_logprobs is not None
    assert _decode._find_logprobs(body) == reference_spans(body)
    expected = msgspec_alone(body)
    got = lazy(body)
    if isinstance(expected, ResponseDecodeError):
        assert isinstance(got, ResponseDecodeError)
        assert str(got) == str(expected)
    else:
        assert got == expected


def test_spans_are_the_logprobs_values_and_their_choices() -> None:
    assert _decode._find_logprobs is not None
    body = (
        b'{"choices": [ {"logprobs" : {"a": "}]\\""} , "index": 0},'
        b'{"index": 1}, {"logprobs": null}, 7, {"logprobs":[1,[2]]}], "logprobs": {}}'
    )
    spans = _decode._find_logprobs(body)
    assert spans is not None
    assert [(position, body[start:end]) for position, start, end in spans] == [
        (0, b'{"a": "}]\\""}'),
        (2, b"null"),
        (4, b"[1,[2]]"),
    ]


def test_without_the_scan_msgspec_checks_the_logprobs_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = (
        b'{"id":"c","object":"o","model":"m","choices":[{"index":0,"text":"t",'
        b'"logprobs":{"tokens":["a"],}}]}'
    )
    assert isinstance(lazy(body), LazyCompletion)  # the damage waits until logprobs()
    monkeypatch.setattr(_decode, "_find_logprobs", None)
    with pytest.raises(ResponseDecodeError):
        decode_completion_lazy(body)


def test_a_large_body_takes_the_scan_and_matches_eager_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.undo()  # the production threshold
    tokens = [f" tok{i}" for i in range(600)]
    body = completion_body(
        {
            "index": 0,
            "text": "".join(tokens),
            "logprobs": {
                "tokens": tokens,
                "token_logprobs": [-i / 7 for i in range(600)],
                "top_logprobs": [{t: -0.25} for t in tokens],
                "text_offset": list(range(600)),
            },
            "finish_reason": "length",
        }
    )
    assert len(body) >= _decode._SCAN_FROM_BYTES
    calls: list[int] = []
    scan = _decode._find_logprobs
    assert scan is not None

    def counted(data: bytes) -> list[tuple[int, int, int]] | None:
        calls.append(len(data))
        return scan(data)

    monkeypatch.setattr(_decode, "_find_logprobs", counted)
    completion = decode_completion_lazy(body)
    assert calls == [len(body)]
    eager = decode_completion(body)
    assert completion.choices[0].text == eager.choices[0].text
    assert completion.choices[0].logprobs() == eager.choices[0].logprobs


def _with_logprobs(choices: int, tokens: list[str], extra: str = "") -> bytes:
    entries = []
    for index in range(choices):
        logprobs = {
            "tokens": tokens,
            "token_logprobs": [-0.5] * len(tokens),
            "top_logprobs": [{t: -0.5} for t in tokens],
            "text_offset": list(range(len(tokens))),
        }
        entry = msgspec.json.encode({"text": "".join(tokens), "index": index, "logprobs": logprobs})
        entries.append(entry.decode()[:-1] + extra + ',"finish_reason":"length"}')
    return (
        '{"id":"c","object":"text_completion","model":"m",'
        f'"choices":[{",".join(entries)}],"usage":{{"prompt_tokens":1}}}}'
    ).encode()


def _no_top_logprobs_then_an_object_field() -> bytes:
    # A byte search for where the logprobs end (an earlier prototype) stopped at the end of
    # the later field here, and lost finish_reason.
    tokens = [f"t{i}" for i in range(300)]
    return completion_body(
        {
            "text": "".join(tokens),
            "index": 0,
            "logprobs": {"tokens": tokens, "token_logprobs": [-0.5] * 300},
            "finish_reason": "stop",
            "content_filter_results": {"flagged_ids": [1]},
        }
    )


@pytest.mark.parametrize(
    "data",
    [
        _with_logprobs(1, [" a", " b"]),
        _with_logprobs(3, [" a", " b"]),
        _with_logprobs(1, ["]}", "[", '"]}', "\\", "{x}"]),
        _with_logprobs(1, [" a"], extra=',"later":{"deep":[1]}'),
        _with_logprobs(2, [" a"], extra=',"later":{"deep":[1]}'),
        msgspec.json.format(_with_logprobs(2, [" a", "}"]), indent=4),
        _no_top_logprobs_then_an_object_field(),
    ],
    ids=["one", "three", "brackets", "later-field", "two-later", "pretty", "later-object"],
)
def test_lazy_gives_what_eager_gives(data: bytes) -> None:
    eager = decode_completion(data)
    completion = decode_completion_lazy(data)
    assert [c.text for c in completion.choices] == [c.text for c in eager.choices]
    assert [c.finish_reason for c in completion.choices] == [c.finish_reason for c in eager.choices]
    assert [c.logprobs() for c in completion.choices] == [c.logprobs for c in eager.choices]
    assert completion.usage == eager.usage
    assert (completion.id, completion.model, completion.created) == (
        eager.id,
        eager.model,
        eager.created,
    )


def test_small_bodies_and_bodies_of_little_logprobs_keep_the_msgspec_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.undo()  # the production thresholds
    scan = _decode._find_logprobs
    assert scan is not None
    scanned: list[int] = []
    cut: list[int] = []
    decode_around = _decode._decode_around

    def counted_scan(data: bytes) -> list[tuple[int, int, int]] | None:
        scanned.append(len(data))
        return scan(data)

    def counted_cut(data: bytes, spans: list[tuple[int, int, int]]) -> LazyCompletion | None:
        cut.append(len(data))
        return decode_around(data, spans)

    monkeypatch.setattr(_decode, "_find_logprobs", counted_scan)
    monkeypatch.setattr(_decode, "_decode_around", counted_cut)
    small = _with_logprobs(1, [" a"] * 20)
    long_text = _with_logprobs(1, [" a"] * 20).replace(b'"m"', b'"' + b"m" * 40_000 + b'"')
    large = _with_logprobs(1, [" a"] * 1000)
    for data in (small, long_text, large):
        assert decode_completion_lazy(data).choices[0].logprobs() == (
            decode_completion(data).choices[0].logprobs
        )
    assert scanned == [len(long_text), len(large)]  # the small one: not even scanned
    assert cut == [len(large)]  # the long text: its logprobs are too small a share
