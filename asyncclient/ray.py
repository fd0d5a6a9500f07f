"""Ray Data integration: the batch runner inside every Ray worker, for jobs that outgrow one
machine. Install with ``pip install 'asyncclient[ray]'``.

::

    import ray
    from asyncclient.ray import CompletionBatchMapper

    requests = ray.data.read_json("requests.jsonl")   # OpenAI Batch lines or bare requests
    results = requests.map_batches(
        CompletionBatchMapper,
        fn_constructor_kwargs={"base_url": "https://my.orq.ai", "concurrency": 32},
        compute=ray.data.ActorPoolStrategy(size=8),   # 8 workers, 32 requests in flight each
        num_cpus=0.25,                                # they wait on the network, not the CPU
        batch_size=256,
        batch_format="pyarrow",
    )
    results.write_json("results/")                    # one row per request, errors included

:class:`CompletionBatchMapper` is a callable class for ``Dataset.map_batches``. Each Ray worker
(actor) builds one instance, hence one :class:`~asyncclient.AsyncClient` and one
:class:`~asyncclient.BatchLimiter`: every batch the worker runs at the same time shares them, so
``concurrency`` (and the optional per-minute limits) bound the whole worker. Its ``__call__`` is
an async generator, which Ray runs on the worker's event loop.

Each input row is an OpenAI Batch API request line (``custom_id``, ``method``, ``url``,
``body``) or a bare request with an optional ``id``; rows should carry an id, as results are
joined back by it. Every row gives one output row, failures included, with the columns of
:data:`RESULT_COLUMNS`; ``batch_output`` holds the very line ``asyncclient batch`` would write,
so ``"\\n".join(row["batch_output"] for row in results.iter_rows())`` is an OpenAI Batch output
file.

This module imports neither ray nor pyarrow at import time; pyarrow (a dependency of
``ray[data]``) is imported on the first batch.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import msgspec

from ._batch import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    BatchItem,
    BatchJob,
    BatchLimiter,
    BatchResult,
    batch_output_record,
    error_code,
    item_from_record,
)
from ._client import DEFAULT_PATH, AsyncClient, CompletionWithInfo
from ._exceptions import APIStatusError
from ._models import CompletionRequest
from ._transport import Timeout

__all__ = ["RESULT_COLUMNS", "CompletionBatchMapper"]

RESULT_COLUMNS: Final = (
    "custom_id",
    "ok",
    "text",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "status_code",
    "request_id",
    "error_code",
    "error_message",
    "latency_s",
    "attempts",
    "batch_output",
)
"""The output columns, in order. ``status_code`` is 200 for a success, the HTTP status of an
error response, and null for a failure without one (connection, timeout, invalid input), in
which case ``error_code`` says which (``invalid_request``, ``timeout``...)."""

_encoder: Final = msgspec.json.Encoder()


class CompletionBatchMapper:
    """A callable class for ``ray.data.Dataset.map_batches`` (see the module docstring).

    Constructor arguments (``fn_constructor_kwargs``): ``base_url``, ``api_key`` and ``path``
    (``api_key`` and ``base_url`` fall back to ``$ORQ_API_KEY`` and ``$ORQ_BASE_URL`` *on the
    worker*), ``timeout`` (seconds of silence, as for the client), ``concurrency`` (requests in
    flight per worker), ``max_retries``, ``requests_per_minute`` and ``tokens_per_minute`` (per
    worker: divide a global budget by the number of workers), ``adaptive`` (back off together
    on 429s) and ``client_options`` (more :class:`~asyncclient.AsyncClient` keyword arguments;
    they win over the defaults set here, such as ``max_connections`` and ``retry=None``).
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        path: str = DEFAULT_PATH,
        timeout: float | None = 600.0,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        adaptive: bool = True,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        # Built here, used on the worker's event loop: the client opens its connection pool,
        # and the limiter its primitives, on first use inside that loop.
        options: dict[str, Any] = {
            "base_url": base_url,
            "api_key": api_key,
            "path": path,
            "timeout": Timeout.coerce(timeout),
            "max_connections": max(concurrency, 1),
            "retry": None,
        }
        options.update(client_options or {})
        self.client = AsyncClient(**options)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.limiter = BatchLimiter(
            concurrency,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            adaptive=adaptive,
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, batch: Any) -> AsyncIterator[Any]:
        """Run one batch (a ``pyarrow.Table``, a pandas ``DataFrame`` or a dict of columns);
        yield one ``pyarrow.Table`` with a row per input row, in the same order."""
        if self._loop is None:
            # Ray gives no teardown hook to a map_batches class; the worker process does run
            # atexit handlers when the pool lets it go, while the loop's thread still runs.
            self._loop = asyncio.get_running_loop()
            atexit.register(self.close)
        items = [item_from_record(record, drop_nulls=True) for record in _records(batch)]
        results = await self.run(items)
        yield _table(results)

    def close(self, timeout: float = 5.0) -> None:
        """Close the client's connections, from any thread but the event loop's own."""
        loop = self._loop
        if loop is None or self.client.closed or not loop.is_running():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # waiting here for the loop would block it for good
            return
        future = asyncio.run_coroutine_threadsafe(self.client.aclose(), loop)
        with contextlib.suppress(Exception):
            future.result(timeout)

    async def run(self, items: list[BatchItem]) -> list[BatchResult]:
        """The results for ``items``, in their order (usable without Ray)."""
        completions = self.client.completions

        async def call(
            request: CompletionRequest, *, idempotency_key: str | None = None
        ) -> CompletionWithInfo:
            return await completions.create_from_request_with_info(
                request, retry=None, idempotency_key=idempotency_key
            )

        results: list[BatchResult] = []
        job = BatchJob(
            items,
            call,
            concurrency=self.concurrency,
            ordered=True,
            max_retries=self.max_retries,
            limiter=self.limiter,
            idempotency_keys=self.client.idempotency_keys,
        )
        async with job as finished:
            async for result in finished:
                results.append(result)
        return results


def _records(batch: Any) -> list[dict[str, Any]]:
    if hasattr(batch, "to_pylist"):  # pyarrow.Table
        records: list[dict[str, Any]] = batch.to_pylist()
        return records
    if hasattr(batch, "to_dict"):  # pandas.DataFrame
        return [_plain(record) for record in batch.to_dict("records")]
    if isinstance(batch, Mapping):  # {"column": numpy array or list}
        columns = list(batch)
        rows = zip(*(batch[column] for column in columns), strict=True)
        return [_plain(dict(zip(columns, row, strict=True))) for row in rows]
    raise TypeError(f"unsupported batch type {type(batch).__name__}; use batch_format='pyarrow'")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (pandas and numpy batches) as plain Python values."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def _row(result: BatchResult) -> dict[str, Any]:
    response, error = result.response, result.error
    choice = response.choices[0] if response is not None and response.choices else None
    usage = result.usage
    if response is not None:
        status_code: int | None = 200
    elif isinstance(error, APIStatusError):
        status_code = error.status_code
    else:
        status_code = None
    return {
        "custom_id": result.id,
        "ok": result.ok,
        "text": choice.text if choice is not None else None,
        "finish_reason": choice.finish_reason if choice is not None else None,
        "prompt_tokens": _tokens(usage.prompt_tokens if usage else None),
        "completion_tokens": _tokens(usage.completion_tokens if usage else None),
        "total_tokens": _tokens(usage.total_tokens if usage else None),
        "status_code": status_code,
        "request_id": result.request_id,
        "error_code": None if error is None else _error_code(error),
        "error_message": None if error is None else error.message,
        "latency_s": result.latency,
        "attempts": result.attempts,
        "batch_output": _encoder.encode(batch_output_record(result)).decode(),
    }


def _tokens(value: float | None) -> int | None:
    return None if value is None else int(value)


def _error_code(error: Any) -> str:
    if isinstance(error, APIStatusError):
        return f"http_{error.status_code}"
    return error_code(error)


def _table(results: list[BatchResult]) -> Any:
    import pyarrow as pa

    schema = pa.schema(
        [
            ("custom_id", pa.string()),
            ("ok", pa.bool_()),
            ("text", pa.string()),
            ("finish_reason", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("total_tokens", pa.int64()),
            ("status_code", pa.int64()),
            ("request_id", pa.string()),
            ("error_code", pa.string()),
            ("error_message", pa.string()),
            ("latency_s", pa.float64()),
            ("attempts", pa.int64()),
            ("batch_output", pa.string()),
        ]
    )
    # A fixed schema: a batch whose column is all null still has the column's real type, so
    # Ray can concatenate blocks without unifying types.
    return pa.Table.from_pylist([_row(result) for result in results], schema=schema)
