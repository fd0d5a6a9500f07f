"""Tier 1: CompletionAccumulator turns stream chunks into the completion a plain call returns."""

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncclient import (
    Completion,
    CompletionAccumulator,
    CompletionChoice,
    CompletionChunk,
    CompletionUsage,
    Logprobs,
)
from asyncclient._accumulate import chunk_from_completion

MODEL = "openai/gpt-3.5-turbo-instruct"


def chunk(
    *choices: CompletionChoice, usage: CompletionUsage | None = None, chunk_id: str = "cmpl-1"
) -> CompletionChunk:
    return CompletionChunk(
        id=chunk_id,
        model=MODEL,
        created=1700000000,
        system_fingerprint="fp_1",
        choices=list(choices),
        usage=usage,
    )


def piece(index: int, text: str, finish_reason: str | None = None) -> CompletionChoice:
    return CompletionChoice(index=index, text=text, finish_reason=finish_reason)


def test_snapshot_before_any_chunk_is_none() -> None:
    accumulator = CompletionAccumulator()
    assert accumulator.snapshot() is None
    assert accumulator.text() == ""
    assert accumulator.chunk_count == 0


def test_single_choice_text_and_metadata() -> None:
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(piece(0, "Hel")))
    accumulator.add(chunk(piece(0, "lo")))
    accumulator.add(chunk(piece(0, "!", "stop")))
    snapshot = accumulator.snapshot()
    assert snapshot == Completion(
        id="cmpl-1",
        choices=[CompletionChoice(index=0, text="Hello!", finish_reason="stop")],
        model=MODEL,
        object="text_completion",
        created=1700000000,
        system_fingerprint="fp_1",
        usage=None,
    )
    assert accumulator.chunk_count == 3


def test_interleaved_choices_keep_their_own_text_and_finish_reason() -> None:
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(piece(1, "b1 ")))
    accumulator.add(chunk(piece(0, "a1 ")))
    accumulator.add(chunk(piece(2, "c1 ", "length")))
    accumulator.add(chunk(piece(0, "a2", "stop"), piece(1, "b2 ")))
    accumulator.add(chunk(piece(1, "b3", "content_filter")))
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert snapshot.choices == [
        CompletionChoice(index=0, text="a1 a2", finish_reason="stop"),
        CompletionChoice(index=1, text="b1 b2 b3", finish_reason="content_filter"),
        CompletionChoice(index=2, text="c1 ", finish_reason="length"),
    ]
    assert accumulator.text(1) == "b1 b2 b3"
    assert accumulator.text(7) == ""


def test_finish_reason_is_none_while_a_choice_is_running() -> None:
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(piece(0, "a", "stop"), piece(1, "b")))
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert [c.finish_reason for c in snapshot.choices] == ["stop", None]


def test_a_later_null_finish_reason_does_not_erase_an_earlier_one() -> None:
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(piece(0, "a", "length")))
    accumulator.add(chunk(piece(0, "")))
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert snapshot.choices[0].finish_reason == "length"


def test_usage_comes_from_the_last_chunk_that_has_usage() -> None:
    early = CompletionUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    final = CompletionUsage(prompt_tokens=1, completion_tokens=5, total_tokens=6)
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(piece(0, "a"), usage=early))
    accumulator.add(chunk(piece(0, "b", "stop")))
    accumulator.add(chunk(usage=final))  # the usage-only chunk: empty choices
    accumulator.add(chunk())
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert snapshot.usage == final
    assert accumulator.usage == final
    assert snapshot.text == "ab"


def test_usage_only_stream_has_no_choices() -> None:
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(usage=CompletionUsage(total_tokens=3)))
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert snapshot.choices == []
    assert snapshot.text == ""


def test_metadata_comes_from_the_first_chunk() -> None:
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(piece(0, "a"), chunk_id="first"))
    accumulator.add(chunk(piece(0, "b"), chunk_id="second"))
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert snapshot.id == "first"


def test_logprobs_are_merged_in_order() -> None:
    first = Logprobs(
        tokens=["a", "b"],
        token_logprobs=[-0.1, -0.2],
        top_logprobs=[{"a": -0.1}, {"b": -0.2}],
        text_offset=[0, 1],
    )
    second = Logprobs(tokens=["c"], token_logprobs=[None], top_logprobs=[None], text_offset=[2])
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(CompletionChoice(index=0, text="ab", logprobs=first)))
    accumulator.add(chunk(CompletionChoice(index=1, text="x")))
    accumulator.add(chunk(CompletionChoice(index=0, text="c", logprobs=second)))
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert snapshot.choices[0].logprobs == Logprobs(
        tokens=["a", "b", "c"],
        token_logprobs=[-0.1, -0.2, None],
        top_logprobs=[{"a": -0.1}, {"b": -0.2}, None],
        text_offset=[0, 1, 2],
    )
    assert snapshot.choices[1].logprobs is None
    # The accumulator copied the first part instead of extending the caller's object.
    assert first.tokens == ["a", "b"]


def test_logprobs_without_top_logprobs_then_with() -> None:
    accumulator = CompletionAccumulator()
    plain = Logprobs(tokens=["a"], token_logprobs=[-1.0], top_logprobs=None, text_offset=[0])
    top = Logprobs(tokens=["b"], token_logprobs=[-2.0], top_logprobs=[{"b": -2.0}], text_offset=[1])
    accumulator.add(chunk(CompletionChoice(index=0, text="a", logprobs=plain)))
    accumulator.add(chunk(CompletionChoice(index=0, text="b", logprobs=top)))
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert snapshot.choices[0].logprobs is not None
    assert snapshot.choices[0].logprobs.tokens == ["a", "b"]
    assert snapshot.choices[0].logprobs.top_logprobs == [{"b": -2.0}]


def test_long_streams_stay_correct_across_compaction() -> None:
    accumulator = CompletionAccumulator()
    expected: list[list[str]] = [[], []]
    for step in range(5000):
        for index in (0, 1):
            text = f"{index}:{step} "
            expected[index].append(text)
            accumulator.add(chunk(piece(index, text)))
        if step in (0, 511, 512, 1023, 2500):
            # Reading midway must not lose or duplicate anything.
            assert accumulator.text(0) == "".join(expected[0])
    accumulator.add(chunk(piece(0, "end", "stop")))
    expected[0].append("end")
    snapshot = accumulator.snapshot()
    assert snapshot is not None
    assert snapshot.choices[0].text == "".join(expected[0])
    assert snapshot.choices[1].text == "".join(expected[1])
    assert accumulator.chunk_count == 10001


def test_snapshots_are_independent_of_later_chunks() -> None:
    accumulator = CompletionAccumulator()
    accumulator.add(chunk(piece(0, "a")))
    before = accumulator.snapshot()
    accumulator.add(chunk(piece(0, "b", "stop")))
    assert before is not None
    assert before.text == "a"
    assert before.choices[0].finish_reason is None


def test_chunk_from_completion_round_trips_through_the_accumulator() -> None:
    completion = Completion(
        id="cmpl-9",
        choices=[
            CompletionChoice(index=0, text="zero", finish_reason="stop"),
            CompletionChoice(index=1, text="one", finish_reason="length"),
        ],
        model=MODEL,
        object="text_completion",
        created="1700000000",
        system_fingerprint="fp_9",
        usage=CompletionUsage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
    )
    as_chunk = chunk_from_completion(completion)
    assert as_chunk == CompletionChunk(
        id="cmpl-9",
        model=MODEL,
        object="text_completion",
        choices=completion.choices,
        created="1700000000",
        system_fingerprint="fp_9",
        usage=completion.usage,
    )
    accumulator = CompletionAccumulator()
    accumulator.add(as_chunk)
    assert accumulator.snapshot() == completion


def test_a_snapshot_does_not_change_when_more_chunks_arrive() -> None:
    accumulator = CompletionAccumulator()
    first = Logprobs(tokens=["a"], token_logprobs=[-0.1], top_logprobs=None, text_offset=[0])
    second = Logprobs(tokens=["b"], token_logprobs=[-0.2], top_logprobs=None, text_offset=[1])
    accumulator.add(
        CompletionChunk(
            id="c", model="m", choices=[CompletionChoice(index=0, text="a", logprobs=first)]
        )
    )
    snapshot = accumulator.snapshot()
    accumulator.add(
        CompletionChunk(
            id="c", model="m", choices=[CompletionChoice(index=0, text="b", logprobs=second)]
        )
    )
    assert snapshot is not None
    assert snapshot.choices[0].logprobs is not None
    assert snapshot.choices[0].logprobs.tokens == ["a"]
    assert first.tokens == ["a"]


choices_of_a_chunk = st.lists(
    st.tuples(st.integers(0, 2), st.text(max_size=3), st.sampled_from([None, "stop", "length"])),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(
        st.tuples(choices_of_a_chunk, st.booleans()),
        max_size=300,
    ),
    batch=st.integers(1, 40),
)
def test_any_mix_of_choices_per_chunk_folds_like_concatenation(
    chunks: list[tuple[list[tuple[int, str, str | None]], bool]], batch: int
) -> None:
    # Chunks of one choice take a fast path that keeps the last choice's state at hand;
    # chunks of none (usage only) or several (n > 1) go one by one, in between.
    built = [
        chunk(
            *(piece(index, text, finish) for index, text, finish in spec),
            usage=CompletionUsage(prompt_tokens=1, completion_tokens=n, total_tokens=n + 1)
            if with_usage
            else None,
        )
        for n, (spec, with_usage) in enumerate(chunks)
    ]
    accumulator = CompletionAccumulator()
    for start in range(0, len(built), batch):
        part = built[start : start + batch]
        if len(part) == 1:
            accumulator.add(part[0])
        else:
            accumulator.add_many(part)
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    for spec, _ in chunks:
        for index, text, finish in spec:
            texts[index] = texts.get(index, "") + text
            if finish is not None or index not in finishes:
                finishes[index] = finish if finish is not None else finishes.get(index)
    usages = [n for n, (_, with_usage) in enumerate(chunks) if with_usage]
    snapshot = accumulator.snapshot()
    if not built:
        assert snapshot is None
        return
    assert snapshot is not None
    assert {c.index: c.text for c in snapshot.choices} == texts
    assert {c.index: c.finish_reason for c in snapshot.choices} == finishes
    assert (snapshot.usage.completion_tokens if snapshot.usage else None) == (
        usages[-1] if usages else None
    )
