"""The benchmark suite runs (no timing assertions), and its prototypes agree with the library.

The suite itself is not part of CI's timed tests: these run it in ``--smoke`` mode, a few
seconds, once with the competitors that happen to be installed and once with every optional
competitor hidden, which must give skip lines, not a crash.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import msgspec
import pytest

from asyncclient._models import CompletionChunk
from asyncclient._streaming import CompletionStream
from asyncclient._transport import Response
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
        "Targets (ratios from this run)",
        "vs ours",
    ):
        assert heading in out, heading


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
def test_lazy_logprobs_prototype_matches_eager(data: bytes) -> None:
    from asyncclient._decode import decode_completion

    eager = decode_completion(data)
    lazy = variants.lazy_decode_completion(data)
    assert [c.text for c in lazy.choices] == [c.text for c in eager.choices]
    assert [c.finish_reason for c in lazy.choices] == [c.finish_reason for c in eager.choices]
    assert [c.logprobs() for c in lazy.choices] == [c.logprobs for c in eager.choices]
    assert lazy.usage == eager.usage


class _Pieces:
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

    def release(self) -> None:
        self._pieces.clear()


async def _outcome(
    stream_type: type[CompletionStream], pieces: list[bytes]
) -> tuple[list[CompletionChunk], str | None, str]:
    stream = stream_type(cast(Response, _Pieces(pieces)))
    chunks: list[CompletionChunk] = []
    error = None
    try:
        async with stream:
            async for chunk in stream:
                chunks.append(chunk)
    except Exception as exc:
        error = type(exc).__name__
    snapshot = stream.completion_so_far
    return chunks, error, snapshot.text if snapshot is not None else ""


LF = event_stream(40).data
CRLF = event_stream(40, newline=b"\r\n").data


@pytest.mark.parametrize(
    "pieces",
    [
        [LF],
        [block + b"\n\n" for block in LF.split(b"\n\n") if block],
        [LF[i : i + 97] for i in range(0, len(LF), 97)],
        [LF[i : i + 1] for i in range(600)] + [LF[600:]],
        [CRLF[i : i + 50] for i in range(0, len(CRLF), 50)],
        [b": keep-alive\n\n" + LF],
        [LF[:3000], b"event: ping\ndata: x\n\n" + LF[3000:]],
        [LF[:3000], b'data: {"error": {"message": "boom"}}\n\n'],
        [LF[:3001]],
        [b"\xef\xbb\xbf" + LF],
        [LF.replace(b"data: [DONE]\n\n", b"")],
    ],
    ids=[
        "one",
        "per-event",
        "97",
        "bytes",
        "crlf",
        "comment",
        "ping",
        "error",
        "cut",
        "bom",
        "no-done",
    ],
)
async def test_fused_stream_prototype_matches_completion_stream(pieces: list[bytes]) -> None:
    await asyncio.sleep(0)
    expected = await _outcome(CompletionStream, pieces)
    got = await _outcome(variants.FusedCompletionStream, pieces)
    assert got == expected
