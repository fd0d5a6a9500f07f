"""Tier 2: client configuration and lifecycle, with as little network as possible.

Where a header has to be observed, the emulator records what really went over the wire.
"""

import socket

import aiohttp
import pytest

from asyncclient import (
    DEFAULT_BASE_URL,
    DEFAULT_PATH,
    NOT_GIVEN,
    AsyncClient,
    AsyncClientError,
    ClientClosedError,
    NotGiven,
    RequestValidationError,
    Timeout,
)
from asyncclient.testing import GatewayEmulator

MODEL = "openai/gpt-3.5-turbo-instruct"
SECRET = "sk-very-secret-value"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORQ_API_KEY", raising=False)
    monkeypatch.delenv("ORQ_BASE_URL", raising=False)


@pytest.fixture
def closed_port_url() -> str:
    # Bind, note the port, close: nothing listens there for the length of the test.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def sent_authorization(emulator: GatewayEmulator, client: AsyncClient) -> str | None:
    async with client:
        await client.completions.create(model=MODEL, prompt="Say hi", max_tokens=1)
    return emulator.requests[-1].headers.get("authorization")


# -- configuration ---------------------------------------------------------------------------


def test_defaults_without_environment() -> None:
    client = AsyncClient()
    assert client.base_url == DEFAULT_BASE_URL == "https://my.orq.ai"
    assert client.path == DEFAULT_PATH == "/v2/proxy/completions"
    assert client.timeout == Timeout()
    assert not client.closed


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORQ_BASE_URL", "http://gateway.internal:8080/")
    assert AsyncClient().base_url == "http://gateway.internal:8080"


def test_explicit_base_url_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORQ_BASE_URL", "http://from-env")
    assert AsyncClient(base_url="http://explicit").base_url == "http://explicit"


def test_empty_base_url_environment_falls_back_to_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORQ_BASE_URL", "")
    assert AsyncClient().base_url == DEFAULT_BASE_URL


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000///", "http://127.0.0.1:8000"),
        ("https://my.orq.ai", "https://my.orq.ai"),
        ("http://host/prefix/", "http://host/prefix"),
    ],
)
def test_trailing_slash_is_stripped(base_url: str, expected: str) -> None:
    assert AsyncClient(base_url=base_url).base_url == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/completions", "/v1/completions"),
        ("v1/completions", "/v1/completions"),
        ("/v2/router/completions", "/v2/router/completions"),
    ],
)
def test_path_is_configurable(path: str, expected: str) -> None:
    assert AsyncClient(path=path).path == expected


def test_repr_never_shows_the_key() -> None:
    text = repr(AsyncClient(api_key=SECRET, base_url="http://127.0.0.1:1"))
    assert SECRET not in text
    assert "secret" not in text
    assert "http://127.0.0.1:1" in text
    assert "set" in text


def test_repr_never_shows_a_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORQ_API_KEY", SECRET)
    assert SECRET not in repr(AsyncClient())
    assert SECRET not in str(AsyncClient())


def test_client_can_be_built_outside_a_running_loop() -> None:
    # The aiohttp session is created lazily inside the loop; building one here must not warn.
    client = AsyncClient(api_key=SECRET)
    assert not client.closed


# -- authorization header (observed on the wire) ---------------------------------------------


async def test_api_key_is_sent_as_bearer(emulator: GatewayEmulator) -> None:
    client = AsyncClient(base_url=emulator.base_url, api_key="abc")
    assert await sent_authorization(emulator, client) == "Bearer abc"


async def test_api_key_from_environment(
    emulator: GatewayEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORQ_API_KEY", "from-env")
    client = AsyncClient(base_url=emulator.base_url)
    assert await sent_authorization(emulator, client) == "Bearer from-env"


async def test_explicit_api_key_beats_environment(
    emulator: GatewayEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORQ_API_KEY", "from-env")
    client = AsyncClient(base_url=emulator.base_url, api_key="explicit")
    assert await sent_authorization(emulator, client) == "Bearer explicit"


@pytest.mark.parametrize("key", ["Bearer abc", "bearer abc", "BEARER abc"])
async def test_bearer_prefix_is_not_doubled(emulator: GatewayEmulator, key: str) -> None:
    client = AsyncClient(base_url=emulator.base_url, api_key=key)
    assert await sent_authorization(emulator, client) == key


async def test_no_authorization_header_without_a_key(emulator: GatewayEmulator) -> None:
    client = AsyncClient(base_url=emulator.base_url)
    assert await sent_authorization(emulator, client) is None


async def test_authorization_can_be_overridden_per_call(emulator: GatewayEmulator) -> None:
    async with AsyncClient(base_url=emulator.base_url, api_key="abc") as client:
        await client.completions.create(
            model=MODEL, prompt="Say hi", max_tokens=1, extra_headers={"Authorization": "Bearer x"}
        )
    assert emulator.requests[-1].headers["authorization"] == "Bearer x"


async def test_default_headers_are_sent(emulator: GatewayEmulator) -> None:
    async with AsyncClient(
        base_url=emulator.base_url, default_headers={"X-Team": "search"}
    ) as client:
        await client.completions.create(model=MODEL, prompt="Say hi", max_tokens=1)
    assert emulator.requests[-1].headers["x-team"] == "search"


# -- Timeout and NOT_GIVEN -------------------------------------------------------------------

NO_TIMEOUT = Timeout(connect=None, headers=None, first_event=None, idle=None, total=None)


def test_timeout_coerce_keeps_a_timeout() -> None:
    timeout = Timeout(connect=1.0, idle=2.0, total=3.0)
    assert Timeout.coerce(timeout) is timeout


def test_timeout_coerce_none_disables_everything() -> None:
    assert Timeout.coerce(None) == NO_TIMEOUT


def test_timeout_coerce_number_is_every_phase_but_total_with_capped_connect() -> None:
    assert Timeout.coerce(30) == Timeout(connect=10.0, headers=30.0, idle=30.0, total=None)
    assert Timeout.coerce(2.5) == Timeout(connect=2.5, headers=2.5, idle=2.5, total=None)


def test_default_timeout_has_no_total_deadline() -> None:
    # A total deadline would kill long, healthy streams.
    assert Timeout().total is None
    assert Timeout().idle is not None
    assert Timeout().headers is not None
    assert Timeout().connect is not None


def test_timeout_is_immutable() -> None:
    timeout = Timeout()
    with pytest.raises(AttributeError):
        timeout.idle = 1.0  # type: ignore[misc]


def test_client_timeout_argument_is_coerced() -> None:
    assert AsyncClient(timeout=5).timeout == Timeout(connect=5.0, headers=5.0, idle=5.0)
    assert AsyncClient(timeout=None).timeout == NO_TIMEOUT


def test_not_given_is_a_falsy_singleton() -> None:
    assert NotGiven() is NOT_GIVEN
    assert not NOT_GIVEN
    assert repr(NOT_GIVEN) == "NOT_GIVEN"
    assert NOT_GIVEN is not None


def test_not_given_means_the_client_default_and_none_means_no_timeout() -> None:
    client = AsyncClient(timeout=Timeout(connect=1.0, idle=7.0))

    def resolve(timeout: Timeout | float | None | NotGiven) -> Timeout:
        return client._options({"timeout": timeout}).timeout

    assert resolve(NOT_GIVEN) == Timeout(connect=1.0, idle=7.0)
    assert resolve(None) == NO_TIMEOUT
    assert resolve(3) == Timeout(connect=3.0, headers=3.0, idle=3.0)


# -- validation before any connection --------------------------------------------------------


async def test_validation_error_wins_over_a_closed_port(closed_port_url: str) -> None:
    async with AsyncClient(base_url=closed_port_url) as client:
        with pytest.raises(RequestValidationError) as caught:
            await client.completions.create(model=MODEL, prompt="Say hi", temperature=5)
    assert caught.value.field == "$.temperature"


async def test_stream_validation_error_is_raised_when_the_call_is_made(
    closed_port_url: str,
) -> None:
    async with AsyncClient(base_url=closed_port_url) as client:
        with pytest.raises(RequestValidationError):
            client.completions.stream(model=MODEL, prompt="Say hi", top_p=2)
        with pytest.raises(RequestValidationError):
            await client.completions.create(model=MODEL, prompt="Say hi", stream=True, top_p=2)


async def test_validation_error_for_a_missing_prompt(closed_port_url: str) -> None:
    async with AsyncClient(base_url=closed_port_url) as client:
        with pytest.raises(RequestValidationError) as caught:
            await client.completions.create(model=MODEL)  # type: ignore[call-overload]
    assert caught.value.field == "$.prompt"


async def test_validation_error_for_bad_orq_with_a_closed_port(closed_port_url: str) -> None:
    async with AsyncClient(base_url=closed_port_url) as client:
        with pytest.raises(RequestValidationError) as caught:
            await client.completions.create(
                model=MODEL, prompt="Say hi", orq={"cache": {"type": "exact_match", "ttl": 0}}
            )
    assert caught.value.field == "$.orq.cache.ttl"


# -- lifecycle -------------------------------------------------------------------------------


async def test_closed_client_raises_client_closed_error(emulator: GatewayEmulator) -> None:
    client = AsyncClient(base_url=emulator.base_url)
    await client.completions.create(model=MODEL, prompt="Say hi", max_tokens=1)
    await client.aclose()
    assert client.closed
    with pytest.raises(ClientClosedError) as caught:
        await client.completions.create(model=MODEL, prompt="Say hi")
    assert isinstance(caught.value, AsyncClientError)
    with pytest.raises(ClientClosedError):
        async with client.completions.stream(model=MODEL, prompt="Say hi"):
            pass


async def test_client_closed_before_first_use_raises_client_closed_error() -> None:
    client = AsyncClient(base_url="http://127.0.0.1:1")
    await client.aclose()
    with pytest.raises(ClientClosedError):
        await client.completions.create(model=MODEL, prompt="Say hi")


async def test_aclose_is_idempotent(emulator: GatewayEmulator) -> None:
    client = AsyncClient(base_url=emulator.base_url)
    await client.completions.create(model=MODEL, prompt="Say hi", max_tokens=1)
    await client.aclose()
    await client.aclose()
    async with client:
        pass
    assert client.closed


async def test_async_with_closes_the_client(emulator: GatewayEmulator) -> None:
    async with AsyncClient(base_url=emulator.base_url) as client:
        await client.completions.create(model=MODEL, prompt="Say hi", max_tokens=1)
    assert client.closed


async def test_unused_client_closes_without_warning() -> None:
    client = AsyncClient()
    await client.aclose()
    assert client.closed


async def test_borrowed_session_is_used_and_not_closed(emulator: GatewayEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        client = AsyncClient(base_url=emulator.base_url, session=session)
        completion = await client.completions.create(model=MODEL, prompt="Say hi", max_tokens=2)
        await client.aclose()
        assert client.closed
        assert not session.closed
        assert completion.choices
        # The session still works for its owner.
        async with session.get(emulator.base_url + "/health") as response:
            assert response.status == 200
        with pytest.raises(ClientClosedError):
            await client.completions.create(model=MODEL, prompt="Say hi")
