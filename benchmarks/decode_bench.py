"""Body decode: one response body, bytes in, typed object out, per library.

Every competitor gets the same ``bytes`` and must return the first choice's text intact
(checked before timing). Times are per body; MB/s is body bytes over that time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from asyncclient import _decode
from asyncclient._decode import decode_completion, decode_completion_lazy

from . import floor
from .competitors import Missing, require
from .harness import Case, Mode, Table, measure, median, ratio_text
from .payloads import BODY_SIZES, Body, body

__all__ = ["decode_competitors", "run_decode", "run_lazy"]

OURS: Final = "asyncclient (decode_completion)"
FLOOR: Final = "floor: msgspec.json.Decoder(Struct)"

Decode = Callable[[bytes], Any]
TextOf = Callable[[Any], str]


def _attribute_text(result: Any) -> str:
    return str(result.choices[0].text)


def _dict_text(result: Any) -> str:
    return str(result["choices"][0]["text"])


def _orjson() -> Decode:
    return require("orjson").loads  # type: ignore[no-any-return]


def _openai_default() -> Decode:
    construct_type = require("openai._models").construct_type
    completion_type = require("openai.types").Completion

    def decode(data: bytes) -> Any:
        # What AsyncOpenAI does with a 200 body: response.json(), then construct_type
        # (no validation: _strict_response_validation is off by default).
        return construct_type(type_=completion_type, value=json.loads(data))

    return decode


def _openai_validate() -> Decode:
    completion_type = require("openai.types").Completion
    return completion_type.model_validate_json  # type: ignore[no-any-return]


def _orq() -> Decode:
    serializers = require("orq_ai_sdk.utils.serializers")
    body_type = require("orq_ai_sdk.models").CreateCompletionResponseBody

    def decode(data: bytes) -> Any:
        # Completions.create: http_res.text, then unmarshal_json_response(type, res, text).
        return serializers.unmarshal_json(data.decode("utf-8"), body_type)

    return decode


class DecodeCompetitor:
    def __init__(self, name: str, factory: Callable[[], Decode], text_of: TextOf) -> None:
        self.name = name
        self.factory = factory
        self.text_of = text_of


def decode_competitors() -> list[DecodeCompetitor]:
    return [
        DecodeCompetitor(OURS, lambda: decode_completion, _attribute_text),
        DecodeCompetitor(FLOOR, lambda: floor.completion_decoder.decode, _attribute_text),
        DecodeCompetitor("json.loads (dict)", lambda: json.loads, _dict_text),
        DecodeCompetitor("orjson.loads (dict)", _orjson, _dict_text),
        DecodeCompetitor("openai-python (default: construct)", _openai_default, _attribute_text),
        DecodeCompetitor("openai-python (model_validate_json)", _openai_validate, _attribute_text),
        DecodeCompetitor("orq-ai-sdk (unmarshal_json_response)", _orq, _attribute_text),
    ]


def run_decode(
    mode: Mode, bodies: list[Body] | None = None
) -> tuple[list[Table], dict[str, dict[str, float]], list[str]]:
    """One table per body. Returns the tables, ``{body: {name: seconds}}`` and skip lines."""
    bodies = bodies if bodies is not None else [body(name) for name in BODY_SIZES]
    decoders: list[tuple[DecodeCompetitor, Decode]] = []
    skips: list[str] = []
    for competitor in decode_competitors():
        try:
            decoders.append((competitor, competitor.factory()))
        except Missing as exc:
            skips.append(f"skipped {competitor.name}: {exc}")
    tables = []
    results: dict[str, dict[str, float]] = {}
    for sample in bodies:
        cases = [
            Case(
                competitor.name,
                (lambda d=decoder, data=sample.data: d(data)),  # type: ignore[misc]
                check=_text_check(competitor.text_of, sample.first_text),
            )
            for competitor, decoder in decoders
        ]
        measure(cases, mode)
        timing = {case.name: median(case.samples) for case in cases if case.samples}
        results[sample.name] = timing
        ours = timing.get(OURS, float("nan"))
        table = Table(
            f"Body decode: {sample.name}, {len(sample.data):,} bytes ({sample.description})",
            [("us", "us/body"), ("mb_s", "MB/s"), ("vs", "vs ours")],
        )
        for case in cases:
            if case.error:
                table.add(case.name, vs=f"failed: {case.error}")
                continue
            seconds = timing[case.name]
            table.add(
                case.name,
                us=seconds * 1e6,
                mb_s=len(sample.data) / seconds / 1e6,
                vs=ratio_text(seconds / ours),
            )
        table.notes.append("vs ours: this row's time / ours (above 1.00x: ours is faster).")
        tables.append(table)
    return tables, results, skips


def _text_check(text_of: TextOf, expected: str) -> Callable[[Any], str | None]:
    def check(result: Any) -> str | None:
        got = text_of(result)
        if got != expected:
            return f"wrong text: {got[:40]!r}"
        return None

    return check


LAZY: Final = "asyncclient (decode_completion_lazy): compiled scan, msgspec for the rest"
LAZY_MSGSPEC: Final = "the same without the compiled scan: msgspec.Raw skips the logprobs"


def run_lazy(mode: Mode) -> tuple[Table, dict[str, float]]:
    """Eager decode vs lazy logprobs on the large body, logprobs not read: the shipped path
    (the compiled scan finds the logprobs, msgspec decodes the rest) and the path a build
    without a C compiler takes (msgspec skips the logprobs as ``msgspec.Raw``, checking
    every byte of them)."""
    sample = body("large")
    eager = decode_completion(sample.data)

    def same_logprobs(result: Any) -> str | None:
        if result.choices[0].text != sample.first_text:
            return "wrong text"
        if result.choices[0].logprobs() != eager.choices[0].logprobs:
            return "logprobs differ from the eager decode"
        return None

    msgspec_alone = _decode._lazy_completion_decoder.decode
    # Installed without a C compiler, the library's lazy path is the msgspec one: said so.
    shipped = LAZY if _decode._find_logprobs is not None else LAZY + " [scan not built]"
    cases = [
        Case(OURS + ", eager", lambda: decode_completion(sample.data)),
        Case(shipped, lambda: decode_completion_lazy(sample.data), check=same_logprobs),
        Case(LAZY_MSGSPEC, lambda: msgspec_alone(sample.data), check=same_logprobs),
        Case(
            LAZY + ", then logprobs read",
            lambda: decode_completion_lazy(sample.data).choices[0].logprobs(),
        ),
    ]
    measure(cases, mode)
    timing = {case.name: median(case.samples) for case in cases if case.samples}
    eager_time = timing.get(cases[0].name, float("nan"))
    table = Table(
        f"Large body ({len(sample.data):,} bytes), logprobs not read: eager vs lazy",
        [("us", "us/body"), ("speedup", "faster than eager")],
    )
    for case in cases:
        if case.error:
            table.add(case.name, speedup=f"failed: {case.error}")
            continue
        table.add(
            case.name,
            us=timing[case.name] * 1e6,
            speedup=ratio_text(eager_time / timing[case.name]),
        )
    table.notes.append(
        "The compiled scan finds where each choice's logprobs lie without parsing them "
        "(64-byte blocks of bitmasks); their JSON is checked when logprobs() reads them."
    )
    return table, timing
