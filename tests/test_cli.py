"""The command line, run as a subprocess against ``asyncclient serve`` on loopback.

Covers ``complete``, ``batch`` (output format, malformed lines, resume after ``kill -9``,
graceful Ctrl-C, shards), ``serve``, ``demo``, ``--help`` and wrong flags.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "cli-test-key"
MODEL = "openai/gpt-3.5-turbo-instruct"
# Each streamed request below takes about 20 x 10 ms on the emulator: slow enough to interrupt
# a run part-way, fast enough to finish one in seconds.
CHUNK_DELAY = 0.01
SLOW_TOKENS = 20

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")


def environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("ORQ_API_KEY", "ORQ_BASE_URL", "ORQ_MODEL")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "asyncclient", *args]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(),
        check=False,
    )


@contextlib.contextmanager
def serving(api_key: str, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``asyncclient serve`` on a free loopback port, yielding its URL; on exit it is sent
    SIGINT, as Ctrl-C would, and must stop cleanly."""
    process = subprocess.Popen(
        command("serve", "--port", "0", "--api-key", api_key, *options),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment() if env is None else env,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in first_line, first_line
        yield first_line.split("listening on ", 1)[1].split()[0]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, errors = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, errors
    assert "stopped" in errors


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(API_KEY, "--chunk-delay", str(CHUNK_DELAY)) as url:
        yield url


def connection(server: str) -> list[str]:
    return ["--base-url", server, "--api-key", API_KEY]


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return path


def read_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "a result line was left unfinished"
    return [json.loads(line) for line in text.splitlines()]


def normalized(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Result records without what differs between runs (ids, timestamps), by custom_id."""
    cleaned = []
    for record in records:
        record = {key: value for key, value in record.items() if key != "id"}
        response = record.get("response")
        if response is not None and isinstance(response.get("body"), dict):
            body = {k: v for k, v in response["body"].items() if k not in ("id", "created")}
            record["response"] = {**response, "body": body}
        cleaned.append(record)
    return sorted(cleaned, key=lambda record: str(record["custom_id"]))


def mixed_requests(count: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for number in range(count):
        body = {"model": MODEL, "prompt": f"question {number}", "max_tokens": 6}
        if number % 2:
            records.append(
                {
                    "custom_id": f"req-{number}",
                    "method": "POST",
                    "url": "/v1/completions",
                    "body": body,
                }
            )
        else:
            records.append({"id": f"req-{number}", **body})
    return records


def slow_requests(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"slow-{number}", "model": MODEL, "prompt": f"story {number}", "stream": True,
         "max_tokens": SLOW_TOKENS}
        for number in range(count)
    ]  # fmt: skip


def wait_for_lines(path: Path, count: int, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        assert process.poll() is None, "the batch ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines")


# --------------------------------------------------------------------------------------------
# help and usage errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", [[], ["complete"], ["batch"], ["serve"], ["demo"]])
def test_help_is_complete_and_exits_0(subcommand: list[str]) -> None:
    result = run(*subcommand, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: asyncclient" in result.stdout
    if subcommand:
        for option in ("--base-url", "--path", "--api-key", "--timeout", "--max-retries"):
            assert option in result.stdout
    else:
        for name in ("complete", "batch", "serve", "demo"):
            assert name in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batch", "in.jsonl", "-o", "out.jsonl", "--bogus"], "unrecognized arguments: --bogus"),
        (["batch", "in.jsonl", "-o", "out.jsonl", "--shard", "3/3"], "expected I/N"),
        (["batch", "in.jsonl", "-o", "out.jsonl", "--concurrency", "0"], "must be at least 1"),
        (["complete", "hello"], "--model"),
        (["nonsense"], "invalid choice"),
        ([], "required"),
    ],
)
def test_wrong_usage_exits_2_with_a_message(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------------
# complete
# --------------------------------------------------------------------------------------------


def test_complete_prints_the_stream_and_the_json(server: str) -> None:
    streamed = run("complete", "Say hi", "--model", MODEL, "--max-tokens", "5", *connection(server))
    assert streamed.returncode == 0, streamed.stderr
    full = run(
        "complete", "Say hi", "--model", MODEL, "--max-tokens", "5", "--json", *connection(server)
    )
    assert full.returncode == 0, full.stderr
    response = json.loads(full.stdout)
    assert response["usage"]["completion_tokens"] == 5
    assert streamed.stdout == response["choices"][0]["text"] + "\n"
    assert len(streamed.stdout.split()) == 5


def test_complete_reads_the_prompt_from_stdin(server: str) -> None:
    piped = run("complete", "--model", MODEL, "--no-stream", *connection(server), stdin="Say hi")
    direct = run("complete", "Say hi", "--model", MODEL, "--no-stream", *connection(server))
    assert piped.returncode == direct.returncode == 0
    assert piped.stdout == direct.stdout != ""


def test_complete_reports_a_failed_request_with_exit_1(server: str) -> None:
    result = run("complete", "hi", "--model", MODEL, "--base-url", server, "--api-key", "wrong")
    assert result.returncode == 1
    assert "401" in result.stderr
    assert "Traceback" not in result.stderr
    invalid = run("complete", "hi", "--model", MODEL, "--temperature", "9", *connection(server))
    assert invalid.returncode == 1
    assert "temperature" in invalid.stderr


def test_complete_into_a_closed_pipe_exits_quietly(server: str) -> None:
    # `asyncclient complete ... | head -c 1`: the reader leaves while text is still coming.
    process = subprocess.Popen(
        command("complete", "hi", "--model", MODEL, "--max-tokens", "200", *connection(server)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    with process:
        assert process.stdout is not None
        assert process.stderr is not None
        assert process.stdout.read(1) != b""
        process.stdout.close()
        errors = process.stderr.read().decode()
        assert process.wait(timeout=60) == 0, errors
    assert errors == ""


# --------------------------------------------------------------------------------------------
# batch
# --------------------------------------------------------------------------------------------


def test_batch_writes_openai_batch_output_and_a_summary(server: str, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", mixed_requests(40))
    output = tmp_path / "out.jsonl"
    summary_path = tmp_path / "summary.json"
    result = run(
        "batch", str(source), "-o", str(output), "--concurrency", "8",
        "--summary-json", str(summary_path), *connection(server),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = read_records(output)
    assert sorted(record["custom_id"] for record in records) == sorted(
        f"req-{number}" for number in range(40)
    )
    for record in records:
        assert set(record) == {"id", "custom_id", "response", "error"}
        assert record["id"].startswith("batch_req_")
        assert record["error"] is None
        assert record["response"]["status_code"] == 200
        assert "request_id" in record["response"]
        body = record["response"]["body"]
        assert body["object"] == "text_completion"
        assert len(body["choices"][0]["text"].split()) == 6
    for heading in ("Summary: 40 done (40 succeeded, 0 failed)", "p50", "p95", "p99"):
        assert heading in result.stderr
    assert "requests/s" in result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["done"] == 40
    assert summary["total_tokens"] > 0
    assert summary["latency"]["p99"] >= summary["latency"]["p50"] > 0


def test_malformed_lines_are_reported_and_written_as_failures(server: str, tmp_path: Path) -> None:
    lines: list[Any] = [
        *mixed_requests(3),
        "{not json\n",
        "\n",
        '["a", "list"]\n',
        {"custom_id": "no-prompt", "method": "POST", "url": "/v1/completions", "body": {}},
        {"custom_id": "chat", "url": "/v1/chat/completions", "body": {"model": MODEL}},
    ]
    source = write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    result = run("batch", str(source), "-o", str(output), *connection(server))
    assert result.returncode == 1  # some items failed
    assert "Traceback" not in result.stderr
    for number in (4, 6, 7, 8):
        assert f"line {number}: malformed input" in result.stderr
    by_id = {record["custom_id"]: record for record in read_records(output)}
    assert len(by_id) == 7  # the blank line is not an input
    for custom_id in ("line-4", "line-6", "no-prompt", "chat"):
        failure = by_id[custom_id]
        assert failure["response"] is None
        assert failure["error"]["code"] == "invalid_request"
        assert failure["error"]["message"]
    assert by_id["req-0"]["error"] is None
    assert "4 failed" in result.stderr


def test_existing_output_is_never_overwritten_by_accident(server: str, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", mixed_requests(2))
    output = tmp_path / "out.jsonl"
    output.write_text("precious\n")
    result = run("batch", str(source), "-o", str(output), *connection(server))
    assert result.returncode == 2
    assert "--resume" in result.stderr
    assert output.read_text() == "precious\n"


def test_resume_after_kill_9_loses_and_duplicates_nothing(server: str, tmp_path: Path) -> None:
    count = 120
    source = write_lines(tmp_path / "in.jsonl", slow_requests(count))
    output = tmp_path / "out.jsonl"
    args = ["batch", str(source), "-o", str(output), *connection(server)]
    process = subprocess.Popen(
        command(*args, "--concurrency", "4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment(),
    )
    try:
        wait_for_lines(output, 12, process)
    finally:
        process.kill()  # SIGKILL: no chance to clean up
        process.wait(timeout=20)
    before = read_records(output)
    assert 12 <= len(before) < count
    # A crash in the middle of a line leaves a fragment; --resume must drop it.
    with output.open("a") as file:
        file.write('{"id": "batch_req_cut", "custom_id": "slow-1')

    resumed = run(*args, "--resume", "--concurrency", "32")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} skipped" in resumed.stderr
    after = read_records(output)
    ids = [record["custom_id"] for record in after]
    assert len(ids) == len(set(ids)) == count
    assert set(ids) == {f"slow-{number}" for number in range(count)}
    assert after[: len(before)] == before
    assert all(record["error"] is None for record in after)


def test_ctrl_c_writes_every_finished_result_and_exits_130(server: str, tmp_path: Path) -> None:
    count = 120
    source = write_lines(tmp_path / "in.jsonl", slow_requests(count))
    output = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        command("batch", str(source), "-o", str(output), "--concurrency", "4", *connection(server)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        wait_for_lines(output, 8, process)
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, errors
    assert "Interrupted:" in errors
    assert "p50" in errors
    records = read_records(output)
    assert 8 <= len(records) < count
    done = int(errors.split("Interrupted: ", 1)[1].split()[0])
    assert done == len(records)
    assert all(record["error"] is None for record in records)

    resumed = run(
        "batch", str(source), "-o", str(output), "--resume", "--concurrency", "32",
        *connection(server),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    ids = [record["custom_id"] for record in read_records(output)]
    assert sorted(ids) == sorted(f"slow-{number}" for number in range(count))


def test_shard_outputs_concatenate_to_the_unsharded_output(server: str, tmp_path: Path) -> None:
    lines: list[Any] = [*mixed_requests(25), "{broken\n", *slow_requests(5)]
    source = write_lines(tmp_path / "in.jsonl", lines)
    whole = tmp_path / "whole.jsonl"
    run("batch", str(source), "-o", str(whole), "--concurrency", "8", *connection(server))
    parts = []
    for index in range(3):
        part = tmp_path / f"part-{index}.jsonl"
        result = run(
            "batch", str(source), "-o", str(part), "--shard", f"{index}/3", *connection(server)
        )
        assert result.returncode in (0, 1), result.stderr
        parts.append(read_records(part))
    assert all(parts)
    shard_ids = [{record["custom_id"] for record in part} for part in parts]
    assert not shard_ids[0] & shard_ids[1]
    assert not shard_ids[0] & shard_ids[2]
    assert not shard_ids[1] & shard_ids[2]
    concatenated = [record for part in parts for record in part]
    assert normalized(concatenated) == normalized(read_records(whole))
    assert len(concatenated) == 31


def test_input_from_stdin_in_order(server: str, tmp_path: Path) -> None:
    records = mixed_requests(30)
    output = tmp_path / "out.jsonl"
    result = run(
        "batch", "-", "-o", str(output), "--ordered", "--progress", "none", *connection(server),
        stdin="".join(json.dumps(record) + "\n" for record in records),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [record["custom_id"] for record in read_records(output)] == [
        f"req-{number}" for number in range(30)
    ]


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def test_demo_runs_offline_and_summarizes() -> None:
    result = run("demo", "--requests", "60", "--concurrency", "16")
    assert result.returncode == 0, result.stderr
    output = result.stdout
    for expected in (
        "embedded gateway emulator at http://127.0.0.1:",
        "1. A plain call",
        "2. A streamed call",
        "3. A batch",
        "Summary: 60 done (60 succeeded, 0 failed)",
        "Done: 62 requests",
        "requests/s",
    ):
        assert expected in output


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_with_rate_tokens_and_eta_on_a_terminal() -> None:
    from asyncclient._cli import _Progress, _Stats

    now = [100.0]
    stats = _Stats(started=100.0, total=200, succeeded=40, failed=2, total_tokens=1234)
    now[0] = 110.0
    terminal = _Terminal()
    progress = _Progress(stats, terminal, "auto", 10.0, lambda: now[0])
    assert progress.mode == "bar"
    progress.draw()
    drawn = terminal.getvalue()
    assert drawn.startswith("\r[#####")
    for part in ("42/200", "4.2 req/s", "1,234 tok", "2 failed", "ETA"):
        assert part in drawn
    progress.clear()
    assert terminal.getvalue().endswith("\r\x1b[K")

    plain = io.StringIO()
    lines = _Progress(stats, plain, "auto", 10.0, lambda: now[0])
    assert lines.mode == "lines"
    lines.draw()
    assert plain.getvalue().startswith("progress: [")
    assert plain.getvalue().endswith("\n")
