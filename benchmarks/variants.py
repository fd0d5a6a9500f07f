"""A prototype measured by the suite, not part of ``asyncclient``.

:func:`lazy_decode_completion`: lazy logprobs found by byte search. Measured and NOT adopted.
(The two timer prototypes that used to live here, one timer per client and one per stream,
were adopted: ``asyncclient._deadlines`` and ``CompletionStream``'s own deadline timer.)

The library ships lazy logprobs as the exact path only
(:func:`asyncclient._decode.decode_completion_lazy`, public as
``client.completions.create_lazy``): msgspec skips each choice's logprobs as ``msgspec.Raw``,
which still scans every byte of them. This prototype goes further: it finds the logprobs
object with byte searches (``memchr``/``memrchr``), never parsing its bytes, and keeps a
zero-copy view of it. It is many times faster on a large body, but it decides where the
object ends from the bytes *after* it, not by parsing it, and that is not exact:
``tests/test_benchmarks_smoke.py::test_the_byte_search_prototype_is_not_exact`` is a valid
body on which it loses the choice's ``finish_reason``. It stays here so the benchmark shows
the trade-off; it returns the library's own :class:`~asyncclient.LazyCompletion`, and takes
the library's exact path whenever its checks see anything unusual.
"""

from __future__ import annotations

from typing import Final

import msgspec

from asyncclient._decode import decode_completion_lazy
from asyncclient._models import LazyCompletion

__all__ = ["LAZY_MIN_BYTES", "lazy_decode_completion"]

_MARK: Final = msgspec.Raw(b"0")
# Below this size eager decoding costs a few microseconds: not worth a byte search.
LAZY_MIN_BYTES: Final = 16 * 1024


class _AnyObject(msgspec.Struct):
    """Decoding into this only checks JSON syntax (every field is unknown, so skipped)."""


_cut_decoder: Final = msgspec.json.Decoder(LazyCompletion, strict=False)
_syntax_check: Final = msgspec.json.Decoder(_AnyObject)

_KEY: Final = b'"logprobs":{'
# The context a choice's logprobs value sits in: $.choices[i].logprobs.
_CHOICE_CONTEXT: Final = b'{"choices":[{"logprobs":0'
_MAX_CANDIDATES: Final = 32
_ARRAYS_IN_LOGPROBS: Final = 4


def _span_end(body: bytes, start: int) -> int:
    """End (exclusive) of the logprobs object starting at ``start``, or -1 if unsure.

    The search runs backwards from the end of the body with ``rfind`` (memrchr: it never
    parses the logprobs bytes, which is the whole point). A candidate end is a ``}`` right
    after a ``]`` (a logprobs object ends with one of its arrays) such that the rest of the
    body is valid JSON in a choice's context.
    """
    end = len(body)
    for _ in range(_MAX_CANDIDATES):
        end = body.rfind(b"}", start, end)
        if end < 0:
            return -1
        if body[end - 1] != 0x5D:  # "]"
            continue
        try:
            _syntax_check.decode(_CHOICE_CONTEXT + body[end + 1 :])
        except msgspec.DecodeError:
            continue
        return end + 1
    return -1


def _single_logprobs_object(body: bytes, start: int, end: int) -> bool:
    # One logprobs object holds exactly four arrays (tokens, token_logprobs, top_logprobs,
    # text_offset; top_logprobs holds objects). More "[" means the span swallowed further
    # choices, or a token contains "[": either way take the exact path.
    position = start
    for _ in range(_ARRAYS_IN_LOGPROBS):
        position = body.find(b"[", position, end) + 1
        if position == 0:
            return True
    return body.find(b"[", position, end) < 0


def lazy_decode_completion(body: bytes) -> LazyCompletion:
    """Decode a body, leaving each choice's logprobs undecoded (prototype, not adopted).

    Fast path (one choice with logprobs, the common case): locate the logprobs object with
    byte searches, decode the body with it cut out, and keep a zero-copy view of it. Any
    doubt falls back to the library's exact path, ``decode_completion_lazy``.
    """
    start = body.find(_KEY) if len(body) >= LAZY_MIN_BYTES else -1
    if start >= 0:
        start += len(_KEY) - 1
        end = _span_end(body, start)
        if end > 0 and _single_logprobs_object(body, start, end):
            try:
                completion = _cut_decoder.decode(body[:start] + b"0" + body[end:])
            except (msgspec.DecodeError, msgspec.ValidationError):
                completion = None
            if completion is not None:
                marked = [c for c in completion.choices if c.raw_logprobs == _MARK]
                if len(marked) == 1:
                    marked[0].raw_logprobs = msgspec.Raw(memoryview(body)[start:end])
                    return completion
    return decode_completion_lazy(body)
