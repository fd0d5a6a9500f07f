"""The batch runner: ordering, bounded memory, per-item errors, retries, rate limits, adaptive
back-off, streaming items, cancellation; and the OpenAI Batch line formats.

Real-HTTP tests run against the gateway emulator on loopback. Tests about time use a fake clock
whose ``sleep`` only advances the clock, so nothing really waits and nothing depends on the
machine's speed.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from asyncclient import (
    AsyncClient,
    BadRequestError,
    BatchInput,
    BatchItem,
    BatchJob,
    BatchLimiter,
    BatchResult,
    Completion,
    CompletionChoice,
    CompletionRequest,
    CompletionUsage,
    InternalServerError,
    RateLimitError,
    RequestValidationError,
)
from asyncclient._batch import (
    batch_output_record,
    estimate_tokens,
    item_from_record,
    parse_batch_line,
)
from asyncclient._exceptions import APIConnectionError, APITimeoutError, ConnectTimeoutError
from asyncclient.testing import Fault, GatewayEmulator

MODEL = "openai/gpt-3.5-turbo-instruct"


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


def completion_for(request: CompletionRequest, total_tokens: int = 10) -> Completion:
    prompt = request.prompt if isinstance(request.prompt, str) else "?"
    return Completion(
        id="cmpl-fake",
        choices=[CompletionChoice(index=0, text=f"echo {prompt}", finish_reason="stop")],
        model=request.model,
        object="text_completion",
        usage=CompletionUsage(
            prompt_tokens=1, completion_tokens=total_tokens - 1, total_tokens=total_tokens
        ),
    )


async def instant_call(request: CompletionRequest) -> Completion:
    await anyio.lowlevel.checkpoint()
    return completion_for(request)


async def collect(job: BatchJob, into: list[BatchResult]) -> None:
    async with job as results:
        async for result in results:
            into.append(result)


def requests(count: int, **fields: Any) -> Iterator[dict[str, Any]]:
    for number in range(count):
        yield {"id": f"item-{number}", "model": MODEL, "prompt": f"prompt {number}", **fields}


# --------------------------------------------------------------------------------------------
# Ordering and bounded memory
# --------------------------------------------------------------------------------------------


async def test_results_in_input_order_against_the_emulator(client: AsyncClient) -> None:
    count, concurrency = 2_000, 32
    pulled = consumed = most_outstanding = 0

    def source() -> Iterator[dict[str, Any]]:
        nonlocal pulled, most_outstanding
        for fields in requests(count, max_tokens=4):
            pulled += 1
            most_outstanding = max(most_outstanding, pulled - consumed)
            yield fields

    async with client.batch(source(), concurrency=concurrency) as results:
        async for result in results:
            assert result.index == consumed
            assert result.id == f"item-{consumed}"
            assert result.ok, result.error
            assert result.attempts == 1
            assert result.usage is not None
            assert result.latency >= 0
            consumed += 1
    assert consumed == count
    # Pulled but not yet handed to the caller: never more than the workers plus the buffer
    # (which defaults to the concurrency).
    assert most_outstanding <= 2 * concurrency

    expected = await client.completions.create(model=MODEL, prompt="prompt 7", max_tokens=4)
    async with client.batch([{"model": MODEL, "prompt": "prompt 7", "max_tokens": 4}]) as again:
        assert [result.text async for result in again] == [expected.text]


async def test_as_completed_yields_the_fast_items_before_a_slow_one() -> None:
    release = anyio.Event()

    async def call(request: CompletionRequest) -> Completion:
        if request.prompt == "prompt 0":
            await release.wait()
        await anyio.lowlevel.checkpoint()
        return completion_for(request)

    seen: list[int] = []
    async with BatchJob(requests(10), call, concurrency=4, ordered=False) as results:
        async for result in results:
            seen.append(result.index)
            if len(seen) == 9:
                release.set()
    assert sorted(seen) == list(range(10))
    assert seen[-1] == 0


async def test_input_order_holds_back_at_most_the_window_behind_a_slow_item() -> None:
    release = anyio.Event()
    finished = 0

    async def call(request: CompletionRequest) -> Completion:
        nonlocal finished
        if request.prompt == "prompt 0":
            await release.wait()
        await anyio.lowlevel.checkpoint()
        finished += 1
        return completion_for(request)

    concurrency, buffer = 4, 3
    job = BatchJob(requests(100), call, concurrency=concurrency, buffer=buffer, ordered=True)
    seen: list[int] = []
    async with job as results:

        async def release_when_stalled() -> None:
            # Every item of the window but the slow one finishes; then nothing more is pulled.
            for _ in range(10_000):
                if finished == concurrency + buffer - 1:
                    break
                await anyio.lowlevel.checkpoint()
            for _ in range(100):
                await anyio.lowlevel.checkpoint()
            assert job.pulled == concurrency + buffer
            release.set()

        async with anyio.create_task_group() as group:
            group.start_soon(release_when_stalled)
            async for result in results:
                seen.append(result.index)
    assert seen == list(range(100))


async def test_memory_stays_bounded_with_100_000_inputs() -> None:
    count, concurrency = 100_000, 64
    pulled = consumed = most_outstanding = 0
    in_flight = most_in_flight = 0

    def source() -> Iterator[dict[str, Any]]:
        nonlocal pulled, most_outstanding
        for number in range(count):
            pulled += 1
            most_outstanding = max(most_outstanding, pulled - consumed)
            yield {"id": str(number), "model": MODEL, "prompt": "p"}

    async def call(request: CompletionRequest) -> Completion:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        try:
            await anyio.lowlevel.checkpoint()
            return completion_for(request)
        finally:
            in_flight -= 1

    async with BatchJob(source(), call, concurrency=concurrency, ordered=False) as results:
        async for result in results:
            assert result.ok
            consumed += 1
            if consumed % 1_000 == 0:
                # A slow consumer now and then: the workers must wait, not pile up results.
                for _ in range(5):
                    await anyio.lowlevel.checkpoint()
    assert consumed == count
    assert most_in_flight <= concurrency
    assert most_outstanding <= 2 * concurrency


async def test_async_iterable_input() -> None:
    async def source() -> AsyncIterator[CompletionRequest]:
        for number in range(50):
            await anyio.lowlevel.checkpoint()
            yield CompletionRequest(model=MODEL, prompt=f"p{number}")

    async with BatchJob(source(), instant_call, concurrency=5) as results:
        texts = [result.text async for result in results]
    assert texts == [f"echo p{number}" for number in range(50)]


# --------------------------------------------------------------------------------------------
# Errors and retries
# --------------------------------------------------------------------------------------------


async def test_one_failing_item_never_stops_the_others(
    emulator: GatewayEmulator, client: AsyncClient
) -> None:
    fault = msgspec.json.encode(Fault(status=400)).decode()

    async def call(request: CompletionRequest) -> Completion:
        headers = {"X-Emulator-Fault": fault} if request.prompt == "bad" else None
        return await client.completions.create_from_request(request, extra_headers=headers)

    inputs: list[Any] = [
        {"id": "a", "model": MODEL, "prompt": "fine"},
        {"id": "b", "model": MODEL, "prompt": "bad"},
        {"id": "c", "model": MODEL},
        BatchItem(id="d", error=RequestValidationError("line 4: not JSON")),
        BatchItem(CompletionRequest(model=MODEL, prompt="fine too"), id="e"),
        {"id": "f", "model": MODEL, "prompt": "x", "temperature": 9},
        42,
    ]
    async with BatchJob(inputs, call, concurrency=3) as results:
        by_id = {result.id: result async for result in results}

    assert by_id["a"].ok
    assert by_id["e"].ok
    assert isinstance(by_id["b"].error, BadRequestError)
    assert by_id["b"].attempts == 1  # a 400 is not retried
    assert by_id["b"].response is None
    for item_id in ("c", "d", "f"):
        assert isinstance(by_id[item_id].error, RequestValidationError), item_id
    assert by_id["c"].attempts == 0  # rejected before sending
    assert "prompt" in str(by_id["c"].error)
    assert by_id["f"].attempts == 0  # ranges are checked when the input is read
    assert isinstance(by_id[None].error, RequestValidationError)
    assert by_id[None].index == 6


async def test_retries_are_counted_in_attempts(emulator: GatewayEmulator) -> None:
    fake = FakeTime()
    emulator.inject(Fault(status=500), times=2)
    async with AsyncClient(base_url=emulator.base_url, retry=None) as client:
        call = client.completions.create_from_request
        job = BatchJob(
            requests(3), call, concurrency=1, max_retries=2, clock=fake.clock, sleep=fake.sleep
        )
        async with job as results:
            first, *rest = [result async for result in results]
        assert first.ok
        assert first.attempts == 3
        assert [result.attempts for result in rest] == [1, 1]
        assert len(fake.sleeps) == 2  # two backoffs, on the fake clock

        emulator.inject(Fault(status=503), times=5)
        job = BatchJob(
            requests(1), call, concurrency=1, max_retries=1, clock=fake.clock, sleep=fake.sleep
        )
        async with job as results:
            (failed,) = [result async for result in results]
        assert isinstance(failed.error, InternalServerError)
        assert failed.attempts == 2
        emulator.clear_faults()


async def test_connection_errors_are_retried_then_reported() -> None:
    fake = FakeTime()
    calls = 0

    async def call(request: CompletionRequest) -> Completion:
        nonlocal calls
        calls += 1
        raise APITimeoutError("read timed out", phase="read")

    job = BatchJob(requests(1), call, max_retries=3, clock=fake.clock, sleep=fake.sleep)
    async with job as results:
        (result,) = [result async for result in results]
    assert isinstance(result.error, APITimeoutError)
    assert result.attempts == calls == 4


async def test_fail_fast_stops_and_raises_after_the_finished_results() -> None:
    async def call(request: CompletionRequest) -> Completion:
        await anyio.lowlevel.checkpoint()
        if request.prompt == "prompt 3":
            raise BadRequestError(
                "bad", status_code=400, headers={}, body=b"", error=None, request_id=None
            )
        return completion_for(request)

    seen: list[BatchResult] = []
    job = BatchJob(requests(1_000), call, concurrency=2, fail_fast=True)
    with pytest.raises(BadRequestError):
        await collect(job, seen)
    assert job.cancelled
    assert any(isinstance(result.error, BadRequestError) for result in seen)
    assert len(seen) < 1_000


async def test_an_error_in_the_input_is_raised_after_the_results_before_it() -> None:
    def source() -> Iterator[dict[str, Any]]:
        yield from requests(5)
        raise OSError("disk gone")

    seen: list[BatchResult] = []
    with pytest.raises(OSError, match="disk gone"):
        await collect(BatchJob(source(), instant_call, concurrency=2), seen)
    assert [result.index for result in seen] == [0, 1, 2, 3, 4]


async def test_iterating_outside_the_context_is_refused() -> None:
    job = BatchJob(requests(1), instant_call)
    with pytest.raises(RuntimeError, match="async with"):
        await job.__anext__()


# --------------------------------------------------------------------------------------------
# Rate limits and adaptive concurrency
# --------------------------------------------------------------------------------------------


async def test_requests_per_minute_paces_the_calls() -> None:
    fake = FakeTime()
    starts: list[float] = []

    async def call(request: CompletionRequest) -> Completion:
        starts.append(fake.clock())
        await anyio.lowlevel.checkpoint()
        return completion_for(request)

    job = BatchJob(
        requests(100),
        call,
        concurrency=8,
        requests_per_minute=600,  # 10 a second, at most one second's worth at once
        clock=fake.clock,
        sleep=fake.sleep,
    )
    async with job as results:
        assert all([result.ok async for result in results])
    assert len(starts) == 100
    starts.sort()
    # In any span of t seconds at most 10 + 10 t calls start.
    for first, later in itertools.pairwise(starts[::20]):
        assert later - first >= 1.0 - 1e-9
    assert starts[-1] >= 9.0 - 1e-9


async def test_tokens_per_minute_paces_by_estimate_and_settles_with_usage() -> None:
    fake = FakeTime()
    starts: list[float] = []

    async def call(request: CompletionRequest) -> Completion:
        starts.append(fake.clock())
        await anyio.lowlevel.checkpoint()
        return completion_for(request, total_tokens=50)

    # Each request is estimated at 3 prompt tokens + 47 max_tokens = 50, and uses 50.
    request = CompletionRequest(model=MODEL, prompt="p", max_tokens=49)
    assert estimate_tokens(request) == 50
    job = BatchJob(
        [request] * 60,
        call,
        concurrency=4,
        tokens_per_minute=6_000,  # 100 a second: two requests a second
        clock=fake.clock,
        sleep=fake.sleep,
    )
    async with job as results:
        assert all([result.ok async for result in results])
    starts.sort()
    assert starts[-1] >= (60 - 2) / 2 - 1e-9


async def test_429_pauses_every_worker_then_concurrency_climbs_back(
    emulator: GatewayEmulator,
) -> None:
    fake = FakeTime()
    events: list[tuple[str, float]] = []
    emulator.inject(Fault(status=429, retry_after="2"), times=3)
    concurrency = 8

    async with AsyncClient(base_url=emulator.base_url) as client:

        async def call(request: CompletionRequest) -> Completion:
            events.append(("start", fake.clock()))
            try:
                return await client.completions.create_from_request(request, retry=None)
            except RateLimitError:
                events.append(("429", fake.clock()))
                raise

        job = BatchJob(
            requests(200),
            call,
            concurrency=concurrency,
            max_retries=3,
            clock=fake.clock,
            sleep=fake.sleep,
        )
        async with job as results:
            outcome = [result async for result in results]

    assert all(result.ok for result in outcome)
    assert sum(result.attempts for result in outcome) == 200 + 3
    first_429 = next(index for index, (kind, _) in enumerate(events) if kind == "429")
    paused_until = events[first_429][1] + 2
    later_starts = [moment for kind, moment in events[first_429:] if kind == "start"]
    assert later_starts, "the job went on after the 429s"
    assert all(moment >= paused_until - 1e-9 for moment in later_starts)
    history = job.limiter.limit_history
    assert min(history) == concurrency // 2  # one halving for one burst of 429s
    assert history[-1] == concurrency  # and back up


async def test_a_non_adaptive_limiter_keeps_its_concurrency() -> None:
    fake = FakeTime()
    limiter = BatchLimiter(4, adaptive=False, clock=fake.clock, sleep=fake.sleep)
    limiter.on_rate_limited(5.0)
    assert limiter.limit == 4
    assert limiter.paused_until == 0.0
    await limiter.acquire()
    limiter.release()


async def test_a_limiter_can_be_shared_by_jobs() -> None:
    limiter = BatchLimiter(3)
    in_flight = most = 0

    async def call(request: CompletionRequest) -> Completion:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        in_flight -= 1
        return completion_for(request)

    async def run_one() -> None:
        async with BatchJob(requests(30), call, concurrency=3, limiter=limiter) as results:
            assert len([result async for result in results]) == 30

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(run_one)
    assert most <= 3


# --------------------------------------------------------------------------------------------
# Streaming items and cancellation
# --------------------------------------------------------------------------------------------


async def test_streaming_items_are_accumulated(client: AsyncClient) -> None:
    inputs = [
        {"id": "plain", "model": MODEL, "prompt": "same", "max_tokens": 12},
        {
            "id": "streamed",
            "model": MODEL,
            "prompt": "same",
            "max_tokens": 12,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ]
    async with client.batch(inputs) as results:
        plain, streamed = [result async for result in results]
    assert streamed.ok
    assert plain.ok
    assert streamed.text == plain.text != ""
    assert streamed.usage is not None
    assert plain.usage is not None
    assert streamed.usage.total_tokens == plain.usage.total_tokens


async def _wait_until_idle(emulator: GatewayEmulator) -> None:
    for _ in range(500):
        if emulator.open_streams == 0 and emulator.active_requests == 0:
            return
        await anyio.sleep(0.01)
    raise AssertionError(
        f"still busy: {emulator.open_streams} streams, {emulator.active_requests} requests"
    )


async def test_cancel_keeps_finished_results_and_releases_connections() -> None:
    async with (
        GatewayEmulator(chunk_delay=0.02) as emulator,
        AsyncClient(base_url=emulator.base_url) as client,
    ):
        job = client.batch(requests(200, max_tokens=10, stream=True), concurrency=8)
        seen: list[BatchResult] = []
        async with job as results:
            async for result in results:
                seen.append(result)
                if len(seen) == 10:
                    job.cancel()
        assert job.cancelled
        assert 10 <= len(seen) < 200
        assert all(result.ok for result in seen)
        assert len({result.index for result in seen}) == len(seen)
        await _wait_until_idle(emulator)
        # The client is still usable: nothing leaked, nothing left half-read.
        completion = await client.completions.create(model=MODEL, prompt="after", max_tokens=2)
        assert completion.text


async def test_cancelling_the_task_stops_the_job_and_keeps_what_was_received() -> None:
    async with (
        GatewayEmulator(chunk_delay=0.02) as emulator,
        AsyncClient(base_url=emulator.base_url) as client,
    ):
        seen: list[BatchResult] = []
        with anyio.CancelScope() as scope:
            async with client.batch(requests(200, max_tokens=10, stream=True)) as results:
                async for result in results:
                    seen.append(result)
                    if len(seen) == 5:
                        scope.cancel()
        assert scope.cancelled_caught
        assert len(seen) >= 5
        await _wait_until_idle(emulator)


async def test_leaving_the_block_early_stops_the_workers() -> None:
    calls = 0

    async def call(request: CompletionRequest) -> Completion:
        nonlocal calls
        calls += 1
        await anyio.lowlevel.checkpoint()
        return completion_for(request)

    async with BatchJob(requests(10_000), call, concurrency=4) as results:
        async for _ in results:
            break
    made = calls
    await anyio.lowlevel.checkpoint()
    assert calls == made < 100


# --------------------------------------------------------------------------------------------
# OpenAI Batch API line formats
# --------------------------------------------------------------------------------------------


def test_parse_openai_request_line() -> None:
    line = msgspec.json.encode(
        {
            "custom_id": "req-1",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": MODEL, "prompt": "hi", "max_tokens": 3},
        }
    )
    item = parse_batch_line(line, 1)
    assert item.id == "req-1"
    assert item.error is None
    assert item.request == CompletionRequest(model=MODEL, prompt="hi", max_tokens=3)


def test_parse_bare_request_line_with_and_without_id() -> None:
    item = parse_batch_line(b'{"id": 7, "model": "m", "prompt": "hi"}', 3)
    assert (item.id, item.error) == ("7", None)
    item = parse_batch_line('{"model": "m", "prompt": "hi"}', 3)
    assert item.id == "line-3"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"id": "x", "model": "m"}', "invalid request"),
        (b'{"custom_id": "x", "method": "GET", "body": {}}', "method must be POST"),
        (b'{"custom_id": "x", "url": "/v1/chat/completions", "body": {}}', "chat completions"),
        (b'{"custom_id": "x", "url": "/v1/embeddings", "body": {}}', "completions endpoint"),
        (b'{"custom_id": "x", "body": "text"}', "body must be a JSON object"),
        (b'{"model": "m", "prompt": "\xff"}', "not JSON"),
    ],
)
def test_malformed_lines_become_failed_items(line: bytes, message: str) -> None:
    item = parse_batch_line(line, 9)
    assert item.request is None
    assert isinstance(item.error, RequestValidationError)
    assert message in item.error.message


def test_records_from_arrow_drop_nulls() -> None:
    record = {
        "custom_id": "r",
        "method": None,
        "url": None,
        "body": {"model": "m", "prompt": "p", "temperature": None},
    }
    item = item_from_record(record, drop_nulls=True)
    assert item.error is None
    assert item.request == CompletionRequest(model="m", prompt="p")


def test_output_records_follow_the_openai_batch_format() -> None:
    request = CompletionRequest(model=MODEL, prompt="p")
    completion = completion_for(request)
    success = BatchResult(0, "a", completion, None, completion.usage, 0.1, 1)
    record = batch_output_record(success)
    assert record["custom_id"] == "a"
    assert record["id"].startswith("batch_req_")
    assert record["error"] is None
    assert record["response"]["status_code"] == 200
    assert record["response"]["body"]["choices"][0]["text"] == "echo p"

    status_error = RateLimitError(
        "slow down",
        status_code=429,
        headers={},
        body=b'{"error": {"message": "slow down"}}',
        error=None,
        request_id="req-9",
    )
    record = batch_output_record(BatchResult(1, "b", None, status_error, None, 0.1, 3))
    assert record["response"] == {
        "status_code": 429,
        "request_id": "req-9",
        "body": {"error": {"message": "slow down"}},
    }
    assert record["error"] is None

    connection_error = APIConnectionError("refused")
    record = batch_output_record(BatchResult(2, "c", None, connection_error, None, 0.1, 3))
    assert record["response"] is None
    assert record["error"] == {"code": "connection_error", "message": "refused"}


def test_an_error_body_with_invalid_utf8_is_written_as_text() -> None:
    status_error = BadRequestError(
        "bad",
        status_code=400,
        headers={},
        body=b'{"error": {"message": "bad \xff"}}',
        error=None,
        request_id=None,
    )
    record = batch_output_record(BatchResult(0, "a", None, status_error, None, 0.1, 1))
    assert record["response"]["status_code"] == 400
    assert record["response"]["body"] == {"error": {"message": status_error.body_text}}
    assert "\ufffd" in status_error.body_text


# --------------------------------------------------------------------------------------------
# Review fixes: idempotency keys, token budget, closing the input, pool size
# --------------------------------------------------------------------------------------------


async def test_each_item_keeps_one_idempotency_key_across_its_retries(
    emulator: GatewayEmulator,
) -> None:
    emulator.inject(Fault(status=500, retry_after="0"))  # the first item's first attempt
    async with (
        AsyncClient(base_url=emulator.base_url, retry=None, idempotency_keys=True) as client,
        client.batch(requests(3), concurrency=1, max_retries=1) as results,
    ):
        outcome = [result async for result in results]
    assert [result.attempts for result in outcome] == [2, 1, 1]
    keys_by_prompt: dict[str, list[str]] = {}
    for recorded in emulator.requests:
        keys_by_prompt.setdefault(recorded.json()["prompt"], []).append(
            recorded.headers["idempotency-key"]
        )
    first, second, third = (keys_by_prompt[f"prompt {number}"] for number in range(3))
    assert len(first) == 2
    assert first[0] == first[1]
    assert len({first[0], second[0], third[0]}) == 3


async def test_one_idempotency_key_for_a_whole_batch_is_refused(client: AsyncClient) -> None:
    with pytest.raises(TypeError, match="idempotency_keys=True"):
        client.batch(requests(2), idempotency_key="K")


def completion_without_usage(request: CompletionRequest) -> Completion:
    return msgspec.structs.replace(completion_for(request), usage=None)


@pytest.mark.parametrize(
    ("outcome", "paced"),
    [
        ("success without usage", True),
        ("server error", True),
        ("connect timeout", False),
    ],
)
async def test_the_token_estimate_is_refunded_only_for_requests_never_sent(
    outcome: str, paced: bool
) -> None:
    fake = FakeTime()
    starts: list[float] = []

    async def call(request: CompletionRequest) -> Completion:
        starts.append(fake.clock())
        await anyio.lowlevel.checkpoint()
        if outcome == "server error":
            raise InternalServerError(
                "boom", status_code=500, headers={}, body=b"", error=None, request_id=None
            )
        if outcome == "connect timeout":
            raise ConnectTimeoutError("no connection", phase="connect")
        return completion_without_usage(request)

    request = CompletionRequest(model=MODEL, prompt="p", max_tokens=49)  # estimated at 50
    job = BatchJob(
        [request] * 20,
        call,
        concurrency=4,
        max_retries=0,
        tokens_per_minute=6_000,  # 100 a second: two requests a second
        clock=fake.clock,
        sleep=fake.sleep,
    )
    async with job as results:
        assert len([result async for result in results]) == 20
    if paced:
        assert max(starts) >= (20 - 2) / 2 - 1e-9
    else:
        assert max(starts) == 0.0


async def test_leaving_early_closes_a_generator_input() -> None:
    closed = False

    def source() -> Iterator[dict[str, Any]]:
        nonlocal closed
        try:
            yield from requests(1_000)
        finally:
            closed = True

    async with BatchJob(source(), instant_call, concurrency=2) as results:
        async for _ in results:
            break
    assert closed


async def test_fail_fast_closes_an_async_generator_input() -> None:
    closed = False

    async def source() -> AsyncIterator[BatchInput]:
        nonlocal closed
        try:
            yield BatchItem(id="bad", error=RequestValidationError("broken line"))
            for item in requests(1_000):
                yield item
        finally:
            closed = True

    job = BatchJob(source(), instant_call, concurrency=2, fail_fast=True)
    with pytest.raises(RequestValidationError):
        await collect(job, [])
    assert closed


async def test_a_batch_wider_than_the_pool_logs_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with AsyncClient(base_url="http://127.0.0.1:9", max_connections=4) as client:
        with caplog.at_level(logging.WARNING, logger="asyncclient"):
            client.batch(requests(1), concurrency=4)
            assert caplog.records == []
            client.batch(requests(1), concurrency=5)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "max_connections=5" in record.getMessage()
