"""The benchmark suite runs (no timing assertions), and its prototypes agree with the library.

The suite itself is not part of CI's timed tests: these run it in ``--smoke`` mode, a few
seconds, once with the competitors that happen to be installed and once with every optional
competitor hidden, which must give skip lines, not a crash. The prototypes in
``benchmarks/variants.py`` must give the library's answers: the byte-search lazy decoder the
same completion as ``decode_completion_lazy`` and ``decode_completion``, and the shared
deadlines the behaviour of ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import msgspec
import pytest

from asyncclient._decode import decode_completion, decode_completion_lazy
from asyncclient._exceptions import StreamTimeoutError
from asyncclient._streaming import CompletionStream
from asyncclient._transport import Response, Timeout
from benchmarks import variants
from benchmarks.payloads import body, event_stream

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("openai", "orq_ai_sdk", "httpx", "httpx_sse", "orjson", "matplotlib", "psutil")

HIDE_OPTIONAL = f"""
import importlib.abc
import sys

class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)")
        return None

sys.meta_path.insert(0, _Hide())
"""


def run_suite(*args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    path = [str(ROOT)] if extra_path is None else [str(extra_path), str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
        check=False,
    )


def test_smoke_run_prints_every_table() -> None:
    result = run_suite()
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for heading in (
        "versions:",
        "Body decode: small",
        "Body decode: large",
        "logprobs not read",
        "Stream parse and decode",
        "Stream decode-path designs",
        "End to end, non-streamed, concurrency 64",
        "End to end, streamed, concurrency 16",
        "Memory: peak RSS",
        "Overhead ladder, non-streamed, concurrency 64",
        "Overhead ladder, streamed, concurrency 16",
        "Targets (ratios from this run)",
        "vs ours",
    ):
        assert heading in out, heading
    # The suite checks every result before timing it: none of our own rows may fail.
    failed = [line for line in out.splitlines() if "failed:" in line]
    assert not [line for line in failed if line.startswith(("asyncclient", "raw", "floor"))]


def test_missing_competitors_are_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(HIDE_OPTIONAL)
    result = run_suite("decode", "stream", "e2e", extra_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "skipped openai-python (default: construct)" in out
    assert "skipped orq-ai-sdk (EventStream)*" in out
    assert "skipped httpx-sse + msgspec" in out
    assert "skipped openai AsyncOpenAI" in out
    assert "asyncclient (decode_completion)" in out
    assert "End to end, streamed, concurrency 1" in out


def test_own_files(tmp_path: Path) -> None:
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body("small").data)
    stream_file = tmp_path / "stream.txt"
    stream_file.write_bytes(event_stream(50).data)
    for path, heading in ((body_file, "Body decode: body.json"), (stream_file, "Your stream")):
        result = run_suite("--file", str(path))
        assert result.returncode == 0, result.stderr[-3000:]
        assert heading in result.stdout


# -- the prototypes must give the library's answers ----------------------------------------


def _with_logprobs(choices: int, tokens: list[str], extra: str = "") -> bytes:
    entries = []
    for index in range(choices):
        logprobs = {
            "tokens": tokens,
            "token_logprobs": [-0.5] * len(tokens),
            "top_logprobs": [{t: -0.5} for t in tokens],
            "text_offset": list(range(len(tokens))),
        }
        entries.append(
            msgspec.json.encode(
                {"text": "".join(tokens), "index": index, "logprobs": logprobs}
            ).decode()[:-1]
            + extra
            + ',"finish_reason":"length"}'
        )
    padding = "x" * variants.LAZY_MIN_BYTES
    return (
        f'{{"id":"c","object":"text_completion","model":"m","system_fingerprint":"{padding}",'
        f'"choices":[{",".join(entries)}],"usage":{{"prompt_tokens":1}}}}'
    ).encode()


@pytest.mark.parametrize(
    "data",
    [
        body("large").data,
        _with_logprobs(1, [" a", " b"]),
        _with_logprobs(3, [" a", " b"]),
        _with_logprobs(1, ["]}", "[", '"]}', "\\", "{x}"]),
        _with_logprobs(1, [" a"], extra=',"later":{"deep":[1]}'),
        _with_logprobs(2, [" a"], extra=',"later":{"deep":[1]}'),
        msgspec.json.format(body("large").data),
    ],
    ids=["large", "one", "three", "brackets", "later-field", "two-later", "pretty"],
)
def test_lazy_logprobs_prototype_matches_the_library(data: bytes) -> None:
    eager = decode_completion(data)
    exact = decode_completion_lazy(data)
    prototype = variants.lazy_decode_completion(data)
    for lazy in (exact, prototype):
        assert [c.text for c in lazy.choices] == [c.text for c in eager.choices]
        assert [c.finish_reason for c in lazy.choices] == [c.finish_reason for c in eager.choices]
        assert [c.logprobs() for c in lazy.choices] == [c.logprobs for c in eager.choices]
        assert lazy.usage == eager.usage
        assert (lazy.id, lazy.model, lazy.created) == (eager.id, eager.model, eager.created)
    assert type(prototype) is type(exact)


def test_lazy_prototype_takes_the_byte_search_path_on_the_large_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Otherwise the benchmark would time the exact path twice under two names.
    def exact_path_used(data: bytes) -> None:
        raise AssertionError("the prototype fell back to the exact path")

    monkeypatch.setattr(variants, "decode_completion_lazy", exact_path_used)
    completion = variants.lazy_decode_completion(body("large").data)
    assert (
        completion.choices[0].logprobs()
        == decode_completion(body("large").data).choices[0].logprobs
    )


# -- SharedDeadlines behaves like asyncio.timeout ------------------------------------------


async def test_shared_deadline_raises_timeout_error() -> None:
    deadlines = variants.SharedDeadlines()
    never = asyncio.Event()
    async with asyncio.timeout(10):  # bound the test if the prototype failed to fire
        with pytest.raises(TimeoutError):
            async with deadlines.scope(0.01):
                await never.wait()
    assert not deadlines._scopes


async def test_shared_deadline_leaves_finished_work_alone() -> None:
    deadlines = variants.SharedDeadlines()
    async with deadlines.scope(60.0) as scope:
        await asyncio.sleep(0)
        scope.reschedule(None)
        await asyncio.sleep(0)
    assert not scope.expired
    assert not deadlines._scopes


async def test_shared_deadline_reschedule_to_an_earlier_time_fires() -> None:
    deadlines = variants.SharedDeadlines()
    loop = asyncio.get_running_loop()
    never = asyncio.Event()

    async def wait_past_the_new_deadline() -> None:
        async with deadlines.scope(600.0) as scope:
            scope.reschedule(loop.time() + 0.01)
            await never.wait()

    async with asyncio.timeout(10):
        with pytest.raises(TimeoutError):
            await wait_past_the_new_deadline()


async def test_shared_deadline_fires_only_overdue_scopes() -> None:
    deadlines = variants.SharedDeadlines()
    never = asyncio.Event()
    finished = asyncio.Event()

    async def short() -> str:
        try:
            async with deadlines.scope(0.01):
                await never.wait()
        except TimeoutError:
            return "timed out"
        return "finished"

    async def long() -> str:
        async with deadlines.scope(60.0):
            await finished.wait()
        return "finished"

    async with asyncio.timeout(10):
        long_task = asyncio.create_task(long())
        assert await short() == "timed out"
        finished.set()
        assert await long_task == "finished"


async def test_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    deadlines = variants.SharedDeadlines()
    started = asyncio.Event()

    async def waiter() -> None:
        async with deadlines.scope(60.0):
            started.set()
            await asyncio.Event().wait()

    async with asyncio.timeout(10):
        task = asyncio.create_task(waiter())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- LazyTimerStream behaves like CompletionStream ------------------------------------------


class _HangingResponse:
    """Pieces of a body, then a read that never returns (until cancelled)."""

    status = 200
    headers: Mapping[str, str] = {"Content-Type": "text/event-stream"}
    url = "http://127.0.0.1/v1/completions"

    def __init__(self, pieces: list[bytes], *, hang: bool) -> None:
        self._pieces = list(pieces)
        self._hang = hang
        self.reading = asyncio.Event()

    @property
    def at_eof(self) -> bool:
        return not self._pieces and not self._hang

    async def read_chunk(self) -> bytes:
        if self._pieces:
            return self._pieces.pop(0)
        if self._hang:
            self.reading.set()
            await asyncio.Event().wait()
        return b""

    def release(self) -> None:
        self._pieces.clear()


async def _run_stream(
    stream_type: type[CompletionStream], pieces: list[bytes], *, hang: bool, timeout: Timeout
) -> tuple[list[str], str | None, str | None, str]:
    # The client turns Timeout.total into an absolute deadline; so does this helper.
    total = timeout.total
    stream = stream_type(
        cast(Response, _HangingResponse(pieces, hang=hang)),
        timeout=timeout,
        total_deadline=asyncio.get_running_loop().time() + total if total is not None else None,
    )
    texts: list[str] = []
    error: str | None = None
    phase: str | None = None
    partial = ""
    try:
        async with asyncio.timeout(10), stream:
            async for chunk in stream:
                texts.append("".join(choice.text for choice in chunk.choices))
    except StreamTimeoutError as exc:
        error, phase, partial = type(exc).__name__, exc.phase, exc.partial_text
    return texts, error, phase, partial


STREAM = event_stream(30).data
EVENTS = [block + b"\n\n" for block in STREAM.split(b"\n\n") if block]


@pytest.mark.parametrize(
    ("pieces", "hang", "timeout"),
    [
        (EVENTS, False, Timeout()),
        ([STREAM], False, Timeout()),
        ([STREAM[i : i + 97] for i in range(0, len(STREAM), 97)], False, Timeout(idle=60.0)),
        ([], True, Timeout(idle=0.01)),
        (EVENTS[:5], True, Timeout(idle=0.01)),
        (EVENTS[:5], True, Timeout(first_event=60.0, idle=0.01)),
        (EVENTS[:5], True, Timeout(idle=60.0, total=0.01)),
    ],
    ids=["per-event", "whole", "97", "first-event", "idle", "idle-after-first", "total"],
)
async def test_lazy_timer_stream_matches_completion_stream(
    pieces: list[bytes], hang: bool, timeout: Timeout
) -> None:
    expected = await _run_stream(CompletionStream, pieces, hang=hang, timeout=timeout)
    got = await _run_stream(variants.LazyTimerStream, pieces, hang=hang, timeout=timeout)
    assert got == expected
    assert (expected[1] is not None) == hang


async def test_lazy_timer_rearms_instead_of_firing_before_the_deadline() -> None:
    response = _HangingResponse([], hang=True)
    stream = variants.LazyTimerStream(cast(Response, response), timeout=Timeout(idle=600.0))
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
    await stream.aclose()
    assert stream._timer is None


async def test_lazy_timer_lets_outside_cancellation_through() -> None:
    response = _HangingResponse(EVENTS[:3], hang=True)
    stream = variants.LazyTimerStream(cast(Response, response), timeout=Timeout(idle=600.0))

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
