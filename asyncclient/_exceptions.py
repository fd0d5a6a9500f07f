"""The exception tree. Every error the public API raises is an :class:`AsyncClientError`.

::

    AsyncClientError
    ├── RequestValidationError      the request was refused before sending (also a ValueError)
    ├── ClientClosedError           the client was used after aclose() (also a RuntimeError)
    ├── WrongEventLoopError         ... or from another event loop (both in _transport)
    ├── APIConnectionError          no usable response: DNS, refused, reset, TLS (wraps aiohttp)
    │   └── APITimeoutError         a timeout elapsed; ``phase`` names it
    │       ├── ConnectTimeoutError     getting a connection (pool wait, DNS, TCP, TLS)
    │       ├── HeadersTimeoutError     waiting for the response headers
    │       ├── ReadTimeoutError        silence while reading a plain (JSON) body
    │       ├── TotalTimeoutError       the whole call's deadline
    │       └── StreamTimeoutError      mid-stream (also an IncompleteStreamError):
    │                                   phase "first_event", "idle" or "total"
    ├── APIStatusError              the server answered 3xx/4xx/5xx (redirects are not
    │                               followed): status_code, headers, body ...
    │   ├── BadRequestError             400
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── ConflictError               409
    │   ├── UnprocessableEntityError    422
    │   ├── RateLimitError              429
    │   └── InternalServerError         5xx
    ├── ResponseDecodeError         a 2xx body that is not what the spec says (bad JSON,
    │   │                           missing field, HTML page, wrong Content-Type)
    │   ├── ResponseTooLargeError   the body is larger than ``max_body_size``
    │   └── StreamDecodeError       ... inside an event stream (also a StreamError)
    └── StreamError                 a stream failed after it started; carries ``partial``
        ├── StreamDecodeError
        ├── IncompleteStreamError   the stream ended or broke before ``data: [DONE]``
        │   │                       (also an APIConnectionError)
        │   └── StreamTimeoutError  no content event in time (keep-alive comments do not count)
        └── ServerStreamError       the server sent an error event mid-stream

Foreign exceptions (aiohttp, msgspec) never escape: the transport and decoders translate them
and chain the original as ``__cause__``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ._retry import parse_retry_after

if TYPE_CHECKING:
    from ._models import Completion, ErrorDetail

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClientError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ConnectTimeoutError",
    "HeadersTimeoutError",
    "IncompleteStreamError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ReadTimeoutError",
    "RequestValidationError",
    "ResponseDecodeError",
    "ResponseTooLargeError",
    "ServerStreamError",
    "StreamDecodeError",
    "StreamError",
    "StreamTimeoutError",
    "TotalTimeoutError",
    "UnprocessableEntityError",
    "retry_classification",
    "status_error_class",
]

# What decoding untrusted bytes can raise: msgspec's own errors, a bare UnicodeDecodeError for
# invalid UTF-8 inside a string, and RecursionError for JSON nested deeper than msgspec goes.
# Decoders catch exactly these and raise ResponseDecodeError or StreamDecodeError instead.
DECODE_ERRORS: Final = (
    msgspec.ValidationError,
    msgspec.DecodeError,
    UnicodeDecodeError,
    RecursionError,
)

_EXCERPT_BYTES = 200


def excerpt(body: bytes, limit: int = _EXCERPT_BYTES) -> str:
    """A short, printable view of a body for error messages."""
    text = body[:limit].decode("utf-8", errors="replace")
    if len(body) > limit:
        text += f"... ({len(body)} bytes)"
    return text


class AsyncClientError(Exception):
    """Root of every error raised by asyncclient.

    Errors pickle (for multiprocessing, Ray and the like); response headers travel as a plain
    dict, so after unpickling their lookup is case-sensitive.
    """

    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword-only arguments, which Exception's default pickling cannot
        # pass back; and aiohttp's header proxies do not pickle.
        state = dict(self.__dict__)
        headers = state.get("headers")
        if headers is not None and not isinstance(headers, dict):
            state["headers"] = dict(headers)
        return (_restore_error, (type(self), self.args, state))


def _restore_error(
    cls: type[AsyncClientError], args: tuple[Any, ...], state: dict[str, Any]
) -> AsyncClientError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class RequestValidationError(AsyncClientError, ValueError):
    """The request breaks a rule of the spec; nothing was sent.

    ``field`` is the JSON path of the offending field (``$.orq.cache.ttl``), when known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class APIConnectionError(AsyncClientError):
    """The request did not produce a usable response (connection refused, reset, DNS, TLS)."""

    def __init__(self, message: str = "Connection error.", *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class APITimeoutError(APIConnectionError):
    """A timeout elapsed. ``phase`` says which one: connect, headers, read or total."""

    def __init__(
        self, message: str = "Request timed out.", *, url: str | None = None, phase: str = "total"
    ) -> None:
        super().__init__(message, url=url)
        self.phase = phase


class ConnectTimeoutError(APITimeoutError):
    """No connection within ``Timeout.connect`` (pool wait, DNS, TCP and TLS)."""


class HeadersTimeoutError(APITimeoutError):
    """The response headers did not arrive within ``Timeout.headers``."""


class ReadTimeoutError(APITimeoutError):
    """A plain body was not read within ``Timeout.idle`` after its headers."""


class TotalTimeoutError(APITimeoutError):
    """The call did not finish within ``Timeout.total``."""


class APIStatusError(AsyncClientError):
    """The server answered with a status of 300 or more (redirects are not followed).

    Attributes: ``status_code``, ``headers`` (case-insensitive mapping), ``request_id``
    (from ``x-request-id`` and kin), ``error`` (the decoded error body, or ``None`` when the
    body is not a JSON error) and ``body`` (the raw body bytes, as received).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        headers: Mapping[str, str],
        body: bytes,
        error: ErrorDetail | None,
        request_id: str | None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers
        self.body = body
        self.error = error
        self.request_id = request_id

    @property
    def body_text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait (``retry-after-ms`` or ``Retry-After``), if any."""
        return parse_retry_after(self.headers, now=time.time())


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403."""


class NotFoundError(APIStatusError):
    """404: wrong base URL or path, or an unknown model."""


class ConflictError(APIStatusError):
    """409."""


class UnprocessableEntityError(APIStatusError):
    """422: the server rejected the request body."""


class RateLimitError(APIStatusError):
    """429: slow down; ``headers`` holds ``Retry-After`` when the server sent one."""


class InternalServerError(APIStatusError):
    """Any 5xx."""


_STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def retry_classification(
    error: BaseException,
) -> tuple[int | None, Mapping[str, str] | None] | None:
    """What a retry policy may retry: status errors by their status and headers (the policy
    decides which statuses), connection errors and timeouts as ``(None, None)``; never
    invalid requests, undecodable responses or errors inside a stream handed to the caller."""
    if isinstance(error, APIStatusError):
        return error.status_code, error.headers
    if isinstance(error, APIConnectionError):
        return None, None
    return None


def status_error_class(status_code: int) -> type[APIStatusError]:
    if status_code >= 500:
        return InternalServerError
    return _STATUS_ERRORS.get(status_code, APIStatusError)


class ResponseDecodeError(AsyncClientError):
    """A successful response whose body is not what the spec describes.

    ``body`` holds the offending bytes (the whole body, or one event's data) and ``path`` the
    JSON path msgspec reported (``$.choices[0].index``), when there is one.
    """

    def __init__(self, message: str, *, body: bytes = b"", path: str | None = None) -> None:
        super().__init__(message)
        self.body = body
        self.path = path


class ResponseTooLargeError(ResponseDecodeError):
    """The body is larger than the client's ``max_body_size``; it was not read further."""


class StreamError(AsyncClientError):
    """A stream failed after it started.

    ``partial`` is a :class:`~asyncclient.Completion` built from every chunk received before
    the failure (``None`` if none arrived), so nothing already generated is lost.
    """

    partial: Completion | None = None

    @property
    def partial_text(self) -> str:
        """Text of choice 0 received before the failure."""
        return self.partial.text if self.partial is not None else ""


class StreamDecodeError(ResponseDecodeError, StreamError):
    """One event's data could not be decoded into a chunk."""


class IncompleteStreamError(StreamError, APIConnectionError):
    """The connection ended, broke or timed out before ``data: [DONE]``."""


class StreamTimeoutError(IncompleteStreamError, APITimeoutError):
    """No content event arrived in time; ``phase`` says which limit was hit.

    ``first_event``: nothing after the headers within ``Timeout.first_event``; ``idle``: no
    content event for ``Timeout.idle`` (SSE comments and keep-alives do not reset it);
    ``total``: the call's deadline passed. ``partial`` holds what arrived before.
    """

    def __init__(self, message: str, *, phase: str, url: str | None = None) -> None:
        AsyncClientError.__init__(self, message)
        self.phase = phase
        self.url = url


class ServerStreamError(StreamError):
    """The server sent an error in the stream (``event: error`` or ``data: {"error": ...}``).

    ``error`` is the decoded error body.
    """

    def __init__(self, message: str, *, error: ErrorDetail | None) -> None:
        super().__init__(message)
        self.error = error
