"""``python -m benchmarks``: run the suite, print the tables, optionally save the results.

Examples::

    python -m benchmarks                  # everything (several minutes)
    python -m benchmarks --quick          # everything, smaller, in under a minute
    python -m benchmarks decode stream    # a subset, by section name
    python -m benchmarks --json           # one JSON document on stdout
    python -m benchmarks --save           # also write benchmarks/results/ (JSON, chart, tables)
    python -m benchmarks --file body.json # your own captured body or event stream
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from .competitors import missing, versions
from .harness import MODES, Mode, Table

SECTIONS: Final = {
    "decode": "body decode: small, medium and large bodies",
    "lazy": "large body: eager decode vs lazy logprobs",
    "stream": "stream parse and decode, four ways of cutting the bytes",
    "design": "stream decode-path designs, ours vs floor",
    "e2e": "end to end on loopback, against a server in another process",
    "memory": "peak RSS of a long stream and of a large batch",
    "overhead": "where the end-to-end gap to the floor comes from, step by step",
}
RESULTS: Final = Path(__file__).resolve().parent / "results"
README_MARKERS: Final = ("<!-- results:start -->", "<!-- results:end -->")


@dataclass
class Report:
    mode: Mode
    tables: list[Table] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    skips: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    quiet: bool = False

    def show(self, table: Table) -> None:
        self.tables.append(table)
        if not self.quiet:
            print(table.render(), "", sep="\n", flush=True)

    def skip(self, lines: list[str]) -> None:
        for line in lines:
            if line not in self.skips:
                self.skips.append(line)
                if not self.quiet:
                    print(line, flush=True)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": platform.platform(terse=True),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.partition(":")[2].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
        info["load_average"] = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        pass
    return info


def _publish(
    report: Report,
    section: str,
    tables: Table | list[Table],
    results: Any,
    skips: list[str] | None = None,
    *,
    note: str | None = None,
) -> None:
    """Print a section's skip lines and tables (each with *note*), and keep its results."""
    report.skip(skips or [])
    for table in [tables] if isinstance(tables, Table) else tables:
        if note is not None:
            table.notes.append(note)
        report.show(table)
    report.results[section] = results


def _decode(report: Report) -> None:
    from .decode_bench import run_decode

    _publish(report, "decode", *run_decode(report.mode))


def _lazy(report: Report) -> None:
    from .decode_bench import run_lazy

    _publish(report, "lazy", *run_lazy(report.mode))


def _stream(report: Report) -> None:
    from .stream_bench import run_stream

    _publish(
        report,
        "stream",
        *run_stream(report.mode),
        note='* orq-ai-sdk rejects chunks with "finish_reason": null (every real stream has '
        "them), so it is timed on a variant of the stream where every chunk has one.",
    )


def _design(report: Report) -> None:
    from .stream_bench import design_variants, run_stream

    designs = run_stream(
        report.mode,
        competitors=design_variants(),
        title="Stream decode-path designs",
        chunkings=["network", "per-event", "cr|lf"],
    )
    _publish(report, "design", *designs)


def _e2e(report: Report) -> None:
    from .e2e_bench import run_e2e

    _publish(
        report,
        "e2e",
        *run_e2e(report.mode),
        note="* orq-ai-sdk posts to /v2/router/completions; its streams carry a finish reason "
        "in every chunk (it rejects null ones).",
    )


def _memory(report: Report) -> None:
    from .memory_bench import run_memory

    _publish(report, "memory", *run_memory(report.mode))


def _overhead(report: Report) -> None:
    from .overhead_bench import run_overhead

    _publish(report, "overhead", *run_overhead(report.mode))


RUNNERS: Final[dict[str, Callable[[Report], None]]] = {
    "decode": _decode,
    "lazy": _lazy,
    "stream": _stream,
    "design": _design,
    "e2e": _e2e,
    "memory": _memory,
    "overhead": _overhead,
}


# -- targets ---------------------------------------------------------------------------------


def _get(data: dict[str, Any], *keys: str) -> float:
    value: Any = data
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return math.nan
        value = value[key]
    return float(value) if isinstance(value, int | float) and value is not None else math.nan


def _target(
    report: Report, name: str, value: float, goal: float, at_least: bool, unit: str = "x"
) -> None:
    met = None if math.isnan(value) else (value >= goal if at_least else value <= goal)
    report.targets.append(
        {
            "target": name,
            "measured": None if math.isnan(value) else round(value, 3),
            "required": f"{'>=' if at_least else '<='} {goal:g}{unit}",
            "met": met,
        }
    )


def _report_only(report: Report, name: str, value: float) -> None:
    report.targets.append(
        {
            "target": name,
            "measured": None if math.isnan(value) else round(value, 3),
            "required": "report only",
            "met": None,
        }
    )


def evaluate_targets(report: Report) -> Table:
    from . import decode_bench, e2e_bench, stream_bench

    results = report.results
    decode = results.get("decode", {})
    for size in ("small", "medium", "large"):
        timing = decode.get(size, {})
        ratio = _get(timing, decode_bench.OURS) / _get(timing, decode_bench.FLOOR)
        _target(report, f"body decode {size}: ours / msgspec floor (time)", ratio, 1.1, False)
    small = decode.get("small", {})
    ours_small = _get(small, decode_bench.OURS)
    _target(
        report,
        "body decode small: openai default / ours (time)",
        _get(small, "openai-python (default: construct)") / ours_small,
        50,
        True,
    )
    _target(
        report,
        "body decode small: orq-ai-sdk / ours (time)",
        _get(small, "orq-ai-sdk (unmarshal_json_response)") / ours_small,
        200,
        True,
    )
    lazy = results.get("lazy", {})
    eager = _get(lazy, decode_bench.OURS + ", eager")
    _target(
        report,
        "large body, logprobs unread: eager / decode_completion_lazy (time)",
        eager / _get(lazy, decode_bench.LAZY),
        5,
        True,
    )
    _report_only(
        report,
        "large body, logprobs unread: eager / lazy without the compiled scan (time)",
        eager / _get(lazy, decode_bench.LAZY_MSGSPEC),
    )
    stream = results.get("stream", {})
    for chunking, timing in stream.items():
        ours = _get(timing, stream_bench.OURS)
        floor_time = _get(timing, stream_bench.FLOOR)
        _target(
            report,
            f"stream {chunking}: CompletionStream / floor (time)",
            ours / floor_time,
            1.3,
            False,
        )
        _target(
            report,
            f"stream {chunking}: CompletionStream, accumulate=False / floor (time)",
            _get(timing, stream_bench.OURS_FLAT) / floor_time,
            1.3,
            False,
        )
        if chunking != "network":
            continue
        for rival, label, goal in (
            ("openai-python (SSEDecoder + models)", "openai", 40),
            ("orq-ai-sdk (EventStream)*", "orq-ai-sdk", 300),
            ("httpx-sse + msgspec", "httpx-sse + msgspec", 1),
        ):
            _target(
                report,
                f"stream {chunking}: {label} / ours (time)",
                _get(timing, rival) / ours,
                goal,
                True,
            )
    design = results.get("design", {})
    for chunking, timing in design.items():
        _report_only(
            report,
            f"stream {chunking}: plain decode path, sans-IO / floor (time)",
            _get(timing, stream_bench.OURS_SANS_IO) / _get(timing, stream_bench.FLOOR),
        )
        _report_only(
            report,
            f"stream {chunking}: the floor made async / floor (time)",
            _get(timing, stream_bench.ASYNC_FLOOR) / _get(timing, stream_bench.FLOOR),
        )
    e2e = results.get("e2e", {})
    for config, summary in e2e.items():
        key = "chunks_per_s" if config.startswith("streamed") else "requests_per_s"
        ours = _get(summary, e2e_bench.OURS, key)
        floor_rate = _get(summary, e2e_bench.FLOOR, key)
        _target(
            report,
            f"e2e {config}: ours / aiohttp+msgspec floor ({key})",
            ours / floor_rate,
            0.9,
            True,
        )
        openai = _get(summary, "openai AsyncOpenAI", key)
        if config == "non-streamed, concurrency 64":
            _target(report, f"e2e {config}: ours / openai ({key})", ours / openai, 10, True)
        if config.startswith("streamed"):
            _target(report, f"e2e {config}: ours / openai ({key})", ours / openai, 30, True)
            _target(
                report,
                f"e2e {config}: ours, accumulate=False / floor ({key})",
                _get(summary, e2e_bench.OURS_FLAT, key) / floor_rate,
                0.9,
                True,
            )
            _report_only(
                report,
                f"e2e {config}: ours / bytes-only ceiling ({key})",
                ours / _get(summary, e2e_bench.CEILING, key),
            )
    memory = results.get("memory", {})
    for kind, runs in memory.items():
        if len(runs) == 2 and all("error" not in run for run in runs):
            growth = [(run["peak_kib"] - run["baseline_kib"]) / 1024 for run in runs]
            name = f"memory {kind}: extra peak MiB at {runs[1]['count']:,} vs {runs[0]['count']:,}"
            if kind == "stream":
                # It keeps the whole text by design (final_completion): growth is expected.
                _report_only(report, name, growth[1] - growth[0])
            else:
                _target(report, name, growth[1] - growth[0], 2, False, " MiB")
    table = Table(
        "Targets (ratios from this run)",
        [("measured", "measured"), ("required", "required"), ("met", "met")],
    )
    for target in report.targets:
        met = target["met"]
        table.add(
            target["target"],
            measured=target["measured"],
            required=target["required"],
            met="-" if met is None else ("yes" if met else "NO"),
        )
    return table


# -- your own file ---------------------------------------------------------------------------


def run_file(report: Report, path: Path) -> None:
    from .payloads import CHUNKINGS, Body, EventStream
    from .stream_bench import run_stream

    data = path.read_bytes()
    stripped = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith((b"{", b"[")):
        from .decode_bench import run_decode

        try:
            text = str(msgspec.json.decode(stripped)["choices"][0]["text"])
        except (msgspec.DecodeError, KeyError, IndexError, TypeError):
            text = ""
        body = Body(path.name, data, "your file", text)
        _publish(report, "file", *run_decode(report.mode, [body]))
        return
    from asyncclient._sse import SSEDecoder

    events = [e for e in SSEDecoder().feed(data) if e.data and e.data != b"[DONE]"]
    newline = b"\r\n" if b"\r\n" in data[:4096] else b"\n"
    stream = EventStream(data, len(events), "", newline)
    streams = dict.fromkeys(CHUNKINGS, (stream, stream))
    chunkings = ["network", "per-event", "1-byte"] + (["cr|lf"] if newline == b"\r\n" else [])
    yours = run_stream(
        report.mode, streams=streams, chunkings=chunkings, title=f"Your stream {path.name}"
    )
    _publish(report, "file", *yours)


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks: asyncclient vs the alternatives and the floor, in one run.",
        epilog="Sections: " + "; ".join(f"{k}: {v}" for k, v in SECTIONS.items()),
    )
    parser.add_argument("sections", nargs="*", choices=[[], *SECTIONS], metavar="SECTION")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller runs, under a minute")
    size.add_argument("--smoke", action="store_true", help="tiny runs: checks that all runs")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument(
        "--save", action="store_true", help="write benchmarks/results/ (JSON, tables, chart)"
    )
    parser.add_argument(
        "--file", type=Path, help="benchmark decoding your own JSON body or raw event stream"
    )
    parser.add_argument(
        "--redraw", action="store_true", help="redraw the chart from results/latest.json"
    )
    args = parser.parse_args(argv)
    if args.redraw:
        return _redraw()
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    report = Report(mode, quiet=args.json)
    started = time.perf_counter()
    header = _header(mode)
    if not args.json:
        print(header, flush=True)
    if args.file is not None:
        run_file(report, args.file)
    else:
        for name in args.sections or list(SECTIONS):
            RUNNERS[name](report)
        report.show(evaluate_targets(report))
    for name, reason in sorted(missing().items()):
        report.skip([f"not installed: {name} ({reason})"])
    elapsed = time.perf_counter() - started
    document = {
        "mode": mode.name,
        "seconds": round(elapsed, 1),
        "machine": machine(),
        "versions": versions(),
        "skipped": report.skips,
        "targets": report.targets,
        "results": report.results,
        "tables": [table.as_json() for table in report.tables],
    }
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(document)).decode() + "\n")
    else:
        print(f"Finished in {elapsed:.0f} s ({mode.name} mode).")
    if args.save:
        _save(document, report, header)
    return 0


def _header(mode: Mode) -> str:
    import asyncclient

    info = machine()
    found = versions()
    found["asyncclient"] = asyncclient.__version__
    lines = [
        f"asyncclient benchmarks, {mode.name} mode",
        f"machine: {info.get('cpus')} CPUs ({info.get('cpu', '?')}), "
        f"{info.get('memory_gib', '?')} GiB, load {info.get('load_average', '?')}; "
        f"{info['system']}",
        "versions: " + ", ".join(f"{name} {version}" for name, version in found.items()),
        "",
    ]
    return "\n".join(lines)


def _save(document: dict[str, Any], report: Report, header: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(document)) + b"\n"
    )
    tables = "\n\n".join(table.render(markdown=True) for table in report.tables)
    results = f"```\n{header}```\n\n{tables}\n"
    (RESULTS / "latest.md").write_text(results)
    if report.mode.name == "full" and set(report.results) >= set(SECTIONS):
        _update_readme(results, document)
    _draw_chart(document, report)


def _update_readme(results: str, document: dict[str, Any]) -> None:
    """Put a full run's tables between the README's result markers (if it has them)."""
    readme = RESULTS.parent / "README.md"
    if not readme.exists():
        return
    text = readme.read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        return
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = (
        f"{start}\n_Run of {stamp}, {document['seconds']:.0f} s, written by "
        f"`python -m benchmarks --save`._\n\n{results}{end}"
    )
    readme.write_text(before + block + after)


def _draw_chart(document: dict[str, Any], report: Report) -> bool:
    """Write ``results/headline.png``; False (the reason printed) where it could not."""
    from .chart import write_chart

    speedups, floor_ratios = headline(report)
    subtitle = (
        f"{document['machine'].get('cpus')} CPUs, shared machine; Python "
        f"{document['machine']['python']}; {report.mode.name} run"
    )
    problem = write_chart(speedups, floor_ratios, RESULTS / "headline.png", subtitle)
    if problem:
        print(problem)
        return False
    return True


def _redraw() -> int:
    document = msgspec.json.decode((RESULTS / "latest.json").read_bytes())
    report = Report(MODES[document["mode"]], targets=document["targets"], quiet=True)
    return 0 if _draw_chart(document, report) else 1


def headline(
    report: Report,
) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float | None]]]:
    """The chart's numbers, taken from the targets of this run."""
    by_name = {t["target"]: t["measured"] for t in report.targets}
    speedups: list[tuple[str, float, float]] = []
    for label, key, target in (
        ("small body vs openai (default)", "body decode small: openai default / ours (time)", 50),
        ("small body vs orq-ai-sdk", "body decode small: orq-ai-sdk / ours (time)", 200),
        ("stream vs openai", "stream network: openai / ours (time)", 40),
        ("stream vs orq-ai-sdk", "stream network: orq-ai-sdk / ours (time)", 300),
        ("stream vs httpx-sse+msgspec", "stream network: httpx-sse + msgspec / ours (time)", 1),
        (
            "e2e c=64 vs AsyncOpenAI",
            "e2e non-streamed, concurrency 64: ours / openai (requests_per_s)",
            10,
        ),
        (
            "e2e stream c=16 vs AsyncOpenAI",
            "e2e streamed, concurrency 16: ours / openai (chunks_per_s)",
            30,
        ),
    ):
        value = by_name.get(key)
        if value:
            speedups.append((label, float(value), float(target)))
    floor_ratios: list[tuple[str, float, float | None]] = []
    references: tuple[tuple[str, str, float | None, bool], ...] = (
        ("decode small", "body decode small: ours / msgspec floor (time)", 1 / 1.1, True),
        ("decode medium", "body decode medium: ours / msgspec floor (time)", 1 / 1.1, True),
        ("decode large", "body decode large: ours / msgspec floor (time)", 1 / 1.1, True),
        (
            "stream (CompletionStream)",
            "stream network: CompletionStream / floor (time)",
            1 / 1.3,
            True,
        ),
        (
            "stream, accumulate=False",
            "stream network: CompletionStream, accumulate=False / floor (time)",
            1 / 1.3,
            True,
        ),
        (
            "stream decode path (sans-IO)",
            "stream network: plain decode path, sans-IO / floor (time)",
            1 / 1.3,
            True,
        ),
        (
            "e2e c=1",
            "e2e non-streamed, concurrency 1: ours / aiohttp+msgspec floor (requests_per_s)",
            0.9,
            False,
        ),
        (
            "e2e c=64",
            "e2e non-streamed, concurrency 64: ours / aiohttp+msgspec floor (requests_per_s)",
            0.9,
            False,
        ),
        (
            "e2e stream c=1",
            "e2e streamed, concurrency 1: ours / aiohttp+msgspec floor (chunks_per_s)",
            0.9,
            False,
        ),
        (
            "e2e stream c=16",
            "e2e streamed, concurrency 16: ours / aiohttp+msgspec floor (chunks_per_s)",
            0.9,
            False,
        ),
        (
            "e2e stream c=16, accumulate=False",
            "e2e streamed, concurrency 16: ours, accumulate=False / floor (chunks_per_s)",
            0.9,
            False,
        ),
        (
            "stream c=16 vs ceiling",
            "e2e streamed, concurrency 16: ours / bytes-only ceiling (chunks_per_s)",
            None,
            False,
        ),
    )
    for label, key, goal, invert in references:
        value = by_name.get(key)
        if value:
            floor_ratios.append((label, 1 / float(value) if invert else float(value), goal))
    return speedups, floor_ratios


if __name__ == "__main__":
    sys.exit(main())
