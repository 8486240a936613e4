"""The geometry of the console's charts, drawn as SVG by the templates (`templates/_charts.html`): the
server computes every coordinate, so a chart needs no script and prints as it shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 640
BAR_GAP = 0.25
LABEL_ROOM = 28
VALUE_ROOM = 18
MAX_BAR = 56
"""A bar is never wider than this: one month alone is a column, not a wall."""


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True)
class BarChart:
    """Vertical bars, one per label, scaled to the largest value; `height` includes the labels below."""

    width: int
    height: int
    plot_height: int
    bars: tuple[Bar, ...]
    maximum: int


def bar_chart(items: Sequence[tuple[str, int]], *, plot_height: int = 180) -> BarChart:
    top = max((value for _, value in items), default=0)
    slot = WIDTH / max(1, len(items))
    bars = []
    width = min(MAX_BAR, slot * (1 - BAR_GAP))
    for index, (label, value) in enumerate(items):
        height = 0.0 if top == 0 else (plot_height - VALUE_ROOM) * value / top
        bars.append(
            Bar(
                x=round(index * slot + (slot - width) / 2, 2),
                y=round(plot_height - height, 2),
                width=round(width, 2),
                height=round(height, 2),
                label=label,
                value=value,
            )
        )
    return BarChart(WIDTH, plot_height + LABEL_ROOM, plot_height, tuple(bars), top)


@dataclass(frozen=True)
class Segment:
    x: float
    width: float
    key: str
    value: int


@dataclass(frozen=True)
class Stack:
    """One horizontal bar split into parts (`key` names each part's colour class), scaled to `total`."""

    segments: tuple[Segment, ...]
    total: int


def stack(parts: Sequence[tuple[str, int]], *, total: int | None = None, width: int = WIDTH) -> Stack:
    whole = total if total is not None else sum(value for _, value in parts)
    x = 0.0
    segments = []
    for key, value in parts:
        if value <= 0 or whole <= 0:
            continue
        share = width * min(value, whole) / whole
        segments.append(Segment(x=round(x, 2), width=round(share, 2), key=key, value=value))
        x += share
    return Stack(tuple(segments), whole)
