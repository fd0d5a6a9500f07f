"""End to end on loopback: real clients against a fixed-payload server in another process.

Each configuration (non-streamed at concurrency 1 and 64, streamed at 1 and 16) runs every
client for a bounded number of requests and a bounded time, in a fresh event loop, and the
clients take turns repeat by repeat. The client process's CPU time (``time.process_time``)
is reported per request and per chunk: on a shared machine it is steadier than wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from . import floor
from .competitors import Missing, require
from .harness import Mode, Table, median, ratio_text

__all__ = ["LoopbackServer", "run_e2e"]

MODEL: Final = "gpt-3.5-turbo-instruct"
PROMPT: Final = "Say this is a test"
REQUEST: Final = msgspec.json.encode({"model": MODEL, "prompt": PROMPT, "max_tokens": 16})
STREAM_REQUEST: Final = msgspec.json.encode(
    {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "stream": True}
)
HEADERS: Final = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}

OURS: Final = "asyncclient"
OURS_FLAT: Final = "asyncclient, accumulate=False"
FLOOR: Final = "floor: aiohttp + msgspec"
CEILING: Final = "ceiling: aiohttp, bytes only"
BARE: Final = "asyncclient, timeout=None, retry=None (diagnostic)"
ROOT: Final = Path(__file__).resolve().parent.parent


class LoopbackServer:
    """``python -m benchmarks.server`` in a child process, stopped on exit."""

    def __init__(self, stream_chunks: int, max_seconds: float = 1_800.0) -> None:
        self.stream_chunks = stream_chunks
        self._max_seconds = max_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> LoopbackServer:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.server",
                "--stream-chunks",
                str(self.stream_chunks),
                "--max-seconds",
                str(self._max_seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) != 2 or line[0] != b"PORT":
            self.__exit__(None, None, None)
            raise RuntimeError("the benchmark server did not start")
        self.url = f"http://127.0.0.1:{int(line[1])}"
        return self

    def __exit__(self, *exc: object) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux ``/proc``)."""
        if self._process is None:
            return None
        try:
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rpartition(")")[2]
        except OSError:
            return None
        parts = fields.split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


# A client: an async context manager yielding (request, stream) operations. ``request``
# returns 1; ``stream`` returns the number of chunks it decoded.
Operation = Callable[[], Awaitable[int]]
ClientFactory = Callable[[str], contextlib.AbstractAsyncContextManager[tuple[Operation, Operation]]]


@contextlib.asynccontextmanager
async def _floor_client(
    url: str, decode: bool = True
) -> AsyncIterator[tuple[Operation, Operation]]:
    aiohttp = require("aiohttp")
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as session:
        endpoint = url + "/v1/completions"
        decode_body = floor.completion_decoder.decode

        async def request() -> int:
            async with session.post(endpoint, data=REQUEST, headers=HEADERS) as response:
                body = await response.read()
            if decode:
                decode_body(body)
            return 1

        async def stream() -> int:
            async with session.post(endpoint, data=STREAM_REQUEST, headers=HEADERS) as response:
                if decode:
                    return await floor.read_floor_stream(response.content.iter_any())
                count = 0
                async for piece in response.content.iter_any():
                    count += piece.count(b"\n\n")
            return count - 1  # the ceiling counted [DONE] too

        yield request, stream


@contextlib.asynccontextmanager
async def _ceiling_client(url: str) -> AsyncIterator[tuple[Operation, Operation]]:
    async with _floor_client(url, decode=False) as operations:
        yield operations


@contextlib.asynccontextmanager
async def _ours(
    url: str, *, accumulate: bool = True, timeout: bool = True, retry: bool = True
) -> AsyncIterator[tuple[Operation, Operation]]:
    """The client as a user writes it; the flags turn its timers or retries off."""
    from asyncclient import AsyncClient
    from asyncclient._client import DEFAULT_RETRY_POLICY
    from asyncclient._transport import DEFAULT_TIMEOUT

    async with AsyncClient(
        base_url=url,
        path="/v1/completions",
        api_key="sk-bench",
        timeout=DEFAULT_TIMEOUT if timeout else None,
        retry=DEFAULT_RETRY_POLICY if retry else None,
    ) as client:
        completions = client.completions

        async def request() -> int:
            await completions.create(model=MODEL, prompt=PROMPT, max_tokens=16)
            return 1

        async def stream() -> int:
            count = 0
            async with completions.stream(
                model=MODEL, prompt=PROMPT, max_tokens=16, accumulate=accumulate
            ) as chunks:
                async for _ in chunks:
                    count += 1
            return count

        yield request, stream


@contextlib.asynccontextmanager
async def _openai(url: str) -> AsyncIterator[tuple[Operation, Operation]]:
    openai = require("openai")
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)
    try:

        async def request() -> int:
            await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=16)
            return 1

        async def stream() -> int:
            count = 0
            chunks = await client.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=16, stream=True
            )
            async with chunks:
                async for _ in chunks:
                    count += 1
            return count

        yield request, stream
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def _httpx_json(url: str) -> AsyncIterator[tuple[Operation, Operation]]:
    httpx = require("httpx")
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits) as client:
        endpoint = url + "/v1/completions"

        async def request() -> int:
            response = await client.post(endpoint, content=REQUEST, headers=HEADERS)
            json.loads(response.content)
            return 1

        async def stream() -> int:
            count = 0
            async with client.stream(
                "POST", endpoint, content=STREAM_REQUEST, headers=HEADERS
            ) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        break
                    json.loads(line[6:])
                    count += 1
            return count

        yield request, stream


@contextlib.asynccontextmanager
async def _orq(url: str) -> AsyncIterator[tuple[Operation, Operation]]:
    orq_ai_sdk = require("orq_ai_sdk")
    client = orq_ai_sdk.Orq(api_key="sk-bench", server_url=url)
    completions = client.router.completions

    async def request() -> int:
        await completions.create_async(model=MODEL, prompt=PROMPT, max_tokens=16)
        return 1

    async def stream() -> int:
        count = 0
        events = await completions.create_async(
            model=MODEL, prompt=PROMPT, max_tokens=16, stream=True
        )
        async with events as chunks:
            async for _ in chunks:
                count += 1
        return count

    try:
        yield request, stream
    finally:
        closer = getattr(client, "__aexit__", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer(None, None, None)


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    factory: ClientFactory
    streams_only: bool = False


def clients() -> list[Client]:
    return [
        Client(FLOOR, _floor_client),
        Client(CEILING, _ceiling_client, streams_only=True),
        Client(OURS, _ours),
        Client(OURS_FLAT, functools.partial(_ours, accumulate=False), streams_only=True),
        Client(BARE, functools.partial(_ours, timeout=False, retry=False)),
        Client("openai AsyncOpenAI", _openai),
        Client("httpx + json", _httpx_json),
        Client("orq-ai-sdk (async)*", _orq),
    ]


@dataclass(frozen=True, slots=True)
class Config:
    name: str
    streamed: bool
    concurrency: int


CONFIGS: Final = (
    Config("non-streamed, concurrency 1", False, 1),
    Config("non-streamed, concurrency 64", False, 64),
    Config("streamed, concurrency 1", True, 1),
    Config("streamed, concurrency 16", True, 16),
)


@dataclass(slots=True)
class Sample:
    operations: int
    chunks: int
    wall: float
    cpu: float
    server_cpu: float | None


async def _drive(
    operation: Operation, concurrency: int, limit: int, seconds: float
) -> tuple[int, int]:
    remaining = limit
    deadline = time.perf_counter() + seconds
    done = 0
    chunks = 0

    async def worker() -> None:
        nonlocal remaining, done, chunks
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            # Not ``chunks += await ...``: that reads ``chunks`` before the await, and the
            # other workers' additions made meanwhile would be lost.
            got = await operation()
            chunks += got
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, chunks


async def measure(
    operation: Operation,
    concurrency: int,
    limit: int,
    seconds: float,
    server: LoopbackServer | None = None,
) -> Sample:
    """Warm up, then time at most *limit* operations for at most *seconds*: wall time, this
    process's CPU time and, given the *server*, its CPU time."""
    # Warm up: open the connections and fill caches.
    await _drive(operation, concurrency, concurrency * 2, 10.0)
    server_before = server.cpu_seconds() if server is not None else None
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    done, chunks = await _drive(operation, concurrency, limit, seconds)
    wall = time.perf_counter() - wall_before
    cpu = time.process_time() - cpu_before
    server_after = server.cpu_seconds() if server is not None else None
    server_cpu = (
        server_after - server_before
        if server_before is not None and server_after is not None
        else None
    )
    return Sample(done, chunks, wall, cpu, server_cpu)


def take_turns(
    clients: Sequence[Client],
    repeats: int,
    mode: Mode,
    sample: Callable[[Client], Awaitable[Sample]],
) -> tuple[dict[str, list[Sample]], dict[str, str]]:
    """*repeats* rounds in which every client takes one *sample*, each in a fresh event loop.

    Returns the samples and the errors by client name: a client that fails once is not run
    again.
    """
    samples: dict[str, list[Sample]] = {client.name: [] for client in clients}
    errors: dict[str, str] = {}
    for _ in range(repeats):
        for client in clients:
            if client.name in errors:
                continue
            try:
                taken = asyncio.run(
                    asyncio.wait_for(sample(client), timeout=mode.e2e_seconds * 4 + 30)
                )
            except Exception as exc:
                errors[client.name] = f"{type(exc).__name__}: {str(exc)[:100]}"
                continue
            samples[client.name].append(taken)
    return samples, errors


async def _one_sample(
    client: Client, *, url: str, config: Config, mode: Mode, server: LoopbackServer
) -> Sample:
    async with client.factory(url) as (request, stream):
        operation = stream if config.streamed else request
        limit = mode.e2e_streams if config.streamed else mode.e2e_requests
        if (config.streamed and config.concurrency == 1) or (
            not config.streamed and config.concurrency == 1
        ):
            limit = max(2, limit // 4)
        return await measure(operation, config.concurrency, limit, mode.e2e_seconds, server)


def run_e2e(mode: Mode) -> tuple[list[Table], dict[str, Any], list[str]]:
    skips: list[str] = []
    available: list[Client] = []
    for client in clients():
        try:
            with _check_available(client):
                pass
        except Missing as exc:
            skips.append(f"skipped {client.name}: {exc}")
            continue
        available.append(client)
    tables: list[Table] = []
    results: dict[str, Any] = {}
    with LoopbackServer(mode.e2e_stream_chunks) as server:
        for config in CONFIGS:
            runnable = [c for c in available if config.streamed or not c.streams_only]
            samples, errors = take_turns(
                runnable,
                mode.e2e_repeats,
                mode,
                functools.partial(
                    _one_sample, url=server.url, config=config, mode=mode, server=server
                ),
            )
            table, summary = _table(config, runnable, samples, errors, mode)
            tables.append(table)
            results[config.name] = summary
    return tables, results, skips


@contextlib.contextmanager
def _check_available(client: Client) -> Iterator[None]:
    needs = {
        "openai AsyncOpenAI": "openai",
        "httpx + json": "httpx",
        "orq-ai-sdk (async)*": "orq_ai_sdk",
    }
    module = needs.get(client.name)
    if module is not None:
        require(module)
    yield


def _table(
    config: Config,
    runnable: list[Client],
    samples: dict[str, list[Sample]],
    errors: dict[str, str],
    mode: Mode,
) -> tuple[Table, dict[str, Any]]:
    if config.streamed:
        columns = [
            ("chunks_s", "chunks/s"),
            ("streams_s", "streams/s"),
            ("cpu_us_chunk", "client CPU us/chunk"),
            ("server_load", "server CPU %"),
            ("vs", "vs ours"),
        ]
        chunks_per_stream = mode.e2e_stream_chunks
        title = f"End to end, {config.name} ({chunks_per_stream:,} chunks per stream)"
    else:
        columns = [
            ("requests_s", "requests/s"),
            ("cpu_us_request", "client CPU us/request"),
            ("server_load", "server CPU %"),
            ("vs", "vs ours"),
        ]
        title = f"End to end, {config.name}"
    table = Table(title, columns)
    summary: dict[str, Any] = {}
    for client in runnable:
        rows = samples[client.name]
        if not rows:
            reason = errors.get(client.name, "no sample")
            table.add(client.name, vs=f"failed: {reason}")
            summary[client.name] = {"error": reason}
            continue
        rate = median([s.operations / s.wall for s in rows])
        chunk_rate = median([s.chunks / s.wall for s in rows])
        cpu_per_op = median([s.cpu / max(s.operations, 1) for s in rows])
        cpu_per_chunk = median([s.cpu / max(s.chunks, 1) for s in rows])
        loads = [s.server_cpu / s.wall for s in rows if s.server_cpu is not None]
        server_load = median(loads) if loads else None
        summary[client.name] = {
            "requests_per_s": rate,
            "chunks_per_s": chunk_rate if config.streamed else None,
            "cpu_s_per_request": cpu_per_op,
            "cpu_s_per_chunk": cpu_per_chunk if config.streamed else None,
            "server_cpu_fraction": server_load,
            "operations": sum(s.operations for s in rows),
        }
    ours = summary.get(OURS, {})
    for client in runnable:
        entry = summary[client.name]
        if "error" in entry:
            continue
        load = entry["server_cpu_fraction"]
        note = "server-bound" if load is not None and load >= 0.9 else ""
        if config.streamed:
            speed = entry["chunks_per_s"]
            vs = ours.get("chunks_per_s", float("nan")) / speed if speed else float("nan")
            table.add(
                client.name,
                note,
                chunks_s=speed,
                streams_s=entry["requests_per_s"],
                cpu_us_chunk=entry["cpu_s_per_chunk"] * 1e6,
                server_load=load * 100 if load is not None else None,
                vs=ratio_text(vs),
            )
        else:
            speed = entry["requests_per_s"]
            vs = ours.get("requests_per_s", float("nan")) / speed if speed else float("nan")
            table.add(
                client.name,
                note,
                requests_s=speed,
                cpu_us_request=entry["cpu_s_per_request"] * 1e6,
                server_load=load * 100 if load is not None else None,
                vs=ratio_text(vs),
            )
    table.notes.append(
        "vs ours: our throughput / theirs (above 1.00x: ours is faster). "
        "server CPU %: the server process's CPU time / wall time; at 90% or more the server "
        "(one process, one core) is the bottleneck, not the client."
    )
    return table, summary
