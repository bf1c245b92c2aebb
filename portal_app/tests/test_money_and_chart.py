"""Money is shown from integer fils with three decimals, by one helper; the usage chart is server-side SVG."""

from __future__ import annotations

from datetime import date, timedelta

from resayil_portal.chart import DayUsage, usage_chart_svg
from resayil_portal.money import format_kwd


def test_fils_are_formatted_as_kwd_with_three_decimals():
    assert format_kwd(2500) == "2.500 KWD"
    assert format_kwd(35000) == "35.000 KWD"
    assert format_kwd(1234567) == "1,234.567 KWD"
    assert format_kwd(5) == "0.005 KWD"
    assert format_kwd(-1500) == "-1.500 KWD"
    assert format_kwd(2500, "ar") == "2.500 د.ك"


def test_usage_chart_has_one_bar_per_day_and_a_credits_line():
    start = date(2026, 1, 1)
    days = [DayUsage(start + timedelta(days=i), requests=i, credits=2 * i) for i in range(30)]
    svg = usage_chart_svg(days, "Usage", "requests", "credits")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="chart-bar"') == 30
    assert "<polyline" in svg and '<title id="chart-title">Usage</title>' in svg


def test_usage_chart_with_no_usage_draws_empty_bars_without_dividing_by_zero():
    days = [DayUsage(date(2026, 1, 1) + timedelta(days=i), 0, 0) for i in range(30)]
    svg = usage_chart_svg(days, "<Usage>", "r", "c")
    assert "&lt;Usage&gt;" in svg
