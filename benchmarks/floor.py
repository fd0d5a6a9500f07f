"""The floor: the least work that turns the same bytes into the same typed objects.

Bare ``msgspec.Struct`` types with default options (the first thing a msgspec user would
write for these shapes) and a bare bytes framer that knows the stream's separator in
advance. Nothing here validates what a real client must: no BOM, no comments, no ids, no
``event:`` lines, no error events, no limit on event size.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import Final

import msgspec

__all__ = [
    "FloorChunk",
    "FloorCompletion",
    "async_floor_stream",
    "bytes_only",
    "floor_stream",
    "read_floor_stream",
]


class FloorLogprobs(msgspec.Struct):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = []


class FloorChoice(msgspec.Struct):
    text: str
    index: int
    logprobs: FloorLogprobs | None = None
    finish_reason: str | None = None


class FloorPromptDetails(msgspec.Struct):
    cached_tokens: int | None = None
    audio_tokens: int | None = None


class FloorCompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None
    audio_tokens: int | None = None


class FloorUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: FloorPromptDetails | None = None
    completion_tokens_details: FloorCompletionDetails | None = None


class FloorCompletion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[FloorChoice]
    system_fingerprint: str | None = None
    usage: FloorUsage | None = None


# A chunk has the body's shape (FloorChoice already allows a null finish_reason).
FloorChunk = FloorCompletion


completion_decoder: Final = msgspec.json.Decoder(FloorCompletion)
chunk_decoder: Final = msgspec.json.Decoder(FloorChunk)

_DONE: Final = b"[DONE]"


def floor_stream(pieces: Iterable[bytes], separator: bytes = b"\n\n") -> int:
    """Frame ``data: `` events by a known separator and decode each: returns the count."""
    decode = chunk_decoder.decode
    buffer = b""
    count = 0
    for piece in pieces:
        buffer += piece
        if separator not in buffer:
            continue
        *events, buffer = buffer.split(separator)
        for event in events:
            payload = event[6:]
            if payload == _DONE:
                return count
            decode(payload)
            count += 1
    return count


async def read_floor_stream(pieces: AsyncIterable[bytes], separator: bytes = b"\n\n") -> int:
    """:func:`floor_stream` over a live response's pieces (the end-to-end floor): the same
    framing, the reads awaited, the chunks decoded and counted in one loop."""
    decode = chunk_decoder.decode
    buffer = b""
    count = 0
    async for piece in pieces:
        buffer += piece
        if separator not in buffer:
            continue
        *events, buffer = buffer.split(separator)
        for event in events:
            payload = event[6:]
            if payload == _DONE:
                return count
            decode(payload)
            count += 1
    return count


async def async_floor_stream(
    read: Callable[[], Awaitable[bytes]], separator: bytes = b"\n\n"
) -> AsyncIterator[FloorChunk]:
    """The same framer made async, as any async client must be: one awaited read per piece
    and one async-generator step per chunk. Nothing else is added, so what this costs over
    :func:`floor_stream` is the price of being an async iterator at all."""
    decode = chunk_decoder.decode
    buffer = b""
    while piece := await read():
        buffer += piece
        if separator not in buffer:
            continue
        *events, buffer = buffer.split(separator)
        for event in events:
            payload = event[6:]
            if payload == _DONE:
                return
            yield decode(payload)


def bytes_only(pieces: Iterable[bytes]) -> int:
    """The ceiling: touch every piece, decode nothing. Returns the bytes seen."""
    total = 0
    for piece in pieces:
        total += len(piece)
    return total
