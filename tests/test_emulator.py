"""Tests for the gateway emulator, driven by a raw aiohttp client over real loopback sockets."""

from __future__ import annotations

import asyncio
import base64
import gzip
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from asyncclient.testing import Fault, GatewayEmulator, RecordedRequest, make_app, serve

PATH = "/v2/proxy/completions"


class Reply(msgspec.Struct):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class Event(msgspec.Struct):
    event: str | None
    data: bytes


@pytest.fixture
async def emu() -> AsyncIterator[GatewayEmulator]:
    async with GatewayEmulator() as emulator:
        yield emulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession,
    emu: GatewayEmulator,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    path: str = PATH,
) -> Reply:
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    async with session.post(emu.base_url + path, data=data, headers=hdrs) as resp:
        raw = await resp.read()
        return Reply(status=resp.status, headers=dict(resp.headers), body=raw)


async def post_partial(
    session: aiohttp.ClientSession, emu: GatewayEmulator, body: Any
) -> tuple[bytes, BaseException | None]:
    """Read as much of the body as arrives; also return the error that ended it, if any."""
    chunks: list[bytes] = []
    async with session.post(emu.base_url + PATH, json=body) as resp:
        try:
            async for chunk in resp.content.iter_any():
                chunks.append(chunk)
        except aiohttp.ClientPayloadError as exc:
            return b"".join(chunks), exc
    return b"".join(chunks), None


def events(raw: bytes) -> list[Event]:
    out: list[Event] = []
    for block in raw.split(b"\n\n"):
        name: str | None = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
        if data:
            out.append(Event(event=name, data=b"\n".join(data)))
    return out


def chunks(raw: bytes) -> list[Any]:
    """Decoded JSON chunks of a well-formed stream, without the [DONE] sentinel."""
    evs = events(raw)
    assert evs[-1].data == b"[DONE]"
    return [msgspec.json.decode(e.data) for e in evs[:-1]]


def stream_text(raw: bytes, index: int = 0) -> str:
    return "".join(c["text"] for ch in chunks(raw) for c in ch["choices"] if c["index"] == index)


BASE = {"model": "openai/gpt-3.5-turbo-instruct", "prompt": "Say hi to the world"}


# -- deterministic completions ----------------------------------------------------------


async def test_health(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    async with session.get(emu.base_url + "/health") as resp:
        assert resp.status == 200
        assert await resp.text() == "ok"
    assert emu.requests == []


async def test_wait_for_requests_counts_every_request(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(headers_delay=1.0))
    held = asyncio.create_task(session.post(emu.base_url + "/v2/proxy/completions", json=BASE))
    await emu.wait_for_requests(1)  # returns while the server still holds the request
    assert emu.received == 1
    assert not held.done()
    with pytest.raises(TimeoutError):
        await emu.wait_for_requests(2, timeout=0.05)
    (await held).release()
    assert emu.received == 1  # /health is not counted, nor is anything else


async def test_json_body_shape(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    reply = await post(session, emu, {**BASE, "max_tokens": 5})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "choices",
        "usage",
    }
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert isinstance(body["created"], int)
    assert body["model"] == BASE["model"]
    assert body["system_fingerprint"] == "fp_emulator"
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "length"
    assert choice["logprobs"] is None
    assert len(choice["text"].split()) == 5
    assert body["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_default_max_tokens_and_float_numbers(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    body = (await post(session, emu, BASE)).json()
    assert body["usage"]["completion_tokens"] == 16
    # The Orq SDK sends numbers as floats.
    body = (await post(session, emu, {**BASE, "max_tokens": 3.0, "seed": 7.0})).json()
    assert body["usage"]["completion_tokens"] == 3


async def test_deterministic_and_seed_varies_text(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    first = (await post(session, emu, BASE)).json()
    again = (await post(session, emu, BASE)).json()
    seeded = (await post(session, emu, {**BASE, "seed": 3})).json()
    other_prompt = (await post(session, emu, {**BASE, "prompt": "something else"})).json()
    text = first["choices"][0]["text"]
    assert again["choices"][0]["text"] == text
    assert seeded["choices"][0]["text"] != text
    assert other_prompt["choices"][0]["text"] != text
    assert first["id"] != again["id"]


async def test_all_routes_behave_alike(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    texts = set()
    for path in ("/v2/proxy/completions", "/v2/router/completions", "/v1/completions"):
        reply = await post(session, emu, BASE, path=path)
        assert reply.status == 200
        texts.add(reply.json()["choices"][0]["text"])
    assert len(texts) == 1


async def test_n_choices(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    body = (await post(session, emu, {**BASE, "n": 3, "max_tokens": 4})).json()
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["text"] for c in choices}) == 3
    assert all(c["finish_reason"] == "length" for c in choices)
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["total_tokens"] == 12 + body["usage"]["prompt_tokens"]


async def test_prompt_list_and_prompt_tokens(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    body = (await post(session, emu, {**BASE, "prompt": ["one two", "three"]})).json()
    assert body["usage"]["prompt_tokens"] == 3
    body = (await post(session, emu, {**BASE, "prompt": ""})).json()
    assert body["usage"]["prompt_tokens"] == 1


async def test_logprobs_shape(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    body = (await post(session, emu, {**BASE, "max_tokens": 4, "logprobs": 3})).json()
    choice = body["choices"][0]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert len(logprobs["token_logprobs"]) == 4
    assert all(lp < 0 for lp in logprobs["token_logprobs"])
    assert len(logprobs["top_logprobs"]) == 4
    for token, lp, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
    ):
        assert len(top) == 3
        assert top[token] == lp
        assert max(top.values()) == lp
    offsets = logprobs["text_offset"]
    assert offsets[0] == 0
    for token, start in zip(logprobs["tokens"], offsets, strict=True):
        assert choice["text"][start : start + len(token)] == token


async def test_echo(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    plain = (await post(session, emu, {**BASE, "max_tokens": 3})).json()
    echoed = (await post(session, emu, {**BASE, "max_tokens": 3, "echo": True})).json()
    assert echoed["choices"][0]["text"] == BASE["prompt"] + plain["choices"][0]["text"]
    with_lp = (
        await post(session, emu, {**BASE, "max_tokens": 3, "echo": True, "logprobs": 1})
    ).json()
    assert with_lp["choices"][0]["logprobs"]["text_offset"][0] == len(BASE["prompt"])


async def test_stop(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    plain = (await post(session, emu, {**BASE, "max_tokens": 6})).json()["choices"][0]["text"]
    words = plain.split()
    stopped = (await post(session, emu, {**BASE, "max_tokens": 6, "stop": words[3]})).json()
    choice = stopped["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == plain[: plain.index(words[3])]
    assert words[3] not in choice["text"]
    # A stop string spanning two tokens cuts inside the earlier token.
    spanning = words[1][-2:] + " " + words[2][:2]
    as_list = (
        await post(session, emu, {**BASE, "max_tokens": 6, "stop": ["zzz-never", spanning]})
    ).json()
    assert as_list["choices"][0]["text"] == plain[: plain.index(spanning)]
    assert as_list["choices"][0]["finish_reason"] == "stop"


async def test_zero_max_tokens(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    body = (await post(session, emu, {**BASE, "max_tokens": 0})).json()
    assert body["choices"][0]["text"] == ""
    assert body["choices"][0]["finish_reason"] == "length"
    reply = await post(session, emu, {**BASE, "max_tokens": 0, "stream": True})
    [chunk] = chunks(reply.body)
    assert chunk["choices"][0] == {
        "index": 0,
        "text": "",
        "finish_reason": "length",
        "logprobs": None,
    }


# -- streaming ---------------------------------------------------------------------------


async def test_stream_framing(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    req = {**BASE, "max_tokens": 4, "n": 2}
    plain = (await post(session, emu, req)).json()
    reply = await post(session, emu, {**req, "stream": True})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert reply.headers["Cache-Control"] == "no-cache"
    assert reply.body.endswith(b"data: [DONE]\n\n")
    parsed = chunks(reply.body)
    assert len(parsed) == 8
    # One event per choice per step, interleaved.
    assert [c["choices"][0]["index"] for c in parsed] == [0, 1] * 4
    for chunk in parsed:
        assert chunk["object"] == "text_completion"
        assert chunk["usage"] is None
        assert len(chunk["choices"]) == 1
    assert len({c["id"] for c in parsed}) == 1
    finishes = [c["choices"][0]["finish_reason"] for c in parsed]
    assert finishes == [None] * 6 + ["length", "length"]
    for i in range(2):
        assert stream_text(reply.body, i) == plain["choices"][i]["text"]


async def test_stream_include_usage(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    req = {**BASE, "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}
    parsed = chunks((await post(session, emu, req)).body)
    *content, last = parsed
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 3
    assert last["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert all(c["usage"] is None for c in content)


async def test_stream_echo_stop_and_logprobs(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    req = {**BASE, "max_tokens": 5, "echo": True, "logprobs": 2, "stop": "qqq"}
    plain = (await post(session, emu, req)).json()["choices"][0]
    raw = (await post(session, emu, {**req, "stream": True})).body
    assert stream_text(raw) == plain["text"]
    parsed = chunks(raw)
    assert parsed[0]["choices"][0]["text"].startswith(BASE["prompt"])
    offsets = [o for c in parsed for o in c["choices"][0]["logprobs"]["text_offset"]]
    assert offsets == plain["logprobs"]["text_offset"]
    assert all(len(t) == 2 for c in parsed for t in c["choices"][0]["logprobs"]["top_logprobs"])


async def test_stream_chunk_tokens_delay_and_keepalive_first(
    session: aiohttp.ClientSession,
) -> None:
    async with GatewayEmulator(chunk_tokens=3, chunk_delay=0.001, keepalive_first=True) as emu:
        reply = await post(session, emu, {**BASE, "max_tokens": 7, "stream": True})
    assert reply.body.startswith(b": keep-alive\n\n")
    parsed = chunks(reply.body)
    assert [len(c["choices"][0]["text"].split()) for c in parsed] == [3, 3, 1]


# -- errors and auth ---------------------------------------------------------------------


async def test_auth(session: aiohttp.ClientSession) -> None:
    async with GatewayEmulator(api_key="sk-test") as emu:
        missing = await post(session, emu, BASE)
        wrong = await post(session, emu, BASE, headers={"Authorization": "Bearer nope"})
        good = await post(session, emu, BASE, headers={"Authorization": "Bearer sk-test"})
    assert missing.status == 401
    assert missing.json()["error"]["code"] == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    assert wrong.status == 401
    assert good.status == 200


async def test_invalid_requests(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    bad_json = await post(session, emu, b"{not json")
    assert bad_json.status == 400
    assert "error" in bad_json.json()
    no_model = await post(session, emu, {"prompt": "x"})
    assert no_model.status == 422
    assert "model" in no_model.json()["error"]["message"]
    no_prompt = await post(session, emu, {"model": "m"})
    assert no_prompt.status == 422
    assert "prompt" in no_prompt.json()["error"]["message"]
    bad_n = await post(session, emu, {**BASE, "n": "two"})
    assert bad_n.status == 400
    assert bad_n.json()["error"]["param"] == "n"
    not_object = await post(session, emu, [1, 2])
    assert not_object.status == 400


async def test_unknown_route_and_method(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    async with session.get(emu.base_url + "/v2/nothing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == 404
    async with session.get(emu.base_url + PATH) as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == 405


# -- faults ------------------------------------------------------------------------------


async def test_fault_status_headers_and_body(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(
        Fault(
            status=429,
            retry_after="2",
            retry_after_ms=1500,
            should_retry=True,
            headers={"X-Custom": "yes"},
        )
    )
    reply = await post(session, emu, BASE)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "2"
    assert reply.headers["retry-after-ms"] == "1500"
    assert reply.headers["x-should-retry"] == "true"
    assert reply.headers["X-Custom"] == "yes"
    assert reply.json() == {
        "error": {"message": "emulated 429 error", "type": "rate_limit_error", "code": 429}
    }
    assert (await post(session, emu, BASE)).status == 200


async def test_fault_flat_and_custom_error_body(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(status=500, flat_error=True, should_retry=False))
    emu.inject(Fault(status=400, error_body={"detail": "custom"}))
    flat = await post(session, emu, BASE)
    assert flat.status == 500
    assert flat.headers["x-should-retry"] == "false"
    assert flat.json()["code"] == 500
    assert "message" in flat.json()
    assert "error" not in flat.json()
    custom = await post(session, emu, BASE)
    assert custom.status == 400
    assert custom.json() == {"detail": "custom"}


async def test_fault_raw_body_and_content_type(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(status=502, body=b"<html>bad gateway</html>", content_type="text/html"))
    emu.inject(Fault(body=b'{"id": "trunc'))
    emu.inject(Fault(content_type="text/plain"))
    html = await post(session, emu, BASE)
    assert html.status == 502
    assert html.headers["Content-Type"] == "text/html"
    assert html.body == b"<html>bad gateway</html>"
    truncated = await post(session, emu, BASE)
    assert truncated.status == 200
    assert truncated.headers["Content-Type"] == "application/json"
    assert truncated.body == b'{"id": "trunc'
    relabelled = await post(session, emu, BASE)
    assert relabelled.headers["Content-Type"] == "text/plain"
    assert msgspec.json.decode(relabelled.body)["object"] == "text_completion"


async def test_fault_drop_before_headers(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(drop_before_headers=True, headers_delay=0.01))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, emu, BASE)
    assert emu.requests[-1].json() == BASE
    assert (await post(session, emu, BASE)).status == 200


async def test_fault_headers_delay(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Fault(headers_delay=0.01))
    assert (await post(session, emu, BASE)).status == 200


async def test_fault_cut_after_events(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Fault(cut_after_events=2))
    raw, error = await post_partial(session, emu, {**BASE, "max_tokens": 5, "stream": True})
    assert isinstance(error, aiohttp.ClientPayloadError)
    evs = events(raw)
    assert len(evs) == 2
    assert b"[DONE]" not in raw


async def test_fault_cut_after_events_beyond_stream_length(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(cut_after_events=50))
    req = {**BASE, "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}
    raw, error = await post_partial(session, emu, req)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert len(events(raw)) == 3
    assert b"[DONE]" not in raw
    assert b'"usage":{' not in raw


async def test_fault_cut_after_bytes_json(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(cut_after_bytes=25))
    raw, error = await post_partial(session, emu, BASE)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert raw == b'{"id":"cmpl-1","object":"'[: len(raw)]
    assert len(raw) <= 25


async def test_fault_cut_after_bytes_stream_mid_event(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    req = {**BASE, "max_tokens": 4, "stream": True}
    full = (await post(session, emu, req)).body
    emu.inject(Fault(cut_after_bytes=300))
    raw, error = await post_partial(session, emu, req)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert len(raw) == 300

    # Same request, same bytes, apart from the completion id and creation time.
    def normalize(data: bytes) -> bytes:
        return re.sub(rb'"created":\d+', b'"created":0', data.replace(b"cmpl-2", b"cmpl-1"))

    assert normalize(full).startswith(normalize(raw))
    assert not raw.endswith(b"\n\n")


@pytest.mark.parametrize("style", ["data", "event"])
async def test_fault_error_event(
    emu: GatewayEmulator, session: aiohttp.ClientSession, style: str
) -> None:
    emu.inject(msgspec.convert({"error_event_after": 2, "error_event_style": style}, Fault))
    reply = await post(session, emu, {**BASE, "max_tokens": 5, "stream": True})
    assert reply.status == 200
    evs = events(reply.body)
    assert len(evs) == 3
    assert b"[DONE]" not in reply.body
    error = evs[-1]
    assert error.event == ("error" if style == "event" else None)
    assert msgspec.json.decode(error.data)["error"]["code"] == 500


async def test_fault_malformed_event(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Fault(malformed_event_after=1))
    reply = await post(session, emu, {**BASE, "max_tokens": 3, "stream": True})
    evs = events(reply.body)
    assert [e.data for e in evs][1] == b"{not json"
    assert evs[-1].data == b"[DONE]"
    assert len(evs) == 5


async def test_fault_invalid_utf8_event(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(invalid_utf8_event_after=2))
    reply = await post(session, emu, {**BASE, "max_tokens": 3, "stream": True})
    evs = events(reply.body)
    assert len(evs) == 5
    bad = evs[2].data
    with pytest.raises(UnicodeDecodeError):
        bad.decode("utf-8")
    assert bad.startswith(b'{"id":')
    assert evs[-1].data == b"[DONE]"


async def test_fault_stall_with_keepalives(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(stall_after_events=1, stall_seconds=0.05, keepalive_interval=0.01))
    reply = await post(session, emu, {**BASE, "max_tokens": 3, "stream": True})
    blocks = reply.body.split(b"\n\n")
    first_keepalive = blocks.index(b": keep-alive")
    assert first_keepalive == 1
    assert blocks.count(b": keep-alive") >= 1
    assert len(chunks(reply.body)) == 3


async def test_stall_counts_as_open_stream(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(stall_after_events=1, stall_seconds=0.2, keepalive_interval=0.02))
    async with session.post(
        emu.base_url + PATH, json={**BASE, "max_tokens": 2, "stream": True}
    ) as resp:
        await resp.content.readuntil(b"\n\n")
        assert emu.open_streams == 1
        assert emu.active_requests == 1
        assert emu.active_connections >= 1
        await resp.read()
    assert emu.open_streams == 0
    assert emu.active_requests == 0


async def test_client_disconnect_mid_stream_is_quiet(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(stall_after_events=1, stall_seconds=0.1, keepalive_interval=0.01))
    async with session.post(
        emu.base_url + PATH, json={**BASE, "max_tokens": 50, "stream": True}
    ) as resp:
        await resp.content.readuntil(b"\n\n")
        resp.close()
    for _ in range(100):
        if emu.open_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert emu.open_streams == 0
    assert (await post(session, emu, BASE)).status == 200


async def test_connections_are_counted_until_closed(emu: GatewayEmulator) -> None:
    async with aiohttp.ClientSession() as own:
        await post(own, emu, BASE)
        assert emu.active_connections == 1
    for _ in range(200):
        if emu.active_connections == 0:
            break
        await asyncio.sleep(0.005)
    assert emu.active_connections == 0


async def test_close_cancels_stalled_stream(session: aiohttp.ClientSession) -> None:
    emu = GatewayEmulator(shutdown_timeout=0.01)
    await emu.start()
    emu.inject(Fault(stall_after_events=1, stall_seconds=60))
    async with session.post(
        emu.base_url + PATH, json={**BASE, "max_tokens": 3, "stream": True}
    ) as resp:
        await resp.content.readuntil(b"\n\n")
        await emu.close()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert emu.open_streams == 0


async def test_fault_gzip(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    plain = await post(session, emu, BASE)
    emu.inject(Fault(gzip=True), times=2)
    zipped = await post(session, emu, BASE)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.json()["choices"] == plain.json()["choices"]
    stream = await post(session, emu, {**BASE, "max_tokens": 3, "stream": True})
    assert stream.headers["Content-Encoding"] == "gzip"
    assert len(chunks(stream.body)) == 3


async def test_fault_gzip_raw_bytes(emu: GatewayEmulator) -> None:
    emu.inject(Fault(gzip=True))
    async with (
        aiohttp.ClientSession(auto_decompress=False) as raw_session,
        raw_session.post(emu.base_url + PATH, json=BASE) as resp,
    ):
        compressed = await resp.read()
    assert msgspec.json.decode(gzip.decompress(compressed))["object"] == "text_completion"


async def test_fault_oversized_event(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Fault(oversized_event_bytes=100_000))
    reply = await post(session, emu, {**BASE, "max_tokens": 2, "stream": True})
    evs = events(reply.body)
    assert len(evs[0].data) == 100_000
    assert msgspec.json.decode(evs[0].data)["choices"][0]["index"] == 0
    assert len(evs[1].data) < 1000


async def test_header_fault(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Fault(status=500))
    fault = {"status": 503, "retry_after": "1", "body": base64.b64encode(b"down").decode()}
    reply = await post(
        session, emu, BASE, headers={"X-Emulator-Fault": msgspec.json.encode(fault).decode()}
    )
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.body == b"down"
    # The queued fault was not consumed by the header-fault request.
    assert (await post(session, emu, BASE)).status == 500
    assert (await post(session, emu, BASE)).status == 200


async def test_header_fault_stream(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    header = msgspec.json.encode(Fault(cut_after_events=1)).decode()
    async with session.post(
        emu.base_url + PATH,
        json={**BASE, "stream": True},
        headers={"X-Emulator-Fault": header},
    ) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_invalid_header_fault(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    for value in ("{nope", '{"no_such_field": 1}', '{"status": "x"}'):
        reply = await post(session, emu, BASE, headers={"X-Emulator-Fault": value})
        assert reply.status == 400
        assert "X-Emulator-Fault" in reply.json()["error"]["message"]


async def test_inject_times_and_fifo(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Fault(status=503), times=2)
    emu.inject(Fault(status=429))
    statuses = [(await post(session, emu, BASE)).status for _ in range(5)]
    assert statuses == [503, 503, 429, 200, 200]


async def test_clear_faults(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    emu.inject(Fault(status=500), times=3)
    emu.clear_faults()
    assert (await post(session, emu, BASE)).status == 200
    with pytest.raises(ValueError, match="times"):
        emu.inject(Fault(), times=0)


async def test_faults_do_not_apply_to_health(
    emu: GatewayEmulator, session: aiohttp.ClientSession
) -> None:
    emu.inject(Fault(status=500))
    async with session.get(emu.base_url + "/health") as resp:
        assert resp.status == 200
    assert (await post(session, emu, BASE)).status == 500


# -- recording, lifecycle, hosts ---------------------------------------------------------


async def test_recorded_requests(emu: GatewayEmulator, session: aiohttp.ClientSession) -> None:
    await post(
        session, emu, {**BASE, "user": "u1"}, headers={"Authorization": "Bearer k", "X-A": "1"}
    )
    [rec] = emu.requests
    assert isinstance(rec, RecordedRequest)
    assert rec.method == "POST"
    assert rec.path == PATH
    assert rec.headers["authorization"] == "Bearer k"
    assert rec.headers["x-a"] == "1"
    assert rec.headers["content-type"] == "application/json"
    assert rec.json() == {**BASE, "user": "u1"}
    assert rec.body == msgspec.json.encode({**BASE, "user": "u1"})


async def test_record_bounds(session: aiohttp.ClientSession) -> None:
    async with GatewayEmulator(max_records=2) as emu:
        for i in range(4):
            await post(session, emu, {**BASE, "seed": i})
        assert [r.json()["seed"] for r in emu.requests] == [2, 3]
    async with GatewayEmulator(record=False) as emu:
        await post(session, emu, BASE)
        assert emu.requests == []


async def test_lifecycle() -> None:
    emu = GatewayEmulator()
    with pytest.raises(RuntimeError):
        _ = emu.base_url
    url = await emu.start()
    assert url.startswith("http://127.0.0.1:")
    assert emu.base_url == url
    assert await emu.start() == url
    assert isinstance(emu.app, web.Application)
    await emu.close()
    await emu.close()
    with pytest.raises(RuntimeError):
        _ = emu.base_url


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
async def test_refuses_non_loopback_host(host: str) -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        GatewayEmulator(host=host)
    with pytest.raises(ValueError, match="non-loopback"):
        await serve(host=host, port=0)
    GatewayEmulator(host=host, allow_non_loopback=True)


async def test_loopback_aliases_accepted(session: aiohttp.ClientSession) -> None:
    GatewayEmulator(host="localhost")
    GatewayEmulator(host="::1")
    async with GatewayEmulator(host="127.0.0.2") as emu:
        assert emu.base_url.startswith("http://127.0.0.2:")


async def test_make_app(session: aiohttp.ClientSession) -> None:
    runner = web.AppRunner(make_app(chunk_tokens=2), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with session.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={**BASE, "max_tokens": 4, "stream": True},
        ) as resp:
            assert len(chunks(await resp.read())) == 2
    finally:
        await runner.cleanup()


async def test_serve_runs_until_cancelled(session: aiohttp.ClientSession) -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(port=0, on_ready=ready.set_result, api_key="k"))
    try:
        url = await asyncio.wait_for(ready, 5)
        async with session.get(url + "/health") as resp:
            assert resp.status == 200
        async with session.post(url + PATH, json=BASE) as resp:
            assert resp.status == 401
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
