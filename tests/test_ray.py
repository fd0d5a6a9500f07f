"""The Ray Data integration on a local Ray instance started here, against the emulator (run by
``asyncclient serve`` in a subprocess so that Ray's worker processes can reach it).

The results must match, line for line, what the single-machine ``batch`` command writes for
the same input. Skipped when ray is not installed (``pip install 'asyncclient[ray]'``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray: Any = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")

from test_cli import serving  # noqa: E402

from asyncclient import BatchItem, CompletionRequest, RetryPolicy  # noqa: E402
from asyncclient.ray import RESULT_COLUMNS, CompletionBatchMapper  # noqa: E402
from asyncclient.testing import Fault, GatewayEmulator  # noqa: E402

# Ray's own modules warn about their internals (deprecations, resource hints); those are not
# this package's warnings, and the suite turns warnings into errors.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:ray.*"),
]

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "ray-test-key"
MODEL = "openai/gpt-3.5-turbo-instruct"


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORQ_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(API_KEY, env=environment()) as url:
        yield url


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    saved = {name: os.environ.get(name) for name in ("RAY_USAGE_STATS_ENABLED", "PYTHONPATH")}
    # No usage report leaves the machine; the workers import this checkout.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["PYTHONPATH"] = environment()["PYTHONPATH"]
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024 * 1024,
        log_to_driver=False,
        configure_logging=False,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def requests_file(path: Path) -> Path:
    records: list[dict[str, Any]] = []
    for number in range(60):
        body: dict[str, Any] = {"model": MODEL, "prompt": f"row {number}", "max_tokens": 5}
        if number % 3 == 0:
            body["stop"] = ["zzz"]
        records.append(
            {"custom_id": f"row-{number}", "method": "POST", "url": "/v1/completions", "body": body}
        )
    # A request that breaks the spec: a per-row error, not a failed job.
    records.append(
        {
            "custom_id": "too-hot",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": MODEL, "prompt": "x", "max_tokens": 5, "temperature": 9.0},
        }
    )
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def normalized(lines: list[str]) -> list[dict[str, Any]]:
    cleaned = []
    for line in lines:
        record = {key: value for key, value in json.loads(line).items() if key != "id"}
        response = record.get("response")
        if response is not None:
            body = {k: v for k, v in response["body"].items() if k not in ("id", "created")}
            record["response"] = {**response, "body": body}
        cleaned.append(record)
    return sorted(cleaned, key=lambda record: str(record["custom_id"]))


def test_ray_data_matches_the_batch_command(server: str, local_ray: Any, tmp_path: Path) -> None:
    source = requests_file(tmp_path / "requests.jsonl")
    expected = tmp_path / "expected.jsonl"
    command = subprocess.run(
        [
            sys.executable, "-m", "asyncclient", "batch", str(source), "-o", str(expected),
            "--base-url", server, "--api-key", API_KEY, "--progress", "none",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(),
        check=False,
    )  # fmt: skip
    assert command.returncode == 1, command.stderr  # the one invalid row

    dataset = local_ray.data.read_json(str(source))
    results = dataset.map_batches(
        CompletionBatchMapper,
        fn_constructor_kwargs={"base_url": server, "api_key": API_KEY, "concurrency": 8},
        compute=local_ray.data.ActorPoolStrategy(size=2),
        num_cpus=0.25,  # the workers wait on the network: leave CPUs for the read tasks
        batch_size=16,
        batch_format="pyarrow",
    ).materialize()
    rows = results.take_all()

    assert len(rows) == 61
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert normalized([row["batch_output"] for row in rows]) == normalized(
        expected.read_text().splitlines()
    )
    by_id = {row["custom_id"]: row for row in rows}
    assert by_id["row-1"]["ok"]
    assert by_id["row-1"]["status_code"] == 200
    assert by_id["row-1"]["total_tokens"] == by_id["row-1"]["prompt_tokens"] + 5
    assert len(by_id["row-1"]["text"].split()) == 5
    failed = by_id["too-hot"]
    assert not failed["ok"]
    assert failed["text"] is None
    assert failed["error_code"] == "invalid_request"
    assert "temperature" in failed["error_message"]
    assert failed["attempts"] == 0

    # The README's last step: write the results as JSON files, one row per request.
    output = tmp_path / "results"
    results.write_json(str(output))
    written = [
        json.loads(line)
        for file in sorted(output.iterdir())
        for line in file.read_text().splitlines()
    ]
    assert sorted(row["custom_id"] for row in written) == sorted(by_id)


async def test_client_options_win_over_the_mapper_defaults(emulator: GatewayEmulator) -> None:
    policy = RetryPolicy(max_attempts=5)
    mapper = CompletionBatchMapper(
        base_url=emulator.base_url,
        max_retries=1,
        client_options={"retry": policy, "max_connections": 3, "idempotency_keys": True},
    )
    try:
        assert mapper.client.retry is policy
        assert mapper.client._transport._max_connections == 3
        # The mapper's batches keep one Idempotency-Key per row across its retries.
        emulator.inject(Fault(status=500, retry_after="0"))
        request = CompletionRequest(model=MODEL, prompt="p", max_tokens=2)
        [result] = await mapper.run([BatchItem(request=request, id="row")])
    finally:
        await mapper.client.aclose()
    assert result.ok
    assert result.attempts == 2
    keys = [recorded.headers.get("idempotency-key") for recorded in emulator.requests]
    assert len(keys) == 2
    assert keys[0] is not None
    assert keys[0] == keys[1]
