"""Tier 3: the client against the gateway emulator over real loopback sockets.

Every failure test also checks that the error is an ``AsyncClientError``: no aiohttp or
msgspec exception may reach the caller.
"""

import asyncio
import gc
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from asyncclient import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AsyncClientError,
    AuthenticationError,
    BadRequestError,
    Completion,
    CompletionChunk,
    CompletionStream,
    ConflictError,
    HeadersTimeoutError,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ReadTimeoutError,
    ResponseDecodeError,
    ServerStreamError,
    StreamDecodeError,
    StreamTimeoutError,
    Timeout,
    TotalTimeoutError,
    UnprocessableEntityError,
)
from asyncclient._sse import SSEDecoder
from asyncclient.testing import Fault, GatewayEmulator

MODEL = "openai/gpt-3.5-turbo-instruct"
PROMPT = "Say hi"

# Bounds for polling the emulator's counters; never an assertion on elapsed time.
POLL_INTERVAL = 0.01
POLL_ATTEMPTS = 500


async def eventually(condition: Callable[[], bool]) -> bool:
    for _ in range(POLL_ATTEMPTS):
        if condition():
            return True
        await asyncio.sleep(POLL_INTERVAL)
    return condition()


async def drained(emulator: GatewayEmulator) -> bool:
    return await eventually(lambda: emulator.active_requests == 0 and emulator.open_streams == 0)


async def caught(call: Awaitable[Any]) -> AsyncClientError:
    """Await ``call`` and return the error it raised; any foreign exception fails the test."""
    with pytest.raises(AsyncClientError) as info:
        await call
    return info.value


async def stream_error(client: AsyncClient, **params: Any) -> tuple[AsyncClientError, str]:
    """Consume a stream until it fails; return the error and the text yielded before it."""
    received: list[str] = []

    async def consume() -> None:
        async with client.completions.stream(model=MODEL, prompt=PROMPT, **params) as stream:
            async for chunk in stream:
                received.append(chunk.text)

    error = await caught(consume())
    return error, "".join(received)


async def chunk_texts(client: AsyncClient, **params: Any) -> list[str]:
    async with client.completions.stream(model=MODEL, prompt=PROMPT, **params) as stream:
        return [chunk.text async for chunk in stream]


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def completion_json(text: str = "from json") -> bytes:
    return msgspec.json.encode(
        {
            "id": "cmpl-json",
            "object": "text_completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
        }
    )


def sse(*payloads: dict[str, Any], done: bool = True) -> bytes:
    events = b"".join(b"data: " + msgspec.json.encode(p) + b"\n\n" for p in payloads)
    return events + (b"data: [DONE]\n\n" if done else b"")


def sse_chunk(index: int, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "cmpl-sse",
        "object": "text_completion",
        "model": MODEL,
        "choices": [{"index": index, "text": text, "finish_reason": finish_reason}],
    }


# -- create ----------------------------------------------------------------------------------


async def test_create_returns_a_completion(client: AsyncClient) -> None:
    completion = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4)
    assert isinstance(completion, Completion)
    assert completion.object == "text_completion"
    assert completion.model == MODEL
    assert completion.id.startswith("cmpl-")
    assert len(completion.choices) == 1
    assert completion.choices[0].finish_reason == "length"
    assert len(completion.text.split()) == 4
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 4  # type: ignore[operator]


async def test_create_is_deterministic(client: AsyncClient) -> None:
    first = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6)
    second = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6)
    assert first.text == second.text
    assert first.id != second.id


async def test_create_with_n_choices(client: AsyncClient) -> None:
    completion = await client.completions.create(model=MODEL, prompt=PROMPT, n=3, max_tokens=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    assert len({choice.text for choice in completion.choices}) == 3


async def test_create_with_logprobs(client: AsyncClient) -> None:
    completion = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=3, logprobs=2
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    assert "".join(logprobs.tokens) == completion.text
    assert len(logprobs.token_logprobs) == 3
    assert logprobs.top_logprobs is not None
    assert all(entry is not None and len(entry) == 2 for entry in logprobs.top_logprobs)
    assert logprobs.text_offset[0] == 0


async def test_create_with_echo(client: AsyncClient) -> None:
    plain = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3)
    echoed = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, echo=True)
    assert echoed.text == PROMPT + plain.text


async def test_create_with_stop(client: AsyncClient) -> None:
    full = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8)
    stop = full.text.split()[3]
    stopped = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, stop=stop)
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


async def test_create_usage(client: AsyncClient) -> None:
    completion = await client.completions.create(model=MODEL, prompt=PROMPT, n=2, max_tokens=5)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 10
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0


async def test_create_with_zero_max_tokens(client: AsyncClient) -> None:
    completion = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=0)
    assert completion.text == ""


# -- what goes over the wire -----------------------------------------------------------------


async def test_the_exact_json_body_sent(client: AsyncClient, emulator: GatewayEmulator) -> None:
    await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=5, temperature=None, stop=["\n"]
    )
    # Compact JSON, keys in the order given, unset fields left out, None sent as null.
    assert emulator.requests[-1].body == (
        b'{"model":"openai/gpt-3.5-turbo-instruct","prompt":"Say hi","max_tokens":5,'
        b'"temperature":null,"stop":["\\n"]}'
    )


async def test_the_minimal_body_sent(client: AsyncClient, emulator: GatewayEmulator) -> None:
    await client.completions.create(model=MODEL, prompt=PROMPT)
    assert emulator.requests[-1].json() == {"model": MODEL, "prompt": PROMPT}


async def test_stream_body_adds_stream_true(client: AsyncClient, emulator: GatewayEmulator) -> None:
    await chunk_texts(client, max_tokens=2, stream_options={"include_usage": True})
    assert emulator.requests[-1].json() == {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 2,
        "stream_options": {"include_usage": True},
        "stream": True,
    }


async def test_orq_and_extra_body_are_sent(client: AsyncClient, emulator: GatewayEmulator) -> None:
    orq = {"fallbacks": [{"model": "openai/gpt-4o-mini"}], "cache": {"type": "exact_match"}}
    await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=1, orq=orq, extra_body={"top_k": 5}
    )
    assert emulator.requests[-1].json() == {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 1,
        "orq": orq,
        "top_k": 5,
    }


async def test_headers_of_a_plain_call(client: AsyncClient, emulator: GatewayEmulator) -> None:
    await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)
    headers = emulator.requests[-1].headers
    assert emulator.requests[-1].method == "POST"
    assert headers["accept"] == "application/json"
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer test-key"
    assert headers["user-agent"].startswith("asyncclient/")
    assert headers["content-length"] == str(len(emulator.requests[-1].body))


async def test_headers_of_a_stream(client: AsyncClient, emulator: GatewayEmulator) -> None:
    await chunk_texts(client, max_tokens=1)
    headers = emulator.requests[-1].headers
    assert headers["accept"] == "text/event-stream"
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer test-key"
    assert headers["user-agent"].startswith("asyncclient/")


async def test_a_borrowed_session_sends_the_same_headers(emulator: GatewayEmulator) -> None:
    # An owned session carries the client's headers as its defaults; a borrowed one gets
    # them on every request instead. The wire must not tell the difference.
    async with (
        aiohttp.ClientSession() as session,
        AsyncClient(base_url=emulator.base_url, api_key="test-key", session=session) as client,
    ):
        await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)
        plain = emulator.requests[-1].headers
        async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=1) as chunks:
            async for _ in chunks:
                pass
        streamed = emulator.requests[-1].headers
    assert plain["accept"] == "application/json"
    assert streamed["accept"] == "text/event-stream"
    for headers in (plain, streamed):
        assert headers["authorization"] == "Bearer test-key"
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("asyncclient/")


async def test_extra_headers_per_call(client: AsyncClient, emulator: GatewayEmulator) -> None:
    await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=1, extra_headers={"X-Trace": "abc"}
    )
    assert emulator.requests[-1].headers["x-trace"] == "abc"


async def test_authentication_against_a_gateway_that_checks_the_key() -> None:
    async with GatewayEmulator(api_key="right") as emulator:
        async with AsyncClient(retry=None, base_url=emulator.base_url, api_key="right") as good:
            assert (await good.completions.create(model=MODEL, prompt=PROMPT)).text
        async with AsyncClient(retry=None, base_url=emulator.base_url, api_key="wrong") as bad:
            error = await caught(bad.completions.create(model=MODEL, prompt=PROMPT))
    assert isinstance(error, AuthenticationError)
    assert error.status_code == 401


# -- paths -----------------------------------------------------------------------------------

PATHS = ["/v2/proxy/completions", "/v2/router/completions", "/v1/completions"]


@pytest.mark.parametrize("path", PATHS)
async def test_client_path(emulator: GatewayEmulator, path: str) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url, path=path) as client:
        completion = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
        texts = await chunk_texts(client, max_tokens=2)
    assert completion.text == "".join(texts)
    assert [request.path for request in emulator.requests] == [path, path]


@pytest.mark.parametrize("path", PATHS)
async def test_per_call_path(client: AsyncClient, emulator: GatewayEmulator, path: str) -> None:
    await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, path=path)
    async with client.completions.stream(model=MODEL, prompt=PROMPT, path=path) as stream:
        await stream.final_completion()
    assert [request.path for request in emulator.requests] == [path, path]


async def test_default_path(client: AsyncClient, emulator: GatewayEmulator) -> None:
    await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)
    assert emulator.requests[-1].path == "/v2/proxy/completions"


async def test_base_url_with_trailing_slash(emulator: GatewayEmulator) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url + "/") as client:
        await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)
    assert emulator.requests[-1].path == "/v2/proxy/completions"


async def test_unknown_path_is_not_found(client: AsyncClient) -> None:
    error = await caught(
        client.completions.create(model=MODEL, prompt=PROMPT, path="/v9/completions")
    )
    assert isinstance(error, NotFoundError)
    assert error.status_code == 404


# -- streaming -------------------------------------------------------------------------------


async def test_stream_yields_chunks(client: AsyncClient) -> None:
    async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=5) as stream:
        chunks = [chunk async for chunk in stream]
    assert len(chunks) == 5
    assert all(isinstance(chunk, CompletionChunk) for chunk in chunks)
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None] * 4 + ["length"]
    assert len({chunk.id for chunk in chunks}) == 1
    assert stream.closed


async def test_stream_text_equals_the_plain_text(client: AsyncClient) -> None:
    plain = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12)
    async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=12) as stream:
        deltas = [text async for text in stream.text_deltas()]
    assert "".join(deltas) == plain.text
    assert all(deltas)


async def test_final_completion_equals_the_plain_response(client: AsyncClient) -> None:
    params: dict[str, Any] = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 7,
        "n": 3,
        "logprobs": 2,
        "echo": True,
        "stream_options": {"include_usage": True},
    }
    plain = await client.completions.create(**params)
    async with client.completions.stream(**params) as stream:
        final = await stream.final_completion()
    assert final.choices == plain.choices
    assert final.usage == plain.usage
    assert final.model == plain.model
    assert final.object == plain.object


async def test_stream_interleaves_n_choices(client: AsyncClient) -> None:
    plain = await client.completions.create(model=MODEL, prompt=PROMPT, n=3, max_tokens=4)
    async with client.completions.stream(model=MODEL, prompt=PROMPT, n=3, max_tokens=4) as stream:
        chunks = [chunk async for chunk in stream]
        by_index = [
            "".join(
                choice.text for chunk in chunks for choice in chunk.choices if choice.index == i
            )
            for i in range(3)
        ]
        final = stream.completion_so_far
    assert {choice.index for chunk in chunks[:3] for choice in chunk.choices} == {0, 1, 2}
    assert by_index == [choice.text for choice in plain.choices]
    assert final is not None
    assert [choice.finish_reason for choice in final.choices] == ["length"] * 3


async def test_text_deltas_of_another_choice(client: AsyncClient) -> None:
    plain = await client.completions.create(model=MODEL, prompt=PROMPT, n=2, max_tokens=4)
    async with client.completions.stream(model=MODEL, prompt=PROMPT, n=2, max_tokens=4) as stream:
        second = "".join([text async for text in stream.text_deltas(1)])
    assert second == plain.choices[1].text


async def test_include_usage_sends_a_final_usage_only_chunk(client: AsyncClient) -> None:
    async with client.completions.stream(
        model=MODEL, prompt=PROMPT, max_tokens=3, stream_options={"include_usage": True}
    ) as stream:
        chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.text == ""
    assert last.usage is not None
    assert last.usage.completion_tokens == 3
    assert all(chunk.usage is None for chunk in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage(client: AsyncClient) -> None:
    async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=3) as stream:
        final = await stream.final_completion()
    assert final.usage is None


async def test_stream_metadata(client: AsyncClient, emulator: GatewayEmulator) -> None:
    async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=2) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.request_id is None  # the emulator sends no request id by default
        await stream.final_completion()
    emulator.inject(Fault(headers={"x-request-id": "req-42"}))
    async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=2) as stream:
        assert stream.request_id == "req-42"
        assert stream.headers["x-request-id"] == "req-42"
        assert (await stream.final_completion()).text


async def test_completion_so_far_grows(client: AsyncClient) -> None:
    async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=4) as stream:
        before_any_chunk = stream.completion_so_far
        assert before_any_chunk is None
        seen: list[str] = []
        async for chunk in stream:
            seen.append(chunk.text)
            so_far = stream.completion_so_far
            assert so_far is not None
            # Everything decoded from the network so far, which may run ahead of the chunks
            # yielded: events that arrived in one read are decoded together.
            assert so_far.text.startswith("".join(seen))
        final = stream.completion_so_far
        assert final is not None
        assert final.text == "".join(seen)


async def test_final_completion_after_partial_iteration(client: AsyncClient) -> None:
    plain = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6)
    async with client.completions.stream(model=MODEL, prompt=PROMPT, max_tokens=6) as stream:
        async for _ in stream:
            break
        final = await stream.final_completion()
    assert final.text == plain.text


async def test_create_stream_true_with_async_with(client: AsyncClient) -> None:
    plain = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5)
    stream = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, stream=True)
    assert isinstance(stream, CompletionStream)
    async with stream:
        texts = [chunk.text async for chunk in stream]
    assert "".join(texts) == plain.text
    assert stream.closed


async def test_stream_exhausted_without_async_with_closes_itself(client: AsyncClient) -> None:
    stream = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, stream=True)
    texts = [chunk.text async for chunk in stream]
    assert len(texts) == 3
    assert stream.closed
    await stream.aclose()  # idempotent


async def test_keepalive_comments_and_gzip_are_transparent() -> None:
    async with (
        GatewayEmulator(keepalive_first=True, chunk_tokens=2) as emulator,
        AsyncClient(retry=None, base_url=emulator.base_url) as client,
    ):
        plain = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5)
        emulator.inject(Fault(gzip=True))
        texts = await chunk_texts(client, max_tokens=5)
        emulator.inject(Fault(gzip=True))
        gzipped = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5)
    assert len(texts) == 3
    assert "".join(texts) == plain.text == gzipped.text


async def test_create_from_request(client: AsyncClient) -> None:
    from asyncclient import CompletionRequest

    plain = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4)
    request = CompletionRequest(model=MODEL, prompt=PROMPT, max_tokens=4)
    assert (await client.completions.create_from_request(request)).text == plain.text
    streamed = CompletionRequest(model=MODEL, prompt=PROMPT, max_tokens=4, stream=True)
    assert (await client.completions.create_from_request(streamed)).text == plain.text


# -- the response Content-Type decides how it is parsed --------------------------------------


async def test_json_answer_to_a_stream_request_yields_one_chunk(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(body=completion_json("whole answer"), content_type="application/json"))
    async with client.completions.stream(model=MODEL, prompt=PROMPT) as stream:
        chunks = [chunk async for chunk in stream]
        assert stream.status_code == 200
    assert len(chunks) == 1
    assert chunks[0].text == "whole answer"
    assert chunks[0].choices[0].finish_reason == "stop"
    assert chunks[0].usage is not None


async def test_json_answer_to_create_stream_true(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(body=completion_json("whole answer"), content_type="application/json"))
    stream = await client.completions.create(model=MODEL, prompt=PROMPT, stream=True)
    async with stream:
        final = await stream.final_completion()
    assert final.text == "whole answer"


async def test_event_stream_answer_to_a_plain_request_is_accumulated(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    body = sse(
        sse_chunk(0, "Hel"),
        sse_chunk(1, "Wor"),
        sse_chunk(0, "lo", "stop"),
        sse_chunk(1, "ld", "length"),
    )
    emulator.inject(Fault(body=body, content_type="text/event-stream"))
    completion = await client.completions.create(model=MODEL, prompt=PROMPT)
    assert isinstance(completion, Completion)
    assert [(c.text, c.finish_reason) for c in completion.choices] == [
        ("Hello", "stop"),
        ("World", "length"),
    ]


async def test_json_with_charset_parameter(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(body=completion_json(), content_type="application/json; charset=utf-8"))
    assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text == "from json"


async def test_json_body_labelled_text_plain_is_accepted(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(body=completion_json(), content_type="text/plain"))
    assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text == "from json"


# -- status errors ---------------------------------------------------------------------------

STATUS_ERRORS: list[tuple[int, type[APIStatusError]]] = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, ConflictError),
    (422, UnprocessableEntityError),
    (429, RateLimitError),
    (500, InternalServerError),
    (502, InternalServerError),
    (503, InternalServerError),
]


@pytest.mark.parametrize(("status", "error_class"), STATUS_ERRORS)
async def test_status_errors(
    client: AsyncClient,
    emulator: GatewayEmulator,
    status: int,
    error_class: type[APIStatusError],
) -> None:
    emulator.inject(Fault(status=status, headers={"x-request-id": f"req-{status}"}))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert type(error) is error_class
    assert isinstance(error, APIStatusError)
    assert error.status_code == status
    assert error.headers["x-request-id"] == f"req-{status}"
    assert error.request_id == f"req-{status}"
    assert error.error is not None
    assert error.error.message == f"emulated {status} error"
    assert error.error.code == status
    assert msgspec.json.decode(error.body)["error"]["message"] == f"emulated {status} error"
    assert str(status) in str(error)
    assert f"req-{status}" in str(error)


@pytest.mark.parametrize(("status", "error_class"), STATUS_ERRORS)
async def test_status_errors_on_stream_requests(
    client: AsyncClient,
    emulator: GatewayEmulator,
    status: int,
    error_class: type[APIStatusError],
) -> None:
    emulator.inject(Fault(status=status))
    error, received = await stream_error(client)
    assert type(error) is error_class
    assert received == ""
    emulator.inject(Fault(status=status))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT, stream=True))
    assert type(error) is error_class


async def test_rate_limit_keeps_retry_after(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(status=429, retry_after="7", retry_after_ms=7000))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert isinstance(error, RateLimitError)
    assert error.headers["Retry-After"] == "7"
    assert error.headers["retry-after-ms"] == "7000"


async def test_flat_error_body(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(status=400, flat_error=True))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert isinstance(error, BadRequestError)
    assert error.error is not None
    assert error.error.message == "emulated 400 error"
    assert error.error.code == 400


async def test_string_error_body(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(status=400, error_body={"error": "bad"}))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert isinstance(error, BadRequestError)
    assert error.error is not None
    assert error.error.message == "bad"
    assert error.body == b'{"error":"bad"}'


async def test_html_error_page_from_a_proxy(client: AsyncClient, emulator: GatewayEmulator) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    emulator.inject(Fault(status=502, body=page, content_type="text/html"))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert isinstance(error, InternalServerError)
    assert error.status_code == 502
    assert error.error is None
    assert error.body == page
    assert "502 Bad Gateway" in error.body_text
    assert "502 Bad Gateway" in str(error)


async def test_unmapped_4xx_is_a_plain_status_error(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(status=418))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert type(error) is APIStatusError
    assert error.status_code == 418


async def test_the_connection_is_reusable_after_a_status_error(emulator: GatewayEmulator) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url, max_connections=1) as client:
        for status in (400, 500, 429):
            emulator.inject(Fault(status=status))
            await caught(client.completions.create(model=MODEL, prompt=PROMPT))
        assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text
    assert await drained(emulator)


# -- bodies that do not decode ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "mentions"),
    [
        (b"Hello, world", "application/json", "not valid JSON"),
        (b'{"id":"cmpl-1","choices":[{"index":0,', "application/json", "not valid JSON"),
        (b"<html><body>Welcome</body></html>", "text/html", "text/html"),
        (b"plain words", "text/plain", "text/plain"),
        (b"", "application/json", "not valid JSON"),
        (b'{"id":"x","choices":[],"object":"text_completion"}', "application/json", "model"),
        (b'{"id":"x","choices":"none","model":"m","object":"o"}', "application/json", "choices"),
    ],
)
async def test_success_bodies_that_do_not_decode(
    client: AsyncClient, emulator: GatewayEmulator, body: bytes, content_type: str, mentions: str
) -> None:
    emulator.inject(Fault(body=body, content_type=content_type))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert type(error) is ResponseDecodeError
    assert error.body == body
    assert mentions in str(error)


async def test_missing_required_field_names_its_path(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(body=b'{"id":"x","choices":[],"object":"text_completion"}'))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert isinstance(error, ResponseDecodeError)
    assert error.path == "$.model"


async def test_invalid_utf8_in_a_json_body(client: AsyncClient, emulator: GatewayEmulator) -> None:
    body = completion_json("ok").replace(b"ok", b"\xff\xfe")
    emulator.inject(Fault(body=body))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert isinstance(error, ResponseDecodeError)


async def test_truncated_json_body_on_the_wire(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    # The server promised more bytes than it sent: a broken connection, not a bad body.
    emulator.inject(Fault(cut_after_bytes=20))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert isinstance(error, APIConnectionError)


# -- connection failures ---------------------------------------------------------------------


async def test_connection_refused() -> None:
    async with AsyncClient(retry=None, base_url=closed_port_url()) as client:
        error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
        assert type(error) is APIConnectionError
        stream_failure, _ = await stream_error(client)
    assert type(stream_failure) is APIConnectionError


async def test_drop_before_headers(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(drop_before_headers=True))
    error = await caught(client.completions.create(model=MODEL, prompt=PROMPT))
    assert type(error) is APIConnectionError
    emulator.inject(Fault(drop_before_headers=True))
    stream_failure, _ = await stream_error(client)
    assert type(stream_failure) is APIConnectionError
    assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text


async def test_headers_timeout(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(headers_delay=1.0))
    error = await caught(
        client.completions.create(model=MODEL, prompt=PROMPT, timeout=Timeout(headers=0.2))
    )
    assert type(error) is HeadersTimeoutError
    assert error.phase == "headers"
    assert isinstance(error, APIConnectionError)


async def test_body_read_timeout(client: AsyncClient, emulator: GatewayEmulator) -> None:
    # The headers arrive in time; the body then stalls past Timeout.idle.
    emulator.inject(Fault(body_delay=1.0))
    error = await caught(
        client.completions.create(model=MODEL, prompt=PROMPT, timeout=Timeout(idle=0.2))
    )
    assert type(error) is ReadTimeoutError
    assert error.phase == "idle"
    emulator.inject(Fault(body_delay=0.05))
    assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text


async def test_total_deadline(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(headers_delay=1.0))
    error = await caught(
        client.completions.create(model=MODEL, prompt=PROMPT, timeout=Timeout(total=0.2))
    )
    assert type(error) is TotalTimeoutError
    assert error.phase == "total"


# -- streams that fail -----------------------------------------------------------------------


async def test_stream_cut_after_events(client: AsyncClient, emulator: GatewayEmulator) -> None:
    full = await chunk_texts(client, max_tokens=10)
    emulator.inject(Fault(cut_after_events=4))
    error, received = await stream_error(client, max_tokens=10)
    assert type(error) is IncompleteStreamError
    assert isinstance(error, APIConnectionError)
    assert received == "".join(full[:4])
    assert error.partial is not None
    assert error.partial.text == received
    assert error.partial_text == received
    assert error.partial.choices[0].finish_reason is None


async def test_stream_cut_mid_event(client: AsyncClient, emulator: GatewayEmulator) -> None:
    body = msgspec.json.encode({"model": MODEL, "prompt": PROMPT, "max_tokens": 10, "stream": True})
    async with (
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + "/v2/proxy/completions", data=body) as response,
    ):
        raw = await response.read()
    # Cut in the middle of the fifth event; the ids of both requests have the same length.
    fifth = raw.index(b"data: ", raw.index(b"data: ") + 1)
    for _ in range(3):
        fifth = raw.index(b"data: ", fifth + 1)
    cut = fifth + 25
    expected = "".join(
        msgspec.json.decode(event.data)["choices"][0]["text"]
        for event in SSEDecoder().feed(raw[:cut])
    )
    emulator.inject(Fault(cut_after_bytes=cut))
    error, received = await stream_error(client, max_tokens=10)
    assert type(error) is IncompleteStreamError
    assert received == expected
    assert len(expected.split()) == 4
    assert error.partial is not None
    assert error.partial.text == expected


async def test_stream_cut_before_any_event(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(cut_after_bytes=0))
    error, received = await stream_error(client, max_tokens=4)
    assert isinstance(error, IncompleteStreamError)
    assert received == ""
    assert error.partial is None
    assert error.partial_text == ""


async def test_stream_ending_without_done(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(body=sse(sse_chunk(0, "half"), done=False)))
    error, received = await stream_error(client)
    assert type(error) is IncompleteStreamError
    assert received == "half"
    assert error.partial_text == "half"


async def test_slow_consumer_keeps_every_event_received_before_a_cut() -> None:
    # The server sends 4 events and closes while the consumer is busy; the events that
    # arrived before the break must all be delivered, then the error.
    async with (
        GatewayEmulator(chunk_delay=0.005) as emulator,
        AsyncClient(retry=None, base_url=emulator.base_url) as client,
    ):
        full = await chunk_texts(client, max_tokens=10)
        emulator.inject(Fault(cut_after_events=4))
        received: list[str] = []

        async def consume() -> None:
            async with client.completions.stream(
                model=MODEL, prompt=PROMPT, max_tokens=10
            ) as stream:
                async for chunk in stream:
                    received.append(chunk.text)
                    if len(received) == 1:
                        assert await eventually(lambda: emulator.open_streams == 0)
                        await asyncio.sleep(0.05)

        error = await caught(consume())
    assert isinstance(error, IncompleteStreamError)
    assert received == full[:4]
    assert error.partial_text == "".join(full[:4])


@pytest.mark.parametrize("style", ["data", "event"])
async def test_in_stream_error(client: AsyncClient, emulator: GatewayEmulator, style: str) -> None:
    full = await chunk_texts(client, max_tokens=8)
    emulator.inject(Fault(error_event_after=3, error_event_style=style))  # type: ignore[arg-type]
    error, received = await stream_error(client, max_tokens=8)
    assert type(error) is ServerStreamError
    assert received == "".join(full[:3])
    assert error.partial_text == received
    assert error.error is not None
    assert error.error.message == "emulated in-stream error"
    assert "emulated in-stream error" in str(error)


@pytest.mark.parametrize("style", ["data", "event"])
async def test_in_stream_error_flat_and_custom(
    client: AsyncClient, emulator: GatewayEmulator, style: str
) -> None:
    emulator.inject(
        Fault(
            error_event_after=1,
            error_event_style=style,  # type: ignore[arg-type]
            error_body={"error": {"message": "overloaded", "code": "overloaded_error"}},
        )
    )
    error, _ = await stream_error(client, max_tokens=4)
    assert isinstance(error, ServerStreamError)
    assert error.error is not None
    assert error.error.message == "overloaded"
    assert error.error.code == "overloaded_error"
    emulator.inject(Fault(error_event_after=1, error_event_style=style, flat_error=True))  # type: ignore[arg-type]
    error, _ = await stream_error(client, max_tokens=4)
    assert isinstance(error, ServerStreamError)
    assert error.error is not None
    assert error.error.message == "emulated in-stream error"


async def test_in_stream_error_before_any_chunk(
    client: AsyncClient, emulator: GatewayEmulator
) -> None:
    emulator.inject(Fault(error_event_after=0))
    error, received = await stream_error(client, max_tokens=4)
    assert isinstance(error, ServerStreamError)
    assert received == ""
    assert error.partial is None


async def test_malformed_event(client: AsyncClient, emulator: GatewayEmulator) -> None:
    full = await chunk_texts(client, max_tokens=8)
    emulator.inject(Fault(malformed_event_after=2))
    error, received = await stream_error(client, max_tokens=8)
    assert type(error) is StreamDecodeError
    assert isinstance(error, ResponseDecodeError)
    assert received == "".join(full[:2])
    assert error.partial_text == received
    assert error.body == b"{not json"


async def test_event_with_a_missing_field(client: AsyncClient, emulator: GatewayEmulator) -> None:
    emulator.inject(Fault(body=sse(sse_chunk(0, "ok"), {"choices": []})))
    error, received = await stream_error(client)
    assert type(error) is StreamDecodeError
    assert received == "ok"
    assert error.path == "$.id"


async def test_invalid_utf8_event(client: AsyncClient, emulator: GatewayEmulator) -> None:
    full = await chunk_texts(client, max_tokens=8)
    emulator.inject(Fault(invalid_utf8_event_after=2))
    error, received = await stream_error(client, max_tokens=8)
    assert type(error) is StreamDecodeError
    assert received == "".join(full[:2])
    assert error.partial_text == received


async def test_oversized_event(emulator: GatewayEmulator) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url, max_event_size=4096) as client:
        emulator.inject(Fault(oversized_event_bytes=64 * 1024))
        error, received = await stream_error(client, max_tokens=4)
        assert type(error) is StreamDecodeError
        assert received == ""
        assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text


async def test_stalled_stream_read_timeout(client: AsyncClient, emulator: GatewayEmulator) -> None:
    full = await chunk_texts(client, max_tokens=6)
    emulator.inject(Fault(stall_after_events=2, stall_seconds=1.0))
    error, received = await stream_error(client, max_tokens=6, timeout=Timeout(idle=0.2))
    # An idle timeout mid-stream is both an incomplete stream (it keeps the partial output)
    # and a timeout; both are APIConnectionErrors.
    assert type(error) is StreamTimeoutError
    assert isinstance(error, IncompleteStreamError)
    assert isinstance(error, APITimeoutError)
    assert error.phase == "idle"
    assert received == "".join(full[:2])
    assert error.partial_text == received


async def test_a_stream_failure_releases_the_connection(emulator: GatewayEmulator) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url, max_connections=1) as client:
        faults = [
            Fault(cut_after_events=1),
            Fault(error_event_after=1),
            Fault(malformed_event_after=1),
            Fault(invalid_utf8_event_after=1),
            Fault(cut_after_bytes=100),
        ]
        for fault in faults:
            emulator.inject(fault)
            error, _ = await stream_error(client, max_tokens=30)
            assert isinstance(error, AsyncClientError)
        async with asyncio.timeout(10):
            assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text
    assert await drained(emulator)


# -- cleanup ---------------------------------------------------------------------------------


async def test_abandoned_streams_release_their_connection(emulator: GatewayEmulator) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url, max_connections=1) as client:
        async with asyncio.timeout(30):
            for _ in range(100):
                async with client.completions.stream(
                    model=MODEL, prompt=PROMPT, max_tokens=1000
                ) as stream:
                    async for _chunk in stream:
                        break
                assert stream.closed
            completion = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3)
    assert len(completion.text.split()) == 3
    assert await drained(emulator)


async def test_abandoned_create_stream_true_releases_its_connection(
    emulator: GatewayEmulator,
) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url, max_connections=1) as client:
        async with asyncio.timeout(10):
            for _ in range(10):
                stream = await client.completions.create(
                    model=MODEL, prompt=PROMPT, max_tokens=1000, stream=True
                )
                async with stream:
                    async for _chunk in stream:
                        break
            assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text
    assert await drained(emulator)


async def test_cancellation_mid_stream_releases_the_connection() -> None:
    async with GatewayEmulator(chunk_delay=0.01) as emulator:
        async with AsyncClient(retry=None, base_url=emulator.base_url, max_connections=1) as client:
            first_chunk = asyncio.Event()

            async def consume() -> None:
                async with client.completions.stream(
                    model=MODEL, prompt=PROMPT, max_tokens=1000
                ) as stream:
                    async for _chunk in stream:
                        first_chunk.set()

            task = asyncio.create_task(consume())
            async with asyncio.timeout(10):
                await first_chunk.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with asyncio.timeout(10):
                completion = await client.completions.create(
                    model=MODEL, prompt=PROMPT, max_tokens=2
                )
        assert completion.text
        assert await drained(emulator)


async def test_cancellation_of_a_plain_call_releases_the_connection(
    emulator: GatewayEmulator,
) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url, max_connections=1) as client:
        emulator.inject(Fault(headers_delay=0.5))
        task = asyncio.create_task(client.completions.create(model=MODEL, prompt=PROMPT))
        assert await eventually(lambda: emulator.active_requests == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(10):
            assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text


async def test_stream_dropped_without_close_warns_and_releases(emulator: GatewayEmulator) -> None:
    async with AsyncClient(retry=None, base_url=emulator.base_url, max_connections=1) as client:

        async def open_and_drop() -> None:
            stream = await client.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=1000, stream=True
            )
            await stream.__anext__()
            del stream
            gc.collect()

        with pytest.warns(ResourceWarning, match="CompletionStream was not closed"):
            await open_and_drop()
        async with asyncio.timeout(10):
            assert (await client.completions.create(model=MODEL, prompt=PROMPT)).text
    assert await drained(emulator)


async def test_many_concurrent_creates(client: AsyncClient, emulator: GatewayEmulator) -> None:
    async with asyncio.timeout(30):
        completions = await asyncio.gather(
            *(
                client.completions.create(model=MODEL, prompt=f"prompt {i}", max_tokens=3)
                for i in range(200)
            )
        )
    assert len(completions) == 200
    assert all(len(completion.text.split()) == 3 for completion in completions)
    assert len({completion.id for completion in completions}) == 200
    assert len(emulator.requests) == 200
    assert await drained(emulator)


async def test_many_concurrent_streams(client: AsyncClient, emulator: GatewayEmulator) -> None:
    async def one(i: int) -> str:
        async with client.completions.stream(
            model=MODEL, prompt=f"prompt {i}", max_tokens=5
        ) as stream:
            return (await stream.final_completion()).text

    async with asyncio.timeout(30):
        texts = await asyncio.gather(*(one(i) for i in range(50)))
    assert all(len(text.split()) == 5 for text in texts)
    assert await drained(emulator)


async def test_closing_the_client_with_an_open_stream(emulator: GatewayEmulator) -> None:
    client = AsyncClient(retry=None, base_url=emulator.base_url)
    stream = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=1000, stream=True
    )
    async with stream:
        await stream.__anext__()
        await client.aclose()
    assert stream.closed
    assert client.closed
    assert await drained(emulator)


# -- lazy logprobs ---------------------------------------------------------------------------


async def test_create_lazy_decodes_logprobs_only_when_asked(client: AsyncClient) -> None:
    eager = await client.completions.create(model=MODEL, prompt=PROMPT, logprobs=3, n=2)
    lazy = await client.completions.create_lazy(model=MODEL, prompt=PROMPT, logprobs=3, n=2)
    assert lazy.text == eager.text
    assert [choice.logprobs() for choice in lazy.choices] == [c.logprobs for c in eager.choices]
    plain = await client.completions.create_lazy(model=MODEL, prompt=PROMPT)
    assert plain.choices[0].logprobs() is None


def test_lazy_logprobs_that_are_not_openai_shaped_raise_a_decode_error() -> None:
    from asyncclient._decode import decode_completion_lazy

    body = (
        b'{"id":"x","object":"text_completion","model":"m","choices":[{"logprobs":{"tokens":1}}]}'
    )
    completion = decode_completion_lazy(body)
    with pytest.raises(ResponseDecodeError):
        completion.choices[0].logprobs()


@pytest.mark.parametrize("shift", [10_000.0, -10_000.0])
async def test_deadlines_follow_a_clock_replaced_on_the_loop_object(
    emulator: GatewayEmulator, shift: float
) -> None:
    # Test tools that fast-forward time replace `time` on the loop object; timers then run
    # on that clock, so the client's deadlines must be read from it too, or they fire at
    # once (clock ahead) or never (behind).
    loop = asyncio.get_running_loop()
    real_time = loop.time
    loop.time = lambda: real_time() + shift  # type: ignore[method-assign]
    try:
        async with AsyncClient(
            base_url=emulator.base_url, api_key="test-key", retry=None, timeout=Timeout(600.0)
        ) as client:
            completion = await client.completions.create(model=MODEL, prompt=PROMPT)
            assert completion.choices[0].text
            emulator.inject(Fault(headers_delay=1.0))
            with pytest.raises(HeadersTimeoutError):
                await client.completions.create(
                    model=MODEL, prompt=PROMPT, timeout=Timeout(headers=0.2)
                )
            async with client.completions.stream(model=MODEL, prompt=PROMPT) as stream:
                assert [chunk async for chunk in stream]
    finally:
        del loop.time
