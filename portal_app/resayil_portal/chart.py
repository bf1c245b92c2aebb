"""The usage chart, drawn on the server as SVG: requests per day as bars, credits per day as a line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape

WIDTH = 720
HEIGHT = 220
PAD_X = 8
PAD_TOP = 16
PAD_BOTTOM = 28


@dataclass(frozen=True, slots=True)
class DayUsage:
    """One day's totals for the chart."""

    day: date
    requests: int
    credits: int


def usage_chart_svg(days: Sequence[DayUsage], title: str, requests_label: str, credits_label: str) -> str:
    """An accessible SVG (``role="img"`` with a title) of ``days``, oldest first."""
    count = max(1, len(days))
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = (WIDTH - 2 * PAD_X) / count
    top_requests = max([d.requests for d in days] + [1])
    top_credits = max([d.credits for d in days] + [1])
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title" '
        f'xmlns="http://www.w3.org/2000/svg" direction="ltr">',
        f'<title id="chart-title">{escape(title)}</title>',
    ]
    for fraction in (0.25, 0.5, 0.75, 1.0):
        y = PAD_TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="chart-grid" x1="{PAD_X}" x2="{WIDTH - PAD_X}" y1="{y:.1f}" y2="{y:.1f}"/>')
    points = []
    for index, day in enumerate(days):
        x = PAD_X + index * slot
        height = plot_h * day.requests / top_requests
        y = PAD_TOP + plot_h - height
        parts.append(
            f'<rect class="chart-bar" x="{x + slot * 0.15:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{max(height, 0):.1f}" rx="2"><title>{day.day.isoformat()}: {day.requests} '
            f"{escape(requests_label)}, {day.credits} {escape(credits_label)}</title></rect>"
        )
        cy = PAD_TOP + plot_h - plot_h * day.credits / top_credits
        points.append(f"{x + slot / 2:.1f},{cy:.1f}")
        if index % 5 == 0 or index == count - 1:
            parts.append(
                f'<text class="chart-axis" x="{x + slot / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{day.day.strftime('%d/%m')}</text>"
            )
    if points:
        parts.append(f'<polyline class="chart-line" fill="none" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return "".join(parts)
