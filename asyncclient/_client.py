"""``AsyncClient`` and its ``completions`` resource."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import (
    Any,
    Final,
    Literal,
    NamedTuple,
    Required,
    Self,
    TypedDict,
    Unpack,
    cast,
    overload,
)

import msgspec

from ._accumulate import chunk_from_completion
from ._batch import DEFAULT_CONCURRENCY, DEFAULT_MAX_RETRIES, BatchJob, BatchSource
from ._deadlines import Deadlines, loop_clock
from ._decode import decode_completion, decode_completion_lazy, decode_error, encode_request
from ._exceptions import (
    APIStatusError,
    APITimeoutError,
    HeadersTimeoutError,
    IncompleteStreamError,
    ReadTimeoutError,
    RequestValidationError,
    ResponseDecodeError,
    excerpt,
    retry_classification,
    status_error_class,
)
from ._models import (
    Completion,
    CompletionRequest,
    LazyCompletion,
    OrqExtensions,
    Prompt,
    ResponseInfo,
    StreamOptions,
    to_builtins,
)
from ._retry import NO_RETRIES, AttemptLog, RetryPolicy, run_with_retries
from ._streaming import CompletionStream, StreamRestart, request_id_from
from ._transport import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    HTTPSession,
    Response,
    Timeout,
    Transport,
    deadline,
    logger,
)
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_PATH",
    "NOT_GIVEN",
    "AsyncClient",
    "CompletionParams",
    "CompletionWithInfo",
    "Completions",
    "CreateArgs",
    "RequestOptions",
    "NotGiven",
]

DEFAULT_BASE_URL: Final = "https://my.orq.ai"
DEFAULT_PATH: Final = "/v2/proxy/completions"
API_KEY_ENV: Final = "ORQ_API_KEY"
BASE_URL_ENV: Final = "ORQ_BASE_URL"
DEFAULT_MAX_EVENT_SIZE: Final = 64 * 1024 * 1024
DEFAULT_MAX_BODY_SIZE: Final = 256 * 1024 * 1024
DEFAULT_RETRY_POLICY: Final = RetryPolicy()


class NotGiven:
    """Sentinel for "use the client's default" (distinct from ``None``, which means "none")."""

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


class CompletionParams(TypedDict, total=False):
    """The request fields ``create`` and ``stream`` take as keyword arguments.

    Each maps to the JSON field of the same name (spec section 2); see
    :class:`~asyncclient.CompletionRequest` for types and ranges.
    """

    model: Required[str]
    prompt: Required[Prompt]
    echo: bool | None
    frequency_penalty: float | None
    max_tokens: int | float | None
    presence_penalty: float | None
    seed: int | float | None
    stop: str | list[str] | None
    temperature: float | None
    top_p: float | None
    user: str
    orq: OrqExtensions | Mapping[str, Any]
    n: int | None
    best_of: int | None
    logprobs: int | None
    suffix: str | None
    logit_bias: Mapping[str, float] | None
    stream_options: StreamOptions | Mapping[str, Any] | None


class RequestOptions(TypedDict, total=False):
    """Per-call options, accepted by every method besides the request fields.

    Leaving one out means "the client's default"; ``timeout=None`` means no timeout and
    ``retry=None`` no retries. ``extra_headers`` and ``extra_body`` are merged last into the
    headers and the JSON body; ``idempotency_key`` is sent as ``Idempotency-Key``.
    """

    timeout: Timeout | float | None | NotGiven
    retry: RetryPolicy | None | NotGiven
    path: str | None
    extra_headers: Mapping[str, str] | None
    extra_body: Mapping[str, Any] | None
    idempotency_key: str | None


class CreateArgs(CompletionParams, RequestOptions, total=False):
    """The keyword arguments of ``create``: request fields plus per-call options."""


_OPTION_NAMES: Final = frozenset(RequestOptions.__annotations__)
_NO_HEADERS: Final[Mapping[str, str]] = {}
_SSE_ACCEPT: Final[Mapping[str, str]] = {"Accept": "text/event-stream"}


def _authorization(api_key: str) -> str:
    # A key that already carries the scheme is sent unchanged, as the Orq SDK does.
    return api_key if api_key[:7].lower() == "bearer " else f"Bearer {api_key}"


class AsyncClient:
    """An async client for ``POST /v2/proxy/completions`` and OpenAI-compatible ``/completions``.

    One instance is meant to be shared by every task of a service: it holds one aiohttp
    session (created on first use inside the running loop) with a pool of
    ``max_connections``. Close it with ``await client.aclose()`` or ``async with``. A session
    passed as ``session=`` is borrowed and never closed by the client.

    ``retry`` is the client-side retry policy (``None`` turns retries off); every call may
    override it. Statuses 408, 409, 429 and 5xx and connection failures are retried with
    exponential backoff and full jitter, honouring ``Retry-After``; a stream is never retried
    once it has been handed to the caller. ``idempotency_keys=True`` sends one
    ``Idempotency-Key`` per logical request, the same on every attempt.
    ``max_event_size`` and ``max_body_size`` bound what one event and one plain body may
    hold (``ResponseTooLargeError`` / ``StreamDecodeError`` past them).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        path: str = DEFAULT_PATH,
        timeout: Timeout | float | None = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        retry: RetryPolicy | None = DEFAULT_RETRY_POLICY,
        max_event_size: int | None = DEFAULT_MAX_EVENT_SIZE,
        max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
        idempotency_keys: bool = False,
        default_headers: Mapping[str, str] | None = None,
        session: HTTPSession | None = None,
        verify_tls: bool = True,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get(API_KEY_ENV)
        if base_url is None:
            base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self.base_url = base_url.rstrip("/")
        self.path = "/" + path.lstrip("/")
        self.timeout = Timeout.coerce(timeout)
        self.retry = retry if retry is not None else NO_RETRIES
        self.max_event_size = max_event_size
        self.max_body_size = max_body_size
        self.idempotency_keys = idempotency_keys
        self._api_key = api_key
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"asyncclient/{__version__} Python/{platform.python_version()}",
        }
        if api_key:
            headers["Authorization"] = _authorization(api_key)
        if default_headers:
            headers.update(default_headers)
        self._transport = Transport(
            session=session,
            max_connections=max_connections,
            verify_tls=verify_tls,
            headers={**headers, "Accept": "application/json"},
        )
        self._deadlines = Deadlines()
        self._default_options: _CallOptions | None = None
        self.completions = Completions(self)

    def __repr__(self) -> str:
        # Never show the key itself.
        key = "set" if self._api_key else "unset"
        return f"AsyncClient(base_url={self.base_url!r}, path={self.path!r}, api_key=<{key}>)"

    @property
    def closed(self) -> bool:
        return self._transport.closed

    async def aclose(self) -> None:
        """Close the connection pool (a borrowed session is left open). Idempotent."""
        self._deadlines.close()
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the request cycle, shared by every resource -----------------------------------------

    def _options(self, options: RequestOptions) -> _CallOptions:
        if not options:
            # The common call passes no option: the client's defaults, built once (rebuilt
            # if the client's attributes were changed since).
            defaults = self._default_options
            if (
                defaults is None
                or defaults.timeout is not self.timeout
                or defaults.retry is not self.retry
                or defaults.url != self.base_url + self.path
            ):
                defaults = self._default_options = self._build_options(options)
            return defaults
        return self._build_options(options)

    def _build_options(self, options: RequestOptions) -> _CallOptions:
        timeout = options.get("timeout", NOT_GIVEN)
        retry = options.get("retry", NOT_GIVEN)
        path = options.get("path")
        if isinstance(retry, NotGiven):
            policy = self.retry
        else:
            policy = retry if retry is not None else NO_RETRIES
        return _CallOptions(
            timeout=self.timeout if isinstance(timeout, NotGiven) else Timeout.coerce(timeout),
            retry=policy,
            url=self.base_url + ("/" + path.lstrip("/") if path is not None else self.path),
            extra_headers=options.get("extra_headers"),
            idempotency_key=options.get("idempotency_key"),
        )

    def _prepare(self, arguments: Mapping[str, Any], stream: bool) -> tuple[bytes, _CallOptions]:
        """Split ``create``'s keyword arguments into the encoded body and the call options."""
        params = dict(arguments)
        options: dict[str, Any] = {}
        if not _OPTION_NAMES.isdisjoint(params):
            for name in _OPTION_NAMES:
                if name in params:
                    options[name] = params.pop(name)
        if stream:
            params["stream"] = True
        for name, value in params.items():
            # JSON has no NaN or infinity: msgspec would send null, silently meaning "default".
            if type(value) is float and not math.isfinite(value):
                raise RequestValidationError(
                    f"Invalid request: `{name}` must be a finite number, got {value}",
                    field=f"$.{name}",
                )
        body = encode_request(params, options.get("extra_body"))
        return body, self._options(cast(RequestOptions, options))

    def _headers(self, stream: bool, options: _CallOptions) -> Mapping[str, str]:
        """This call's headers on top of the transport's (which carry the key and JSON's
        ``Accept``)."""
        headers = _SSE_ACCEPT if stream else _NO_HEADERS
        key = options.idempotency_key
        if key is None and self.idempotency_keys:
            key = f"asyncclient-{uuid.uuid4().hex}"
        if key is not None or options.extra_headers:
            headers = {**headers}
            if key is not None:
                headers["Idempotency-Key"] = key
            if options.extra_headers:
                headers.update(options.extra_headers)
        return headers

    async def _request(
        self,
        body: bytes,
        *,
        stream: bool,
        options: _CallOptions,
        on_restart: Callable[[StreamRestart], object] | None = None,
        max_restarts: int = 0,
        accumulate: bool = True,
        lazy_logprobs: bool = False,
        with_info: bool = True,
    ) -> tuple[Completion | LazyCompletion | CompletionStream, ResponseInfo | None]:
        """One logical request: attempts with retries, then a completion or a stream.

        A plain response is read and decoded inside the attempt, so a body that breaks off
        is retried like a failed connection. A stream is retried only until its headers
        arrive: after that it belongs to the caller, and re-sending could duplicate text.
        """
        url = options.url
        timeout = options.timeout
        headers = self._headers(stream, options)
        transport = self._transport
        deadlines = self._deadlines
        loop_time = loop_clock(asyncio.get_running_loop())
        started = loop_time()
        responses: list[Response] = []

        decode_body: Callable[[bytes], Completion | LazyCompletion] = (
            decode_completion_lazy if lazy_logprobs else decode_completion
        )

        async def attempt(number: int) -> Completion | LazyCompletion | Response:
            # One deadline per attempt, on the client's shared timer: first the wait for
            # headers, then (moved) the body.
            waiting_for = "headers"
            limit = timeout.headers
            deadline = deadlines.start(loop_time() + limit) if limit is not None else None
            try:
                response = await transport.send(
                    url, body=body, headers=headers, connect_timeout=timeout.connect
                )
                if response.status >= 300:
                    raise await _status_error(response)
                responses.append(response)
                is_stream = response.content_type == "text/event-stream"
                if not is_stream:
                    waiting_for = "body"
                    idle = timeout.idle
                    if idle is None:
                        if deadline is not None:
                            deadlines.finish(deadline)
                            deadline = None
                    elif deadline is None:
                        deadline = deadlines.start(loop_time() + idle)
                    else:
                        deadlines.move(deadline, loop_time() + idle)
                    raw = await response.read(limit=self.max_body_size)
            except asyncio.CancelledError:
                if deadline is not None and deadlines.expired(deadline):
                    raise _timeout_error(waiting_for, url, timeout) from None
                raise
            finally:
                if deadline is not None:
                    deadlines.finish(deadline)
            if not is_stream:
                return _decode_body(response.content_type, raw, decode_body)
            if stream:
                return response
            # Asked for a plain body, got an event stream: read it whole, here, so that a
            # failure mid-way is retried like any other broken body.
            events = CompletionStream(response, max_event_size=self.max_event_size, timeout=timeout)
            async with events:
                completion = await events.final_completion()
            if lazy_logprobs:
                return decode_completion_lazy(_encoder.encode(completion))
            return completion

        log: AttemptLog | None = None
        if timeout.total is None:
            first_failure: Exception | None = None
            try:
                # The first attempt outside the retry loop: most calls need no other.
                outcome = await attempt(1)
            except Exception as error:
                first_failure = error
            if first_failure is not None:
                # Out of the except block, so later attempts' errors are not chained to the
                # first one (nor keep it alive through the backoff waits).
                log = AttemptLog()
                retrying = run_with_retries(
                    options.retry,
                    attempt,
                    retry_classification,
                    log=log,
                    first_failure=first_failure,
                    clock=loop_time,
                    started=started,
                )
                del first_failure
                outcome = await retrying
        else:
            log = AttemptLog()
            async with deadline(timeout.total, url):
                outcome = await run_with_retries(
                    options.retry, attempt, retry_classification, log=log
                )
        if not with_info and not isinstance(outcome, Response) and not stream:
            return outcome, None  # a plain create(): nobody will read the info
        last = responses[-1]
        info = ResponseInfo(
            status_code=last.status,
            headers=last.headers,
            request_id=request_id_from(last.headers),
            attempts=log.attempts if log is not None else 1,
            retry_waits=log.waits if log is not None else (),
            elapsed=loop_time() - started,
        )
        if isinstance(outcome, Response):

            async def reconnect() -> Response:
                again = await run_with_retries(options.retry, attempt, retry_classification)
                if not isinstance(again, Response):
                    raise IncompleteStreamError(
                        "The server answered a restarted stream with a plain body."
                    )
                return again

            total_deadline = started + timeout.total if timeout.total is not None else None
            return (
                CompletionStream(
                    outcome,
                    max_event_size=self.max_event_size,
                    timeout=timeout,
                    total_deadline=total_deadline,
                    info=info,
                    reconnect=reconnect if on_restart is not None else None,
                    on_restart=on_restart,
                    max_restarts=max_restarts,
                    accumulate=accumulate,
                ),
                info,
            )
        if stream and isinstance(outcome, Completion):
            # A JSON answer to a stream request: a stream of one chunk.
            return CompletionStream(None, chunks=[chunk_from_completion(outcome)], info=info), info
        return outcome, info

    def batch(
        self,
        requests: BatchSource,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = True,
        buffer: int | None = None,
        fail_fast: bool = False,
        max_retries: int = DEFAULT_MAX_RETRIES,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
        **options: Unpack[RequestOptions],
    ) -> BatchJob:
        """Run many requests through a fixed pool of ``concurrency`` workers.

        ``requests`` is any iterable or async iterable of :class:`CompletionRequest`, mappings
        of request fields (with an optional ``"id"``) or :class:`BatchItem`; it is read lazily,
        so it may be far larger than memory. Use the job as
        ``async with client.batch(...) as results: async for result in results:``; each
        :class:`BatchResult` holds the response or the typed error, usage, latency, attempts
        and the input's id. A streamed request (``stream: True``) is accumulated into its
        final response. Retries follow ``max_retries`` (the client's own ``retry`` policy is
        not applied on top). See :class:`BatchJob` for ordering, limits and cancellation.

        With ``idempotency_keys=True`` on the client, each item gets its own
        ``Idempotency-Key``, the same on each of its retries; a single ``idempotency_key`` for
        the whole batch is refused, as every item would share it.

        Each worker holds one pooled connection while its request runs. With ``concurrency``
        above the client's ``max_connections``, the extra workers wait for a free connection,
        and that wait counts against ``Timeout.connect``: long generations then end in
        spurious ``ConnectTimeoutError`` failures. Size the pool for the batch
        (``AsyncClient(max_connections=concurrency)``); a warning is logged otherwise.
        """
        if options.get("idempotency_key") is not None:
            raise TypeError(
                "client.batch() does not take an idempotency_key: every item would send the "
                "same one. Use AsyncClient(idempotency_keys=True) for one key per item, "
                "reused on each of its retries."
            )
        transport = self._transport
        if transport._owns_session and concurrency > transport._max_connections:
            logger.warning(
                "client.batch(concurrency=%d) exceeds the client's pool of %d connections: "
                "the extra workers wait for a connection, and the wait counts against the "
                "connect timeout. Use AsyncClient(max_connections=%d).",
                concurrency,
                transport._max_connections,
                concurrency,
            )
        completions = self.completions
        # The runner retries (and paces every worker on a 429) itself: one attempt per call.
        call_options: RequestOptions = {**options, "retry": None}

        async def call(
            request: CompletionRequest, *, idempotency_key: str | None = None
        ) -> CompletionWithInfo:
            attempt_options: RequestOptions = {**call_options, "idempotency_key": idempotency_key}
            return await completions.create_from_request_with_info(request, **attempt_options)

        return BatchJob(
            requests,
            call,
            concurrency=concurrency,
            ordered=ordered,
            buffer=buffer,
            fail_fast=fail_fast,
            max_retries=max_retries,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            adaptive=adaptive,
            idempotency_keys=self.idempotency_keys,
        )


def _timeout_error(waiting_for: str, url: str, timeout: Timeout) -> APITimeoutError:
    if waiting_for == "headers":
        return HeadersTimeoutError(
            f"No response headers from {url} within {timeout.headers} s.",
            url=url,
            phase="headers",
        )
    return ReadTimeoutError(
        f"The body of {url} did not arrive within {timeout.idle} s.", url=url, phase="idle"
    )


async def _status_error(response: Response) -> APIStatusError:
    # An error page can be anything (a proxy's HTML, a huge dump): keep the first MiB.
    body = await response.read(limit=_ERROR_BODY_LIMIT, truncate=True)
    detail = decode_error(body)
    summary = detail.message if detail is not None and detail.message else excerpt(body)
    request_id = request_id_from(response.headers)
    message = f"Error code: {response.status} {response.reason} - {summary}"
    if request_id:
        message += f" (request id {request_id})"
    return status_error_class(response.status)(
        message,
        status_code=response.status,
        headers=response.headers,
        body=body,
        error=detail,
        request_id=request_id,
    )


_JSON_TYPES: Final = frozenset({"application/json", "text/json"})
_ERROR_BODY_LIMIT: Final = 1024 * 1024
_encoder: Final = msgspec.json.Encoder()


def _decode_body(
    content_type: str, body: bytes, decode: Callable[[bytes], Completion | LazyCompletion]
) -> Completion | LazyCompletion:
    if content_type in _JSON_TYPES or content_type.endswith("+json"):
        return decode(body)
    # Some servers label JSON as text/plain or send no type at all: accept a body that
    # decodes, and name the content type when it does not.
    try:
        return decode(body)
    except ResponseDecodeError as exc:
        raise ResponseDecodeError(
            f"Expected an application/json or text/event-stream response, got "
            f"{content_type or 'no Content-Type'!r}. Body: {excerpt(body)}",
            body=body,
            path=exc.path,
        ) from exc


class _CallOptions(NamedTuple):
    timeout: Timeout
    retry: RetryPolicy
    url: str
    extra_headers: Mapping[str, str] | None
    idempotency_key: str | None


class CompletionWithInfo(NamedTuple):
    """A completion and how it was obtained (status, headers, request id, attempts)."""

    completion: Completion
    info: ResponseInfo


class Completions:
    """``client.completions``: the legacy text-completions endpoint.

    Every method takes the request fields of :class:`CompletionParams` as keyword arguments,
    plus the per-call options: ``timeout`` (``None``: no timeout), ``retry`` (``None``: no
    retries), ``path``, ``extra_headers``, ``extra_body`` (merged last into the JSON body) and
    ``idempotency_key``. Leaving an option out means "the client's default".
    """

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self, *, stream: Literal[False] = False, **arguments: Unpack[CreateArgs]
    ) -> Completion: ...

    @overload
    async def create(
        self, *, stream: Literal[True], **arguments: Unpack[CreateArgs]
    ) -> CompletionStream: ...

    @overload
    async def create(
        self, *, stream: bool, **arguments: Unpack[CreateArgs]
    ) -> Completion | CompletionStream: ...

    async def create(
        self, *, stream: bool = False, **arguments: Unpack[CreateArgs]
    ) -> Completion | CompletionStream:
        """Create a completion.

        Returns the response body, or with ``stream=True`` a :class:`CompletionStream`
        (use it with ``async with``). Raises :class:`RequestValidationError` before sending
        anything when a field breaks the spec, and the documented
        :class:`AsyncClientError` subclasses otherwise.
        """
        client = self._client
        body, options = client._prepare(arguments, stream)
        result, _ = await client._request(body, stream=stream, options=options, with_info=False)
        assert not isinstance(result, LazyCompletion)
        return result

    async def create_with_info(self, **arguments: Unpack[CreateArgs]) -> CompletionWithInfo:
        """Like :meth:`create` (not streamed), also returning the :class:`ResponseInfo`:
        status, headers, request id, attempts and retry waits."""
        client = self._client
        body, options = client._prepare(arguments, False)
        result, info = await client._request(body, stream=False, options=options)
        assert isinstance(result, Completion)
        assert info is not None
        return CompletionWithInfo(result, info)

    async def create_lazy(self, **arguments: Unpack[CreateArgs]) -> LazyCompletion:
        """Like :meth:`create` (not streamed), but each choice's logprobs stay raw JSON
        until ``choice.logprobs()`` is called: for large ``logprobs`` bodies whose log
        probabilities are often not read."""
        client = self._client
        body, options = client._prepare(arguments, False)
        result, _ = await client._request(
            body, stream=False, options=options, lazy_logprobs=True, with_info=False
        )
        assert isinstance(result, LazyCompletion)
        return result

    def stream(
        self,
        *,
        on_restart: Callable[[StreamRestart], object] | None = None,
        max_restarts: int = 2,
        accumulate: bool = True,
        **arguments: Unpack[CreateArgs],
    ) -> StreamContext:
        """``async with client.completions.stream(...) as stream:`` sends the request on
        entry and always releases the connection on exit.

        By default a stream that breaks after output has reached the caller is not re-sent
        (that would duplicate text). Passing ``on_restart`` opts in: the request is re-sent
        up to ``max_restarts`` times, the output received so far is discarded, and
        ``on_restart`` is called with a :class:`StreamRestart` before the new output
        arrives; ``stream.restarts`` counts them.

        ``accumulate=False`` keeps memory flat for very long streams: the chunks are only
        yielded, so ``completion_so_far``, ``final_completion()`` and the partial output of
        errors are not available.
        """
        client = self._client
        body, options = client._prepare(arguments, True)
        return StreamContext(
            client,
            body,
            options,
            on_restart=on_restart,
            max_restarts=max_restarts,
            accumulate=accumulate,
        )

    async def create_from_request(
        self, request: CompletionRequest, **options: Unpack[RequestOptions]
    ) -> Completion:
        """Send a prepared :class:`CompletionRequest`; a streamed one is accumulated."""
        result = await self.create_from_request_with_info(request, **options)
        return result.completion

    async def create_from_request_with_info(
        self, request: CompletionRequest, **options: Unpack[RequestOptions]
    ) -> CompletionWithInfo:
        """:meth:`create_from_request` with the :class:`ResponseInfo` (attempts, waits...)."""
        client = self._client
        stream = request.stream is True
        body = encode_request(to_builtins(request), options.get("extra_body"))
        result, info = await client._request(body, stream=stream, options=client._options(options))
        assert info is not None
        if isinstance(result, CompletionStream):
            async with result:
                return CompletionWithInfo(await result.final_completion(), info)
        assert isinstance(result, Completion)
        return CompletionWithInfo(result, info)


class StreamContext:
    """What :meth:`Completions.stream` returns: an async context manager for one stream."""

    def __init__(
        self,
        client: AsyncClient,
        body: bytes,
        options: _CallOptions,
        *,
        on_restart: Callable[[StreamRestart], object] | None,
        max_restarts: int,
        accumulate: bool,
    ) -> None:
        self._client = client
        self._accumulate = accumulate
        self._body = body
        self._options = options
        self._on_restart = on_restart
        self._max_restarts = max_restarts
        self._stream: CompletionStream | None = None

    async def __aenter__(self) -> CompletionStream:
        result, _ = await self._client._request(
            self._body,
            stream=True,
            options=self._options,
            on_restart=self._on_restart,
            max_restarts=self._max_restarts,
            accumulate=self._accumulate,
        )
        assert isinstance(result, CompletionStream)
        self._stream = result
        return result

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            await self._stream.aclose()
