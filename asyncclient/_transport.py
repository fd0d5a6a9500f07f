"""The aiohttp boundary: the only module of the client that imports aiohttp.

It owns the ``ClientSession`` (created lazily inside the running loop, closed exactly once,
never closed when borrowed from the caller), turns :class:`Timeout` into aiohttp's settings, and
translates every aiohttp exception into the documented tree, chaining the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, TypeAlias

import aiohttp

from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    AsyncClientError,
    ConnectTimeoutError,
    RequestValidationError,
    ResponseTooLargeError,
    TotalTimeoutError,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "ClientClosedError",
    "HTTPSession",
    "Response",
    "Timeout",
    "Transport",
    "WrongEventLoopError",
]

logger = logging.getLogger("asyncclient")

HTTPSession: TypeAlias = aiohttp.ClientSession
"""The session type a caller may lend to :class:`~asyncclient.AsyncClient`."""

DEFAULT_MAX_CONNECTIONS: Final = 100


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timeouts in seconds, one per phase of a call; ``None`` disables one.

    - ``connect``: getting a connection (pool wait, DNS, TCP and TLS).
    - ``headers``: from sending the request to receiving the response headers. For a plain
      (non-streamed) call this includes the whole generation, hence the generous default.
    - ``first_event``: streams only, from the headers to the first content event; ``None``
      means the same as ``idle``.
    - ``idle``: streams: the longest gap between two content events. SSE comments and
      keep-alives do not reset it, so a server that only sends keep-alives still times out.
      Plain bodies: the time allowed to read the whole body once the headers are in.
    - ``total``: a deadline for the whole call, stream included. ``None`` by default: a total
      deadline kills long streams (which is why aiohttp's own 300 s default is not used).

    Each phase raises its own :class:`APITimeoutError` subclass. ``connect`` and ``headers``
    timeouts are retried by the client's retry policy; a stream's timeouts are raised to the
    caller, who holds the stream by then (see ``on_restart`` for re-sending it).
    """

    connect: float | None = 10.0
    headers: float | None = 600.0
    first_event: float | None = None
    idle: float | None = 600.0
    total: float | None = None

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """``Timeout`` as is; a number as every limit but ``total`` (``connect`` at most
        10 s); ``None`` as no limit at all."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(connect=None, headers=None, first_event=None, idle=None, total=None)
        seconds = float(value)
        return cls(connect=min(seconds, 10.0), headers=seconds, idle=seconds)


DEFAULT_TIMEOUT: Final = Timeout()


class ClientClosedError(AsyncClientError, RuntimeError):
    """The client was used after ``aclose()`` (or its borrowed session was closed)."""


class WrongEventLoopError(AsyncClientError, RuntimeError):
    """The client was used from an event loop other than the one its session lives in."""


def _map_error(exc: BaseException, url: str, phase: str) -> AsyncClientError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeoutError(f"Timed out connecting to {url}.", url=url, phase="connect")
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"Timed out during {phase} of {url}.", url=url, phase=phase)
    if isinstance(exc, aiohttp.InvalidURL):
        # Not a connection problem, and never worth a retry.
        return RequestValidationError(f"Invalid URL {url!r}: check base_url and path.")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return APIConnectionError(
            f"Connection to {url} broke while reading the body: {exc}", url=url
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return APIConnectionError(f"Server {url} closed the connection ({phase}).", url=url)
    return APIConnectionError(f"Connection error during {phase} of {url}: {exc}", url=url)


_TRANSLATED = (aiohttp.ClientError, TimeoutError, OSError)


def _take_buffered(content: aiohttp.StreamReader) -> bytes:
    try:
        # No public aiohttp API reads the buffer once an error is stored.
        return content._read_nowait(-1)
    except (AttributeError, TypeError, TimeoutError, aiohttp.ClientError):
        return b""


class Response:
    """A response whose headers have arrived; the body is read through this object.

    Every read translates foreign exceptions. :meth:`release` puts the connection back in the
    pool when the body was read to the end and closes it otherwise, so it is safe on every
    exit path.
    """

    __slots__ = (
        "_content_type",
        "_failure",
        "_live",
        "_released",
        "_response",
        "headers",
        "status",
        "url",
    )

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        url: str,
        live: set[Response] | None = None,
    ) -> None:
        self._response = response
        # The transport's set of unreleased responses, so that closing the session can wake
        # their reads (closing drops aiohttp's connections without waking a waiting read).
        self._live = live
        if live is not None:
            live.add(self)
        self._released = False
        self._failure: BaseException | None = None
        self._content_type: str | None = None
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self.url = url

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case (``""`` when missing)."""
        content_type = self._content_type
        if content_type is None:
            raw = self.headers.get("Content-Type", "")
            content_type = self._content_type = raw.partition(";")[0].strip().lower()
        return content_type

    @property
    def reason(self) -> str:
        return self._response.reason or ""

    @property
    def at_eof(self) -> bool:
        return self._response.content.at_eof()

    async def read(self, *, limit: int | None = None, truncate: bool = False) -> bytes:
        """The whole body, released afterwards.

        Past ``limit`` bytes (counted after decompression) it raises
        :class:`ResponseTooLargeError`, or with ``truncate`` returns the first ``limit`` bytes.
        """
        response = self._response
        try:
            if limit is None:
                return await response.read()
            declared = response.content_length
            if (
                declared is not None
                and declared <= limit
                and "Content-Encoding" not in self.headers
            ):
                return await response.read()  # the common case: one read, size known
            # Chunked or compressed (Content-Length is then the compressed size): count the
            # decompressed bytes as they come.
            body = bytearray()
            content = response.content
            while piece := await content.readany():
                body += piece
                if len(body) > limit:
                    if truncate:
                        return bytes(body[:limit])
                    raise self._too_large(limit)
            return bytes(body)
        except _TRANSLATED as exc:
            raise _map_error(exc, self.url, "body read") from exc
        finally:
            self.release()

    def _too_large(self, limit: int) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"The response body of {self.url} is larger than max_body_size={limit} bytes."
        )

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it arrived from the network; ``b""`` at the end."""
        if self._failure is not None:
            raise self._failure
        content = self._response.content
        try:
            return await content.readany()
        except _TRANSLATED as exc:
            failure = _map_error(exc, self.url, "stream read")
            failure.__cause__ = exc
            # aiohttp raises a stored connection error before handing out bytes it already
            # buffered: hand those out first, so that every event that arrived before the
            # break reaches the caller (and the partial completion), then raise.
            buffered = _take_buffered(content)
            if buffered:
                self._failure = failure
                return buffered
            raise failure from exc
        except RuntimeError as exc:
            # aiohttp's own words when its connection went away under the read; any other
            # RuntimeError (two tasks reading one stream) is a caller's bug, and stays one.
            if isinstance(exc, AsyncClientError) or exc.args != ("Connection closed.",):
                raise
            raise APIConnectionError(
                f"The connection to {self.url} was closed during the stream.", url=self.url
            ) from exc

    def interrupt(self, error: BaseException) -> None:
        """Make the read in progress, if any, and every later one raise ``error``. A stream
        calls it when a deadline passes, the transport when it closes under open streams.
        The connection is closed on release (unless the body had already ended: then it
        goes back to the pool, whole)."""
        self._failure = error
        self._response.content.set_exception(error)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._live is not None:
            self._live.discard(self)
        if self._response.content.at_eof():
            self._response.release()
        else:
            # Closing (not releasing) a half-read response: the rest of the body would
            # otherwise be read into a pooled connection's buffer by the next request.
            self._response.close()


class Transport:
    """Sends requests over one ``aiohttp.ClientSession`` per client."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        verify_tls: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not verify_tls:
            logger.warning(
                "TLS certificate verification is disabled for this client (verify_tls=False)."
            )
        self._session = session
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._client_timeouts: dict[float | None, aiohttp.ClientTimeout] = {}
        self._owns_session = session is None
        self._max_connections = max_connections
        self._verify_tls = verify_tls
        # Headers sent with every request. An owned session carries them as its defaults
        # (aiohttp copies them in C), which costs less per request than passing them each
        # time; a borrowed session gets them merged into each request's headers.
        self._default_headers: Mapping[str, str] = dict(headers or {})
        # Responses not released yet, so that closing the session wakes their reads.
        self._live: set[Response] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("Cannot send a request: the client has been closed.")
        session = self._session
        if session is not None and session.closed:
            raise ClientClosedError("Cannot send a request: the aiohttp session is closed.")
        if self._session_loop is not None and self._session_loop is not asyncio.get_running_loop():
            raise WrongEventLoopError(
                "This client's connections belong to another event loop (was asyncio.run() "
                "called again?). Use one client per event loop, and close it in that loop."
            )
        if self._session is None:
            # Created here, inside the running loop, never at construction time: a session
            # made outside a loop binds to the wrong one.
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._max_connections,
                ttl_dns_cache=300,
                ssl=self._verify_tls,
            )
            self._session_loop = asyncio.get_running_loop()
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
                headers=self._default_headers,
            )
        return self._session

    async def send(
        self,
        url: str,
        *,
        body: bytes,
        headers: Mapping[str, str],
        connect_timeout: float | None,
    ) -> Response:
        """POST ``body`` with the transport's headers plus ``headers``; return once the
        response headers are in.

        Only the connect timeout is applied here; the caller bounds the wait for headers
        (one deadline per call on the client's shared timer, moved for the body read).
        Socket read timeouts stay off: aiohttp's timer is reset by any byte, keep-alive
        comments included, so streams enforce their own idle limit per content event.
        Redirects are not followed: a 3xx comes back as a status error, so ``Authorization``
        is never replayed to another host.
        """
        session = self._get_session()
        if not self._owns_session and self._default_headers:
            headers = {**self._default_headers, **headers}
        client_timeout = self._client_timeouts.get(connect_timeout)
        if client_timeout is None:
            client_timeout = self._client_timeouts[connect_timeout] = aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=None
            )
        try:
            response = await session.post(
                url,
                data=body,
                headers=headers or None,
                timeout=client_timeout,
                allow_redirects=False,
            )
        except _TRANSLATED as exc:
            raise _map_error(exc, url, "request") from exc
        return Response(response, url, self._live)

    def pool_stats(self) -> tuple[int, int]:
        """``(in use, idle)`` pooled connections, for leak checks in tests and diagnostics."""
        session = self._session
        if session is None or session.closed:
            return (0, 0)
        connector = session.connector
        # aiohttp has no public pool statistics; these attributes are stable across 3.x.
        acquired = getattr(connector, "_acquired", ())
        idle = getattr(connector, "_conns", {})
        return (len(acquired), sum(len(conns) for conns in idle.values()))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_session and self._session is not None:
            # Closing the session drops its connections without waking a read that waits on
            # one: the responses still open are told first, and their reads fail at once.
            for response in list(self._live):
                response.interrupt(
                    ClientClosedError("The client was closed while this stream was open.")
                )
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def deadline(seconds: float | None, url: str, phase: str = "total") -> AsyncIterator[None]:
    """Raise :class:`APITimeoutError` if the block runs longer than ``seconds``."""
    if seconds is None:
        yield
        return
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise TotalTimeoutError(
            f"{url} did not finish within the {phase} deadline of {seconds} s.",
            url=url,
            phase=phase,
        ) from exc
