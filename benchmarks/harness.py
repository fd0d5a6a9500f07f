"""Timing loop, results, and plain-text tables.

Micro benchmarks time a callable in a calibrated loop. Competitors are interleaved (one
repeat of each in turn, then the next repeat) so that a slow phase of a shared machine hits
all of them alike, and the median of the repeats is reported.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Case",
    "Mode",
    "Row",
    "Table",
    "measure",
]


@dataclass(frozen=True, slots=True)
class Mode:
    """How hard to measure: the full run, ``--quick`` and ``--smoke`` differ only here."""

    name: str
    repeats: int
    min_repeat_seconds: float
    """Each repeat loops the operation until it has run at least this long."""
    case_budget_seconds: float
    """A case stops repeating once it has used this much time (at least one repeat runs)."""
    stream_chunks: int
    e2e_seconds: float
    """Upper bound on one end-to-end configuration's measured phase."""
    e2e_requests: int
    """Upper bound on requests (non-streamed) in one configuration."""
    e2e_streams: int
    e2e_stream_chunks: int
    e2e_repeats: int
    memory_stream_chunks: tuple[int, int]
    memory_batch_requests: tuple[int, int]


FULL = Mode("full", 7, 0.05, 6.0, 2_000, 3.0, 20_000, 400, 1_000, 5,
            (100_000, 1_000_000), (10_000, 100_000))  # fmt: skip
QUICK = Mode("quick", 3, 0.02, 1.0, 500, 0.7, 2_000, 40, 500, 1,
             (20_000, 200_000), (1_000, 5_000))  # fmt: skip
SMOKE = Mode("smoke", 1, 0.002, 0.2, 100, 0.2, 60, 4, 100, 1,
             (2_000, 10_000), (100, 400))  # fmt: skip
MODES = {mode.name: mode for mode in (FULL, QUICK, SMOKE)}


@dataclass(slots=True)
class Case:
    """One competitor in one benchmark."""

    name: str
    run: Callable[[], Any]
    units: int = 1
    """What one call processes (events of a stream): times are reported per unit."""
    check: Callable[[Any], str | None] | None = None
    """Returns a problem with the result (wrong count, wrong text), or ``None``."""
    note: str = ""
    loops: int = 0
    samples: list[float] = field(default_factory=list)
    """Seconds per unit, one per repeat."""
    spent: float = 0.0
    error: str | None = None


def _timed(run: Callable[[], Any], loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        run()
    return time.perf_counter() - start


def measure(cases: Sequence[Case], mode: Mode) -> None:
    """Fill each case's ``samples`` (or ``error``), interleaving the cases."""
    live: list[Case] = []
    for case in cases:
        try:
            result = case.run()
            problem = case.check(result) if case.check is not None else None
        except Exception as exc:  # a competitor that cannot handle the input is a finding
            case.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            continue
        if problem:
            case.error = problem
            continue
        once = _timed(case.run, 1)
        case.loops = max(1, math.ceil(mode.min_repeat_seconds / max(once, 1e-7)))
        live.append(case)
    for repeat in range(mode.repeats):
        for case in live:
            if repeat and case.spent >= mode.case_budget_seconds:
                continue
            gc.collect()
            elapsed = _timed(case.run, case.loops)
            case.spent += elapsed
            case.samples.append(elapsed / case.loops / case.units)


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


@dataclass(slots=True)
class Row:
    name: str
    values: dict[str, float | str | None]
    note: str = ""


@dataclass(slots=True)
class Table:
    """A titled table: rows of named values, printed with aligned columns."""

    title: str
    columns: list[tuple[str, str]]
    """(key, heading) pairs, in order; the first column is the row name."""
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, note: str = "", **values: float | str | None) -> None:
        self.rows.append(Row(name, dict(values), note))

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": [key for key, _ in self.columns],
            "headings": [heading for _, heading in self.columns],
            "rows": [
                {"name": row.name, **row.values, **({"note": row.note} if row.note else {})}
                for row in self.rows
            ],
            "notes": self.notes,
        }

    def render(self, markdown: bool = False) -> str:
        headings = ["", *(heading for _, heading in self.columns)]
        cells = [
            [row.name, *(_cell(row.values.get(key)) for key, _ in self.columns)]
            for row in self.rows
        ]
        if any(row.note for row in self.rows):
            headings.append("note")
            for line, row in zip(cells, self.rows, strict=True):
                line.append(row.note)
        widths = [max(len(line[i]) for line in [headings, *cells]) for i in range(len(headings))]
        if markdown:
            out = [f"**{self.title}**", ""]
            out.append(
                "| " + " | ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)) + " |"
            )
            rules = [
                ":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)
            ]
            out.append("|" + "|".join(rules) + "|")
            for line in cells:
                out.append(
                    "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
                )
            out.extend(f"\n{note}" for note in self.notes)
            return "\n".join(out)
        out = [self.title, "=" * len(self.title)]
        out.append(
            "  ".join(
                _align(h, w, i) for i, (h, w) in enumerate(zip(headings, widths, strict=True))
            )
        )
        for line in cells:
            out.append(
                "  ".join(
                    _align(c, w, i) for i, (c, w) in enumerate(zip(line, widths, strict=True))
                )
            )
        out.extend(f"  {note}" for note in self.notes)
        return "\n".join(out)


def _align(text: str, width: int, column: int) -> str:
    return text.ljust(width) if column == 0 else text.rjust(width)


def _cell(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio_text(value: float) -> str:
    """A "vs ours" cell: how many times this row's cost is ours (``1.00x`` is a tie)."""
    if math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"
