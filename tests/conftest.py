"""Shared fixtures: a gateway emulator on loopback and a client pointed at it."""

from collections.abc import AsyncIterator

import pytest

from asyncclient import AsyncClient
from asyncclient.testing import GatewayEmulator

API_KEY = "test-key"


@pytest.fixture
async def emulator() -> AsyncIterator[GatewayEmulator]:
    server = GatewayEmulator()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def client(emulator: GatewayEmulator) -> AsyncIterator[AsyncClient]:
    # No retries: these tests check what each single answer maps to. Retries have their own
    # tests (test_resilience.py) with a retrying client.
    async_client = AsyncClient(base_url=emulator.base_url, api_key=API_KEY, retry=None)
    try:
        yield async_client
        # Whatever a test did (errors, cut streams, cancellations), no connection may be
        # left checked out of the pool.
        in_use, _ = async_client._transport.pool_stats()
        assert in_use == 0, f"{in_use} connection(s) still checked out of the pool"
    finally:
        await async_client.aclose()
