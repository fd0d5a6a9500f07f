"""Client-side retries: the policy as data, and pure functions that decide what to do.

Nothing here performs I/O. :func:`decide` turns "attempt *n* failed with this status and these
headers, this long after the first attempt started" into a :class:`RetryDecision`, and
:func:`run_with_retries` drives an attempt function with an injected clock and sleep, so tests
never really wait.

These retries are the client's own. They are independent of the gateway-side ``orq.retry``
policy that a request can ask the Orq gateway to apply upstream (spec section 5).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final, Literal, NamedTuple, TypeAlias, TypeVar

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "NO_RETRIES",
    "AttemptLog",
    "AttemptRecord",
    "Classifier",
    "Clock",
    "RetryDecision",
    "RetryPolicy",
    "Sleep",
    "backoff_wait",
    "decide",
    "parse_retry_after",
    "run_with_retries",
    "should_retry_header",
]

T = TypeVar("T")

Clock: TypeAlias = Callable[[], float]
"""Returns the current time in seconds (``time.monotonic`` for durations)."""

Sleep: TypeAlias = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds (``asyncio.sleep``)."""

Classifier: TypeAlias = Callable[
    [BaseException], tuple[int | None, Mapping[str, str] | None] | None
]
"""Maps a failed attempt's exception to ``(status, headers)`` when it may be retried.

``status`` is ``None`` for a connection error before any response byte. Returning ``None``
means the exception must propagate at once.
"""

DEFAULT_RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504})

_logger: Final = logging.getLogger("asyncclient")

# Attribute under which the given-up exception carries its AttemptLog.
_ATTEMPT_LOG_ATTRIBUTE: Final = "attempt_log"

# RFC 9110 delta-seconds is a non-negative integer; servers also send fractions ("1.5").
# Stricter than float(), which would accept "nan", "inf", "1_0" and "-1".
_NON_NEGATIVE_NUMBER: Final = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the client retries a failed request.

    - ``max_attempts``: total attempts, the first one included; ``1`` means no retries.
    - ``budget``: seconds from the start of the first attempt, waits included, after which no
      new attempt starts; ``None`` for no limit.
    - ``initial_wait``, ``max_wait``, ``multiplier``, ``jitter``: the exponential backoff.
      The wait after the *n*-th retry-triggering failure (``n`` counting from 0) is::

          wait_n = min(max_wait, initial_wait * multiplier**n)

      With ``jitter="full"`` the actual wait is drawn uniformly from ``[0, wait_n)``
      ("full jitter", spreading out clients that failed together); with ``"none"`` it is
      ``wait_n`` exactly.
    - ``retry_statuses``: HTTP statuses worth another attempt. Any 5xx status is retried as
      well, listed or not: a server error is presumed transient.
    - ``respect_retry_after``: use the server's ``retry-after-ms`` / ``Retry-After`` delay in
      place of the backoff.
    - ``max_retry_after``: the longest server-requested delay the client will wait. When the
      server asks for more, the client does not wait at all: the caller gets the error at
      once, and the requested delay is on :attr:`RetryDecision.requested_wait`.

    An ``x-should-retry: true`` / ``false`` response header overrides the status rule.
    Connection errors before any response byte are always retryable.
    """

    max_attempts: int = 3
    budget: float | None = 60.0
    initial_wait: float = 0.5
    max_wait: float = 8.0
    multiplier: float = 2.0
    jitter: Literal["full", "none"] = "full"
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    max_retry_after: float = 60.0
    respect_retry_after: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.budget is not None and not self.budget >= 0:
            raise ValueError(f"budget must be >= 0 or None, got {self.budget}")
        for name in ("initial_wait", "max_wait", "max_retry_after"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not (self.multiplier >= 1 and math.isfinite(self.multiplier)):
            raise ValueError(f"multiplier must be a finite number >= 1, got {self.multiplier}")
        if self.jitter not in ("full", "none"):
            raise ValueError(f'jitter must be "full" or "none", got {self.jitter!r}')

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that never retries: a single attempt."""
        return NO_RETRIES


NO_RETRIES: Final = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt.

    ``wait`` is the number of seconds to sleep before the next attempt (``0.0`` when
    ``retry`` is false). ``reason`` is for humans and logs. ``requested_wait`` is the delay the
    server asked for (``retry-after-ms`` / ``Retry-After``), in seconds, when it sent one,
    whether or not the client honoured it.
    """

    retry: bool
    wait: float
    reason: str
    requested_wait: float | None = None


class AttemptRecord(NamedTuple):
    """One failed attempt."""

    attempt: int
    """1-based attempt number."""
    outcome: int | str
    """The HTTP status, or the exception's class name when there was no response."""
    wait: float | None
    """Seconds waited before the next attempt; ``None`` when no attempt followed."""


@dataclass(slots=True)
class AttemptLog:
    """What happened across the attempts of one call, for results' metadata and errors."""

    attempts: int = 0
    """Attempts started, the successful one included."""
    failures: list[AttemptRecord] = field(default_factory=list)
    give_up_reason: str | None = None
    """Why no further attempt was made, when the call failed."""

    @property
    def waits(self) -> tuple[float, ...]:
        """The waits between attempts, in order."""
        return tuple(record.wait for record in self.failures if record.wait is not None)

    @property
    def total_wait(self) -> float:
        return math.fsum(self.waits)


def backoff_wait(
    policy: RetryPolicy, retry_index: int, *, random: Callable[[], float] = random.random
) -> float:
    """The backoff before retry number ``retry_index`` (0 for the first retry).

    ``random`` returns a float in ``[0, 1)``; it is only called for full jitter.
    """
    if retry_index < 0:
        raise ValueError(f"retry_index must be >= 0, got {retry_index}")
    try:
        ceiling = min(policy.max_wait, policy.initial_wait * policy.multiplier**retry_index)
    except OverflowError:
        # multiplier**n outgrew a float long after the cap was reached.
        ceiling = policy.max_wait
    if policy.jitter == "none":
        return ceiling
    return random() * ceiling


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` ignoring case, for plain dicts as well as multidicts.

    ``name`` must be lower-case.
    """
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def _non_negative_number(text: str) -> float | None:
    text = text.strip()
    if _NON_NEGATIVE_NUMBER.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """The delay the server asked for, in seconds, or ``None`` without a valid one.

    ``retry-after-ms`` (milliseconds, possibly fractional; an OpenAI-compatible extension)
    wins over ``Retry-After``. ``Retry-After`` is either delta-seconds (an integer, or a
    fraction as some servers send) or an HTTP-date in any of the three RFC 9110 forms
    (IMF-fixdate, obsolete RFC 850, asctime); a date is converted to seconds from ``now``
    (a POSIX timestamp, as from ``time.time()``) and clamped at 0. Header names are matched
    without regard to case. Invalid and negative values count as absent.
    """
    milliseconds_text = _header(headers, "retry-after-ms")
    if milliseconds_text is not None:
        milliseconds = _non_negative_number(milliseconds_text)
        if milliseconds is not None:
            return milliseconds / 1000.0
    text = _header(headers, "retry-after")
    if text is None:
        return None
    seconds = _non_negative_number(text)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if moment.tzinfo is None:
        # asctime dates carry no zone; RFC 9110 says HTTP-dates are UTC.
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def should_retry_header(headers: Mapping[str, str] | None) -> bool | None:
    """The server's ``x-should-retry: true`` / ``false`` verdict, or ``None`` without one."""
    if headers is None:
        return None
    value = _header(headers, "x-should-retry")
    if value is None:
        return None
    verdict = value.strip().lower()
    if verdict == "true":
        return True
    if verdict == "false":
        return False
    return None


def _seconds(value: float) -> str:
    """``2`` for 2.0, ``0.25`` for 0.25: short enough for a log line."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def decide(
    policy: RetryPolicy,
    *,
    attempt: int,
    status: int | None,
    headers: Mapping[str, str] | None,
    elapsed: float,
    random: Callable[[], float] = random.random,
    now: float | None = None,
) -> RetryDecision:
    """Whether to make another attempt after attempt number ``attempt`` (1-based) failed.

    ``status`` is ``None`` for a connection error before any response byte; ``elapsed`` is
    the time since the first attempt started; ``now`` is the wall-clock time used to read an
    HTTP-date ``Retry-After`` (default ``time.time()``).

    The rules, in order: no retry once ``max_attempts`` attempts were made; an
    ``x-should-retry`` header overrides the status rule; connection errors, statuses in
    ``retry_statuses`` and every 5xx are retryable, the rest are not; the wait is the server's
    delay when it sent one and the policy respects it (no retry at all when that delay exceeds
    ``max_retry_after``), the jittered backoff otherwise; no retry when the wait would end
    past the budget.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    requested: float | None = None
    if headers is not None:
        requested = parse_retry_after(headers, now=time.time() if now is None else now)
    described = "connection error" if status is None else str(status)

    if attempt >= policy.max_attempts:
        if policy.max_attempts == 1:
            reason = f"{described}, retries are disabled"
        else:
            reason = f"{described}, all {policy.max_attempts} attempts made"
        return RetryDecision(False, 0.0, reason, requested)

    verdict = should_retry_header(headers)
    if verdict is not None:
        retryable = verdict
        described = f"{described} with x-should-retry: {'true' if verdict else 'false'}"
    else:
        retryable = status is None or status >= 500 or status in policy.retry_statuses
    if not retryable:
        return RetryDecision(False, 0.0, f"{described} is not retryable", requested)

    if policy.respect_retry_after and requested is not None:
        if requested > policy.max_retry_after:
            reason = (
                f"server asked to wait {_seconds(requested)}s, "
                f"more than max_retry_after {_seconds(policy.max_retry_after)}s"
            )
            return RetryDecision(False, 0.0, reason, requested)
        wait = requested
        reason = f"{described} with Retry-After {_seconds(requested)}s"
    else:
        wait = backoff_wait(policy, attempt - 1, random=random)
        reason = f"{described}, backoff {_seconds(wait)}s"

    if policy.budget is not None and elapsed + wait > policy.budget:
        reason = (
            f"budget exhausted: {described} after {_seconds(elapsed)}s, a "
            f"{_seconds(wait)}s wait would pass the {_seconds(policy.budget)}s budget"
        )
        return RetryDecision(False, 0.0, reason, requested)
    return RetryDecision(True, wait, reason, requested)


def _attach_log(error: BaseException, log: AttemptLog) -> None:
    # An exception type with __slots__ may have no room for it; the error matters more.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _ATTEMPT_LOG_ATTRIBUTE, log)


async def run_with_retries(
    policy: RetryPolicy,
    attempt_fn: Callable[[int], Awaitable[T]],
    classify: Classifier,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep | None = None,
    random: Callable[[], float] = random.random,
    wall_clock: Clock = time.time,
    log: AttemptLog | None = None,
    logger: logging.Logger = _logger,
    first_failure: Exception | None = None,
    started: float | None = None,
) -> T:
    """Call ``attempt_fn(attempt_number)`` until it succeeds or :func:`decide` says stop.

    When an attempt raises an :class:`Exception`, ``classify`` says whether it is a retryable
    kind (``(status, headers)``) or must propagate at once (``None``). When the client gives
    up, the last exception is re-raised with the :class:`AttemptLog` attached as
    ``attempt_log`` (when the exception accepts attributes). ``BaseException``\\ s that are
    not ``Exception``\\ s, ``asyncio.CancelledError`` above all, are never retried nor
    swallowed, whether raised by an attempt or by ``sleep``.

    ``clock`` measures the budget (monotonic); ``wall_clock`` reads HTTP-date
    ``Retry-After`` values; ``sleep`` defaults to ``asyncio.sleep``. Pass ``log`` to read the
    attempts and waits after a success. A caller that made the first attempt itself (the
    cheap path when it succeeds) passes its error as ``first_failure`` and its start time on
    ``clock`` as ``started``: the loop then continues from that failure. Each retry is
    logged at DEBUG with the attempt number, the reason and the wait; headers are never
    logged (they may hold credentials).
    """
    if sleep is None:
        # Imported here so that the rest of this module stays free of any event loop.
        import asyncio

        sleep = asyncio.sleep
    attempts = AttemptLog() if log is None else log
    if started is None:
        started = clock()
    attempt = 1
    while True:
        attempts.attempts = attempt
        try:
            if first_failure is not None:
                raise first_failure
            return await attempt_fn(attempt)
        except Exception as error:
            first_failure = None  # not kept alive through the wait below
            classified = classify(error)
            if classified is None:
                attempts.failures.append(AttemptRecord(attempt, type(error).__name__, None))
                attempts.give_up_reason = f"{type(error).__name__} is not retryable"
                _attach_log(error, attempts)
                raise
            status, headers = classified
            decision = decide(
                policy,
                attempt=attempt,
                status=status,
                headers=headers,
                elapsed=clock() - started,
                random=random,
                now=wall_clock(),
            )
            outcome: int | str = type(error).__name__ if status is None else status
            if not decision.retry:
                attempts.failures.append(AttemptRecord(attempt, outcome, None))
                attempts.give_up_reason = decision.reason
                logger.debug("giving up after attempt %d: %s", attempt, decision.reason)
                _attach_log(error, attempts)
                raise
            attempts.failures.append(AttemptRecord(attempt, outcome, decision.wait))
            logger.debug(
                "attempt %d failed: %s; retrying in %.3fs", attempt, decision.reason, decision.wait
            )
        # Sleeping outside the except block keeps the next attempt's error from being chained
        # to this one as __context__.
        await sleep(decision.wait)
        attempt += 1
