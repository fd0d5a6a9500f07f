"""Where the end-to-end gap to the floor comes from: ladders of clients, one step at a time.

Each ladder starts at the bare floor (raw aiohttp with its session timeout off, msgspec) and
adds, one at a time, what ``asyncclient`` does per request or per stream, then runs the
client itself with its options turned off and on. Every rung runs against the same loopback
server, interleaved repeat by repeat, and reports the client process's CPU time per request
(non-streamed) or per chunk and per stream (streamed): the distance between two rungs is what
that step costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from asyncclient._deadlines import Deadlines
from asyncclient._decode import decode_completion, encode_request
from asyncclient._streaming import CompletionStream
from asyncclient._transport import Response, Timeout

from . import floor
from .competitors import require
from .e2e_bench import (
    HEADERS,
    MODEL,
    PROMPT,
    REQUEST,
    STREAM_REQUEST,
    Client,
    LoopbackServer,
    Operation,
    Sample,
    _ours,
    measure,
    take_turns,
)
from .harness import Mode, Table, median

__all__ = ["run_overhead"]

RAW: Final = "raw aiohttp + msgspec (session timeout off)"
RAW_TIMER: Final = "raw + one asyncio.timeout, rescheduled for the body"
RAW_AS_OURS: Final = "raw + shared deadline + ClientTimeout(connect=10) + encode_request"
RAW_SHARED: Final = "raw + one deadline on the client's shared timer, moved for the body"
OURS: Final = "asyncclient, defaults"
OURS_NO_TIMEOUT: Final = "asyncclient, timeout=None"
OURS_NO_RETRY: Final = "asyncclient, retry=None"
OURS_BARE: Final = "asyncclient, timeout=None, retry=None"

STREAM_FLOOR: Final = "floor: raw aiohttp, split + one decode per event"
RAW_STREAM_FLAT: Final = "raw request + CompletionStream(accumulate=False, no timeouts)"
RAW_STREAM: Final = "raw request + CompletionStream(no timeouts)"
RAW_STREAM_TIMED: Final = "raw request + CompletionStream(default Timeout)"
OURS_FLAT_BARE: Final = "asyncclient, accumulate=False, timeout=None"
OURS_FLAT: Final = "asyncclient, accumulate=False"

_PARAMS: Final = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16}
_STREAM_PARAMS: Final = {**_PARAMS, "stream": True}


@contextlib.asynccontextmanager
async def _raw(
    url: str,
    *,
    timer: bool = False,
    shared_timer: bool = False,
    client_timeout: bool = False,
    encode: bool = False,
) -> AsyncIterator[tuple[Operation, Operation]]:
    """Raw aiohttp, plus (optionally) the per-request steps the client takes on the wire."""
    aiohttp = require("aiohttp")
    per_request = (
        aiohttp.ClientTimeout(total=None, connect=10.0, sock_connect=10.0, sock_read=None)
        if client_timeout
        else None
    )
    options: dict[str, Any] = {} if per_request is None else {"timeout": per_request}
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100), timeout=aiohttp.ClientTimeout(total=None)
    )
    endpoint = url + "/v1/completions"
    loop_time = asyncio.get_running_loop().time
    deadlines = Deadlines()

    async def request() -> int:
        data = encode_request(_PARAMS) if encode else REQUEST
        if shared_timer:
            # What the client does: one deadline on its shared timer, moved for the body.
            deadline = deadlines.start(loop_time() + 600.0)
            try:
                response = await session.post(endpoint, data=data, headers=HEADERS, **options)
                deadlines.move(deadline, loop_time() + 600.0)
                body = await response.read()
            except asyncio.CancelledError:
                if deadlines.expired(deadline):
                    raise TimeoutError from None
                raise
            finally:
                deadlines.finish(deadline)
        elif timer:
            # One asyncio.timeout for the headers, rescheduled for the body.
            async with asyncio.timeout(600.0) as timer_scope:
                response = await session.post(endpoint, data=data, headers=HEADERS, **options)
                timer_scope.reschedule(loop_time() + 600.0)
                body = await response.read()
        else:
            response = await session.post(endpoint, data=data, headers=HEADERS, **options)
            body = await response.read()
        response.release()
        decode_completion(body)
        return 1

    async def stream() -> int:
        async with session.post(endpoint, data=STREAM_REQUEST, headers=HEADERS) as response:
            return await floor.read_floor_stream(response.content.iter_any())

    try:
        yield request, stream
    finally:
        await session.close()


@contextlib.asynccontextmanager
async def _raw_with_stream(
    url: str,
    *,
    accumulate: bool,
    timeout: Timeout | None,
) -> AsyncIterator[tuple[Operation, Operation]]:
    """A raw aiohttp request whose body is read by the library's :class:`CompletionStream`:
    the stream object's cost without the client's request machinery."""
    aiohttp = require("aiohttp")
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100), timeout=aiohttp.ClientTimeout(total=None)
    )
    endpoint = url + "/v1/completions"

    async def request() -> int:
        raise NotImplementedError("streams only")

    async def stream() -> int:
        response = await session.post(endpoint, data=STREAM_REQUEST, headers=HEADERS)
        count = 0
        async with CompletionStream(
            Response(response, endpoint), timeout=timeout, accumulate=accumulate
        ) as chunks:
            async for _ in chunks:
                count += 1
        return count

    try:
        yield request, stream
    finally:
        await session.close()


def request_ladder() -> list[Client]:
    return [
        Client(RAW, _raw),
        Client(RAW_TIMER, functools.partial(_raw, timer=True)),
        Client(RAW_SHARED, functools.partial(_raw, shared_timer=True)),
        Client(
            RAW_AS_OURS,
            functools.partial(_raw, shared_timer=True, client_timeout=True, encode=True),
        ),
        Client(OURS_BARE, functools.partial(_ours, timeout=False, retry=False)),
        Client(OURS_NO_TIMEOUT, functools.partial(_ours, timeout=False)),
        Client(OURS_NO_RETRY, functools.partial(_ours, retry=False)),
        Client(OURS, _ours),
    ]


def stream_ladder() -> list[Client]:
    return [
        Client(STREAM_FLOOR, _raw),
        Client(
            RAW_STREAM_FLAT, functools.partial(_raw_with_stream, accumulate=False, timeout=None)
        ),
        Client(RAW_STREAM, functools.partial(_raw_with_stream, accumulate=True, timeout=None)),
        Client(
            RAW_STREAM_TIMED,
            functools.partial(_raw_with_stream, accumulate=True, timeout=Timeout()),
        ),
        Client(OURS_FLAT_BARE, functools.partial(_ours, accumulate=False, timeout=False)),
        Client(OURS_FLAT, functools.partial(_ours, accumulate=False)),
        Client(OURS_NO_TIMEOUT, functools.partial(_ours, timeout=False)),
        Client(OURS, _ours),
    ]


@dataclass(frozen=True, slots=True)
class Ladder:
    name: str
    streamed: bool
    concurrency: int
    clients: Callable[[], list[Client]]


LADDERS: Final = (
    Ladder("non-streamed, concurrency 64", False, 64, request_ladder),
    Ladder("streamed, concurrency 1", True, 1, stream_ladder),
    Ladder("streamed, concurrency 16", True, 16, stream_ladder),
)


async def _sample(client: Client, *, url: str, ladder: Ladder, mode: Mode) -> Sample:
    async with client.factory(url) as (request, stream):
        operation = stream if ladder.streamed else request
        limit = mode.e2e_streams if ladder.streamed else mode.e2e_requests
        return await measure(operation, ladder.concurrency, limit, mode.e2e_seconds)


def run_overhead(mode: Mode) -> tuple[list[Table], dict[str, Any]]:
    """One table per ladder. Returns the tables and ``{ladder: {rung: figures}}``."""
    tables: list[Table] = []
    results: dict[str, Any] = {}
    # More repeats than the other end-to-end runs: rungs differ by a few microseconds.
    repeats = mode.e2e_repeats + 2
    with LoopbackServer(mode.e2e_stream_chunks) as server:
        for ladder in LADDERS:
            clients = ladder.clients()
            samples, errors = take_turns(
                clients,
                repeats,
                mode,
                functools.partial(_sample, url=server.url, ladder=ladder, mode=mode),
            )
            table, summary = _table(ladder, clients, samples, errors, mode)
            tables.append(table)
            results[ladder.name] = summary
    return tables, results


def _table(
    ladder: Ladder,
    clients: list[Client],
    samples: dict[str, list[Sample]],
    errors: dict[str, str],
    mode: Mode,
) -> tuple[Table, dict[str, Any]]:
    summary: dict[str, Any] = {}
    for client in clients:
        rows = samples[client.name]
        if not rows:
            summary[client.name] = {"error": errors.get(client.name, "no sample")}
            continue
        summary[client.name] = {
            "requests_per_s": median([s.operations / s.wall for s in rows]),
            "chunks_per_s": median([s.chunks / s.wall for s in rows]),
            "cpu_s_per_request": median([s.cpu / max(s.operations, 1) for s in rows]),
            "cpu_s_per_chunk": median([s.cpu / max(s.chunks, 1) for s in rows]),
            "repeats": len(rows),
        }
    first = summary.get(clients[0].name, {})
    base = first.get("cpu_s_per_request", float("nan"))
    if ladder.streamed:
        title = (
            f"Overhead ladder, {ladder.name} ({mode.e2e_stream_chunks:,} chunks per stream): "
            "client CPU"
        )
        columns = [
            ("chunks_s", "chunks/s"),
            ("us_chunk", "CPU us/chunk"),
            ("us_stream", "CPU us/stream"),
            ("delta", "+ us/stream vs floor"),
        ]
    else:
        title = f"Overhead ladder, {ladder.name}: client CPU"
        columns = [
            ("requests_s", "requests/s"),
            ("us_request", "CPU us/request"),
            ("delta", "+ us vs raw"),
        ]
    table = Table(title, columns)
    for client in clients:
        entry = summary[client.name]
        if "error" in entry:
            table.add(client.name, delta=f"failed: {entry['error']}")
            continue
        delta = (entry["cpu_s_per_request"] - base) * 1e6
        if ladder.streamed:
            table.add(
                client.name,
                chunks_s=entry["chunks_per_s"],
                us_chunk=entry["cpu_s_per_chunk"] * 1e6,
                us_stream=entry["cpu_s_per_request"] * 1e6,
                delta=f"{delta:+.0f}",
            )
        else:
            table.add(
                client.name,
                requests_s=entry["requests_per_s"],
                us_request=entry["cpu_s_per_request"] * 1e6,
                delta=f"{delta:+.1f}",
            )
    table.notes.append(
        "Client process CPU time (user + system) over the measured phase, median of "
        f"{mode.e2e_repeats + 2} interleaved repeats; each rung adds one step to the one above "
        "it (the client's own rungs turn its options off)."
    )
    return table, summary
