"""Deterministic payloads: response bodies, event streams, and ways to cut them into pieces.

Everything is generated from fixed seeds, so every run and every competitor sees the same
bytes. Shapes follow what OpenAI-compatible servers send for ``/completions``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgspec

__all__ = [
    "BODY_SIZES",
    "CHUNKINGS",
    "Body",
    "EventStream",
    "body",
    "chunk_stream",
    "event_stream",
    "stream_payload",
]

_encoder: Final = msgspec.json.Encoder()

MODEL: Final = "gpt-3.5-turbo-instruct"
CREATED: Final = 1_700_000_000
FINGERPRINT: Final = "fp_44709d6fcb"

_WORDS: Final = [
    *("the", "of", "and", "to", "in", "is", "for", "on", "that", "with", "as", "by", "at"),
    *("from", "it", "an", "be", "this", "are", "or", "was", "gateway", "stream", "token"),
    *("decode", "latency", "python", "client", "server", "router", "model", "prompt"),
    *("cache", "retry", "fallback", "budget", "vector", "search", "answer", "question"),
    *("context", "window", "reason", "summary"),
]

BODY_SIZES: Final = ("small", "medium", "large")


@dataclass(frozen=True, slots=True)
class Body:
    name: str
    data: bytes
    description: str
    first_text: str


def _words(rng: random.Random, count: int) -> list[str]:
    return [" " + rng.choice(_WORDS) for _ in range(count)]


def _text_of_length(rng: random.Random, length: int) -> str:
    text = ""
    while len(text) < length:
        text += " " + rng.choice(_WORDS)
    return text[:length]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
            "audio_tokens": 0,
        },
    }


def _envelope(choices: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "cmpl-8xQ2bN4mW7kR9tY1uI3oP5aS6dF",
        "object": "text_completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": usage,
    }


def _logprobs(rng: random.Random, tokens: list[str]) -> dict[str, Any]:
    offsets: list[int] = []
    position = 0
    for token in tokens:
        offsets.append(position)
        position += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [-rng.random() * 4 for _ in tokens],
        "top_logprobs": [
            {" " + word: -rng.random() * 8 for word in rng.sample(_WORDS, 5)} for _ in tokens
        ],
        "text_offset": offsets,
    }


def body(name: str) -> Body:
    """One of the three reference bodies: ``small``, ``medium`` or ``large``."""
    rng = random.Random(f"body-{name}")
    if name == "small":
        text = _text_of_length(rng, 180)
        choices = [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}]
        usage = {"prompt_tokens": 12, "completion_tokens": 36, "total_tokens": 48}
        document = _envelope(choices, usage)
        description = "one choice, no logprobs"
    elif name == "medium":
        choices = [
            {
                "text": _text_of_length(rng, 2_300),
                "index": index,
                "logprobs": None,
                "finish_reason": "length",
            }
            for index in range(4)
        ]
        document = _envelope(choices, _usage(12, 2_048))
        description = "four choices, no logprobs"
    elif name == "large":
        tokens = _words(rng, 1_000)
        choices = [
            {
                "text": "".join(tokens),
                "index": 0,
                "logprobs": _logprobs(rng, tokens),
                "finish_reason": "length",
            }
        ]
        document = _envelope(choices, _usage(12, 1_000))
        description = "one choice, logprobs (top 5) for 1,000 tokens"
    else:
        raise ValueError(f"unknown body size {name!r}; choose from {BODY_SIZES}")
    return Body(name, _encoder.encode(document), description, str(choices[0]["text"]))


@dataclass(frozen=True, slots=True)
class EventStream:
    """A complete ``text/event-stream`` body and what it holds."""

    data: bytes
    chunks: int
    """Completion chunks in it (``data: [DONE]`` not counted)."""
    text: str
    """The concatenated text of choice 0."""
    newline: bytes


def _chunk(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {
        "id": "cmpl-8xQ2bN4mW7kR9tY1uI3oP5aS6dF",
        "object": "text_completion",
        "created": CREATED,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        "model": MODEL,
        "system_fingerprint": FINGERPRINT,
    }


def stream_payloads(chunks: int, *, always_finish_reason: bool = False) -> list[bytes]:
    """The JSON payloads of a stream: ``chunks - 1`` text chunks, then a usage-only chunk.

    OpenAI-style servers send ``"finish_reason": null`` until a choice ends. The Orq SDK
    rejects that, so ``always_finish_reason=True`` gives every chunk a finish reason, the
    only form it can decode.
    """
    if chunks < 2:
        raise ValueError("a stream needs at least 2 chunks")
    rng = random.Random("stream")
    tokens = _words(rng, chunks - 1)
    payloads: list[bytes] = []
    for position, token in enumerate(tokens):
        last = position == len(tokens) - 1
        reason = "length" if last or always_finish_reason else None
        payloads.append(_encoder.encode(_chunk(token, reason)))
    usage_chunk = _chunk("", None)
    usage_chunk["choices"] = []
    usage_chunk["usage"] = _usage(12, chunks - 1)
    payloads.append(_encoder.encode(usage_chunk))
    return payloads


def stream_payload(text: str) -> bytes:
    """One chunk payload carrying ``text`` (what the loopback server repeats)."""
    return _encoder.encode(_chunk(text, None))


def event_stream(
    chunks: int, *, newline: bytes = b"\n", always_finish_reason: bool = False
) -> EventStream:
    """A whole event stream of ``chunks`` chunks ended by ``data: [DONE]``."""
    payloads = stream_payloads(chunks, always_finish_reason=always_finish_reason)
    separator = newline + newline
    data = b"".join(b"data: " + payload + separator for payload in payloads)
    data += b"data: [DONE]" + separator
    rng = random.Random("stream")
    text = "".join(_words(rng, chunks - 1))
    return EventStream(data, chunks, text, newline)


def _cut_network(data: bytes, seed: str) -> Iterator[bytes]:
    # Reads of a busy socket: anything from a small segment to a full receive buffer.
    rng = random.Random(seed)
    position = 0
    while position < len(data):
        size = rng.randint(64, 8_192)
        yield data[position : position + size]
        position += size


def _cut_events(data: bytes, newline: bytes) -> Iterator[bytes]:
    separator = newline + newline
    for block in data.split(separator):
        if block:
            yield block + separator


def _cut_crlf(data: bytes) -> Iterator[bytes]:
    # Every piece ends in CR and the next starts with its LF: the hardest case for a framer
    # that must not read "CR" + "LF" as two line ends.
    start = 0
    while True:
        cut = data.find(b"\r\n", start)
        if cut < 0:
            break
        yield data[start : cut + 1]
        start = cut + 1
    if start < len(data):
        yield data[start:]


CHUNKINGS: Final = {
    "network": "random network-sized reads (64 B to 8 KiB, seeded)",
    "per-event": "one piece per event",
    "1-byte": "one byte per piece",
    "cr|lf": "CRLF line ends, every piece split between CR and LF",
}


def chunk_stream(stream: EventStream, chunking: str) -> list[bytes]:
    """The stream's bytes cut as ``chunking`` (a key of :data:`CHUNKINGS`) says."""
    data = stream.data
    if chunking == "network":
        return list(_cut_network(data, "network"))
    if chunking == "per-event":
        return list(_cut_events(data, stream.newline))
    if chunking == "1-byte":
        return [data[i : i + 1] for i in range(len(data))]
    if chunking == "cr|lf":
        if stream.newline != b"\r\n":
            raise ValueError("the cr|lf chunking needs a stream built with newline=b'\\r\\n'")
        return list(_cut_crlf(data))
    raise ValueError(f"unknown chunking {chunking!r}; choose from {sorted(CHUNKINGS)}")
