"""A local emulator of the Orq gateway's legacy text-completions endpoint, for tests.

:class:`GatewayEmulator` is a real aiohttp HTTP server bound to a loopback address. It
serves ``POST /v2/proxy/completions``, ``POST /v2/router/completions`` and
``POST /v1/completions`` (all three behave the same), plus ``GET /health``. Completions
are deterministic: the text depends only on the request (prompt, seed, choice index,
``max_tokens``, ``stop``), so tests can compare exact values. Streaming follows the
OpenAI wire format (``data: {...}`` events, then ``data: [DONE]``).

Failures are injected with :class:`Fault`, either queued on the emulator with
:meth:`GatewayEmulator.inject` or sent per request in an ``X-Emulator-Fault`` header
whose value is a JSON object of ``Fault`` fields (useful from another process; ``body``
is base64 there, as msgspec encodes bytes). A header fault takes precedence over queued
ones and does not consume them. Faults are applied
before authentication and request validation, and only to the completion routes.

Usage::

    from asyncclient.testing import Fault, GatewayEmulator

    async def test_retry_on_429() -> None:
        async with GatewayEmulator(api_key="sk-test") as emu:
            emu.inject(Fault(status=429, retry_after="0"), times=2)
            ...  # point the client at emu.base_url and call it
            assert len(emu.requests) == 3
            assert emu.requests[-1].json()["model"] == "openai/gpt-3.5-turbo-instruct"

Outside tests, ``await serve(port=8000)`` runs an emulator until it is cancelled.

This module depends only on aiohttp and msgspec, never on the rest of ``asyncclient``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Literal, NoReturn

import msgspec
from aiohttp import web

__all__ = [
    "Fault",
    "GatewayEmulator",
    "RecordedRequest",
    "make_app",
    "serve",
]

_log = logging.getLogger(__name__)

COMPLETION_PATHS = ("/v2/proxy/completions", "/v2/router/completions", "/v1/completions")
FAULT_HEADER = "X-Emulator-Fault"

_encoder = msgspec.json.Encoder()
_MAX_TOTAL_TOKENS = 1_000_000
_BATCH_BYTES = 16 * 1024
_KEEPALIVE = b": keep-alive\n\n"
_DONE = b"data: [DONE]\n\n"
_MALFORMED = b"data: {not json\n\n"

# 61 is prime, so every rotation of the list by a choice index or seed is distinct.
_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber",
    "basil", "cedar", "dune", "ember", "fjord", "grove", "harbor", "island", "jasper",
    "kelp", "lagoon", "meadow", "nectar", "orchid", "pebble", "quartz", "river", "summit",
    "thistle", "umber", "valley", "willow", "yarrow", "zephyr", "acorn", "birch", "clover",
    "dahlia", "fern", "garnet", "heather", "iris", "juniper", "lotus",
)  # fmt: skip
_TOKENS = tuple(w + " " for w in _WORDS)
_STEP = 7

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


class Fault(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One injected failure. Every field is optional; several can be combined.

    Stream-only fields count *content* events (one per choice per step); a count of N
    fires after N content events were sent, or after the last one if the stream is
    shorter.
    """

    status: int | None = None
    """Reply with this HTTP status and an error body."""
    error_body: Any = None
    """JSON value for the error body (also used for in-stream errors)."""
    flat_error: bool = False
    """Send ``{"message": ..., "code": ...}`` instead of ``{"error": {...}}``."""
    retry_after: str | None = None
    """``Retry-After`` header value (seconds or an HTTP date)."""
    retry_after_ms: int | None = None
    """``retry-after-ms`` header value."""
    should_retry: bool | None = None
    """``x-should-retry`` header, ``"true"`` or ``"false"``."""
    headers: dict[str, str] = {}
    """Extra response headers."""
    content_type: str | None = None
    """Override the response Content-Type."""
    body: bytes | None = None
    """Raw body sent instead of the normal one (status defaults to 200)."""
    drop_before_headers: bool = False
    """Read the request, then close the connection without any response."""
    headers_delay: float = 0.0
    """Seconds to wait before sending the response headers."""
    body_delay: float = 0.0
    """Plain body: send the headers and half the body, wait this long, then the rest."""
    cut_after_events: int | None = None
    """Stream: send N content events, then close the connection (no ``[DONE]``)."""
    cut_after_bytes: int | None = None
    """Send only the first N body bytes (after gzip, if any), then close the connection."""
    error_event_after: int | None = None
    """Stream: after N content events send an in-stream error, then end the stream."""
    error_event_style: Literal["data", "event"] = "data"
    """``data: {"error": ...}`` or ``event: error`` followed by the data line."""
    malformed_event_after: int | None = None
    """Stream: after N content events send ``data: {not json``, then continue."""
    invalid_utf8_event_after: int | None = None
    """Stream: after N content events send an event with invalid UTF-8, then continue."""
    stall_after_events: int | None = None
    """Stream: after N content events pause for ``stall_seconds``."""
    stall_seconds: float = 0.0
    keepalive_interval: float | None = None
    """While stalled, send ``: keep-alive`` comments at this interval."""
    gzip: bool = False
    """Gzip the body and send ``Content-Encoding: gzip``."""
    oversized_event_bytes: int | None = None
    """Stream: pad the first content event's JSON text to this many bytes."""


class RecordedRequest(msgspec.Struct):
    """A request as the emulator received it. Header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Decode the body as JSON."""
        return msgspec.json.decode(self.body)


class _Logprobs(msgspec.Struct):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class _Choice(msgspec.Struct):
    index: int
    text: str
    finish_reason: str | None
    logprobs: _Logprobs | None


class _Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int]
    completion_tokens_details: dict[str, int]


class _Completion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[_Choice]
    usage: _Usage | None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class _Aborted(Exception):
    """The connection was closed on purpose; the handler must return quietly."""


class _Params(msgspec.Struct):
    model: str
    prompt: str
    max_tokens: int
    n: int
    echo: bool
    stop: list[str]
    logprobs: int | None
    seed: int
    stream: bool
    include_usage: bool


class _Generated(msgspec.Struct):
    pieces: list[str]
    finish_reason: str
    rotation: int


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_host(host: str, allow_non_loopback: bool) -> None:
    if not allow_non_loopback and not _is_loopback(host):
        raise ValueError(
            f"refusing to bind the gateway emulator to non-loopback host {host!r}; "
            "pass allow_non_loopback=True to override"
        )


def _error_payload(
    status: int, message: str, *, flat: bool = False, param: str | None = None
) -> dict[str, Any]:
    error_type = _ERROR_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    inner: dict[str, Any] = {"message": message, "type": error_type, "code": status}
    if param is not None:
        inner["param"] = param
    if flat:
        return inner
    return {"error": inner}


def _error_response(status: int, message: str, param: str | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=_encoder.encode(_error_payload(status, message, param=param)),
        content_type="application/json",
    )


def _fault_headers(fault: Fault | None) -> dict[str, str]:
    if fault is None:
        return {}
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.should_retry is not None:
        headers["x-should-retry"] = "true" if fault.should_retry else "false"
    headers.update(fault.headers)
    return headers


def _number(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadRequest(400, f"'{name}' must be a number", name)
    return int(value)


def _parse_params(body: Any) -> _Params:
    if not isinstance(body, dict):
        raise _BadRequest(400, "request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise _BadRequest(422, "missing required field 'model'", "model")
    if not isinstance(model, str):
        raise _BadRequest(422, "'model' must be a string", "model")
    if "prompt" not in body or body["prompt"] is None:
        raise _BadRequest(422, "missing required field 'prompt'", "prompt")
    prompt = _prompt_text(body["prompt"])

    max_tokens = _number(body, "max_tokens", 16)
    n = _number(body, "n", 1)
    if max_tokens < 0:
        raise _BadRequest(400, "'max_tokens' must be >= 0", "max_tokens")
    if n < 1:
        raise _BadRequest(400, "'n' must be >= 1", "n")
    if n * max_tokens > _MAX_TOTAL_TOKENS:
        raise _BadRequest(400, f"n * max_tokens must be <= {_MAX_TOTAL_TOKENS}", "max_tokens")

    raw_stop = body.get("stop")
    if raw_stop is None:
        stop: list[str] = []
    elif isinstance(raw_stop, str):
        stop = [raw_stop]
    elif isinstance(raw_stop, list) and all(isinstance(s, str) for s in raw_stop):
        stop = raw_stop
    else:
        raise _BadRequest(400, "'stop' must be a string or a list of strings", "stop")
    stop = [s for s in stop if s]

    raw_logprobs = body.get("logprobs")
    if raw_logprobs is None or raw_logprobs is False:
        logprobs: int | None = None
    elif raw_logprobs is True:
        logprobs = 1
    else:
        logprobs = _number(body, "logprobs", 0)
        if logprobs < 0:
            raise _BadRequest(400, "'logprobs' must be >= 0", "logprobs")

    for flag in ("echo", "stream"):
        if body.get(flag) is not None and not isinstance(body[flag], bool):
            raise _BadRequest(400, f"'{flag}' must be a boolean", flag)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _BadRequest(400, "'user' must be a string", "user")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _BadRequest(400, "'stream_options' must be an object", "stream_options")

    return _Params(
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        n=n,
        echo=bool(body.get("echo")),
        stop=stop,
        logprobs=logprobs,
        seed=_number(body, "seed", 0),
        stream=bool(body.get("stream")),
        include_usage=bool(options and options.get("include_usage")),
    )


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        if all(isinstance(p, str) for p in prompt):
            return "\n".join(prompt)
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return " ".join(str(p) for p in prompt)
        if prompt and isinstance(prompt[0], list):
            return _prompt_text(prompt[0])
    raise _BadRequest(
        400, "'prompt' must be a string, a list of strings or a list of token ids", "prompt"
    )


def _generate(params: _Params, index: int) -> _Generated:
    rotation = (zlib.crc32(params.prompt.encode()) + params.seed * 13 + index) % len(_TOKENS)
    stops = params.stop
    # Only the last (longest stop - 1) characters can combine with a new token into a match.
    keep = max((len(s) for s in stops), default=1) - 1
    pieces: list[str] = []
    length = 0
    tail = ""
    for k in range(params.max_tokens):
        token = _TOKENS[(rotation + k * _STEP) % len(_TOKENS)]
        if stops:
            window = tail + token
            hits = [pos for pos in (window.find(s) for s in stops) if pos >= 0]
            if hits:
                cut = length - len(tail) + min(hits)
                while length > cut:
                    last = pieces.pop()
                    length -= len(last)
                    if length < cut:
                        pieces.append(last[: cut - length])
                        length = cut
                if cut > length:
                    pieces.append(token[: cut - length])
                return _Generated(pieces=pieces, finish_reason="stop", rotation=rotation)
            tail = window[-keep:] if keep else ""
        pieces.append(token)
        length += len(token)
    return _Generated(pieces=pieces, finish_reason="length", rotation=rotation)


def _logprobs(gen: _Generated, start: int, stop: int, k: int, offset: int) -> _Logprobs:
    tokens = gen.pieces[start:stop]
    token_logprobs: list[float] = []
    top: list[dict[str, float]] = []
    offsets: list[int] = []
    for j, token in enumerate(tokens, start):
        lp = -round(0.01 + ((gen.rotation * 31 + j * 17) % 89) / 100, 4)
        token_logprobs.append(lp)
        entries: dict[str, float] = {}
        if k:
            entries[token] = lp
        alt = j
        while len(entries) < min(k, len(_TOKENS)):
            alt += 1
            candidate = _TOKENS[(gen.rotation + alt * 3) % len(_TOKENS)]
            if candidate not in entries:
                entries[candidate] = round(lp - 0.5 * len(entries), 4)
        top.append(entries)
        offsets.append(offset)
        offset += len(token)
    return _Logprobs(
        tokens=tokens, token_logprobs=token_logprobs, top_logprobs=top, text_offset=offsets
    )


def _usage(params: _Params, generated: list[_Generated]) -> _Usage:
    prompt_tokens = max(1, len(params.prompt.split()))
    completion_tokens = sum(len(g.pieces) for g in generated)
    return _Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details={"cached_tokens": 0},
        completion_tokens_details={"reasoning_tokens": 0},
    )


def _wants_stream(raw: bytes) -> bool:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return False
    return isinstance(body, dict) and body.get("stream") is True


def _transport_close(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        # close() (not abort()) so bytes already written reach the client before the FIN.
        transport.close()


class _BodyWriter:
    """Writes a streamed body with optional batching, gzip and a byte budget."""

    def __init__(
        self, request: web.Request, resp: web.StreamResponse, *, batch: bool, fault: Fault | None
    ) -> None:
        self._request = request
        self._resp = resp
        self._batch = batch
        self._buf = bytearray()
        self._gzip = zlib.compressobj(wbits=31) if fault is not None and fault.gzip else None
        self._budget = fault.cut_after_bytes if fault is not None else None
        self._sent = 0

    async def add(self, data: bytes) -> None:
        self._buf += data
        if not self._batch or len(self._buf) >= _BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if not self._buf:
            return
        data = bytes(self._buf)
        self._buf.clear()
        if self._gzip is not None:
            data = self._gzip.compress(data) + self._gzip.flush(zlib.Z_SYNC_FLUSH)
        await self._emit(data)

    async def _emit(self, data: bytes) -> None:
        if self._budget is not None and self._sent + len(data) > self._budget:
            head = data[: self._budget - self._sent]
            if head:
                await self._resp.write(head)
            self.abort()
        self._sent += len(data)
        if data:
            await self._resp.write(data)

    def abort(self) -> NoReturn:
        _transport_close(self._request)
        raise _Aborted

    async def finish(self) -> None:
        await self.flush()
        if self._gzip is not None:
            await self._emit(self._gzip.flush())
        if self._budget is not None:
            self.abort()
        await self._resp.write_eof()


class _StreamFaults:
    """Tracks which count-triggered stream faults have fired."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault
        self._fired: set[str] = set()

    def due(self, name: str, emitted: int, final: bool) -> bool:
        if self.fault is None or name in self._fired:
            return False
        threshold: int | None = getattr(self.fault, name)
        if threshold is None or (emitted != threshold and not (final and threshold > emitted)):
            return False
        self._fired.add(name)
        return True


class GatewayEmulator:
    """An in-process aiohttp server that behaves like the gateway's completions endpoint.

    Args:
        host: Loopback address to bind. Non-loopback hosts raise ``ValueError`` unless
            ``allow_non_loopback`` is true.
        port: TCP port; 0 picks a free one.
        api_key: If set, requests must send ``Authorization: Bearer <api_key>``.
        chunk_tokens: Tokens per streamed content event.
        chunk_delay: Seconds to sleep between streamed events.
        keepalive_first: Send a ``: keep-alive`` comment before the first stream event.
        record: Keep a :class:`RecordedRequest` for each request (not for ``/health``).
        max_records: Keep at most this many records, dropping the oldest.
        shutdown_timeout: Seconds :meth:`close` waits for in-flight requests before
            cancelling them.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        chunk_tokens: int = 1,
        chunk_delay: float = 0.0,
        keepalive_first: bool = False,
        record: bool = True,
        max_records: int = 10_000,
        allow_non_loopback: bool = False,
        shutdown_timeout: float = 0.5,
    ) -> None:
        _check_host(host, allow_non_loopback)
        if chunk_tokens < 1:
            raise ValueError("chunk_tokens must be >= 1")
        if max_records < 0:
            raise ValueError("max_records must be >= 0")
        self.host = host
        self.port = port
        self.api_key = api_key
        self.chunk_tokens = chunk_tokens
        self.chunk_delay = chunk_delay
        self.keepalive_first = keepalive_first
        self.record = record
        self.max_records = max_records
        self.shutdown_timeout = shutdown_timeout
        self.requests: list[RecordedRequest] = []
        self.active_requests = 0
        """Requests whose handler is currently running."""
        self.received = 0
        """Requests received so far (``/health`` aside), recorded or not."""
        self._arrival = asyncio.Event()
        self.open_streams = 0
        """Streaming responses currently being written."""
        self._faults: deque[list[Any]] = deque()
        self._transports: set[asyncio.BaseTransport] = set()
        self._counter = 0
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._app = self._build_app()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def app(self) -> web.Application:
        """The aiohttp application, e.g. for ``aiohttp.test_utils.TestServer``."""
        return self._app

    @property
    def base_url(self) -> str:
        """``http://host:port`` once started."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not started; call start() first")
        return self._base_url

    @property
    def active_connections(self) -> int:
        """Open TCP connections that have sent at least one request."""
        self._prune_transports()
        return len(self._transports)

    async def start(self) -> str:
        """Bind and start serving; return the base URL."""
        if self._runner is not None:
            return self.base_url
        runner = web.AppRunner(
            self._app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.shutdown_timeout,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._base_url = f"http://{host}:{port}"
        return self._base_url

    async def close(self) -> None:
        """Stop serving. In-flight requests are cancelled after ``shutdown_timeout``."""
        runner, self._runner = self._runner, None
        self._base_url = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> GatewayEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- faults ------------------------------------------------------------------------

    def inject(self, fault: Fault, *, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` completion requests (after earlier ones)."""
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults.append([fault, times])

    async def wait_for_requests(self, count: int, *, timeout: float = 10.0) -> None:
        """Wait until ``count`` requests have arrived in total (see :attr:`received`), to act
        while the server holds them (a ``headers_delay``, a stall)."""
        async with asyncio.timeout(timeout):
            while self.received < count:
                self._arrival.clear()
                await self._arrival.wait()

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    def _next_fault(self) -> Fault | None:
        if not self._faults:
            return None
        entry = self._faults[0]
        entry[1] -= 1
        if entry[1] <= 0:
            self._faults.popleft()
        fault: Fault = entry[0]
        return fault

    # -- application -------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for path in COMPLETION_PATHS:
            app.router.add_post(path, self._completions)
        app.router.add_get("/health", self._health)
        return app

    def _prune_transports(self) -> None:
        self._transports = {t for t in self._transports if not t.is_closing()}

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and transport not in self._transports:
            if len(self._transports) >= 256:
                self._prune_transports()
            self._transports.add(transport)
        if request.path != "/health":
            if self.record:
                self._record(request, await request.read())
            self.received += 1
            self._arrival.set()
        self.active_requests += 1
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.Response(
                status=exc.status,
                body=_encoder.encode(_error_payload(exc.status, exc.reason)),
                content_type="application/json",
                headers={k: v for k, v in exc.headers.items() if k.lower() == "allow"},
            )
        finally:
            self.active_requests -= 1

    def _record(self, request: web.Request, body: bytes) -> None:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.requests.append(
            RecordedRequest(method=request.method, path=request.path, headers=headers, body=body)
        )
        excess = len(self.requests) - self.max_records
        if excess > 0:
            del self.requests[:excess]

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        header_fault = request.headers.get(FAULT_HEADER)
        if header_fault is not None:
            try:
                fault: Fault | None = msgspec.json.decode(header_fault, type=Fault)
            except msgspec.DecodeError as exc:
                return _error_response(400, f"invalid {FAULT_HEADER} header: {exc}")
        else:
            fault = self._next_fault()

        if fault is not None:
            early = await self._early_fault(request, fault)
            if early is not None:
                return early
        expected = None if self.api_key is None else f"Bearer {self.api_key}"
        if expected is not None and request.headers.get("Authorization") != expected:
            return _error_response(401, "invalid or missing API key")
        try:
            params = _parse_params(msgspec.json.decode(raw))
        except msgspec.DecodeError as exc:
            return _error_response(400, f"request body is not valid JSON: {exc}")
        except _BadRequest as exc:
            return _error_response(exc.status, exc.message, exc.param)

        self._counter += 1
        completion_id = f"cmpl-{self._counter}"
        generated = [_generate(params, i) for i in range(params.n)]
        if params.stream:
            return await self._stream(request, params, generated, completion_id, fault)
        return await self._json(request, params, generated, completion_id, fault)

    async def _early_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        if fault.headers_delay > 0:
            await asyncio.sleep(fault.headers_delay)
        if fault.drop_before_headers:
            _transport_close(request)
            return web.Response()
        if fault.body is None and fault.status is None:
            return None
        status = fault.status if fault.status is not None else 200
        if fault.body is not None:
            body = fault.body
            default_type = "application/json"
            if fault.status is None and _wants_stream(await request.read()):
                default_type = "text/event-stream; charset=utf-8"
        else:
            if fault.error_body is not None:
                payload = fault.error_body
            else:
                payload = _error_payload(status, f"emulated {status} error", flat=fault.flat_error)
            body = _encoder.encode(payload)
            default_type = "application/json"
        return await self._send_body(request, status, body, default_type, fault)

    async def _send_body(
        self, request: web.Request, status: int, body: bytes, default_type: str, fault: Fault | None
    ) -> web.StreamResponse:
        headers = _fault_headers(fault)
        headers["Content-Type"] = (
            fault.content_type if fault is not None and fault.content_type else default_type
        )
        if fault is not None and fault.gzip:
            body = zlib.compress(body, wbits=31)
            headers["Content-Encoding"] = "gzip"
        cut = fault.cut_after_bytes if fault is not None else None
        delay = fault.body_delay if fault is not None else 0.0
        if cut is None and not delay:
            return web.Response(status=status, body=body, headers=headers)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        try:
            await resp.prepare(request)
            if cut is None:
                half = len(body) // 2
                await resp.write(body[:half])
                await asyncio.sleep(delay)
                await resp.write(body[half:])
                await resp.write_eof()
                return resp
            if cut > 0:
                await resp.write(body[:cut])
        except ConnectionError:
            pass
        _transport_close(request)
        return resp

    # -- responses ---------------------------------------------------------------------

    async def _json(
        self,
        request: web.Request,
        params: _Params,
        generated: list[_Generated],
        completion_id: str,
        fault: Fault | None,
    ) -> web.StreamResponse:
        prefix = params.prompt if params.echo else ""
        choices = [
            _Choice(
                index=i,
                text=prefix + "".join(gen.pieces),
                finish_reason=gen.finish_reason,
                logprobs=None
                if params.logprobs is None
                else _logprobs(gen, 0, len(gen.pieces), params.logprobs, len(prefix)),
            )
            for i, gen in enumerate(generated)
        ]
        completion = _Completion(
            id=completion_id,
            object="text_completion",
            created=int(time.time()),
            model=params.model,
            system_fingerprint="fp_emulator",
            choices=choices,
            usage=_usage(params, generated),
        )
        return await self._send_body(
            request, 200, _encoder.encode(completion), "application/json", fault
        )

    def _content_events(self, params: _Params, generated: list[_Generated]) -> Iterator[_Choice]:
        step = self.chunk_tokens
        prefix = params.prompt if params.echo else ""
        # A choice with no tokens still gets one (empty) event carrying its finish_reason.
        counts = [max(1, -(-len(g.pieces) // step)) for g in generated]
        offsets = [len(prefix)] * len(generated)
        for s in range(max(counts)):
            for i, gen in enumerate(generated):
                if s >= counts[i]:
                    continue
                start, stop = s * step, min((s + 1) * step, len(gen.pieces))
                text = "".join(gen.pieces[start:stop])
                logprobs = None
                if params.logprobs is not None:
                    logprobs = _logprobs(gen, start, stop, params.logprobs, offsets[i])
                offsets[i] += len(text)
                if s == 0:
                    text = prefix + text
                last = s == counts[i] - 1
                yield _Choice(
                    index=i,
                    text=text,
                    finish_reason=gen.finish_reason if last else None,
                    logprobs=logprobs,
                )

    async def _stream(
        self,
        request: web.Request,
        params: _Params,
        generated: list[_Generated],
        completion_id: str,
        fault: Fault | None,
    ) -> web.StreamResponse:
        headers = _fault_headers(fault)
        headers["Content-Type"] = (
            fault.content_type
            if fault is not None and fault.content_type
            else "text/event-stream; charset=utf-8"
        )
        headers["Cache-Control"] = "no-cache"
        if fault is not None and fault.gzip:
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(status=200, headers=headers)
        self.open_streams += 1
        try:
            await resp.prepare(request)
            await self._write_events(request, resp, params, generated, completion_id, fault)
        except (_Aborted, ConnectionError):
            # Either a fault closed the connection or the client went away: the response
            # is over, and aiohttp's own final write will fail quietly.
            pass
        finally:
            self.open_streams -= 1
        return resp

    async def _write_events(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        params: _Params,
        generated: list[_Generated],
        completion_id: str,
        fault: Fault | None,
    ) -> None:
        template = _Completion(
            id=completion_id,
            object="text_completion",
            created=int(time.time()),
            model=params.model,
            system_fingerprint="fp_emulator",
            choices=[],
            usage=None,
        )
        # Only the choice differs between content events: encode the envelope once.
        envelope = _encoder.encode(template)
        split = envelope.rindex(b'"choices":[]') + len(b'"choices":[')
        head = b"data: " + envelope[:split]
        tail = envelope[split:] + b"\n\n"

        delay = self.chunk_delay
        writer = _BodyWriter(request, resp, batch=delay <= 0, fault=fault)
        faults = _StreamFaults(fault)
        if self.keepalive_first:
            await writer.add(_KEEPALIVE)
        emitted = 0
        events = self._content_events(params, generated)
        choice = next(events, None)
        while True:
            final = choice is None
            if await self._stream_faults(writer, faults, emitted, final, head, tail):
                return
            if choice is None:
                break
            data = _encoder.encode(choice)
            if emitted == 0 and fault is not None and fault.oversized_event_bytes is not None:
                data = self._pad(head + data + tail, fault.oversized_event_bytes)
                await writer.add(data)
            else:
                await writer.add(head + data + tail)
            emitted += 1
            choice = next(events, None)
            if delay > 0 and choice is not None:
                await asyncio.sleep(delay)

        if params.include_usage:
            template.usage = _usage(params, generated)
            await writer.add(b"data: " + _encoder.encode(template) + b"\n\n")
        await writer.add(_DONE)
        await writer.finish()

    @staticmethod
    def _pad(event: bytes, size: int) -> bytes:
        # event is b"data: {...}\n\n"; grow the JSON object with a filler string field.
        payload = event[6:-2]
        filler = b',"padding":""'
        extra = max(0, size - len(payload) - len(filler))
        payload = payload[:-1] + b',"padding":"' + b"x" * extra + b'"}'
        return b"data: " + payload + b"\n\n"

    async def _stream_faults(
        self,
        writer: _BodyWriter,
        faults: _StreamFaults,
        emitted: int,
        final: bool,
        head: bytes,
        tail: bytes,
    ) -> bool:
        """Fire the faults due after ``emitted`` events; return True if the stream ended."""
        fault = faults.fault
        if fault is None:
            return False
        if faults.due("malformed_event_after", emitted, final):
            await writer.add(_MALFORMED)
        if faults.due("invalid_utf8_event_after", emitted, final):
            bad = b'{"index":0,"text":"bad \xff\xfe bytes","finish_reason":null,"logprobs":null}'
            await writer.add(head + bad + tail)
        if faults.due("stall_after_events", emitted, final):
            await writer.flush()
            await self._stall(writer, fault)
        if faults.due("error_event_after", emitted, final):
            payload = (
                fault.error_body
                if fault.error_body is not None
                else _error_payload(500, "emulated in-stream error", flat=fault.flat_error)
            )
            prefix = b"event: error\n" if fault.error_event_style == "event" else b""
            await writer.add(prefix + b"data: " + _encoder.encode(payload) + b"\n\n")
            await writer.finish()
            return True
        if faults.due("cut_after_events", emitted, final):
            await writer.flush()
            writer.abort()
        return False

    @staticmethod
    async def _stall(writer: _BodyWriter, fault: Fault) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + fault.stall_seconds
        interval = fault.keepalive_interval
        if interval is None:
            await asyncio.sleep(fault.stall_seconds)
            return
        interval = max(interval, 0.001)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return
            if interval >= left:
                await asyncio.sleep(left)
                return
            await asyncio.sleep(interval)
            await writer.add(_KEEPALIVE)
            await writer.flush()


def make_app(**options: Any) -> web.Application:
    """Build the emulator's aiohttp application (options as for :class:`GatewayEmulator`)."""
    return GatewayEmulator(**options).app


async def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_ready: Callable[[str], object] | None = None,
    **options: Any,
) -> None:
    """Run an emulator until cancelled. ``on_ready`` receives the base URL once bound."""
    async with GatewayEmulator(host=host, port=port, **options) as emulator:
        _log.info("gateway emulator listening on %s", emulator.base_url)
        if on_ready is not None:
            on_ready(emulator.base_url)
        await asyncio.get_running_loop().create_future()
