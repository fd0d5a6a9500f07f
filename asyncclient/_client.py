"""``AsyncClient`` and its ``completions`` resource."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Literal, Required, Self, TypedDict, Unpack, overload

from ._accumulate import chunk_from_completion
from ._decode import decode_completion, decode_error, encode_request
from ._exceptions import APIStatusError, ResponseDecodeError, excerpt, status_error_class
from ._models import (
    Completion,
    CompletionRequest,
    OrqExtensions,
    Prompt,
    StreamOptions,
    to_builtins,
)
from ._streaming import CompletionStream, request_id_from
from ._transport import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    HTTPSession,
    Response,
    Timeout,
    Transport,
    deadline,
)
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_PATH",
    "NOT_GIVEN",
    "AsyncClient",
    "CompletionParams",
    "Completions",
    "NotGiven",
]

DEFAULT_BASE_URL: Final = "https://my.orq.ai"
DEFAULT_PATH: Final = "/v2/proxy/completions"
API_KEY_ENV: Final = "ORQ_API_KEY"
BASE_URL_ENV: Final = "ORQ_BASE_URL"
DEFAULT_MAX_EVENT_SIZE: Final = 64 * 1024 * 1024


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


def _authorization(api_key: str) -> str:
    # A key that already carries the scheme is sent unchanged, as the Orq SDK does.
    return api_key if api_key[:7].lower() == "bearer " else f"Bearer {api_key}"


class AsyncClient:
    """An async client for ``POST /v2/proxy/completions`` and OpenAI-compatible ``/completions``.

    One instance is meant to be shared by every task of a service: it holds one aiohttp
    session (created on first use inside the running loop) with a pool of
    ``max_connections``. Close it with ``await client.aclose()`` or ``async with``. A session
    passed as ``session=`` is borrowed and never closed by the client.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        path: str = DEFAULT_PATH,
        timeout: Timeout | float | None = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_event_size: int | None = DEFAULT_MAX_EVENT_SIZE,
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
        self.max_event_size = max_event_size
        self._api_key = api_key
        self._transport = Transport(
            session=session, max_connections=max_connections, verify_tls=verify_tls
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"asyncclient/{__version__} Python/{platform.python_version()}",
        }
        if api_key:
            headers["Authorization"] = _authorization(api_key)
        if default_headers:
            headers.update(default_headers)
        self._json_headers: Mapping[str, str] = {**headers, "Accept": "application/json"}
        self._sse_headers: Mapping[str, str] = {**headers, "Accept": "text/event-stream"}
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

    async def _send(
        self,
        body: bytes,
        *,
        stream: bool,
        path: str | None,
        timeout: Timeout,
        extra_headers: Mapping[str, str] | None,
    ) -> Response:
        url = self.base_url + (path if path is not None else self.path)
        headers = self._sse_headers if stream else self._json_headers
        if extra_headers:
            headers = {**headers, **extra_headers}
        response = await self._transport.send(url, body=body, headers=headers, timeout=timeout)
        if response.status >= 300:
            raise await _status_error(response)
        return response

    def _resolve_timeout(self, timeout: Timeout | float | None | NotGiven) -> Timeout:
        return self.timeout if isinstance(timeout, NotGiven) else Timeout.coerce(timeout)


async def _status_error(response: Response) -> APIStatusError:
    body = await response.read()
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


def _decode_body(response: Response, body: bytes) -> Completion:
    content_type = response.content_type
    if content_type in _JSON_TYPES or content_type.endswith("+json"):
        return decode_completion(body)
    # Some servers label JSON as text/plain or send no type at all: accept a body that
    # decodes, and name the content type when it does not.
    try:
        return decode_completion(body)
    except ResponseDecodeError as exc:
        raise ResponseDecodeError(
            f"Expected an application/json or text/event-stream response, got "
            f"{content_type or 'no Content-Type'!r}. Body: {excerpt(body)}",
            body=body,
            path=exc.path,
        ) from exc


class Completions:
    """``client.completions``: the legacy text-completions endpoint."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        stream: Literal[False] = False,
        timeout: Timeout | float | None | NotGiven = NOT_GIVEN,
        path: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[CompletionParams],
    ) -> Completion: ...

    @overload
    async def create(
        self,
        *,
        stream: Literal[True],
        timeout: Timeout | float | None | NotGiven = NOT_GIVEN,
        path: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[CompletionParams],
    ) -> CompletionStream: ...

    @overload
    async def create(
        self,
        *,
        stream: bool,
        timeout: Timeout | float | None | NotGiven = NOT_GIVEN,
        path: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[CompletionParams],
    ) -> Completion | CompletionStream: ...

    async def create(
        self,
        *,
        stream: bool = False,
        timeout: Timeout | float | None | NotGiven = NOT_GIVEN,
        path: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[CompletionParams],
    ) -> Completion | CompletionStream:
        """Create a completion.

        Returns the response body, or with ``stream=True`` a :class:`CompletionStream`
        (use it with ``async with``). ``timeout`` overrides the client's for this call
        (``None``: no timeout); ``path`` overrides the endpoint path; ``extra_headers`` and
        ``extra_body`` are merged last into the headers and the JSON body.

        Raises :class:`RequestValidationError` before sending anything when a field breaks
        the spec, and the documented :class:`AsyncClientError` subclasses otherwise.
        """
        body = self._encode(params, stream, extra_body)
        return await self._create_from_body(
            body,
            stream=stream,
            timeout=self._client._resolve_timeout(timeout),
            path=path,
            extra_headers=extra_headers,
        )

    def stream(
        self,
        *,
        timeout: Timeout | float | None | NotGiven = NOT_GIVEN,
        path: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **params: Unpack[CompletionParams],
    ) -> StreamContext:
        """``async with client.completions.stream(...) as stream:`` sends the request on
        entry and always releases the connection on exit."""
        body = self._encode(params, True, extra_body)
        return StreamContext(
            self,
            body,
            timeout=self._client._resolve_timeout(timeout),
            path=path,
            extra_headers=extra_headers,
        )

    async def create_from_request(
        self,
        request: CompletionRequest,
        *,
        timeout: Timeout | float | None | NotGiven = NOT_GIVEN,
        path: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Send a prepared :class:`CompletionRequest`; a streamed one is accumulated."""
        body = encode_request(to_builtins(request), extra_body)
        stream = request.stream is True
        result = await self._create_from_body(
            body,
            stream=stream,
            timeout=self._client._resolve_timeout(timeout),
            path=path,
            extra_headers=extra_headers,
        )
        if isinstance(result, CompletionStream):
            async with result:
                return await result.final_completion()
        return result

    @staticmethod
    def _encode(
        params: Mapping[str, Any], stream: bool, extra_body: Mapping[str, Any] | None
    ) -> bytes:
        if stream:
            params = {**params, "stream": True}
        return encode_request(params, extra_body)

    async def _create_from_body(
        self,
        body: bytes,
        *,
        stream: bool,
        timeout: Timeout,
        path: str | None,
        extra_headers: Mapping[str, str] | None,
    ) -> Completion | CompletionStream:
        client = self._client
        url = client.base_url + (path if path is not None else client.path)
        # The total deadline bounds the whole call for a plain response; a stream returned to
        # the caller is bounded only by the read (idle) timeout.
        async with deadline(None if stream else timeout.total, url):
            response = await client._send(
                body, stream=stream, path=path, timeout=timeout, extra_headers=extra_headers
            )
            if response.content_type == "text/event-stream":
                events = CompletionStream(response, max_event_size=client.max_event_size)
                if stream:
                    return events
                async with events:
                    return await events.final_completion()
            completion = _decode_body(response, await response.read())
        if stream:
            return CompletionStream(
                None,
                chunks=[chunk_from_completion(completion)],
                status_code=response.status,
                headers=response.headers,
            )
        return completion


class StreamContext:
    """What :meth:`Completions.stream` returns: an async context manager for one stream."""

    def __init__(
        self,
        completions: Completions,
        body: bytes,
        *,
        timeout: Timeout,
        path: str | None,
        extra_headers: Mapping[str, str] | None,
    ) -> None:
        self._completions = completions
        self._body = body
        self._timeout = timeout
        self._path = path
        self._extra_headers = extra_headers
        self._stream: CompletionStream | None = None

    async def __aenter__(self) -> CompletionStream:
        result = await self._completions._create_from_body(
            self._body,
            stream=True,
            timeout=self._timeout,
            path=self._path,
            extra_headers=self._extra_headers,
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
