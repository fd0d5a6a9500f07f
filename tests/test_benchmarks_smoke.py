"""The benchmark suite runs (no timing assertions), and its prototypes agree with the library.

The suite itself is not part of CI's timed tests: these run it in ``--smoke`` mode, a few
seconds, once with the competitors that happen to be installed and once with every optional
competitor hidden, which must give skip lines, not a crash. The prototypes in
``benchmarks/variants.py`` must give the library's answers: the byte-search lazy decoder the
same completion as ``decode_completion_lazy`` and ``decode_completion``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from asyncclient._decode import decode_completion, decode_completion_lazy
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


def test_the_byte_search_prototype_is_not_exact() -> None:
    # Why the prototype was not adopted: it decides where the logprobs end from the bytes
    # after them. With no top alternatives and a later object field holding an array, it
    # stops at the end of that field, and the fields in between are lost.
    count = 3000
    tokens = [f"t{i}" for i in range(count)]
    logprobs = {
        "tokens": tokens,
        "token_logprobs": [-0.5] * count,
        "top_logprobs": None,
        "text_offset": list(range(count)),
    }
    data = msgspec.json.encode(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "text": "".join(tokens),
                    "index": 0,
                    "logprobs": logprobs,
                    "finish_reason": "stop",
                    "content_filter_results": {"flagged_ids": [1]},
                }
            ],
        }
    )
    assert decode_completion(data).choices[0].finish_reason == "stop"
    assert decode_completion_lazy(data).choices[0].finish_reason == "stop"
    assert variants.lazy_decode_completion(data).choices[0].finish_reason is None
