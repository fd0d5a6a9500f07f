"""Memory: peak RSS of one very long stream and of a large batch, each in a fresh process.

Each measurement runs ``python -m benchmarks.memory_bench probe ...`` in its own process, so
one measurement's allocations never count toward another's. The probe warms up (imports,
first connection, a short stream), resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), notes the RSS as its baseline, runs, and reports the peak.
Each workload runs at two lengths: a peak that does not grow with the length is the target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from .e2e_bench import MODEL, PROMPT, ROOT, LoopbackServer
from .harness import Mode, Table

__all__ = ["run_memory"]

VARIANTS: Final = {
    "stream": "asyncclient: async for chunk in stream (accumulate=True, the default)",
    "stream-flat": "asyncclient: the same stream with accumulate=False",
    "batch": "asyncclient: client.batch(generator, concurrency=64)",
}


def _rss_kib() -> tuple[int, int]:
    """(current, peak) resident set size in KiB, from ``/proc/self/status``."""
    current = peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return current, peak


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _stream_probe(url: str, chunks: int, accumulate: bool) -> tuple[int, int]:
    from asyncclient import AsyncClient

    count = 0
    async with AsyncClient(base_url=url, path="/v1/completions") as client:
        # Warm up on a short stream: a long one would leave its high-water mark behind.
        async with client.completions.stream(
            model=MODEL, prompt=PROMPT, path="/chunks/1000/v1/completions", accumulate=accumulate
        ) as warm:
            async for _ in warm:
                pass
        _reset_peak()
        baseline, _ = _rss_kib()
        async with client.completions.stream(
            model=MODEL,
            prompt=PROMPT,
            path=f"/chunks/{chunks}/v1/completions",
            accumulate=accumulate,
        ) as stream:
            async for _ in stream:
                count += 1
    return count, baseline


async def _batch_probe(url: str, requests: int) -> tuple[int, int]:
    from asyncclient import AsyncClient

    def inputs(count: int) -> Iterator[dict[str, Any]]:
        for number in range(count):
            yield {"id": f"r{number}", "model": MODEL, "prompt": PROMPT, "max_tokens": 16}

    count = 0
    async with AsyncClient(base_url=url, path="/v1/completions") as client:
        await client.completions.create(model=MODEL, prompt=PROMPT)
        _reset_peak()
        baseline, _ = _rss_kib()
        batch = getattr(client, "batch", None)
        if batch is None:
            return await _pool(client, inputs(requests)), baseline
        async with batch(inputs(requests), concurrency=64) as results:
            async for result in results:
                if result.error is not None:
                    raise result.error
                count += 1
    return count, baseline


async def _pool(client: Any, items: Iterator[dict[str, Any]]) -> int:
    # Fallback for a client without ``batch``: 64 workers pulling from one generator.
    count = 0

    async def worker() -> None:
        nonlocal count
        for item in items:
            item.pop("id", None)
            await client.completions.create(**item)
            count += 1

    await asyncio.gather(*(worker() for _ in range(64)))
    return count


def probe(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_bench probe")
    parser.add_argument("kind", choices=sorted(VARIANTS))
    parser.add_argument("count", type=int)
    parser.add_argument("url")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.kind == "batch":
        done, baseline = asyncio.run(_batch_probe(args.url, args.count))
    else:
        accumulate = args.kind != "stream-flat"
        done, baseline = asyncio.run(_stream_probe(args.url, args.count, accumulate))
    seconds = time.perf_counter() - started
    current, peak = _rss_kib()
    report = {
        "kind": args.kind,
        "count": done,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "final_kib": current,
        "seconds": seconds,
    }
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n")


def _run_probe(kind: str, count: int, url: str, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_bench", "probe", kind, str(count), url],
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        tail = completed.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return {"error": tail[0] if tail else f"exit code {completed.returncode}"}
    result: dict[str, Any] = msgspec.json.decode(completed.stdout.splitlines()[-1])
    return result


def run_memory(mode: Mode) -> tuple[Table, dict[str, Any]]:
    table = Table(
        "Memory: peak RSS of one process, at two lengths",
        [
            ("length", "length"),
            ("peak", "peak RSS MiB"),
            ("growth", "peak - start MiB"),
            ("seconds", "seconds"),
            ("verdict", "grows with length?"),
        ],
    )
    results: dict[str, Any] = {}
    workloads = [
        ("stream", mode.memory_stream_chunks),
        ("stream-flat", mode.memory_stream_chunks),
        ("batch", mode.memory_batch_requests),
    ]
    with LoopbackServer(100) as server:
        for kind, lengths in workloads:
            measured = []
            for length in lengths:
                timeout = 120.0 + length / 1_000
                try:
                    measured.append(_run_probe(kind, length, server.url, timeout))
                except subprocess.TimeoutExpired:
                    measured.append({"error": f"timed out after {timeout:.0f} s"})
            results[kind] = measured
            growths = [m["peak_kib"] - m["baseline_kib"] for m in measured if "error" not in m]
            verdict = "-"
            if len(growths) == 2:
                # Allow 2 MiB of noise (allocator arenas, import-time caches).
                grew = growths[1] - growths[0] > 2 * 1024
                verdict = f"yes (+{(growths[1] - growths[0]) / 1024:.1f} MiB)" if grew else "no"
            for length, entry in zip(lengths, measured, strict=True):
                name = f"{VARIANTS[kind]}"
                if "error" in entry:
                    table.add(name, length=f"{length:,}", verdict=f"failed: {entry['error']}")
                    continue
                table.add(
                    name,
                    length=f"{entry['count']:,}",
                    peak=entry["peak_kib"] / 1024,
                    growth=(entry["peak_kib"] - entry["baseline_kib"]) / 1024,
                    seconds=entry["seconds"],
                    verdict=verdict if length == lengths[-1] else "",
                )
    table.notes.append(
        "length: chunks for streams, requests for the batch. The peak is measured after "
        "warm-up (kernel peak mark reset), so it shows what the workload itself adds."
    )
    return table, results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        probe(sys.argv[2:])
    else:
        sys.exit("usage: python -m benchmarks.memory_bench probe KIND COUNT URL")
