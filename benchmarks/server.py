"""A loopback HTTP/1.1 server that answers every POST with a fixed, precomputed response.

It runs in its own process (``python -m benchmarks.server``) so that its CPU time is not the
client's. It is a bare ``asyncio.Protocol``, not a web framework: the responses are built
once, so the server costs little per request and the client is what gets measured.

Routes (by path):

- ``.../completions`` on any prefix: a JSON completion body, or an event stream when the
  request body has ``"stream": true``.
- ``/v2/router/completions``: the same, except that the stream gives every chunk a finish
  reason (the only kind of stream the Orq SDK can decode).
- ``/chunks/<N>/...``: an event stream of ``N`` chunks, written block by block with flow
  control (for the memory benchmark's million-chunk stream).

On start it prints ``PORT <number>`` on a line of its own. It stops after ``--max-seconds``
whatever happens, and when its standard input closes (the parent went away).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import threading
from typing import Final

from .payloads import body, event_stream, stream_payload

__all__ = ["main"]

_STREAM_FLAG: Final = re.compile(rb'"stream"\s*:\s*true')
_CHUNKED_PIECE: Final = 16 * 1024
_BLOCK_CHUNKS: Final = 1_000


def _json_response(payload: bytes) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
    )
    return head + payload


_STREAM_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunked(data: bytes) -> bytes:
    # Real gateways send chunked bodies; pieces of 16 KiB, as a proxy would flush them.
    parts = []
    for start in range(0, len(data), _CHUNKED_PIECE):
        piece = data[start : start + _CHUNKED_PIECE]
        parts.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    return b"".join(parts)


def _stream_response(data: bytes) -> bytes:
    return _STREAM_HEAD + _chunked(data) + b"0\r\n\r\n"


class _Responses:
    def __init__(self, stream_chunks: int) -> None:
        self.json = _json_response(body("small").data)
        self.stream = _stream_response(event_stream(stream_chunks).data)
        self.orq_stream = _stream_response(
            event_stream(stream_chunks, always_finish_reason=True).data
        )
        block = b"".join(
            b"data: " + stream_payload(f" w{i % 10}") + b"\n\n" for i in range(_BLOCK_CHUNKS)
        )
        self.block = _chunked(block)


class _Connection(asyncio.Protocol):
    def __init__(self, responses: _Responses) -> None:
        self._responses = responses
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._writer: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._can_write.set()
        if self._writer is not None:
            self._writer.cancel()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._writer is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].partition(b"\r")[0]) if at >= 0 else 0
            if len(self._buffer) < end + 4 + length:
                return
            request_body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            path = head.split(b" ", 2)[1]
            self._respond(path, request_body)

    def _respond(self, path: bytes, request_body: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        if not _STREAM_FLAG.search(request_body):
            transport.write(self._responses.json)
        elif path.startswith(b"/chunks/"):
            count = int(path.split(b"/")[2])
            self._writer = asyncio.get_running_loop().create_task(self._write_many(count))
        elif path.startswith(b"/v2/router/"):
            transport.write(self._responses.orq_stream)
        else:
            transport.write(self._responses.stream)

    async def _write_many(self, count: int) -> None:
        transport = self._transport
        assert transport is not None
        transport.write(_STREAM_HEAD)
        block = self._responses.block
        for _ in range(count // _BLOCK_CHUNKS):
            await self._can_write.wait()
            if self._transport is None:
                return
            transport.write(block)
        rest = count % _BLOCK_CHUNKS
        tail = b"".join(b"data: " + stream_payload(" w") + b"\n\n" for _ in range(rest))
        tail += b"data: [DONE]\n\n"
        await self._can_write.wait()
        if self._transport is None:
            return
        transport.write(_chunked(tail) + b"0\r\n\r\n")
        self._writer = None
        if self._buffer:
            self.data_received(b"")


async def _serve(port: int, stream_chunks: int, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    responses = _Responses(stream_chunks)
    server = await loop.create_server(
        lambda: _Connection(responses), "127.0.0.1", port, backlog=1024
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    parent_gone = asyncio.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(parent_gone.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        await asyncio.wait_for(parent_gone.wait(), timeout=max_seconds)
    except TimeoutError:
        pass
    finally:
        server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stream-chunks", type=int, default=1_000)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port, args.stream_chunks, args.max_seconds))


if __name__ == "__main__":
    main()
