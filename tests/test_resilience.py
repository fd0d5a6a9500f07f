"""Resilience against the emulator over real sockets: retries, per-phase timeouts, clean ends,
security hygiene, fault injection and load.

Every case states what the caller gets, and the ``pool_is_idle`` check after it asserts that
no connection is left checked out of the client's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import logging
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    AsyncClient,
    AsyncClientError,
    ClientClosedError,
    CompletionStream,
    ConnectTimeoutError,
    HeadersTimeoutError,
    IncompleteStreamError,
    InternalServerError,
    RateLimitError,
    RequestValidationError,
    ResponseTooLargeError,
    RetryPolicy,
    ServerStreamError,
    StreamContext,
    StreamDecodeError,
    StreamRestart,
    StreamTimeoutError,
    Timeout,
    WrongEventLoopError,
)
from asyncclient.testing import Fault, GatewayEmulator

MODEL = "openai/gpt-3.5-turbo-instruct"
PROMPT = "Say hi"
SECRET = "sk-test-very-secret-key"
# Real but tiny waits: the retry loop's own tests (test_retry.py) use a fake clock.
FAST_RETRY = RetryPolicy(max_attempts=3, initial_wait=0.001, max_wait=0.005)


@pytest.fixture
async def retrying(emulator: GatewayEmulator) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(base_url=emulator.base_url, api_key=SECRET, retry=FAST_RETRY)
    try:
        yield client
        assert_pool_idle(client)
    finally:
        await client.aclose()


def assert_pool_idle(client: AsyncClient) -> None:
    in_use, _ = client._transport.pool_stats()
    assert in_use == 0, f"{in_use} connection(s) still checked out of the pool"


async def read_all(stream: CompletionStream) -> str:
    async with stream:
        return "".join([text async for text in stream.text_deltas()])


async def drain(context: StreamContext, received: list[str] | None = None) -> None:
    """Iterate a stream to its end, collecting its text pieces into ``received``."""
    async with context as stream:
        async for piece in stream.text_deltas():
            if received is not None:
                received.append(piece)


async def stream_text(client: AsyncClient, **params: Any) -> str:
    stream = await client.completions.create(model=MODEL, prompt=PROMPT, stream=True, **params)
    return await read_all(stream)


# -- retries ---------------------------------------------------------------------------------


async def test_503_then_success_is_retried_and_counted(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=503))
    completion, info = await retrying.completions.create_with_info(model=MODEL, prompt=PROMPT)
    assert completion.text
    assert info.attempts == 2
    assert len(info.retry_waits) == 1
    assert len(emulator.requests) == 2


async def test_429_storm_with_retry_after_is_waited_out(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=429, retry_after_ms=5), times=2)
    completion, info = await retrying.completions.create_with_info(model=MODEL, prompt=PROMPT)
    assert completion.text
    assert info.attempts == 3
    assert info.retry_waits == (0.005, 0.005)  # the server's delay, not the backoff


async def test_429_on_every_attempt_gives_the_last_error(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=429, retry_after="0"), times=5)
    with pytest.raises(RateLimitError) as caught:
        await retrying.completions.create(model=MODEL, prompt=PROMPT)
    assert len(emulator.requests) == 3
    assert caught.value.attempt_log.attempts == 3  # type: ignore[attr-defined]


async def test_500_on_every_attempt_gives_up_after_max_attempts(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=500), times=10)
    with pytest.raises(InternalServerError):
        await retrying.completions.create(model=MODEL, prompt=PROMPT)
    assert len(emulator.requests) == FAST_RETRY.max_attempts


async def test_the_error_after_retries_is_not_chained_to_earlier_attempts(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    # Each attempt's error stands alone: the attempts are in `attempt_log`, and a traceback
    # does not show the first failure as "during handling of the above exception".
    emulator.inject(Fault(status=503))
    emulator.inject(Fault(status=500))
    emulator.inject(Fault(status=502))
    with pytest.raises(InternalServerError) as caught:
        await retrying.completions.create(model=MODEL, prompt=PROMPT)
    assert caught.value.status_code == 502
    assert caught.value.__context__ is None
    log = caught.value.attempt_log  # type: ignore[attr-defined]
    assert [record.outcome for record in log.failures] == [503, 500, 502]


async def test_a_borrowed_session_keeps_the_deadlines_of_calls_in_flight_after_aclose(
    emulator: GatewayEmulator,
) -> None:
    # aclose() leaves a borrowed session open, so a call already sent goes on: its headers
    # deadline must still end it.
    async with aiohttp.ClientSession() as session:
        client = AsyncClient(
            base_url=emulator.base_url,
            session=session,
            retry=None,
            timeout=Timeout(headers=0.3),
        )
        emulator.inject(Fault(headers_delay=3.0))
        call = asyncio.create_task(client.completions.create(model=MODEL, prompt=PROMPT))
        await emulator.wait_for_requests(1)
        await client.aclose()
        with pytest.raises(HeadersTimeoutError):
            async with asyncio.timeout(2.5):  # past the deadline, before the server answers
                await call


@pytest.mark.parametrize("waiting", [True, False], ids=["read-waiting", "read-after"])
async def test_a_stream_left_open_when_the_client_closes_ends_at_once_with_its_text(
    emulator: GatewayEmulator, waiting: bool
) -> None:
    # No deadline at all, so nothing but the close can end the read: it must neither hang
    # nor leak aiohttp's own RuntimeError, and the text received so far is kept.
    client = AsyncClient(base_url=emulator.base_url, retry=None, timeout=None)
    emulator.inject(Fault(stall_after_events=1, stall_seconds=30.0))
    async with client.completions.stream(model=MODEL, prompt=PROMPT) as stream:
        first = await stream.__anext__()  # the server then stalls
        if waiting:
            reader = asyncio.create_task(stream.__anext__())
            await asyncio.sleep(0.05)  # the read is now waiting on the stalled server
            await client.aclose()
            pending: Any = reader
        else:
            await client.aclose()
            pending = stream.__anext__()
        with pytest.raises(IncompleteStreamError, match="client was closed") as caught:
            async with asyncio.timeout(5):
                await pending
    assert caught.value.partial_text == first.choices[0].text
    assert isinstance(caught.value.__cause__, ClientClosedError)
    assert stream.closed


@pytest.mark.parametrize("answer", ["json", "event-stream"])
async def test_a_plain_call_in_flight_when_the_client_closes_ends_at_once(
    emulator: GatewayEmulator, answer: str
) -> None:
    client = AsyncClient(base_url=emulator.base_url, retry=None, timeout=None)
    if answer == "json":
        emulator.inject(Fault(body_delay=30.0))  # headers and half the body, then nothing
        call = client.completions.create(model=MODEL, prompt=PROMPT)
    else:
        # A server that streams its answer to a plain request, then stalls.
        emulator.inject(Fault(stall_after_events=1, stall_seconds=30.0))
        call = client.completions.create(model=MODEL, prompt=PROMPT, extra_body={"stream": True})
    task = asyncio.create_task(call)
    await emulator.wait_for_requests(1)
    await asyncio.sleep(0.05)  # the body read is now waiting
    await client.aclose()
    with pytest.raises((ClientClosedError, IncompleteStreamError)):
        async with asyncio.timeout(5):
            await task


async def test_two_tasks_reading_one_stream_is_a_caller_error_not_a_broken_stream(
    emulator: GatewayEmulator,
) -> None:
    # aiohttp refuses a second concurrent read with a RuntimeError: that is a bug in the
    # caller's code, and must not pass for a broken connection (which could be restarted).
    restarts: list[StreamRestart] = []
    emulator.inject(Fault(stall_after_events=1, stall_seconds=1.0))
    client = AsyncClient(base_url=emulator.base_url, retry=None, timeout=None)
    context = client.completions.stream(model=MODEL, prompt=PROMPT, on_restart=restarts.append)
    async with client, context as stream:
        await stream.__anext__()
        first = asyncio.create_task(stream.__anext__())
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError, match="another coroutine"):
            await stream.__anext__()
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError, AsyncClientError):
            await first
    assert restarts == []


async def test_a_server_asking_for_an_hour_is_not_waited_on(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=429, retry_after="3600"))
    with pytest.raises(RateLimitError) as caught:
        await retrying.completions.create(model=MODEL, prompt=PROMPT)
    assert len(emulator.requests) == 1
    assert caught.value.retry_after == 3600
    assert "3600" in (caught.value.attempt_log.give_up_reason or "")  # type: ignore[attr-defined]


async def test_x_should_retry_false_is_honoured(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=503, should_retry=False))
    with pytest.raises(InternalServerError):
        await retrying.completions.create(model=MODEL, prompt=PROMPT)
    assert len(emulator.requests) == 1


async def test_400_is_not_retried(retrying: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(status=400))
    with pytest.raises(APIStatusError):
        await retrying.completions.create(model=MODEL, prompt=PROMPT)
    assert len(emulator.requests) == 1


async def test_connection_dropped_before_headers_is_retried(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(drop_before_headers=True))
    completion, info = await retrying.completions.create_with_info(model=MODEL, prompt=PROMPT)
    assert completion.text
    assert info.attempts == 2


async def test_a_body_cut_mid_way_is_retried_for_plain_calls(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(cut_after_bytes=20))
    completion, info = await retrying.completions.create_with_info(model=MODEL, prompt=PROMPT)
    assert completion.text
    assert info.attempts == 2


async def test_retries_can_be_turned_off_per_call(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=503))
    with pytest.raises(InternalServerError):
        await retrying.completions.create(model=MODEL, prompt=PROMPT, retry=None)
    assert len(emulator.requests) == 1


async def test_a_stream_is_retried_before_its_headers(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=503))
    async with retrying.completions.stream(model=MODEL, prompt=PROMPT) as stream:
        text = "".join([piece async for piece in stream.text_deltas()])
    assert text
    assert stream.info.attempts == 2


async def test_a_stream_is_never_retried_after_output(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(cut_after_events=2))
    received: list[str] = []
    with pytest.raises(IncompleteStreamError) as caught:
        await drain(retrying.completions.stream(model=MODEL, prompt=PROMPT), received)
    assert len(emulator.requests) == 1  # not re-sent: the text would repeat
    assert len(received) == 2
    assert caught.value.partial_text == "".join(received)


async def test_opt_in_restart_discards_partial_output_and_says_so(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    full = await retrying.completions.create(model=MODEL, prompt=PROMPT)
    emulator.inject(Fault(cut_after_events=2))
    restarts: list[StreamRestart] = []
    received: list[str] = []

    def restarted(event: StreamRestart) -> None:
        restarts.append(event)
        received.clear()  # what a UI would do: take back the text it showed

    context = retrying.completions.stream(model=MODEL, prompt=PROMPT, on_restart=restarted)
    async with context as stream:
        async for piece in stream.text_deltas():
            received.append(piece)
        final = await stream.final_completion()
    assert len(restarts) == 1
    assert stream.restarts == 1
    assert isinstance(restarts[0].error, IncompleteStreamError)
    assert restarts[0].discarded is not None
    assert len(restarts[0].discarded.text.split()) == 2
    assert "".join(received) == full.text
    assert final.text == full.text  # not the discarded text plus the new one


async def test_a_stream_that_timed_out_restarts_once_and_completes(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    # A stream timeout is a broken stream too: with on_restart it is re-sent, and the new
    # response starts with a clean slate (the old deadline passed, not the new one's).
    full = await retrying.completions.create(model=MODEL, prompt=PROMPT)
    emulator.inject(Fault(stall_after_events=2, stall_seconds=2.0))
    restarts: list[StreamRestart] = []
    context = retrying.completions.stream(
        model=MODEL,
        prompt=PROMPT,
        timeout=Timeout(idle=0.2),
        on_restart=restarts.append,
        max_restarts=2,
    )
    async with asyncio.timeout(10), context as stream:
        text = "".join([piece async for piece in stream.text_deltas()])
    assert [type(event.error) for event in restarts] == [StreamTimeoutError]
    assert text.endswith(full.text)
    assert (await stream.final_completion()).text == full.text
    assert emulator.received == 3  # the plain call, the stalled stream, its restart


async def test_a_stream_past_its_total_deadline_is_not_restarted(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    # `total` bounds the whole call: a restart would start out past it, so it is not sent.
    emulator.inject(Fault(stall_after_events=1, stall_seconds=2.0))
    restarts: list[StreamRestart] = []
    context = retrying.completions.stream(
        model=MODEL, prompt=PROMPT, timeout=Timeout(total=0.3), on_restart=restarts.append
    )
    with pytest.raises(StreamTimeoutError) as caught:
        async with asyncio.timeout(10):
            await drain(context)
    assert caught.value.phase == "total"
    assert restarts == []
    assert emulator.received == 1


async def test_restarts_are_bounded(retrying: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(cut_after_events=1), times=5)
    restarts: list[StreamRestart] = []
    context = retrying.completions.stream(
        model=MODEL, prompt=PROMPT, on_restart=restarts.append, max_restarts=2
    )
    with pytest.raises(IncompleteStreamError):
        await drain(context)
    assert len(restarts) == 2
    assert len(emulator.requests) == 3


async def test_idempotency_key_is_reused_on_every_attempt(emulator: GatewayEmulator) -> None:
    async with AsyncClient(
        base_url=emulator.base_url, retry=FAST_RETRY, idempotency_keys=True
    ) as client:
        emulator.inject(Fault(status=503), times=2)
        await client.completions.create(model=MODEL, prompt=PROMPT)
        await client.completions.create(model=MODEL, prompt=PROMPT)
    keys = [request.headers.get("idempotency-key") for request in emulator.requests]
    assert len(keys) == 4
    assert keys[0] is not None
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] != keys[0]


async def test_an_explicit_idempotency_key_is_sent(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    await retrying.completions.create(model=MODEL, prompt=PROMPT, idempotency_key="job-7")
    assert emulator.requests[-1].headers["idempotency-key"] == "job-7"


async def test_each_retry_is_logged_without_secrets(
    retrying: AsyncClient, emulator: GatewayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.inject(Fault(status=503))
    with caplog.at_level(logging.DEBUG, logger="asyncclient"):
        await retrying.completions.create(model=MODEL, prompt=PROMPT)
    assert any("503" in record.getMessage() for record in caplog.records)
    assert SECRET not in caplog.text


# -- timeouts --------------------------------------------------------------------------------


async def test_first_event_timeout(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(stall_after_events=0, stall_seconds=2.0, keepalive_interval=0.05))
    with pytest.raises(StreamTimeoutError) as caught:
        await drain(
            client.completions.stream(model=MODEL, prompt=PROMPT, timeout=Timeout(first_event=0.3))
        )
    assert caught.value.phase == "first_event"
    assert caught.value.partial is None


async def test_keepalives_do_not_reset_the_idle_timer(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(stall_after_events=2, stall_seconds=2.0, keepalive_interval=0.05))
    with pytest.raises(StreamTimeoutError) as caught:
        await drain(
            client.completions.stream(model=MODEL, prompt=PROMPT, timeout=Timeout(idle=0.3))
        )
    assert caught.value.phase == "idle"
    assert caught.value.partial is not None
    assert len(caught.value.partial_text.split()) == 2


async def test_a_long_live_stream_outlasts_the_idle_timeout() -> None:
    # 20 events 0.03 s apart take longer than the 0.25 s idle limit, but content keeps coming.
    async with (
        GatewayEmulator(chunk_delay=0.03) as emulator,
        AsyncClient(base_url=emulator.base_url, timeout=Timeout(idle=0.25)) as client,
    ):
        stream = await client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=20, stream=True
        )
        text = await read_all(stream)
    assert len(text.split()) == 20


async def test_total_deadline_mid_stream_keeps_the_partial_output() -> None:
    async with (
        GatewayEmulator(chunk_delay=0.05) as emulator,
        AsyncClient(base_url=emulator.base_url, timeout=Timeout(total=0.3)) as client,
    ):
        with pytest.raises(StreamTimeoutError) as caught:
            await stream_text(client, max_tokens=100)
        assert caught.value.phase == "total"
        assert caught.value.partial_text
        assert_pool_idle(client)


async def test_connect_timeout_covers_the_pool_wait(emulator: GatewayEmulator) -> None:
    async with AsyncClient(base_url=emulator.base_url, max_connections=1, retry=None) as client:
        emulator.inject(Fault(stall_after_events=1, stall_seconds=2.0))
        holder = await client.completions.create(model=MODEL, prompt=PROMPT, stream=True)
        async with holder:
            with pytest.raises(ConnectTimeoutError) as caught:
                await client.completions.create(
                    model=MODEL, prompt=PROMPT, timeout=Timeout(connect=0.2)
                )
        assert caught.value.phase == "connect"
        assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text


async def test_timeouts_are_retried_before_output(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(headers_delay=1.0))
    completion, info = await retrying.completions.create_with_info(
        model=MODEL, prompt=PROMPT, timeout=Timeout(headers=0.2)
    )
    assert completion.text
    assert info.attempts == 2


# -- clean ends ------------------------------------------------------------------------------


async def test_connections_are_reused_after_done(emulator: GatewayEmulator) -> None:
    async with AsyncClient(base_url=emulator.base_url, max_connections=4) as client:
        for _ in range(5):
            stream = await client.completions.create(model=MODEL, prompt=PROMPT, stream=True)
            assert await read_all(stream)
        assert client._transport.pool_stats() == (0, 1)
    assert emulator.active_connections <= 1


@pytest.mark.parametrize("phase", ["connecting", "headers", "mid-stream"])
async def test_cancellation_releases_the_connection(emulator: GatewayEmulator, phase: str) -> None:
    async with AsyncClient(base_url=emulator.base_url, max_connections=1) as client:
        started = asyncio.Event()

        async def call() -> None:
            if phase == "connecting":
                started.set()
                await client.completions.create(model=MODEL, prompt=PROMPT)
            elif phase == "headers":
                emulator.inject(Fault(headers_delay=5.0))
                started.set()
                await client.completions.create(model=MODEL, prompt=PROMPT)
            else:
                emulator.inject(Fault(stall_after_events=1, stall_seconds=5.0))
                async with client.completions.stream(model=MODEL, prompt=PROMPT) as stream:
                    async for _ in stream:
                        started.set()

        task = asyncio.create_task(call())
        await asyncio.wait_for(started.wait(), 5)
        if phase != "connecting":
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_pool_idle(client)
        assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text


# -- bad input: nothing lost, nothing leaked ------------------------------------------------


async def test_in_stream_error_after_partial_output(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(error_event_after=3, error_event_style="event"))
    received: list[str] = []
    with pytest.raises(ServerStreamError) as caught:
        await drain(client.completions.stream(model=MODEL, prompt=PROMPT), received)
    assert caught.value.partial_text == "".join(received)
    assert len(received) == 3
    assert_pool_idle(client)


async def test_invalid_utf8_in_an_event(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(invalid_utf8_event_after=1))
    with pytest.raises(StreamDecodeError) as caught:
        await drain(client.completions.stream(model=MODEL, prompt=PROMPT))
    assert caught.value.partial_text
    assert_pool_idle(client)


async def test_gzip_bodies_are_decoded(client: AsyncClient, emulator: GatewayEmulator) -> None:
    plain = await client.completions.create(model=MODEL, prompt=PROMPT)
    emulator.inject(Fault(gzip=True))
    zipped = await client.completions.create(model=MODEL, prompt=PROMPT)
    assert zipped.text == plain.text
    emulator.inject(Fault(gzip=True))
    stream = await client.completions.create(model=MODEL, prompt=PROMPT, stream=True)
    assert await read_all(stream) == plain.text
    assert gzip.decompress(gzip.compress(b"x")) == b"x"


async def test_body_larger_than_max_body_size(emulator: GatewayEmulator) -> None:
    async with AsyncClient(base_url=emulator.base_url, max_body_size=600, retry=None) as client:
        with pytest.raises(ResponseTooLargeError):
            await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=300)
        assert_pool_idle(client)
        assert (await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)).text


async def test_a_64_mib_event(emulator: GatewayEmulator) -> None:
    size = 64 * 1024 * 1024
    async with AsyncClient(base_url=emulator.base_url, max_event_size=None) as client:
        emulator.inject(Fault(oversized_event_bytes=size))
        stream = await client.completions.create(model=MODEL, prompt=PROMPT, stream=True)
        assert await read_all(stream)
    # With the default limit (64 MiB of event, counted with its field name) it is refused
    # with a clear error, and the client stays usable.
    async with AsyncClient(base_url=emulator.base_url, retry=None) as client:
        emulator.inject(Fault(oversized_event_bytes=size))
        with pytest.raises(StreamDecodeError, match="max_event_size"):
            await stream_text(client)
        assert_pool_idle(client)
        assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text


# -- security hygiene ------------------------------------------------------------------------


async def test_the_key_never_shows(emulator: GatewayEmulator) -> None:
    async with AsyncClient(base_url=emulator.base_url, api_key=SECRET, retry=None) as client:
        assert SECRET not in repr(client)
        emulator.inject(Fault(status=401))
        with pytest.raises(APIStatusError) as caught:
            await client.completions.create(model=MODEL, prompt=PROMPT)
        assert SECRET not in str(caught.value)
        assert SECRET not in repr(caught.value.headers)
        _, info = await client.completions.create_with_info(model=MODEL, prompt=PROMPT)
        assert SECRET not in repr(info)
        stream = await client.completions.create(model=MODEL, prompt=PROMPT, stream=True)
        async with stream:
            assert SECRET not in repr(stream.info)


async def test_authorization_is_never_sent_on_a_redirect(emulator: GatewayEmulator) -> None:
    async with GatewayEmulator() as elsewhere:
        target = elsewhere.base_url + "/v2/proxy/completions"
        emulator.inject(Fault(status=307, headers={"Location": target}))
        async with AsyncClient(base_url=emulator.base_url, api_key=SECRET) as client:
            with pytest.raises(APIStatusError) as caught:
                await client.completions.create(model=MODEL, prompt=PROMPT)
        assert caught.value.status_code == 307
        assert elsewhere.requests == []


def test_tls_verification_is_on_by_default_and_turning_it_off_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert AsyncClient()._transport._verify_tls is True
    with caplog.at_level(logging.WARNING, logger="asyncclient"):
        AsyncClient(verify_tls=False)
    assert [r.getMessage() for r in caplog.records if "TLS" in r.getMessage()]


# -- load ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_thousand_concurrent_streams(capsys: pytest.CaptureFixture[str]) -> None:
    """1,000 streams at once from one client: no error, no leaked connection, and memory
    that does not grow with the number of completed streams."""
    rounds = 3
    concurrency = 1000
    async with (
        GatewayEmulator(record=False) as emulator,
        AsyncClient(base_url=emulator.base_url, max_connections=concurrency) as client,
    ):

        async def one() -> str:
            stream = await client.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=4, stream=True
            )
            return await read_all(stream)

        tracemalloc.start()
        try:
            retained: list[int] = []
            for _ in range(rounds):
                texts = await asyncio.gather(*(one() for _ in range(concurrency)))
                assert all(texts)
                del texts
                gc.collect()
                retained.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
        assert_pool_idle(client)
    growth = retained[-1] - retained[0]
    with capsys.disabled():
        print(
            f"\n1000 concurrent streams x {rounds} rounds: traced memory after each round "
            f"{[f'{b / 1e6:.1f} MB' for b in retained]}, growth {growth / 1e3:.0f} kB"
        )
    # Memory held after round 1 (pools, caches) must not keep growing with more streams.
    assert growth < 2_000_000


async def test_no_raw_foreign_exception_escapes(client: AsyncClient) -> None:
    # A closed port, a refused connection: the error is ours, with the cause chained.
    async with AsyncClient(base_url="http://127.0.0.1:9", retry=None) as closed:
        with pytest.raises(AsyncClientError) as caught:
            await closed.completions.create(model=MODEL, prompt=PROMPT)
    assert isinstance(caught.value, APIConnectionError)
    assert caught.value.__cause__ is not None


# -- edge cases found in review --------------------------------------------------------------


async def test_first_event_limit_without_idle_limit_does_not_cut_a_live_stream() -> None:
    async with (
        GatewayEmulator(chunk_delay=0.03) as emulator,
        AsyncClient(
            base_url=emulator.base_url, timeout=Timeout(first_event=0.25, idle=None)
        ) as client,
    ):
        text = await stream_text(client, max_tokens=15)
    assert len(text.split()) == 15


async def test_aclose_from_another_task_ends_iteration_without_a_restart() -> None:
    async with (
        GatewayEmulator(chunk_delay=0.02) as emulator,
        AsyncClient(base_url=emulator.base_url, retry=FAST_RETRY) as client,
    ):
        restarts: list[StreamRestart] = []
        received: list[str] = []
        context = client.completions.stream(
            model=MODEL, prompt=PROMPT, max_tokens=200, on_restart=restarts.append
        )
        async with context as stream:
            first_piece = asyncio.Event()

            async def close_soon() -> None:
                await first_piece.wait()
                await stream.aclose()

            closer = asyncio.create_task(close_soon())
            async for piece in stream.text_deltas():
                received.append(piece)
                first_piece.set()
            await closer
        assert restarts == []
        assert len(emulator.requests) == 1
        assert 0 < len(received) < 200
        assert_pool_idle(client)


async def test_final_completion_after_an_early_close_is_not_silently_partial() -> None:
    async with (
        GatewayEmulator(chunk_delay=0.02) as emulator,
        AsyncClient(base_url=emulator.base_url) as client,
    ):
        async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=8) as stream:
            async for _ in stream:
                break
        with pytest.raises(IncompleteStreamError) as caught:
            await stream.final_completion()
        assert caught.value.partial_text


async def test_a_failed_restart_still_reports_the_partial_output(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(cut_after_events=2))
    emulator.inject(Fault(status=400))
    context = retrying.completions.stream(model=MODEL, prompt=PROMPT, on_restart=lambda _: None)
    with pytest.raises(IncompleteStreamError) as caught:
        await drain(context)
    assert len(caught.value.partial_text.split()) == 2
    assert isinstance(caught.value.__cause__, APIStatusError)


async def test_create_lazy_accepts_a_streamed_answer(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    plain = await client.completions.create(model=MODEL, prompt=PROMPT)
    stream_body = b"".join(
        b"data: " + line + b"\n\n"
        for line in (
            b'{"id":"c","object":"text_completion","model":"m","choices":'
            b'[{"index":0,"text":"' + plain.text.encode() + b'","finish_reason":"stop"}]}',
            b"[DONE]",
        )
    )
    emulator.inject(Fault(body=stream_body, content_type="text/event-stream"))
    lazy = await client.completions.create_lazy(model=MODEL, prompt=PROMPT)
    assert lazy.text == plain.text


async def test_max_body_size_counts_decompressed_bytes(emulator: GatewayEmulator) -> None:
    async with AsyncClient(base_url=emulator.base_url, max_body_size=2000, retry=None) as client:
        emulator.inject(Fault(gzip=True))
        with pytest.raises(ResponseTooLargeError):
            await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=400)
        assert_pool_idle(client)


async def test_error_bodies_are_kept_to_their_first_mebibyte(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=500, body=b"x" * (3 * 1024 * 1024), content_type="text/plain"))
    with pytest.raises(InternalServerError) as caught:
        await client.completions.create(model=MODEL, prompt=PROMPT)
    assert len(caught.value.body) == 1024 * 1024


async def test_a_closed_borrowed_session_gives_a_typed_error(emulator: GatewayEmulator) -> None:
    import aiohttp

    session = aiohttp.ClientSession()
    await session.close()
    client = AsyncClient(base_url=emulator.base_url, session=session)
    with pytest.raises(ClientClosedError):
        await client.completions.create(model=MODEL, prompt=PROMPT)


def test_a_client_used_from_another_event_loop_says_so() -> None:
    async def start() -> tuple[GatewayEmulator, AsyncClient]:
        emulator = GatewayEmulator()
        await emulator.start()
        client = AsyncClient(base_url=emulator.base_url, retry=None)
        assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text
        return emulator, client

    async def use(client: AsyncClient) -> None:
        await client.completions.create(model=MODEL, prompt=PROMPT)

    async def stop(emulator: GatewayEmulator, client: AsyncClient) -> None:
        await client.aclose()
        await emulator.close()

    home = asyncio.new_event_loop()
    try:
        emulator, client = home.run_until_complete(start())
        with pytest.raises(WrongEventLoopError):
            asyncio.run(use(client))
        home.run_until_complete(stop(emulator, client))
    finally:
        home.close()


async def test_paths_are_normalised_and_bad_urls_are_not_retried(
    retrying: AsyncClient, emulator: GatewayEmulator
) -> None:
    completion = await retrying.completions.create(
        model=MODEL, prompt=PROMPT, path="v1/completions"
    )
    assert completion.text
    assert emulator.requests[-1].path == "/v1/completions"
    async with AsyncClient(base_url="http://[::1", retry=FAST_RETRY) as broken:
        with pytest.raises(RequestValidationError):
            await broken.completions.create(model=MODEL, prompt=PROMPT)


async def test_non_finite_numbers_are_refused(client: AsyncClient) -> None:
    with pytest.raises(RequestValidationError, match="finite"):
        await client.completions.create(model=MODEL, prompt=PROMPT, temperature=float("nan"))
