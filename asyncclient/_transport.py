"""The aiohttp boundary: the only module of the client that imports aiohttp.

It owns the ``ClientSession`` (created lazily inside the running loop, closed exactly once,
never closed when borrowed from the caller), turns :class:`Timeout` into aiohttp's settings, and
translates every aiohttp exception into the documented tree, chaining the original.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, TypeAlias

import aiohttp

from ._exceptions import APIConnectionError, APITimeoutError, AsyncClientError

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "ClientClosedError",
    "HTTPSession",
    "Response",
    "Timeout",
    "Transport",
]

HTTPSession: TypeAlias = aiohttp.ClientSession
"""The session type a caller may lend to :class:`~asyncclient.AsyncClient`."""

DEFAULT_MAX_CONNECTIONS: Final = 100


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timeouts in seconds; ``None`` disables one.

    - ``connect``: getting a connection (pool wait, DNS, TCP and TLS).
    - ``read``: the longest silence between two reads of the socket, including the wait for
      the response headers. It bounds a stalled stream without limiting a long, live one.
    - ``total``: a deadline for the whole call. ``None`` by default, because a total
      deadline kills long streams (aiohttp's own default of 300 s is not used).
    """

    connect: float | None = 10.0
    read: float | None = 600.0
    total: float | None = None

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """``Timeout`` as is; a number as the read and connect limit; ``None`` as no limit."""
        if isinstance(value, Timeout):
            return value
        if value is None:
            return cls(connect=None, read=None, total=None)
        return cls(connect=min(float(value), 10.0), read=float(value), total=None)


DEFAULT_TIMEOUT: Final = Timeout()


class ClientClosedError(AsyncClientError, RuntimeError):
    """The client was used after ``aclose()``."""


def _map_error(exc: BaseException, url: str, phase: str) -> AsyncClientError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"Timed out connecting to {url}.", url=url, phase="connect")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return APITimeoutError(f"Timed out reading from {url} ({phase}).", url=url, phase="read")
    if isinstance(exc, TimeoutError):
        return APITimeoutError(f"Timed out during {phase} of {url}.", url=url, phase=phase)
    if isinstance(exc, aiohttp.InvalidURL):
        return APIConnectionError(f"Invalid URL {url!r}.", url=url)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return APIConnectionError(
            f"Connection to {url} broke while reading the body: {exc}", url=url
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return APIConnectionError(f"Server {url} closed the connection ({phase}).", url=url)
    return APIConnectionError(f"Connection error during {phase} of {url}: {exc!r}", url=url)


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

    __slots__ = ("_failure", "_released", "_response", "headers", "status", "url")

    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._released = False
        self._failure: AsyncClientError | None = None
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        self.url = url

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case (``""`` when missing)."""
        raw = self.headers.get("Content-Type", "")
        return raw.partition(";")[0].strip().lower()

    @property
    def reason(self) -> str:
        return self._response.reason or ""

    @property
    def at_eof(self) -> bool:
        return self._response.content.at_eof()

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _TRANSLATED as exc:
            raise _map_error(exc, self.url, "body read") from exc
        finally:
            self.release()

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

    def release(self) -> None:
        if self._released:
            return
        self._released = True
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
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._max_connections = max_connections
        self._verify_tls = verify_tls
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ClientClosedError("Cannot send a request: the client has been closed.")
        if self._session is None:
            # Created here, inside the running loop, never at construction time: a session
            # made outside a loop binds to the wrong one.
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=self._max_connections,
                ttl_dns_cache=300,
                ssl=self._verify_tls,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(
        self,
        url: str,
        *,
        body: bytes,
        headers: Mapping[str, str],
        timeout: Timeout,
    ) -> Response:
        session = self._get_session()
        client_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeout.connect,
            sock_connect=timeout.connect,
            sock_read=timeout.read,
        )
        try:
            response = await session.post(
                url,
                data=body,
                headers=headers,
                timeout=client_timeout,
                allow_redirects=False,
            )
        except _TRANSLATED as exc:
            raise _map_error(exc, url, "request") from exc
        return Response(response, url)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_session and self._session is not None:
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
        raise APITimeoutError(
            f"{url} did not finish within the {phase} deadline of {seconds} s.",
            url=url,
            phase=phase,
        ) from exc
