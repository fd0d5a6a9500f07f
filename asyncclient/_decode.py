"""Bytes in, Structs out: the decoders, built once at import, and the request encoder.

Nothing here turns a body into ``str`` or ``dict`` on the success path: response bytes (or an
SSE event's data slice) go straight into a pre-built ``msgspec.json.Decoder``. Only when that
fails do we look closer, to raise an error that says what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
import msgspec.inspect

from ._exceptions import DECODE_ERRORS, RequestValidationError, ResponseDecodeError, excerpt
from ._models import (
    Completion,
    CompletionChunk,
    CompletionRequest,
    ErrorDetail,
    LazyCompletion,
    _ErrorEnvelope,
    check_filter_by,
)

__all__ = [
    "DONE",
    "decode_chunk",
    "decode_chunks",
    "decode_completion",
    "decode_completion_lazy",
    "decode_error",
    "encode_request",
]

DONE: Final = b"[DONE]"

# strict=False accepts integral floats such as "prompt_tokens": 12.0 for int fields: the spec
# types token counts as JSON numbers, and some gateways emit them as floats.
_completion_decoder: Final = msgspec.json.Decoder(Completion, strict=False)
_lazy_completion_decoder: Final = msgspec.json.Decoder(LazyCompletion, strict=False)
_chunk_decoder: Final = msgspec.json.Decoder(CompletionChunk, strict=False)
_error_decoder: Final = msgspec.json.Decoder(_ErrorEnvelope, strict=False)
_request_validator: Final = msgspec.json.Decoder(CompletionRequest)
_encoder: Final = msgspec.json.Encoder()

_find_logprobs: Callable[[bytes], list[tuple[int, int, int]] | None] | None
try:
    from ._scan import logprobs_spans as _find_logprobs
except ImportError:  # built without a C compiler: msgspec checks the logprobs as it skips them
    _find_logprobs = None
# Below this, msgspec skipping the logprobs costs less than scanning for them; and cutting
# them out pays off only when they are most of the body (not, say, four nulls).
_SCAN_FROM_BYTES: Final = 16 * 1024
_CUT_FROM_SHARE: Final = 0.5


_MISSING_FIELD: Final = re.compile(r"Object missing required field `([^`]+)`")


def validation_error_path(exc: msgspec.ValidationError) -> str | None:
    """The JSON path of the offending value; for a missing field, the path of that field.

    msgspec names the enclosing object (and nothing at the root) when a field is missing;
    the caller wants ``$.orq.fallbacks[0].model``, not ``$.orq.fallbacks[0]``.
    """
    message = str(exc)
    _, sep, where = message.rpartition(" - at `")
    path = where.rstrip("`") if sep else None
    missing = _MISSING_FIELD.match(message)
    if missing:
        return f"{path or '$'}.{missing.group(1)}"
    return path


_PATH_PART: Final = re.compile(r"\.([^.\[]+)|\[\d+\]")


def _allowed_values(root: type, path: str) -> str | None:
    """What the spec allows at ``path`` (a numeric range or an enum), read from the Struct
    types' constraints, so messages can never drift from the rules themselves."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(root)
    for part in _PATH_PART.finditer(path.removeprefix("$")):
        candidates = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
        step: msgspec.inspect.Type | None = None
        for candidate in candidates:
            if part.group(1) is None and isinstance(candidate, msgspec.inspect.ListType):
                step = candidate.item_type
            elif part.group(1) is not None and isinstance(candidate, msgspec.inspect.StructType):
                step = next((f.type for f in candidate.fields if f.name == part.group(1)), None)
        if step is None:
            return None
        info = step
    candidates = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    for candidate in candidates:
        if isinstance(candidate, msgspec.inspect.LiteralType):
            return "allowed values: " + ", ".join(repr(v) for v in candidate.values)
        if isinstance(candidate, msgspec.inspect.IntType | msgspec.inspect.FloatType):
            low, high = candidate.ge, candidate.le
            if low is not None and high is not None:
                return f"allowed range: {low:g} to {high:g}"
            if low is not None:
                return f"allowed range: >= {low:g}"
            if high is not None:
                return f"allowed range: <= {high:g}"
    return None


def decode_completion(body: bytes) -> Completion:
    # The decoder is called here, not through a shared helper: this is the hot path of
    # every plain call, and a small body decodes in well under a microsecond.
    try:
        return _completion_decoder.decode(body)
    except DECODE_ERRORS as exc:
        raise _body_error(exc, body) from exc


def decode_completion_lazy(body: bytes) -> LazyCompletion:
    """Like :func:`decode_completion`, leaving each choice's logprobs as raw JSON.

    The compiled scan (``asyncclient._scan``) finds where the logprobs lie without parsing
    them, msgspec decodes the rest of the body as usual, and the logprobs' own JSON is
    checked when :meth:`~asyncclient.LazyCompletionChoice.logprobs` reads it. Without the
    extension (no C compiler at install), msgspec checks that JSON here while skipping it.
    """
    if _find_logprobs is not None and len(body) >= _SCAN_FROM_BYTES and type(body) is bytes:
        spans = _find_logprobs(body)
        if spans and sum(end - start for _, start, end in spans) >= _CUT_FROM_SHARE * len(body):
            completion = _decode_around(body, spans)
            if completion is not None:
                return completion
    try:
        return _lazy_completion_decoder.decode(body)
    except DECODE_ERRORS as exc:
        raise _body_error(exc, body) from exc


def _decode_around(body: bytes, spans: list[tuple[int, int, int]]) -> LazyCompletion | None:
    """Decode ``body`` with each span (a choice's logprobs value) replaced by ``null``, then
    give each choice its value as ``msgspec.Raw``; ``None`` if that does not decode (the
    whole body is decoded then, for an error with the body's own offsets)."""
    pieces: list[bytes] = []
    rest_start = 0
    for _, start, end in spans:
        pieces += (body[rest_start:start], b"null")
        rest_start = end
    pieces.append(body[rest_start:])
    try:
        completion = _lazy_completion_decoder.decode(b"".join(pieces))
    except DECODE_ERRORS:
        return None
    choices = completion.choices
    for position, start, end in spans:
        choices[position].raw_logprobs = msgspec.Raw(body[start:end])
    return completion


def _body_error(exc: Exception, body: bytes) -> ResponseDecodeError:
    if isinstance(exc, msgspec.ValidationError):
        return ResponseDecodeError(
            f"Response body does not match the completion schema: {exc}. Body: {excerpt(body)}",
            body=body,
            path=validation_error_path(exc),
        )
    if isinstance(exc, RecursionError):
        return ResponseDecodeError(
            f"Response body is nested too deeply to decode ({exc}). Body: {excerpt(body)}",
            body=body,
        )
    # msgspec reports invalid UTF-8 inside a string as a bare UnicodeDecodeError.
    return ResponseDecodeError(
        f"Response body is not valid JSON ({exc}). Body: {excerpt(body)}", body=body
    )


# Decode one event's data; raises msgspec errors, which the stream maps with context. The
# decoder's bound method itself, not a wrapper around it: it runs once per stream event.
decode_chunk: Final = _chunk_decoder.decode


def decode_chunks(datas: list[bytes]) -> list[CompletionChunk]:
    """Decode several events' data, one chunk each, with no Python frame per event.

    Each payload on its own (so none can borrow bytes from its neighbours), by ``map``:
    faster than joining them into one JSON array and decoding that (measured: 400 against
    440 ns per event). Raises msgspec errors on the first bad one: the caller then decodes
    one by one to find out which event was bad.
    """
    return list(map(decode_chunk, datas))


def decode_error(body: bytes) -> ErrorDetail | None:
    """The error detail in a JSON error body (either form), or ``None`` if there is none."""
    try:
        return _error_decoder.decode(body).detail()
    except DECODE_ERRORS:
        return None


def encode_request(params: Mapping[str, Any], extra_body: Mapping[str, Any] | None = None) -> bytes:
    """Encode the request body, after checking it against every constraint of the spec.

    The check decodes the encoded bytes with a validating decoder: one fast pass that covers
    nested objects whether the caller passed Structs or plain dicts.
    """
    for value in params.values():
        if value is msgspec.UNSET:
            # UNSET is dropped by Structs but not by dicts: a keyword passed as UNSET means
            # "unset". (A loop, not `in`: that would call __eq__ on the caller's values.)
            params = {key: value for key, value in params.items() if value is not msgspec.UNSET}
            break
    try:
        body = _encoder.encode(params)
    except (TypeError, msgspec.EncodeError) as exc:
        raise RequestValidationError(f"Request body cannot be encoded as JSON: {exc}") from exc
    try:
        request = _request_validator.decode(body)
    except msgspec.ValidationError as exc:
        field = validation_error_path(exc)
        allowed = _allowed_values(CompletionRequest, field) if field else None
        message = f"Invalid request: {exc}" + (f" ({allowed})" if allowed else "")
        raise RequestValidationError(message, field=field) from exc
    _check_knowledge_bases(request)
    if extra_body:
        merged = msgspec.json.decode(body)
        merged.update(extra_body)
        try:
            body = _encoder.encode(merged)
        except (TypeError, msgspec.EncodeError) as exc:
            raise RequestValidationError(f"extra_body cannot be encoded as JSON: {exc}") from exc
    return body


def _check_knowledge_bases(request: CompletionRequest) -> None:
    if isinstance(request.orq, msgspec.UnsetType) or isinstance(
        request.orq.knowledge_bases, msgspec.UnsetType
    ):
        return
    for position, knowledge_base in enumerate(request.orq.knowledge_bases):
        if isinstance(knowledge_base.filter_by, msgspec.UnsetType):
            continue
        path = f"$.orq.knowledge_bases[{position}].filter_by"
        problem = check_filter_by(knowledge_base.filter_by, path)
        if problem:
            raise RequestValidationError(f"Invalid request: {problem}", field=path)
