"""Bar charts as inline SVG, drawn on the server (no script, no library).

Colours and sizes are SVG presentation attributes, not ``style``: the pages'
Content-Security-Policy allows no inline style. Every text is escaped. A
chart is horizontal bars, one row per label, each row one or more segments
(colour and mono pages side by side, say) scaled to the largest row; the
numbers themselves are in the table the page shows beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup, escape

ROW_HEIGHT = 22
BAR_HEIGHT = 16
LABEL_WIDTH = 160
BAR_WIDTH = 360
VALUE_WIDTH = 110
WIDTH = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
MAX_LABEL = 24  # characters; the table has the whole name

# Named series and their fills (the legend says which is which).
FILLS = {"cost": "#3b6ea5", "color": "#c2571a", "mono": "#7a7a7a"}


@dataclass(frozen=True, slots=True)
class Segment:
    series: str  # a key of FILLS
    value: Decimal


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    segments: Sequence[Segment]
    shown: str  # the row's number as text, e.g. "12.30 EUR" or "40 pages"

    @property
    def total(self) -> Decimal:
        return sum((s.value for s in self.segments), Decimal(0))


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def bar_chart(chart_id: str, title: str, bars: Sequence[Bar]) -> Markup:
    """An ``<svg>`` of ``bars``; negative values (net refunds) draw as empty bars."""
    top = max((b.total for b in bars), default=Decimal(0))
    height = max(1, len(bars)) * ROW_HEIGHT + 4
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart" role="img" xmlns="http://www.w3.org/2000/svg"'
        f' width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
        f' aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    for row, bar in enumerate(bars):
        y = row * ROW_HEIGHT + 2
        text_y = y + BAR_HEIGHT - 4
        parts.append(
            f'<g class="bar" data-key="{escape(bar.label)}" data-total="{escape(str(bar.total))}">'
            f'<text x="0" y="{text_y}" font-size="12">{escape(_short(bar.label))}</text>'
        )
        x = float(LABEL_WIDTH)
        for segment in bar.segments:
            share = segment.value / top if top > 0 and segment.value > 0 else Decimal(0)
            width = float(share) * BAR_WIDTH
            parts.append(
                f'<rect x="{_fmt(x)}" y="{y}" width="{_fmt(width)}" height="{BAR_HEIGHT}"'
                f' fill="{FILLS[segment.series]}" data-series="{escape(segment.series)}"'
                f' data-value="{escape(str(segment.value))}"/>'
            )
            x += width
        parts.append(
            f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{text_y}" font-size="12">'
            f"{escape(bar.shown)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
