import asyncio
import calendar
import logging
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from asyncclient._retry import (
    DEFAULT_RETRY_STATUSES,
    NO_RETRIES,
    AttemptLog,
    AttemptRecord,
    RetryPolicy,
    backoff_wait,
    decide,
    parse_retry_after,
    run_with_retries,
    should_retry_header,
)

NO_JITTER = RetryPolicy(jitter="none")

# 1994-11-06 08:49:00 UTC, 37 seconds before the date in RFC 9110's examples.
BEFORE_RFC_EXAMPLE = float(calendar.timegm((1994, 11, 6, 8, 49, 0, 0, 0, 0)))


class RandomStub:
    """A ``random`` that always draws the same number and counts the draws."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.value


def constant(value: float) -> RandomStub:
    return RandomStub(value)


# --- the policy ------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.budget == 60.0
    assert (policy.initial_wait, policy.max_wait, policy.multiplier) == (0.5, 8.0, 2.0)
    assert policy.jitter == "full"
    assert policy.retry_statuses == frozenset({408, 409, 429, 500, 502, 503, 504})
    assert policy.retry_statuses is DEFAULT_RETRY_STATUSES
    assert policy.max_retry_after == 60.0
    assert policy.respect_retry_after is True


def test_policy_is_frozen_and_hashable() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 5  # type: ignore[misc]
    assert hash(policy) == hash(RetryPolicy())


def test_disabled_policy_makes_one_attempt() -> None:
    assert RetryPolicy.disabled() is NO_RETRIES
    assert NO_RETRIES.max_attempts == 1
    decision = decide(NO_RETRIES, attempt=1, status=503, headers=None, elapsed=0.0)
    assert not decision.retry
    assert "disabled" in decision.reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"budget": -1.0},
        {"budget": float("nan")},
        {"initial_wait": -0.1},
        {"max_wait": float("inf")},
        {"max_retry_after": float("nan")},
        {"multiplier": 0.5},
        {"jitter": "equal"},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_without_jitter_follows_the_formula() -> None:
    waits = [backoff_wait(NO_JITTER, n) for n in range(7)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_respects_max_wait_and_survives_huge_exponents() -> None:
    policy = RetryPolicy(jitter="none", initial_wait=1.0, multiplier=3.0, max_wait=5.0)
    assert [backoff_wait(policy, n) for n in range(3)] == [1.0, 3.0, 5.0]
    assert backoff_wait(policy, 10_000) == 5.0


def test_backoff_without_jitter_does_not_draw_random_numbers() -> None:
    stub = constant(0.5)
    backoff_wait(NO_JITTER, 2, random=stub)
    assert stub.calls == 0


@pytest.mark.parametrize(("draw", "expected"), [(0.0, 0.0), (0.25, 0.5), (0.5, 1.0)])
def test_full_jitter_scales_the_ceiling(draw: float, expected: float) -> None:
    # n=2: the ceiling is min(8, 0.5 * 2**2) = 2.
    assert backoff_wait(RetryPolicy(), 2, random=constant(draw)) == expected


def test_full_jitter_stays_below_the_ceiling() -> None:
    almost_one = 0.9999999999
    assert 0.0 <= backoff_wait(RetryPolicy(), 2, random=constant(almost_one)) < 2.0
    assert backoff_wait(RetryPolicy(), 50, random=constant(almost_one)) < 8.0


def test_backoff_rejects_negative_index() -> None:
    with pytest.raises(ValueError, match="retry_index"):
        backoff_wait(NO_JITTER, -1)


@given(
    initial=st.floats(0.0, 10.0),
    multiplier=st.floats(1.0, 10.0),
    max_wait=st.floats(0.0, 100.0),
    retry_index=st.integers(0, 2000),
    draw=st.floats(0.0, 1.0, exclude_max=True),
)
def test_jittered_wait_is_within_bounds(
    initial: float, multiplier: float, max_wait: float, retry_index: int, draw: float
) -> None:
    policy = RetryPolicy(initial_wait=initial, multiplier=multiplier, max_wait=max_wait)
    wait = backoff_wait(policy, retry_index, random=lambda: draw)
    try:
        ceiling = min(max_wait, initial * multiplier**retry_index)
    except OverflowError:
        ceiling = max_wait
    assert 0.0 <= wait <= ceiling


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2", 2.0), ("0", 0.0), ("120", 120.0), ("1.5", 1.5), (" 3 ", 3.0), (".5", 0.5)],
)
def test_retry_after_delta_seconds(value: str, expected: float) -> None:
    assert parse_retry_after({"Retry-After": value}, now=0.0) == expected


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # ANSI C asctime(), no zone: UTC
    ],
)
def test_retry_after_http_date_in_all_three_forms(value: str) -> None:
    assert parse_retry_after({"Retry-After": value}, now=BEFORE_RFC_EXAMPLE) == 37.0


def test_retry_after_date_in_the_past_is_zero() -> None:
    later = BEFORE_RFC_EXAMPLE + 3600
    assert parse_retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, now=later) == 0.0


@pytest.mark.parametrize(
    "value", ["", "soon", "-1", "-0.5", "nan", "inf", "1e3", "1_000", "0x10", "Sun, 99 Foo"]
)
def test_invalid_retry_after_is_absent(value: str) -> None:
    assert parse_retry_after({"Retry-After": value}, now=BEFORE_RFC_EXAMPLE) is None


def test_no_retry_after_header() -> None:
    assert parse_retry_after({}, now=0.0) is None
    assert parse_retry_after({"Content-Type": "application/json"}, now=0.0) is None


def test_retry_after_ms_takes_precedence() -> None:
    headers = {"Retry-After": "10", "retry-after-ms": "250"}
    assert parse_retry_after(headers, now=0.0) == 0.25
    assert parse_retry_after({"retry-after-ms": "1.5"}, now=0.0) == 0.0015


@pytest.mark.parametrize("bad_ms", ["-5", "abc", "inf", ""])
def test_invalid_retry_after_ms_falls_back_to_retry_after(bad_ms: str) -> None:
    assert parse_retry_after({"retry-after-ms": bad_ms, "Retry-After": "4"}, now=0.0) == 4.0
    assert parse_retry_after({"retry-after-ms": bad_ms}, now=0.0) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"RETRY-AFTER": "7"},
        {"retry-after": "7"},
        {"Retry-after": "7"},
        {"Retry-After-Ms": "7000"},
        {"RETRY-AFTER-MS": "7000", "Retry-After": "1"},
        CIMultiDict({"Retry-After": "7"}),
    ],
)
def test_retry_after_lookup_ignores_case(headers: Mapping[str, str]) -> None:
    assert parse_retry_after(headers, now=0.0) == 7.0


# --- x-should-retry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-should-retry": "true"}, True),
        ({"X-Should-Retry": "TRUE"}, True),
        ({"x-should-retry": " false "}, False),
        ({"X-SHOULD-RETRY": "False"}, False),
        ({"x-should-retry": "maybe"}, None),
        ({"x-should-retry": "1"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_should_retry_header(headers: dict[str, str] | None, expected: bool | None) -> None:
    assert should_retry_header(headers) is expected


# --- decide ----------------------------------------------------------------------------------


def test_retry_after_sets_the_wait() -> None:
    decision = decide(
        RetryPolicy(), attempt=1, status=429, headers={"Retry-After": "2"}, elapsed=0.0
    )
    assert decision.retry
    assert decision.wait == 2.0
    assert decision.requested_wait == 2.0
    assert decision.reason == "429 with Retry-After 2s"


def test_retry_after_http_date_uses_now() -> None:
    decision = decide(
        RetryPolicy(),
        attempt=1,
        status=503,
        headers={"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"},
        elapsed=0.0,
        now=BEFORE_RFC_EXAMPLE,
    )
    assert (decision.retry, decision.wait) == (True, 37.0)


def test_server_asking_for_too_long_a_wait_gets_the_error_at_once() -> None:
    decision = decide(
        RetryPolicy(), attempt=1, status=429, headers={"Retry-After": "3600"}, elapsed=0.0
    )
    assert not decision.retry
    assert decision.wait == 0.0
    assert decision.requested_wait == 3600.0
    assert "3600s" in decision.reason
    assert "max_retry_after 60s" in decision.reason


def test_retry_after_at_the_cap_is_honoured() -> None:
    policy = RetryPolicy(max_retry_after=5.0, budget=None)
    decision = decide(policy, attempt=1, status=429, headers={"Retry-After": "5"}, elapsed=0.0)
    assert (decision.retry, decision.wait) == (True, 5.0)


def test_retry_after_ignored_when_not_respected() -> None:
    policy = RetryPolicy(respect_retry_after=False, jitter="none")
    decision = decide(policy, attempt=2, status=429, headers={"Retry-After": "3600"}, elapsed=0.0)
    assert decision.retry
    assert decision.wait == 1.0
    assert decision.requested_wait == 3600.0
    assert decision.reason == "429, backoff 1s"


def test_backoff_when_no_retry_after() -> None:
    decision = decide(
        RetryPolicy(), attempt=2, status=503, headers={}, elapsed=0.0, random=constant(0.5)
    )
    assert decision.retry
    assert decision.wait == 0.5  # half of min(8, 0.5 * 2**1)
    assert decision.requested_wait is None
    assert decision.reason == "503, backoff 0.5s"


def test_x_should_retry_true_overrides_a_non_retryable_status() -> None:
    decision = decide(
        NO_JITTER, attempt=1, status=400, headers={"x-should-retry": "true"}, elapsed=0.0
    )
    assert decision.retry
    assert decision.wait == 0.5
    assert "x-should-retry: true" in decision.reason


def test_x_should_retry_false_overrides_a_retryable_status() -> None:
    decision = decide(
        NO_JITTER,
        attempt=1,
        status=503,
        headers={"X-Should-Retry": "false", "Retry-After": "1"},
        elapsed=0.0,
    )
    assert not decision.retry
    assert "x-should-retry: false" in decision.reason
    assert decision.requested_wait == 1.0


def test_x_should_retry_does_not_lift_max_attempts() -> None:
    decision = decide(
        NO_JITTER, attempt=3, status=400, headers={"x-should-retry": "true"}, elapsed=0.0
    )
    assert not decision.retry


@pytest.mark.parametrize("status", [408, 409, 429, 500, 501, 502, 503, 504, 520, 599])
def test_retryable_statuses(status: int) -> None:
    assert decide(NO_JITTER, attempt=1, status=status, headers=None, elapsed=0.0).retry


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_non_retryable_statuses(status: int) -> None:
    decision = decide(NO_JITTER, attempt=1, status=status, headers=None, elapsed=0.0)
    assert not decision.retry
    assert decision.reason == f"{status} is not retryable"


def test_custom_retry_statuses() -> None:
    policy = RetryPolicy(retry_statuses=frozenset({418}), jitter="none")
    assert decide(policy, attempt=1, status=418, headers=None, elapsed=0.0).retry
    assert not decide(policy, attempt=1, status=429, headers=None, elapsed=0.0).retry
    # Every 5xx stays retryable whatever the list says.
    assert decide(policy, attempt=1, status=503, headers=None, elapsed=0.0).retry


def test_connection_error_is_retryable() -> None:
    decision = decide(NO_JITTER, attempt=1, status=None, headers=None, elapsed=0.0)
    assert decision.retry
    assert decision.wait == 0.5
    assert decision.reason.startswith("connection error")


def test_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, jitter="none")
    assert decide(policy, attempt=1, status=503, headers=None, elapsed=0.0).retry
    assert decide(policy, attempt=2, status=503, headers=None, elapsed=0.0).retry
    last = decide(policy, attempt=3, status=503, headers=None, elapsed=0.0)
    assert not last.retry
    assert "3 attempts" in last.reason


def test_budget_exhausted() -> None:
    policy = RetryPolicy(budget=10.0, jitter="none")
    assert decide(policy, attempt=1, status=503, headers=None, elapsed=9.5).retry  # 9.5 + 0.5
    decision = decide(policy, attempt=1, status=503, headers=None, elapsed=9.6)
    assert not decision.retry
    assert decision.reason.startswith("budget exhausted")


def test_budget_counts_the_server_requested_wait() -> None:
    decision = decide(
        RetryPolicy(budget=10.0), attempt=1, status=429, headers={"Retry-After": "5"}, elapsed=6.0
    )
    assert not decision.retry
    assert decision.reason.startswith("budget exhausted")
    assert decision.requested_wait == 5.0


def test_no_budget() -> None:
    policy = RetryPolicy(budget=None, jitter="none")
    assert decide(policy, attempt=1, status=503, headers=None, elapsed=1e9).retry


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        decide(NO_JITTER, attempt=0, status=503, headers=None, elapsed=0.0)


# --- run_with_retries ------------------------------------------------------------------------


class FakeTime:
    """A monotonic clock that only moves when the fake sleep (or a test) moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class StatusFailure(Exception):
    def __init__(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers or {}


class ConnectionFailure(Exception):
    pass


def classify(error: BaseException) -> tuple[int | None, Mapping[str, str] | None] | None:
    if isinstance(error, StatusFailure):
        return error.status, error.headers
    if isinstance(error, ConnectionFailure):
        return None, None
    return None


class Script:
    """An attempt function that plays a list of outcomes: an exception to raise, or a value."""

    def __init__(self, *outcomes: BaseException | str) -> None:
        self.outcomes = list(outcomes)
        self.attempts: list[int] = []

    async def __call__(self, attempt: int) -> str:
        self.attempts.append(attempt)
        outcome = self.outcomes[len(self.attempts) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def test_503_then_success() -> None:
    fake = FakeTime()
    script = Script(StatusFailure(503), "done")
    log = AttemptLog()
    result = await run_with_retries(
        NO_JITTER, script, classify, clock=fake.clock, sleep=fake.sleep, log=log
    )
    assert result == "done"
    assert script.attempts == [1, 2]
    assert fake.sleeps == [0.5]
    assert log.attempts == 2
    assert log.waits == (0.5,)
    assert log.total_wait == 0.5
    assert log.failures == [AttemptRecord(1, 503, 0.5)]
    assert log.give_up_reason is None


async def test_a_first_attempt_made_by_the_caller_continues_in_the_loop() -> None:
    # The client makes attempt 1 itself and hands its failure over; the loop goes on from
    # attempt 2, with the budget counted from the caller's start.
    fake = FakeTime()
    script = Script("done")
    log = AttemptLog()
    result = await run_with_retries(
        NO_JITTER,
        lambda attempt: script(attempt - 1),
        classify,
        clock=fake.clock,
        sleep=fake.sleep,
        log=log,
        first_failure=StatusFailure(503),
        started=fake.now,
    )
    assert result == "done"
    assert script.attempts == [1]  # called once, for attempt 2
    assert log.attempts == 2
    assert log.failures == [AttemptRecord(1, 503, 0.5)]


async def test_a_first_failure_past_the_budget_is_raised_with_the_log() -> None:
    fake = FakeTime()
    script = Script("never")
    failure = StatusFailure(503)
    with pytest.raises(StatusFailure) as caught:
        await run_with_retries(
            RetryPolicy(budget=10.0),
            script,
            classify,
            clock=fake.clock,
            sleep=fake.sleep,
            first_failure=failure,
            started=fake.now - 60.0,
        )
    assert caught.value is failure
    assert script.attempts == []
    assert caught.value.attempt_log.attempts == 1  # type: ignore[attr-defined]


async def test_retry_after_is_slept() -> None:
    fake = FakeTime()
    script = Script(StatusFailure(429, {"Retry-After": "2"}), "done")
    assert (
        await run_with_retries(RetryPolicy(), script, classify, clock=fake.clock, sleep=fake.sleep)
        == "done"
    )
    assert fake.sleeps == [2.0]


async def test_connection_errors_are_retried() -> None:
    fake = FakeTime()
    script = Script(ConnectionFailure("reset"), ConnectionFailure("refused"), "done")
    log = AttemptLog()
    result = await run_with_retries(
        NO_JITTER, script, classify, clock=fake.clock, sleep=fake.sleep, log=log
    )
    assert result == "done"
    assert fake.sleeps == [0.5, 1.0]
    assert [record.outcome for record in log.failures] == ["ConnectionFailure"] * 2


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    fake = FakeTime()
    errors = [StatusFailure(500) for _ in range(3)]
    script = Script(*errors)
    with pytest.raises(StatusFailure) as caught:
        await run_with_retries(NO_JITTER, script, classify, clock=fake.clock, sleep=fake.sleep)
    assert caught.value is errors[-1]
    assert script.attempts == [1, 2, 3]
    assert fake.sleeps == [0.5, 1.0]
    log = caught.value.attempt_log  # type: ignore[attr-defined]
    assert isinstance(log, AttemptLog)
    assert log.attempts == 3
    assert log.waits == (0.5, 1.0)
    assert log.failures[-1] == AttemptRecord(3, 500, None)
    assert log.give_up_reason is not None
    assert "3 attempts" in log.give_up_reason
    # Each error stands alone: not chained to the previous attempt's.
    assert caught.value.__context__ is None


async def test_gives_up_when_the_budget_runs_out() -> None:
    fake = FakeTime()

    async def slow_failure(attempt: int) -> str:
        fake.now += 30.0
        raise StatusFailure(503)

    policy = RetryPolicy(max_attempts=10, budget=60.0, jitter="none")
    with pytest.raises(StatusFailure) as caught:
        await run_with_retries(policy, slow_failure, classify, clock=fake.clock, sleep=fake.sleep)
    # 30 s + 0.5 s wait + 30 s > 60 s: the second failure is the last.
    assert fake.sleeps == [0.5]
    log = caught.value.attempt_log  # type: ignore[attr-defined]
    assert log.attempts == 2
    assert log.give_up_reason.startswith("budget exhausted")


async def test_server_asking_for_too_long_raises_at_once() -> None:
    fake = FakeTime()
    script = Script(StatusFailure(429, {"Retry-After": "3600"}), "never")
    with pytest.raises(StatusFailure) as caught:
        await run_with_retries(RetryPolicy(), script, classify, clock=fake.clock, sleep=fake.sleep)
    assert script.attempts == [1]
    assert fake.sleeps == []
    assert "3600s" in caught.value.attempt_log.give_up_reason  # type: ignore[attr-defined]


async def test_non_retryable_error_propagates_immediately() -> None:
    fake = FakeTime()
    script = Script(KeyError("boom"), "never")
    with pytest.raises(KeyError) as caught:
        await run_with_retries(NO_JITTER, script, classify, clock=fake.clock, sleep=fake.sleep)
    assert script.attempts == [1]
    assert fake.sleeps == []
    assert caught.value.attempt_log.failures == [  # type: ignore[attr-defined]
        AttemptRecord(1, "KeyError", None)
    ]


async def test_non_retryable_status_propagates_immediately() -> None:
    fake = FakeTime()
    script = Script(StatusFailure(400), "never")
    with pytest.raises(StatusFailure):
        await run_with_retries(NO_JITTER, script, classify, clock=fake.clock, sleep=fake.sleep)
    assert script.attempts == [1]
    assert fake.sleeps == []


async def test_cancellation_is_never_retried() -> None:
    fake = FakeTime()
    script = Script(asyncio.CancelledError(), "never")
    classified: list[BaseException] = []

    def recording_classify(
        error: BaseException,
    ) -> tuple[int | None, Mapping[str, str] | None] | None:
        classified.append(error)
        return None, None  # would retry anything it were asked about

    with pytest.raises(asyncio.CancelledError):
        await run_with_retries(
            NO_JITTER, script, recording_classify, clock=fake.clock, sleep=fake.sleep
        )
    assert script.attempts == [1]
    assert classified == []
    assert fake.sleeps == []


async def test_cancellation_during_the_wait_propagates() -> None:
    fake = FakeTime()
    script = Script(StatusFailure(503), "never")

    async def cancelled_sleep(seconds: float) -> None:
        fake.sleeps.append(seconds)
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run_with_retries(NO_JITTER, script, classify, clock=fake.clock, sleep=cancelled_sleep)
    assert script.attempts == [1]
    assert fake.sleeps == [0.5]


async def test_real_task_cancellation_reaches_the_caller() -> None:
    started = asyncio.Event()

    async def hang(attempt: int) -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(run_with_retries(RetryPolicy(), hang, classify))
    await asyncio.wait_for(started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


async def test_default_sleep_is_asyncio_sleep() -> None:
    script = Script(StatusFailure(503), "done")
    policy = RetryPolicy(initial_wait=0.0, jitter="none")
    assert await run_with_retries(policy, script, classify) == "done"


async def test_retries_are_logged_at_debug_without_headers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTime()
    secret_headers = {"Authorization": "Bearer sk-secret", "x-api-key": "sk-other"}
    script = Script(StatusFailure(503, secret_headers), StatusFailure(502, secret_headers))
    policy = RetryPolicy(max_attempts=2, jitter="none")
    with caplog.at_level(logging.DEBUG, logger="asyncclient"), pytest.raises(StatusFailure):
        await run_with_retries(policy, script, classify, clock=fake.clock, sleep=fake.sleep)
    records = [record for record in caplog.records if record.name == "asyncclient"]
    assert len(records) == 2
    assert all(record.levelno == logging.DEBUG for record in records)
    retry_message = records[0].getMessage()
    assert "attempt 1" in retry_message
    assert "503, backoff 0.5s" in retry_message
    assert "0.500s" in retry_message
    assert "giving up after attempt 2" in records[1].getMessage()
    assert "Authorization" not in caplog.text
    assert "sk-secret" not in caplog.text
    assert "sk-other" not in caplog.text


async def test_custom_logger() -> None:
    fake = FakeTime()
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("asyncclient.tests.retry")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Collect()
    logger.addHandler(handler)
    try:
        await run_with_retries(
            NO_JITTER,
            Script(StatusFailure(503), "done"),
            classify,
            clock=fake.clock,
            sleep=fake.sleep,
            logger=logger,
        )
    finally:
        logger.removeHandler(handler)
    assert len(messages) == 1
    assert messages[0].startswith("attempt 1 failed")


async def test_wall_clock_reads_http_dates() -> None:
    fake = FakeTime()
    script = Script(StatusFailure(503, {"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}), "ok")
    await run_with_retries(
        RetryPolicy(),
        script,
        classify,
        clock=fake.clock,
        sleep=fake.sleep,
        wall_clock=lambda: BEFORE_RFC_EXAMPLE,
    )
    assert fake.sleeps == [37.0]
