"""The command line: ``asyncclient complete | batch | serve | demo`` (or ``python -m asyncclient``).

Every command takes the connection options ``--base-url``, ``--path``, ``--api-key`` (falling
back to ``$ORQ_BASE_URL`` and ``$ORQ_API_KEY``), ``--timeout`` and ``--max-retries``. Exit codes:
0 success, 1 a request failed (for ``batch``: at least one item failed), 2 wrong usage, 130 when
interrupted by Ctrl-C (128 + the signal number for other signals).

``batch`` reads JSONL requests (OpenAI Batch API request lines, or bare request objects with an
optional ``id``) and writes OpenAI Batch API output lines, one per result, each written with a
single unbuffered ``write`` as soon as it finishes: a crash, even ``kill -9``, loses no finished
result, and ``--resume`` skips every input whose id already has a complete line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, BinaryIO, Final, TextIO, TypeVar

import anyio
import msgspec

from ._batch import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    BatchItem,
    BatchResult,
    _request_from_mapping,
    batch_output_record,
    parse_batch_line,
)
from ._client import DEFAULT_PATH, AsyncClient
from ._exceptions import AsyncClientError
from ._retry import RetryPolicy
from ._transport import Timeout
from ._version import __version__

__all__ = ["build_parser", "main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

MODEL_ENV: Final = "ORQ_MODEL"
DEMO_MODEL: Final = "openai/gpt-3.5-turbo-instruct"
DEFAULT_TIMEOUT_SECONDS: Final = 600.0

# Latencies kept for the percentiles: exact up to this many results, a uniform sample beyond.
_LATENCY_SAMPLES: Final = 100_000
# Malformed lines named one by one on stderr before the rest are only counted.
_MALFORMED_SHOWN: Final = 20

_Number = TypeVar("_Number", int, float)


class _UsageError(Exception):
    """Wrong usage found after parsing (exit 2)."""


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def _bounded_number(
    parse: Callable[[str], _Number],
    *,
    expected: str,
    accept: Callable[[_Number], bool],
    requirement: str,
) -> Callable[[str], _Number]:
    """An argparse ``type``: *parse* the text, then keep it only if *accept* says so.

    The two complaints read ``expected <expected>, got '<text>'`` and
    ``<requirement>, got <value>``.
    """

    def convert(text: str) -> _Number:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            # A float is echoed as typed: parsed, "1e999" would read "inf" and "0" "0.0".
            shown = text if isinstance(value, float) else value
            raise argparse.ArgumentTypeError(f"{requirement}, got {shown}")
        return value

    return convert


_positive_int: Final = _bounded_number(
    int,
    expected="a whole number",
    accept=lambda value: value >= 1,
    requirement="must be at least 1",
)
_non_negative_int: Final = _bounded_number(
    int, expected="a whole number", accept=lambda value: value >= 0, requirement="must be 0 or more"
)
_positive_float: Final = _bounded_number(
    float,
    expected="a number",
    accept=lambda value: 0 < value < math.inf,
    requirement="must be a finite number above 0",
)
_port: Final = _bounded_number(
    int,
    expected="a port number",
    accept=lambda value: 0 <= value <= 65535,
    requirement="a port is 0-65535",
)


def _shard(text: str) -> tuple[int, int]:
    index_text, slash, count_text = text.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not slash or count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(
            f"expected I/N with 0 <= I < N (e.g. 0/4 ... 3/4), got {text!r}"
        )
    return index, count


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("connection")
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="server base URL (default: $ORQ_BASE_URL, else https://my.orq.ai)",
    )
    group.add_argument(
        "--path",
        default=DEFAULT_PATH,
        help=f"endpoint path (default: {DEFAULT_PATH}; /v1/completions for OpenAI-compatible)",
    )
    group.add_argument(
        "--api-key", metavar="KEY", help="API key (default: $ORQ_API_KEY; never printed)"
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="longest silence while waiting for or reading a response "
        f"(default: {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    group.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=DEFAULT_MAX_RETRIES,
        metavar="N",
        help="retries of a request after 429, 5xx or a connection error "
        f"(default: {DEFAULT_MAX_RETRIES})",
    )
    return options


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("request")
    group.add_argument(
        "--model",
        default=os.environ.get(MODEL_ENV),
        help=f"model to use (default: ${MODEL_ENV}; required when that is unset)",
    )
    group.add_argument("--max-tokens", type=_non_negative_int, metavar="N")
    group.add_argument("--temperature", type=float, metavar="T", help="0 to 2")
    group.add_argument("--top-p", type=float, metavar="P", help="0 to 1")
    group.add_argument("--stop", action="append", metavar="TEXT", help="stop sequence (repeatable)")
    group.add_argument("--seed", type=int, metavar="N")
    group.add_argument("--presence-penalty", type=float, metavar="X", help="-2 to 2")
    group.add_argument("--frequency-penalty", type=float, metavar="X", help="-2 to 2")
    group.add_argument("--user", metavar="ID", help="end-user id sent with the request")
    group.add_argument("--echo", action="store_true", help="echo the prompt in the text")


def build_parser() -> argparse.ArgumentParser:
    """The ``asyncclient`` argument parser (exposed for documentation and tests)."""
    connection = _connection_options()
    parser = argparse.ArgumentParser(
        prog="asyncclient",
        description="Command line for the Orq gateway's /v2/proxy/completions and any "
        "OpenAI-compatible /completions endpoint.",
        epilog="Run `asyncclient COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"asyncclient {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    complete = commands.add_parser(
        "complete",
        parents=[connection],
        help="complete one prompt, printing the text as it streams",
        description="Complete one prompt. The text is printed as it streams; --json prints "
        "the whole response instead.",
    )
    complete.add_argument("prompt", nargs="?", default="-", help="the prompt ('-': stdin)")
    _add_sampling_options(complete)
    output = complete.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print the full response as JSON")
    output.add_argument(
        "--no-stream", action="store_true", help="print the text once the response is complete"
    )

    batch = commands.add_parser(
        "batch",
        parents=[connection],
        help="run a JSONL file of requests, writing one result line each",
        description="Run every request of a JSONL file (OpenAI Batch API request lines, or "
        "bare request objects with an optional id) and write OpenAI Batch API output lines, "
        "each flushed as soon as its request finishes.",
        epilog="Exit status: 0 every item succeeded, 1 some item failed (its line holds the "
        "error), 2 wrong usage, 130 interrupted by Ctrl-C (every finished result is kept: "
        "run again with --resume to finish).",
    )
    batch.add_argument("input", help="input JSONL file ('-': stdin)")
    batch.add_argument(
        "-o", "--output", required=True, help="output JSONL file ('-': stdout, no --resume)"
    )
    batch.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight (default: {DEFAULT_CONCURRENCY})",
    )
    batch.add_argument(
        "--resume",
        action="store_true",
        help="append to OUTPUT, skipping inputs whose id already has a complete line",
    )
    batch.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    batch.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="process only input lines whose 0-based number modulo N is I: N runs with "
        "0/N ... N-1/N cover the input exactly once",
    )
    batch.add_argument(
        "--ordered", action="store_true", help="write results in input order (default: as done)"
    )
    batch.add_argument(
        "--requests-per-minute",
        "--rpm",
        type=_positive_float,
        metavar="N",
        dest="rpm",
        help="at most N requests a minute, paced evenly (default: no limit)",
    )
    batch.add_argument(
        "--tokens-per-minute",
        "--tpm",
        type=_positive_float,
        metavar="N",
        dest="tpm",
        help="at most N tokens a minute, estimated from prompt and max_tokens before "
        "sending and settled with the reported usage (default: no limit)",
    )
    batch.add_argument(
        "--no-adaptive",
        action="store_true",
        help="keep the concurrency fixed on 429 responses (default: back off, then climb)",
    )
    batch.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    batch.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default="auto",
        help="a bar on a terminal, plain lines otherwise (default: auto)",
    )
    batch.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between plain progress lines (default: 10)",
    )
    batch.add_argument(
        "--summary-json", metavar="FILE", help="also write the closing summary as JSON"
    )

    serve = commands.add_parser(
        "serve",
        parents=[connection],
        help="run the gateway emulator on 127.0.0.1 until Ctrl-C",
        description="Run the gateway emulator (asyncclient.testing) for local development and "
        "demos. --api-key, if given, is the key the emulator requires; the other connection "
        "options are accepted and unused.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    serve.add_argument(
        "--port", type=_port, default=8000, help="port (default: 8000; 0 picks a free one)"
    )
    serve.add_argument(
        "--chunk-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause between streamed chunks (default: 0)",
    )

    demo = commands.add_parser(
        "demo",
        parents=[connection],
        help="tour the client against an embedded emulator (no key, no network)",
        description="Start the gateway emulator in-process on 127.0.0.1 and show a plain "
        "call, a streamed call, a batch and a summary. With --base-url, run against that "
        "server instead.",
    )
    demo.add_argument(
        "--model", default=DEMO_MODEL, help=f"model for the calls (default: {DEMO_MODEL})"
    )
    demo.add_argument(
        "--requests",
        type=_positive_int,
        default=200,
        metavar="N",
        help="requests in the batch (default: 200)",
    )
    demo.add_argument(
        "--concurrency",
        type=_positive_int,
        default=32,
        metavar="N",
        help="batch concurrency (default: 32)",
    )
    for command_parser in (complete, batch, serve, demo):
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def _make_client(args: argparse.Namespace, *, max_connections: int = 100) -> AsyncClient:
    return AsyncClient(
        api_key=args.api_key,
        base_url=args.base_url,
        path=args.path,
        timeout=Timeout.coerce(args.timeout),
        max_connections=max_connections,
        retry=RetryPolicy(max_attempts=args.max_retries + 1),
    )


# --------------------------------------------------------------------------------------------
# complete
# --------------------------------------------------------------------------------------------


def _request_fields(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"model": args.model, "prompt": prompt}
    for name in (
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "user",
    ):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.echo:
        fields["echo"] = True
    return fields


async def _complete(args: argparse.Namespace, prompt: str, out: TextIO) -> int:
    fields = _request_fields(args, prompt)
    request = _request_from_mapping(fields)  # checked before anything is sent
    async with _make_client(args, max_connections=1) as client:
        if args.json or args.no_stream:
            completion = await client.completions.create_from_request(request)
            if args.json:
                out.write(msgspec.json.format(msgspec.json.encode(completion)).decode() + "\n")
            else:
                out.write(completion.text + "\n")
            out.flush()
            return EXIT_OK
        # The client retries until the stream's headers arrive, never once text was printed.
        printed = False
        async with client.completions.stream(**fields) as stream:
            try:
                async for text in stream.text_deltas():
                    out.write(text)
                    out.flush()
                    printed = True
            except AsyncClientError:
                if printed:
                    out.write("\n")  # the error message goes on a line of its own
                raise
        out.write("\n")
        out.flush()
    return EXIT_OK


def _read_prompt(prompt: str) -> str:
    if prompt != "-":
        return prompt
    if sys.stdin is None or sys.stdin.isatty():
        raise _UsageError("give a prompt, or pipe one on stdin")
    return sys.stdin.read()


# --------------------------------------------------------------------------------------------
# batch: statistics, progress, input and output
# --------------------------------------------------------------------------------------------


@dataclass
class _Stats:
    """What a batch run did, for the progress display and the closing summary."""

    started: float
    total: int | None = None
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    malformed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    _seen_latencies: int = 0
    _random: random.Random = field(default_factory=lambda: random.Random(0))

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def add(self, result: BatchResult) -> None:
        if result.ok:
            self.succeeded += 1
        else:
            self.failed += 1
        usage = result.usage
        if usage is not None:
            prompt = int(usage.prompt_tokens or 0)
            completion = int(usage.completion_tokens or 0)
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.total_tokens += int(usage.total_tokens or prompt + completion)
        if result.attempts:
            self._add_latency(result.latency)

    def _add_latency(self, latency: float) -> None:
        # Reservoir sampling keeps the percentiles honest for any number of results.
        self._seen_latencies += 1
        if len(self.latencies) < _LATENCY_SAMPLES:
            self.latencies.append(latency)
            return
        slot = self._random.randrange(self._seen_latencies)
        if slot < _LATENCY_SAMPLES:
            self.latencies[slot] = latency

    def percentiles(self) -> dict[str, float | None]:
        ordered = sorted(self.latencies)
        return {
            name: _percentile(ordered, q) for name, q in (("p50", 50), ("p95", 95), ("p99", 99))
        }

    def summary(self, elapsed: float, *, interrupted: bool, output: str | None) -> dict[str, Any]:
        return {
            "done": self.done,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "malformed": self.malformed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "latency": self.percentiles(),
            "elapsed": elapsed,
            "requests_per_second": self.done / elapsed if elapsed > 0 else None,
            "interrupted": interrupted,
            "output": output,
        }


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _count(value: float) -> str:
    if value >= 10_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:,.0f}"


class _Progress:
    """A redrawn bar on a terminal, or a plain line every ``interval`` seconds."""

    def __init__(
        self, stats: _Stats, stream: TextIO, mode: str, interval: float, clock: Callable[[], float]
    ) -> None:
        if mode == "auto":
            mode = "bar" if stream.isatty() else "lines"
        self.mode = mode
        self._stats = stats
        self._stream = stream
        self._interval = 0.1 if mode == "bar" else interval
        self._clock = clock
        self._drawn = False

    def _line(self) -> str:
        stats = self._stats
        elapsed = max(self._clock() - stats.started, 1e-9)
        rate = stats.done / elapsed
        processed = stats.done + stats.skipped
        parts = []
        if stats.total:
            fraction = min(1.0, processed / stats.total)
            width = 24
            filled = int(fraction * width)
            parts.append(
                f"[{'#' * filled}{'.' * (width - filled)}] {processed}/{stats.total} "
                f"{fraction:4.0%}"
            )
        else:
            parts.append(f"{processed} done")
        parts.append(f"{rate:.1f} req/s")
        parts.append(f"{_count(stats.total_tokens)} tok ({_count(stats.total_tokens / elapsed)}/s)")
        if stats.failed:
            parts.append(f"{stats.failed} failed")
        if stats.total and rate > 0:
            remaining = max(0, stats.total - processed)
            parts.append(f"ETA {_duration(remaining / rate)}")
        return " | ".join(parts)

    def draw(self) -> None:
        if self.mode == "bar":
            self._stream.write("\r" + self._line() + "\x1b[K")
            self._drawn = True
        elif self.mode == "lines":
            self._stream.write("progress: " + self._line() + "\n")
        else:
            return
        self._stream.flush()

    def clear(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False

    async def run(self) -> None:
        if self.mode == "none":
            return
        while True:
            await anyio.sleep(self._interval)
            self.draw()


def _print_summary(summary: dict[str, Any], stream: TextIO) -> None:
    latency = summary["latency"]

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} s"

    rate = summary["requests_per_second"]
    heading = "Interrupted" if summary["interrupted"] else "Summary"
    first = (
        f"{heading}: {summary['done']} done ({summary['succeeded']} succeeded, "
        f"{summary['failed']} failed)"
    )
    if summary["skipped"]:
        first += f", {summary['skipped']} skipped (already in the output)"
    if summary["malformed"]:
        first += f", {summary['malformed']} malformed input lines"
    rate_text = f"{0.0 if rate is None else rate:.1f}"
    last = f"Throughput: {rate_text} requests/s over {summary['elapsed']:.2f} s"
    if summary["output"] is not None:
        last += f"; results in {summary['output']}"
    lines = [
        first,
        f"Tokens: {summary['total_tokens']:,} (prompt {summary['prompt_tokens']:,}, "
        f"completion {summary['completion_tokens']:,})",
        f"Latency: p50 {seconds(latency['p50'])}, p95 {seconds(latency['p95'])}, "
        f"p99 {seconds(latency['p99'])}",
        last,
    ]
    stream.write("\n".join(lines) + "\n")
    stream.flush()


def _completed_ids(path: Path) -> set[str]:
    """The ids of complete result lines in ``path``. A last line cut short by a crash is
    removed from the file, so that appending starts on a fresh line."""
    done: set[str] = set()
    if not path.exists():
        return done
    with path.open("r+b") as file:
        end = 0
        for line in file:
            if not line.endswith(b"\n"):
                break
            end += len(line)
            try:
                record = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                done.add(record["custom_id"])
        file.truncate(end)
    return done


def _count_lines(path: Path) -> int:
    count = 0
    last = b"\n"
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


@dataclass
class _InputReader:
    """Reads the input lazily: one line in memory at a time, whatever the file's size."""

    lines: Iterator[bytes]
    shard: tuple[int, int] | None
    done_ids: set[str]
    stats: _Stats
    errors: TextIO

    def __iter__(self) -> Iterator[BatchItem]:
        shard_index, shard_count = self.shard if self.shard is not None else (0, 1)
        for number, line in enumerate(self.lines, start=1):
            if (number - 1) % shard_count != shard_index or not line.strip():
                continue
            item = parse_batch_line(line, number)
            if item.id is not None and item.id in self.done_ids:
                self.stats.skipped += 1
                continue
            if item.error is not None:
                self._report_malformed(number, item.error)
            yield item

    def _report_malformed(self, number: int, error: AsyncClientError) -> None:
        self.stats.malformed += 1
        if self.stats.malformed <= _MALFORMED_SHOWN:
            self.errors.write(f"line {number}: malformed input, {error.message}\n")
        elif self.stats.malformed == _MALFORMED_SHOWN + 1:
            self.errors.write("more malformed input lines: counted in the summary\n")
        self.errors.flush()


class _Interrupts:
    """Ctrl-C (and SIGTERM) stop the job gracefully; a second one exits at once.

    Installed with ``signal.signal`` rather than the event loop's ``add_signal_handler`` so it
    works on Windows too; the handler runs in the loop's thread and only schedules the stop.
    Every finished result is already on disk, so the immediate exit loses nothing either.
    """

    def __init__(self, stop: Callable[[], None], errors: TextIO) -> None:
        self.signal_number: int | None = None
        self._stop = stop
        self._errors = errors
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        signals = [signal.SIGINT]
        if hasattr(signal, "SIGTERM"):
            signals.append(signal.SIGTERM)
        for number in signals:
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.signal_number is not None:
            self._errors.write("\ninterrupted again: exiting now\n")
            self._errors.flush()
            os._exit(128 + number)
        self.signal_number = number
        self._errors.write("\ninterrupted: stopping (press Ctrl-C again to exit at once)\n")
        self._errors.flush()
        self._stop()


def _write_line(output: IO[bytes], line: bytes) -> None:
    # A blocking write on the event loop, on purpose: one small write per finished request is
    # far cheaper than a thread hop, and the line is in the OS's hands when this returns.
    view = memoryview(line)
    while view:
        written = output.write(view)
        view = view[written if written is not None else len(view) :]
    output.flush()


def _write_json(path: Path, value: Any) -> None:
    path.write_bytes(msgspec.json.encode(value) + b"\n")


def _threadsafe(function: Callable[[], None]) -> Callable[[], None]:
    """``function`` scheduled on the running event loop: a signal handler may run in the middle
    of the loop's own code, so it must not touch tasks or cancel scopes itself."""
    loop = asyncio.get_running_loop()

    def schedule() -> None:
        loop.call_soon_threadsafe(function)

    return schedule


def _open_input(path_text: str, stack: ExitStack) -> BinaryIO:
    if path_text == "-":
        return sys.stdin.buffer
    try:
        return stack.enter_context(open(path_text, "rb"))
    except OSError as exc:
        raise _UsageError(f"cannot read {path_text}: {exc.strerror}") from exc


def _open_output(args: argparse.Namespace, stack: ExitStack) -> tuple[IO[bytes], set[str]]:
    if args.output == "-":
        if args.resume:
            raise _UsageError("--resume needs an output file, not stdout")
        return sys.stdout.buffer, set()
    path = Path(args.output)
    if args.resume and args.overwrite:
        raise _UsageError("--resume and --overwrite exclude each other")
    if path.is_dir():
        raise _UsageError(f"{path} is a directory")
    if not args.resume and not args.overwrite and path.exists() and path.stat().st_size > 0:
        raise _UsageError(
            f"{path} already exists: pass --resume to continue it or --overwrite to replace it"
        )
    try:
        done_ids = _completed_ids(path) if args.resume else set()
        # Unbuffered: each result line is one write() call, on disk as soon as it returns.
        output = stack.enter_context(open(path, "ab" if args.resume else "wb", buffering=0))  # noqa: SIM115
    except OSError as exc:
        raise _UsageError(f"cannot write {path}: {exc.strerror}") from exc
    return output, done_ids


def _input_total(args: argparse.Namespace) -> int | None:
    if args.progress == "none" or args.input == "-" or not Path(args.input).is_file():
        return None
    lines = _count_lines(Path(args.input))
    if args.shard is None:
        return lines
    shard: tuple[int, int] = args.shard
    index, count = shard
    return max(0, (lines - index + count - 1) // count)


async def _batch(args: argparse.Namespace, errors: TextIO) -> int:
    clock = time.monotonic
    stats = _Stats(started=clock())
    with ExitStack() as stack:
        output, done_ids = _open_output(args, stack)
        source = _open_input(args.input, stack)
        stats.total = _input_total(args)
        reader = _InputReader(iter(source), args.shard, done_ids, stats, errors)
        progress = _Progress(stats, errors, args.progress, args.progress_interval, clock)
        output_name = "stdout" if args.output == "-" else args.output
        async with _make_client(args, max_connections=max(100, args.concurrency)) as client:
            job = client.batch(
                reader,
                concurrency=args.concurrency,
                ordered=args.ordered,
                fail_fast=args.fail_fast,
                max_retries=args.max_retries,
                requests_per_minute=args.rpm,
                tokens_per_minute=args.tpm,
                adaptive=not args.no_adaptive,
            )
            interrupts = stack.enter_context(_Interrupts(_threadsafe(job.cancel), errors))
            error: AsyncClientError | None = None
            async with anyio.create_task_group() as display:
                display.start_soon(progress.run)
                try:
                    async with job as results:
                        async for result in results:
                            record = batch_output_record(result)
                            _write_line(output, msgspec.json.encode(record) + b"\n")
                            stats.add(result)
                except AsyncClientError as exc:  # --fail-fast
                    error = exc
                finally:
                    display.cancel_scope.cancel()
        progress.clear()
        elapsed = clock() - stats.started
        summary = stats.summary(
            elapsed, interrupted=interrupts.signal_number is not None, output=output_name
        )
        _print_summary(summary, errors)
        if args.summary_json:
            _write_json(Path(args.summary_json), summary)
    if interrupts.signal_number is not None:
        return 128 + interrupts.signal_number
    if error is not None:
        errors.write(f"stopped at the first failure (--fail-fast): {error.message}\n")
    return EXIT_FAILED if stats.failed else EXIT_OK


# --------------------------------------------------------------------------------------------
# serve and demo
# --------------------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from .testing import serve

    def ready(base_url: str) -> None:
        out.write(
            f"Gateway emulator listening on {base_url} (Ctrl-C to stop)\n"
            f"  POST {base_url}/v2/proxy/completions, /v2/router/completions, /v1/completions\n"
        )
        out.flush()

    options: dict[str, Any] = {"chunk_delay": args.chunk_delay, "record": False}
    if args.api_key:
        options["api_key"] = args.api_key
    await serve(args.host, args.port, on_ready=ready, **options)
    return EXIT_OK


async def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from .testing import GatewayEmulator

    clock = time.monotonic
    started = clock()
    with ExitStack() as stack:
        async with GatewayEmulator(chunk_delay=0.03) as emulator:
            base_url = args.base_url or emulator.base_url
            where = (
                f"the server at {base_url}"
                if args.base_url
                else f"the embedded gateway emulator at {base_url} (no key, no network)"
            )
            out.write(f"asyncclient {__version__} demo, against {where}\n\n")
            client = AsyncClient(
                base_url=base_url,
                api_key=args.api_key if args.base_url else "demo-key",
                path=args.path,
                timeout=Timeout.coerce(args.timeout),
            )
            async with client:
                requests, tokens = await _demo_calls(client, args, out, clock)
                stats = _Stats(started=clock(), total=args.requests)
                progress = _Progress(stats, out, "auto", 10.0, clock)
                out.write(
                    f"3. A batch: client.batch(<{args.requests} requests>, "
                    f"concurrency={args.concurrency})\n"
                )
                batch_requests = (
                    {
                        "id": f"demo-{i}",
                        "model": args.model,
                        "prompt": f"Item {i}:",
                        "max_tokens": 8,
                    }
                    for i in range(args.requests)
                )
                job = client.batch(
                    batch_requests, concurrency=args.concurrency, max_retries=args.max_retries
                )
                interrupts = stack.enter_context(_Interrupts(_threadsafe(job.cancel), sys.stderr))
                async with anyio.create_task_group() as display:
                    display.start_soon(progress.run)
                    async with job as results:
                        async for result in results:
                            stats.add(result)
                    display.cancel_scope.cancel()
                progress.clear()
                summary = stats.summary(
                    clock() - stats.started,
                    interrupted=interrupts.signal_number is not None,
                    output=None,
                )
                _print_summary(summary, out)
    if interrupts.signal_number is not None:
        return 128 + interrupts.signal_number
    requests += stats.done
    tokens += stats.total_tokens
    elapsed = clock() - started
    out.write(
        f"\nDone: {requests} requests, {tokens:,} tokens in {elapsed:.2f} s "
        f"({requests / elapsed:.1f} requests/s), {stats.failed} failed\n"
    )
    out.flush()
    return EXIT_OK if stats.failed == 0 else EXIT_FAILED


async def _demo_calls(
    client: AsyncClient, args: argparse.Namespace, out: TextIO, clock: Callable[[], float]
) -> tuple[int, int]:
    out.write("1. A plain call: await client.completions.create(...)\n")
    started = clock()
    completion = await client.completions.create(
        model=args.model, prompt="Say hello to the demo.", max_tokens=12
    )
    milliseconds = (clock() - started) * 1000
    usage = completion.usage
    tokens = int(usage.total_tokens or 0) if usage is not None else 0
    out.write(f"   {completion.text.strip()!r}  ({tokens} tokens, {milliseconds:.1f} ms)\n\n")

    out.write("2. A streamed call: async for text in stream.text_deltas(): ...\n   ")
    out.flush()
    async with client.completions.stream(
        model=args.model,
        prompt="Tell a short story.",
        max_tokens=24,
        stream_options={"include_usage": True},
    ) as stream:
        async for text in stream.text_deltas():
            out.write(text)
            out.flush()
        streamed = stream.completion_so_far
    if streamed is not None and streamed.usage is not None:
        tokens += int(streamed.usage.total_tokens or 0)
    out.write("\n\n")
    out.flush()
    return 2, tokens


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out, errors = sys.stdout, sys.stderr
    try:
        if args.command == "complete":
            if not args.model:
                raise _UsageError(
                    f"the following arguments are required: --model (or set ${MODEL_ENV})"
                )
            prompt = _read_prompt(args.prompt)
            return anyio.run(_complete, args, prompt, out)
        if args.command == "batch":
            return anyio.run(_batch, args, errors)
        if args.command == "serve":
            return anyio.run(_serve, args, out)
        return anyio.run(_demo, args, out)
    except _UsageError as exc:
        command_parser: argparse.ArgumentParser = args.command_parser
        command_parser.error(str(exc))
    except AsyncClientError as exc:
        errors.write(f"error: {exc.message}\n")
        return EXIT_FAILED
    except BrokenPipeError:
        # `asyncclient complete ... | head`: the reader left; nothing more to say. (Before
        # OSError, its base class.)
        _silence_broken_stdout(out)
        return EXIT_OK
    except OSError as exc:
        errors.write(f"error: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        if args.command == "serve":
            errors.write("\nstopped\n")
            return EXIT_OK
        errors.write("\ninterrupted\n")
        return EXIT_INTERRUPTED


def _silence_broken_stdout(out: TextIO) -> None:
    """Point ``out``'s descriptor at /dev/null, so that the flush at interpreter exit does not
    fail again on the closed pipe and print a traceback (the recipe of Python's signal docs)."""
    try:
        descriptor = out.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not backed by a descriptor (a test's StringIO): nothing will flush it
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)
