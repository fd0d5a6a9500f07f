"""The headline chart: speed-ups over competitors, and ours against the floor and ceiling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .competitors import optional

__all__ = ["write_chart"]


def write_chart(
    speedups: list[tuple[str, float, float]],
    floor_ratios: list[tuple[str, float, float | None]],
    path: Path,
    subtitle: str,
) -> str | None:
    """Write the PNG; returns a skip reason instead when matplotlib is missing.

    ``speedups``: (label, ours faster by, target). ``floor_ratios``: (label, our speed as a
    fraction of the floor's, lowest acceptable fraction or ``None``).
    """
    matplotlib = optional("matplotlib")
    if matplotlib is None:
        return "matplotlib is not installed: no chart"
    matplotlib.use("Agg")
    pyplot: Any = optional("matplotlib.pyplot")
    figure, (left, right) = pyplot.subplots(
        1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1.15, 1]}
    )
    figure.suptitle("asyncclient: headline ratios (same run, medians)", fontsize=14, y=0.985)
    figure.text(0.5, 0.935, subtitle, ha="center", fontsize=9, color="#555555")

    labels = [label for label, _, _ in speedups]
    values = [value for _, value, _ in speedups]
    positions = list(range(len(labels)))
    bars = left.barh(positions, values, color="#2b6cb0")
    for position, (_, value, target) in zip(positions, speedups, strict=True):
        left.plot([target, target], [position - 0.4, position + 0.4], color="#c53030", lw=2)
        label = f"{value:,.0f}x" if value >= 10 else f"{value:.1f}x"
        # Right of the bar and of the target mark, so neither hides the number.
        left.text(max(value, target) * 1.12, position, label, va="center", fontsize=9)
    left.set_xscale("log")
    left.set_yticks(positions, labels, fontsize=9)
    left.invert_yaxis()
    left.set_xlabel("ours is N times faster (log scale); red = target")
    left.set_title("vs the libraries users would otherwise pick", fontsize=11)
    left.set_xlim(1, max(values + [t for _, _, t in speedups]) * 4)
    left.grid(axis="x", which="both", alpha=0.25)
    del bars

    labels = [label for label, _, _ in floor_ratios]
    ratios = [ratio for _, ratio, _ in floor_ratios]
    positions = list(range(len(labels)))
    colors = []
    for _, ratio, goal in floor_ratios:
        if goal is None:
            colors.append("#718096")
        elif ratio >= goal:
            colors.append("#2f855a")
        else:
            colors.append("#c05621")
    right.barh(positions, ratios, color=colors)
    for position, (_, ratio, goal) in zip(positions, floor_ratios, strict=True):
        if goal is not None:
            right.plot([goal, goal], [position - 0.4, position + 0.4], color="#c53030", lw=2)
        right.text(max(ratio, goal or 0) + 0.025, position, f"{ratio:.2f}", va="center", fontsize=9)
    right.axvline(1.0, color="black", lw=1)
    right.set_yticks(positions, labels, fontsize=9)
    right.invert_yaxis()
    right.set_xlim(0, max([1.25, *ratios]) + 0.15)
    right.set_xlabel("our speed / reference speed (1.0 = as fast); red = target")
    right.set_title("vs the floor (grey: vs the bytes-only ceiling)", fontsize=11)
    right.grid(axis="x", alpha=0.25)
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return None
