"""The batch runner: many requests through a fixed pool of workers (anyio structured concurrency).

::

    async with client.batch(requests, concurrency=32) as results:
        async for result in results:
            print(result.index, result.id, result.response or result.error)

How it stays bounded and loses nothing:

- ``concurrency`` workers pull from the input one item at a time, and no worker pulls while
  ``concurrency + buffer`` items are pulled but not yet yielded to the caller. Memory is bounded
  by those two numbers, never by the input's length, whether the input is a list, a generator of
  millions of items or an async iterator reading a file.
- Each item ends as one :class:`BatchResult` holding the response or the typed error: a failing
  item never stops the others (unless ``fail_fast``). Errors worth another attempt (429, 5xx,
  connection errors, timeouts) are retried with :func:`asyncclient._retry.run_with_retries`.
- Results come in input order (``ordered=True``, the default) or as they complete.
- A :class:`BatchLimiter` shared by the workers applies optional request-per-minute and
  token-per-minute limits and adapts the concurrency: a 429 or a ``Retry-After`` header pauses
  every worker for the delay the server asked for and halves the number of requests in flight,
  which then climbs back by one for each round of successes (additive increase, multiplicative
  decrease, as TCP does).
- :meth:`BatchJob.cancel`, leaving the ``async with`` block early, or cancelling the task stop new
  work and cancel the requests in flight, releasing their connections; every result that had
  finished is still yielded (after ``cancel()``) or was already received.

The module also reads and writes the OpenAI Batch API line formats, which the command line and
the Ray integration share: :func:`parse_batch_line`, :func:`item_from_record` and
:func:`batch_output_record`.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeAlias, cast

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._decode import validation_error_path
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClientError,
    ConnectTimeoutError,
    IncompleteStreamError,
    RateLimitError,
    RequestValidationError,
    ResponseDecodeError,
    ServerStreamError,
    StreamError,
    retry_classification,
)
from ._models import Completion, CompletionRequest, CompletionUsage, ResponseInfo
from ._retry import AttemptLog, RetryPolicy, parse_retry_after, run_with_retries

__all__ = [
    "BatchInput",
    "BatchItem",
    "BatchJob",
    "BatchLimiter",
    "BatchResult",
    "BatchSource",
    "CompletionCall",
    "batch_output_record",
    "error_code",
    "estimate_tokens",
    "item_from_record",
    "parse_batch_line",
]

DEFAULT_CONCURRENCY: Final = 16
DEFAULT_MAX_RETRIES: Final = 2

# Without a Retry-After header, a 429 pauses every worker for this long, doubling with each
# further 429 that arrives before a success. No pause, asked for or not, lasts longer than the
# maximum: a server asking for an hour gets asked again (and pauses everyone again) sooner.
_FIRST_PAUSE: Final = 1.0
_MAX_PAUSE: Final = 60.0

Clock: TypeAlias = Callable[[], float]
Sleep: TypeAlias = Callable[[float], Awaitable[None]]
CompletionCall: TypeAlias = Callable[
    [CompletionRequest], Awaitable[Completion | tuple[Completion, ResponseInfo]]
]
"""Sends one request, without retrying it, and returns its completion (a streamed request
accumulated), optionally with its :class:`ResponseInfo` (``create_from_request_with_info``)."""


class _KeyedCompletionCall(Protocol):
    """A :data:`CompletionCall` that also sends an ``Idempotency-Key`` (``idempotency_keys``)."""

    def __call__(
        self, request: CompletionRequest, /, *, idempotency_key: str
    ) -> Awaitable[Completion | tuple[Completion, ResponseInfo]]: ...


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One input with an id: ``request`` is a :class:`CompletionRequest` or a mapping of its
    fields. ``error`` marks an input already known to be bad (a malformed line of a file): it
    becomes a failed result at its place, without any request being sent."""

    request: CompletionRequest | Mapping[str, Any] | None = None
    id: str | None = None
    error: AsyncClientError | None = None


BatchInput: TypeAlias = CompletionRequest | Mapping[str, Any] | BatchItem
"""An input item: a request Struct, a mapping of request fields with an optional ``"id"``, or a
:class:`BatchItem`."""

BatchSource: TypeAlias = Iterable[BatchInput] | AsyncIterable[BatchInput]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of one input.

    - ``index``: the input's 0-based position; ``id``: its id (``None`` when it had none).
    - ``response`` (on success) or ``error`` (the typed :class:`AsyncClientError` of the last
      attempt); exactly one of them is set.
    - ``usage``: the response's token usage, when the server reported it.
    - ``latency``: seconds from the start of the first attempt to the end of the last one,
      waits between attempts included (``0.0`` when nothing was sent).
    - ``attempts``: attempts made for this input (``0`` for an input rejected before any).
    - ``request_id``: the server's request id (``x-request-id``) of the last response, when the
      call reported it and the server sent one.
    """

    index: int
    id: str | None
    response: Completion | None
    error: AsyncClientError | None
    usage: CompletionUsage | None
    latency: float
    attempts: int
    request_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        """The first choice's text, or ``""`` for a failure."""
        return self.response.text if self.response is not None else ""


# --------------------------------------------------------------------------------------------
# Pacing: concurrency that adapts to 429s, and per-minute budgets
# --------------------------------------------------------------------------------------------


class _TokenBucket:
    """A token bucket refilled at ``per_minute / 60`` per second, holding one second's worth.

    The small capacity paces requests evenly instead of sending a minute's budget in one burst.
    A cost larger than the capacity waits for a full bucket and then takes the bucket into debt,
    so the long-run rate stays within the limit whatever the cost of single requests.
    """

    __slots__ = ("_clock", "_stamp", "capacity", "level", "rate")

    def __init__(self, per_minute: float, clock: Clock) -> None:
        if not per_minute > 0:
            raise ValueError(f"a per-minute limit must be > 0, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self._clock = clock
        self._stamp: float | None = None

    def _refill(self) -> None:
        now = self._clock()
        if self._stamp is not None:
            self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` may be taken (0 when it may be taken now)."""
        self._refill()
        needed = min(cost, self.capacity)
        # The tolerance absorbs float rounding, which could otherwise ask for a wait too short
        # to move the clock at all.
        return 0.0 if self.level >= needed - 1e-9 else (needed - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.level -= cost

    def give_back(self, amount: float) -> None:
        """Return an over-estimate (``amount > 0``) or charge an under-estimate (``< 0``)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class BatchLimiter:
    """Admission control shared by the workers of one or more batch jobs.

    ``concurrency`` is the most requests in flight. With ``adaptive`` (the default), a 429
    response or any error response carrying ``Retry-After`` / ``retry-after-ms`` pauses every
    worker until the delay the server asked for has passed (1 s without a header, doubling while
    429s keep coming) and halves the requests allowed in flight; each run of ``limit``
    successes then allows one more, back up to ``concurrency``. ``requests_per_minute`` and
    ``tokens_per_minute`` are optional budgets; tokens are estimated before sending (see
    :func:`estimate_tokens`) and settled with the usage the server reports.

    ``clock`` and ``sleep`` are injectable so tests never really wait.
    """

    def __init__(
        self,
        concurrency: int = DEFAULT_CONCURRENCY,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.max_concurrency = concurrency
        self.limit = concurrency
        """Requests currently allowed in flight (below ``max_concurrency`` after a 429)."""
        self.active = 0
        self.adaptive = adaptive
        self.limit_history: list[int] = [concurrency]
        """Every value ``limit`` took, in order (for observing the adaptation)."""
        self._clock = clock
        self._sleep = sleep
        self._requests = (
            None if requests_per_minute is None else _TokenBucket(requests_per_minute, clock)
        )
        self._tokens = None if tokens_per_minute is None else _TokenBucket(tokens_per_minute, clock)
        self._paused_until = 0.0
        self._next_pause = _FIRST_PAUSE
        self._generation = 0
        self._successes = 0
        # anyio primitives need a running event loop: created on first use, so that a limiter
        # can be built anywhere (a Ray actor's constructor, for one).
        self._changed: anyio.Event | None = None
        self._bucket_lock: anyio.Lock | None = None

    @property
    def limits_tokens(self) -> bool:
        return self._tokens is not None

    @property
    def paused_until(self) -> float:
        """The clock time before which no request starts (after a 429)."""
        return self._paused_until

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_for_change(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    async def acquire(self, estimated_tokens: float = 0.0) -> int:
        """Wait for the pause to end, a free slot and the budgets; then hold a slot.

        Returns the limit's generation, to pass to :meth:`on_rate_limited` if this request
        gets a 429."""
        while True:
            pause = self._paused_until - self._clock()
            if pause > 0:
                await self._sleep(pause)
                continue
            if self.active < self.limit:
                break
            await self._wait_for_change()
        self.active += 1
        try:
            if self._requests is not None or self._tokens is not None:
                if self._bucket_lock is None:
                    self._bucket_lock = anyio.Lock()
                # One waiter at a time, so that the budgets are handed out in arrival order.
                async with self._bucket_lock:
                    if self._requests is not None:
                        await self._take(self._requests, 1.0)
                    if self._tokens is not None:
                        await self._take(self._tokens, estimated_tokens)
        except BaseException:
            self.release()
            raise
        return self._generation

    async def _take(self, bucket: _TokenBucket, cost: float) -> None:
        while (wait := bucket.wait_for(cost)) > 0:
            await self._sleep(wait)
        bucket.take(cost)

    def release(self) -> None:
        self.active -= 1
        self._notify()

    def settle_tokens(self, estimated: float, actual: float | None) -> None:
        """Correct the token budget once the real usage is known (``None``: nothing used,
        which refunds the whole estimate: only for a request that was never sent)."""
        if self._tokens is not None:
            self._tokens.give_back(estimated - (actual or 0.0))

    def on_success(self) -> None:
        self._next_pause = _FIRST_PAUSE
        if not self.adaptive or self.limit >= self.max_concurrency:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self._set_limit(self.limit + 1)

    def on_rate_limited(self, retry_after: float | None, generation: int | None = None) -> None:
        """A 429 or a ``Retry-After``: pause everyone and halve the limit.

        ``generation`` is what :meth:`acquire` returned for the failed request. A request sent
        before the last halving brings no news (it was sent under the old limit, and requests
        in flight together usually fail together), so it extends the pause without halving
        again: one halving per round of requests, as TCP does per window.
        """
        if not self.adaptive:
            return
        now = self._clock()
        if retry_after is None:
            delay = self._next_pause
            self._next_pause = min(_MAX_PAUSE, self._next_pause * 2)
        else:
            delay = min(retry_after, _MAX_PAUSE)
        self._paused_until = max(self._paused_until, now + delay)
        if generation is None or generation == self._generation:
            self._generation += 1
            self._successes = 0
            self._set_limit(max(1, self.limit // 2))

    def _set_limit(self, limit: int) -> None:
        if limit != self.limit:
            self.limit = limit
            self.limit_history.append(limit)
            self._notify()


def estimate_tokens(request: CompletionRequest) -> int:
    """A pessimistic token count for the budget: about 4 characters a prompt token, plus
    ``max_tokens`` (16 when unset, the API default) for each of the ``n`` choices."""
    prompt = request.prompt
    pieces: list[Any] = [prompt] if isinstance(prompt, str) else list(prompt)
    prompt_tokens = 0
    for piece in pieces:
        if isinstance(piece, str):
            prompt_tokens += len(piece) // 4 + 1
        elif isinstance(piece, list):
            prompt_tokens += len(piece)
        else:
            prompt_tokens += 1
    max_tokens = request.max_tokens if isinstance(request.max_tokens, int | float) else 16
    choices = request.n if isinstance(request.n, int) else 1
    if isinstance(request.best_of, int):
        choices = max(choices, request.best_of)
    return prompt_tokens + math.ceil(max_tokens) * choices


# --------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------


def _retry_after(error: AsyncClientError) -> float | None:
    if not isinstance(error, APIStatusError):
        return None
    return parse_retry_after(error.headers, now=time.time())


def _is_rate_limit_signal(error: AsyncClientError) -> bool:
    return isinstance(error, RateLimitError) or _retry_after(error) is not None


def _never_sent(error: AsyncClientError) -> bool:
    """True when the request provably never reached the server (no tokens were spent)."""
    return isinstance(error, RequestValidationError | ConnectTimeoutError)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _as_id(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _request_from_mapping(fields: Mapping[str, Any]) -> CompletionRequest:
    try:
        return msgspec.convert(fields, CompletionRequest)
    except msgspec.ValidationError as exc:
        raise RequestValidationError(
            f"invalid request: {exc}", field=validation_error_path(exc)
        ) from exc


def _normalize(
    item: BatchInput,
) -> tuple[str | None, CompletionRequest | None, AsyncClientError | None]:
    """``(id, request, error)`` for one input; exactly one of request and error is set."""
    try:
        if isinstance(item, CompletionRequest):
            return None, item, None
        if isinstance(item, BatchItem):
            if item.error is not None:
                return item.id, None, item.error
            request = item.request
            if isinstance(request, CompletionRequest):
                return item.id, request, None
            if request is None:
                raise RequestValidationError("the batch item has neither a request nor an error")
            return item.id, _request_from_mapping(request), None
        if isinstance(item, Mapping):
            item_id = _as_id(item.get("id"))
            fields = {key: value for key, value in item.items() if key != "id"}
            return item_id, _request_from_mapping(fields), None
        raise RequestValidationError(
            f"a batch input must be a CompletionRequest, a mapping or a BatchItem, "
            f"not {type(item).__name__}"
        )
    except RequestValidationError as exc:
        item_id = item.id if isinstance(item, BatchItem) else None
        if item_id is None and isinstance(item, Mapping):
            item_id = _as_id(item.get("id"))
        return item_id, None, exc


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


class BatchJob:
    """A running batch: an async context manager and, inside it, an async iterator of results.

    Built by :meth:`AsyncClient.batch`; usable directly with any ``call`` (tests use fakes)::

        async with BatchJob(requests, call, concurrency=8) as results:
            async for result in results:
                ...

    Entering starts the workers; leaving stops whatever is still running and waits until every
    worker has stopped and released its connection. Iterating outside ``async with`` raises
    ``RuntimeError``: the workers need a scope that outlives each ``__anext__``.

    - ``ordered``: yield in input order (``True``) or as completed.
    - ``buffer``: finished results held beyond ``concurrency`` before workers stop pulling
      (default: ``concurrency``); in input order a slow item holds back at most this many.
    - ``fail_fast``: the first failed item stops the job; after every finished result has been
      yielded, iteration raises that item's error.
    - ``max_retries`` / ``retry_policy``: retries per item (``retry_policy`` wins).
    - ``limiter``: a :class:`BatchLimiter` to share with other jobs; otherwise one is built from
      ``concurrency``, ``requests_per_minute``, ``tokens_per_minute`` and ``adaptive``.
    - ``idempotency_keys``: give each item one ``Idempotency-Key``, the same on every attempt
      of that item; ``call`` is then called as ``call(request, idempotency_key=key)``.

    A job stopped before the end of its input (``fail_fast``, :meth:`cancel`, leaving the block,
    an error) closes the input iterator when it can (``aclose()`` or ``close()``, as generators
    have), so that the input's own cleanup runs at once.

    An exception raised by the input iterable stops the job once the items in flight have
    finished; a non-:class:`AsyncClientError` raised by ``call`` (a bug, not a failed request)
    stops it at once. Either is raised by the iteration after the finished results.
    """

    def __init__(
        self,
        requests: BatchSource,
        call: CompletionCall,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        ordered: bool = True,
        buffer: int | None = None,
        fail_fast: bool = False,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
        limiter: BatchLimiter | None = None,
        idempotency_keys: bool = False,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if buffer is not None and buffer < 0:
            raise ValueError(f"buffer must be >= 0, got {buffer}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self._sync_source: Iterator[BatchInput] | None = None
        self._async_source: AsyncIterator[BatchInput] | None = None
        if isinstance(requests, AsyncIterable):
            self._async_source = aiter(requests)
        else:
            self._sync_source = iter(requests)
        self._call = call
        self._idempotency_keys = idempotency_keys
        self.concurrency = concurrency
        self.ordered = ordered
        self.fail_fast = fail_fast
        self._window = concurrency + (concurrency if buffer is None else buffer)
        self._policy = (
            retry_policy
            if retry_policy is not None
            else RetryPolicy(max_attempts=max_retries + 1, budget=None)
        )
        self.limiter = (
            limiter
            if limiter is not None
            else BatchLimiter(
                concurrency,
                requests_per_minute=requests_per_minute,
                tokens_per_minute=tokens_per_minute,
                adaptive=adaptive,
                clock=clock,
                sleep=sleep,
            )
        )
        self._clock = clock
        self._sleep = sleep

        self.pulled = 0
        """Inputs taken from the source so far."""
        self.yielded = 0
        """Results handed to the caller so far."""
        self._exhausted = False
        self._stopping = False
        self._cancelled = False
        self._error: BaseException | None = None
        self._error_raised = False
        self._window_open: anyio.Event | None = None
        self._pull_lock: anyio.Lock | None = None
        self._send: MemoryObjectSendStream[BatchResult] | None = None
        self._receive: MemoryObjectReceiveStream[BatchResult] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._workers_scope: anyio.CancelScope | None = None
        self._reorder: dict[int, BatchResult] = {}
        self._next_index = 0

    @property
    def cancelled(self) -> bool:
        """True once the job was stopped by :meth:`cancel`, ``fail_fast`` or an error."""
        return self._cancelled

    @property
    def exhausted(self) -> bool:
        """True once the input has been read to its end."""
        return self._exhausted

    def cancel(self) -> None:
        """Stop the job: no new input is taken and the requests in flight are cancelled (their
        connections closed). Iteration then yields the results that had finished and ends.
        Safe to call from a signal handler's ``call_soon_threadsafe`` and more than once."""
        self._cancelled = True
        self._stopping = True
        if self._workers_scope is not None:
            self._workers_scope.cancel()
        if self._window_open is not None:
            self._window_open.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("a BatchJob can only be entered once")
        self._send, self._receive = anyio.create_memory_object_stream[BatchResult](math.inf)
        self._pull_lock = anyio.Lock()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        task_group.start_soon(self._run_workers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # Leaving early (break, an exception, cancellation) stops the workers; after a full
        # iteration they have all returned already and this changes nothing.
        self._stopping = True
        if self._workers_scope is not None:
            self._workers_scope.cancel()
        assert self._task_group is not None
        try:
            if exc is not None and not isinstance(exc, Exception):
                # Cancellation (and KeyboardInterrupt) must reach the task group's scope.
                return await self._task_group.__aexit__(exc_type, exc, tb)
            # An error of the caller's block (or the one the iteration raised) propagates as
            # it is, not wrapped in an ExceptionGroup: the workers never raise.
            await self._task_group.__aexit__(None, None, None)
            return None
        finally:
            if self._receive is not None:
                self._receive.close()
            await self._close_source()

    async def _close_source(self) -> None:
        """Close an input that was not read to its end (the workers have all stopped)."""
        if self._exhausted:
            return
        source: Any = self._sync_source if self._sync_source is not None else self._async_source
        if hasattr(source, "aclose"):
            # Shielded: leaving on cancellation must still let the generator's cleanup run.
            with anyio.CancelScope(shield=True):
                await source.aclose()
        elif hasattr(source, "close"):
            source.close()

    # -- workers -----------------------------------------------------------------------------

    async def _run_workers(self) -> None:
        assert self._send is not None
        with self._send:
            with anyio.CancelScope() as scope:
                self._workers_scope = scope
                if self._stopping:
                    scope.cancel()
                async with anyio.create_task_group() as workers:
                    for _ in range(self.concurrency):
                        workers.start_soon(self._worker)

    async def _worker(self) -> None:
        send = self._send
        assert send is not None
        while True:
            pulled = await self._pull()
            if pulled is None:
                return
            index, item = pulled
            try:
                result = await self._process(index, item)
            except Exception as exc:
                self._stop(exc)
                return
            # No checkpoint between the end of the call and this line: a finished result
            # always reaches the caller, even when the job is being cancelled.
            send.send_nowait(result)
            if result.error is not None and self.fail_fast:
                self._stop(result.error)
                return

    def _stop(self, error: BaseException, *, cancel_in_flight: bool = True) -> None:
        if self._error is None:
            self._error = error
        if cancel_in_flight:
            self.cancel()
        else:
            self._stopping = True
            if self._window_open is not None:
                self._window_open.set()

    async def _pull(self) -> tuple[int, BatchInput] | None:
        assert self._pull_lock is not None
        async with self._pull_lock:
            while not self._stopping and self.pulled - self.yielded >= self._window:
                self._window_open = anyio.Event()
                await self._window_open.wait()
            if self._stopping or self._exhausted:
                return None
            try:
                if self._sync_source is not None:
                    item = next(self._sync_source)
                else:
                    assert self._async_source is not None
                    item = await anext(self._async_source)
            except (StopIteration, StopAsyncIteration):
                self._exhausted = True
                return None
            except Exception as exc:
                # The input broke: take nothing more, but let the items in flight finish.
                self._exhausted = True
                self._stop(exc, cancel_in_flight=False)
                return None
            index = self.pulled
            self.pulled += 1
            return index, item

    async def _process(self, index: int, item: BatchInput) -> BatchResult:
        item_id, request, error = _normalize(item)
        if request is None:
            return BatchResult(index, item_id, None, error, None, 0.0, 0)
        limiter = self.limiter
        estimate = estimate_tokens(request) if limiter.limits_tokens else 0
        clock = self._clock
        started: float | None = None
        log = AttemptLog()
        # One key for every attempt of this item, so that the server can drop a duplicate.
        idempotency_key = f"asyncclient-{uuid.uuid4().hex}" if self._idempotency_keys else None

        async def attempt(number: int) -> tuple[Completion, str | None]:
            nonlocal started
            generation = await limiter.acquire(estimate)
            try:
                if started is None:
                    started = clock()
                if idempotency_key is None:
                    outcome = await self._call(request)
                else:
                    keyed_call = cast(_KeyedCompletionCall, self._call)
                    outcome = await keyed_call(request, idempotency_key=idempotency_key)
            except AsyncClientError as exc:
                # A request that may have run keeps its whole estimate: its usage is unknown.
                if _never_sent(exc):
                    limiter.settle_tokens(estimate, None)
                if _is_rate_limit_signal(exc):
                    limiter.on_rate_limited(_retry_after(exc), generation)
                raise
            finally:
                limiter.release()
            if isinstance(outcome, Completion):
                completion, request_id = outcome, None
            else:
                completion, request_id = outcome[0], outcome[1].request_id
            usage = completion.usage
            if usage is not None and usage.total_tokens is not None:
                limiter.settle_tokens(estimate, usage.total_tokens)
            limiter.on_success()
            return completion, request_id

        try:
            completion, request_id = await run_with_retries(
                self._policy, attempt, retry_classification, clock=clock, sleep=self._sleep, log=log
            )
        except AsyncClientError as exc:
            latency = 0.0 if started is None else clock() - started
            error_request_id = exc.request_id if isinstance(exc, APIStatusError) else None
            return BatchResult(
                index, item_id, None, exc, None, latency, log.attempts, error_request_id
            )
        latency = 0.0 if started is None else clock() - started
        return BatchResult(
            index, item_id, completion, None, completion.usage, latency, log.attempts, request_id
        )

    # -- iteration ---------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> BatchResult:
        receive = self._receive
        if receive is None:
            raise RuntimeError(
                "iterate a batch inside its context: "
                "`async with client.batch(...) as results: async for result in results: ...`"
            )
        while True:
            if self.ordered:
                ready = self._reorder.pop(self._next_index, None)
                if ready is not None:
                    self._next_index += 1
                    return self._deliver(ready)
            try:
                result = await receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return self._finish()
            if not self.ordered:
                return self._deliver(result)
            self._reorder[result.index] = result

    def _finish(self) -> BatchResult:
        # A stopped job leaves gaps (cancelled items): what finished is yielded in index order.
        if self._reorder:
            return self._deliver(self._reorder.pop(min(self._reorder)))
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._error
        raise StopAsyncIteration

    def _deliver(self, result: BatchResult) -> BatchResult:
        self.yielded += 1
        if self._window_open is not None:
            self._window_open.set()
        return result


# --------------------------------------------------------------------------------------------
# OpenAI Batch API line formats
# --------------------------------------------------------------------------------------------

_OPENAI_KEYS: Final = frozenset({"custom_id", "method", "url", "body"})


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_nulls(item) for item in value]
    return value


def item_from_record(
    record: Mapping[str, Any],
    *,
    fallback_id: str | None = None,
    drop_nulls: bool = False,
) -> BatchItem:
    """A :class:`BatchItem` from one decoded input record.

    Two shapes are accepted: the OpenAI Batch API request line (``custom_id``, ``method``,
    ``url``, ``body``), and a bare request object with an optional ``id``. The item's id is the
    ``custom_id`` or ``id``, else ``fallback_id``. A record that is neither, or whose request
    breaks the spec, gives an item with ``error`` set.
    ``drop_nulls`` removes ``None`` values first: Arrow tables (Ray Data) cannot tell an absent
    field from a null one.
    """
    if drop_nulls:
        record = _drop_nulls(dict(record))
    if _OPENAI_KEYS & record.keys():
        item_id = _as_id(record.get("custom_id")) or fallback_id
        method = record.get("method", "POST")
        url = record.get("url", "/v1/completions")
        body = record.get("body")
        problem = None
        if not isinstance(method, str) or method.upper() != "POST":
            problem = f"method must be POST, got {method!r}"
        elif not isinstance(url, str) or not url.rstrip("/").endswith("/completions"):
            problem = f"url must be a completions endpoint such as /v1/completions, got {url!r}"
        elif url.rstrip("/").endswith("/chat/completions"):
            problem = f"chat completions are not supported, only text completions: {url!r}"
        elif not isinstance(body, Mapping):
            problem = "body must be a JSON object holding the request"
        if problem is not None:
            return BatchItem(id=item_id, error=RequestValidationError(problem))
        assert isinstance(body, Mapping)
        fields: Mapping[str, Any] = body
    else:
        item_id = _as_id(record.get("id")) or fallback_id
        fields = {key: value for key, value in record.items() if key != "id"}
    try:
        return BatchItem(request=_request_from_mapping(fields), id=item_id)
    except RequestValidationError as exc:
        return BatchItem(id=item_id, error=exc)


def parse_batch_line(line: bytes | str, line_number: int) -> BatchItem:
    """One line of a JSONL input file (1-based ``line_number``) as a :class:`BatchItem`.

    A line without an id gets ``line-<number>``. A malformed line (not JSON, not an object, not
    a valid request) gives an item with ``error`` set, never an exception. The message does not
    repeat the line number, so that a result is the same whichever way its input was read
    (the command line names the line on stderr).
    """
    fallback_id = f"line-{line_number}"
    try:
        record = msgspec.json.decode(line)
    # msgspec reports invalid UTF-8 inside a JSON string as a bare UnicodeDecodeError.
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return BatchItem(id=fallback_id, error=RequestValidationError(f"not JSON: {exc}"))
    if not isinstance(record, dict):
        return BatchItem(
            id=fallback_id,
            error=RequestValidationError(f"expected a JSON object, got {type(record).__name__}"),
        )
    return item_from_record(record, fallback_id=fallback_id)


_ERROR_CODES: Final[tuple[tuple[type[AsyncClientError], str], ...]] = (
    (RequestValidationError, "invalid_request"),
    (APITimeoutError, "timeout"),
    (IncompleteStreamError, "incomplete_stream"),
    (APIConnectionError, "connection_error"),
    (ServerStreamError, "server_stream_error"),
    (ResponseDecodeError, "invalid_response"),
    (StreamError, "stream_error"),
)


def error_code(error: AsyncClientError) -> str:
    """A short snake_case code for an error that has no HTTP status."""
    for error_type, code in _ERROR_CODES:
        if isinstance(error, error_type):
            return code
    return "error"


def _error_body(error: APIStatusError) -> Any:
    try:
        return msgspec.json.decode(error.body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return {"error": {"message": error.body_text or error.message}}


def batch_output_record(result: BatchResult) -> dict[str, Any]:
    """The result as one OpenAI Batch API output line (decoded): ``id``, ``custom_id``,
    ``response`` (``status_code``, ``request_id``, ``body``) and ``error``.

    As in OpenAI's files, an HTTP error fills ``response`` with its status and error body and
    leaves ``error`` null, while a failure without a response (connection, timeout, invalid
    input, undecodable body) leaves ``response`` null and sets ``error`` to ``code`` and
    ``message``. ``request_id`` is null when the server sent none.
    """
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    if result.response is not None:
        response = {
            "status_code": 200,
            "request_id": result.request_id,
            "body": msgspec.to_builtins(result.response),
        }
    elif isinstance(result.error, APIStatusError):
        response = {
            "status_code": result.error.status_code,
            "request_id": result.error.request_id,
            "body": _error_body(result.error),
        }
    elif result.error is not None:
        error = {"code": error_code(result.error), "message": result.error.message}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": result.id,
        "response": response,
        "error": error,
    }
