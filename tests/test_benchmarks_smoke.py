"""The benchmark suite runs (no timing assertions).

The suite itself is not part of CI's timed tests: these run it in ``--smoke`` mode, a few
seconds, once with the competitors that happen to be installed and once with every optional
competitor hidden, which must give skip lines, not a crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
