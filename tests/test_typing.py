"""Static typing checks: mypy (run by test_static.py) verifies these ``assert_type`` calls.

The overloads of ``create`` must give ``Completion`` without ``stream`` and
``CompletionStream`` with ``stream=True``; the functions also run, against the emulator.
"""

from __future__ import annotations

from typing import assert_type

from asyncclient import (
    AsyncClient,
    Completion,
    CompletionChunk,
    CompletionStream,
)


async def test_create_overloads_resolve(client: AsyncClient) -> None:
    completion = await client.completions.create(model="m", prompt="p")
    assert_type(completion, Completion)
    stream = await client.completions.create(model="m", prompt="p", stream=True)
    assert_type(stream, CompletionStream)
    async with stream:
        async for chunk in stream:
            assert_type(chunk, CompletionChunk)
    flag: bool = False
    either = await client.completions.create(model="m", prompt="p", stream=flag)
    assert_type(either, Completion | CompletionStream)


async def test_stream_context_yields_stream(client: AsyncClient) -> None:
    async with client.completions.stream(model="m", prompt="p") as stream:
        assert_type(stream, CompletionStream)
        final = await stream.final_completion()
        assert_type(final, Completion)
        assert final.text
