"""Tiny inline-SVG plots for ``vidgan report``: line charts with axes and a legend, and sparklines.

Pure functions returning markup text, so the report stays one self-contained, offline HTML file (no
plotting library, no JavaScript).  All text is HTML-escaped; the markup is meant to be inlined in an
HTML5 page, which needs no ``xmlns``.
"""

from __future__ import annotations

import math
from html import escape

Series = dict[str, list[tuple[float, float]]]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def finite_points(points) -> tuple[list[tuple[float, float]], int]:
    """The drawable points sorted by x (a resumed run may log a step twice), and how many were not
    drawable (NaN/inf losses of a diverged run)."""
    good = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    return sorted(good, key=lambda p: p[0]), len(points) - len(good)


def decimate(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """At most about ``max_points`` points: the lowest and the highest of each run of consecutive
    points, so spikes survive (a chart a few hundred pixels wide cannot show more anyway)."""
    if len(points) <= max_points:
        return points
    size = math.ceil(2 * len(points) / max_points)
    kept = []
    for start in range(0, len(points), size):
        bucket = points[start:start + size]
        low, high = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        kept += sorted({low, high})
    return kept


def nice_range(lo: float, hi: float, count: int = 5) -> tuple[float, float, list[float]]:
    """Widen ``[lo, hi]`` to round numbers and return ``(lo, hi, ticks)`` with about ``count`` ticks."""
    if not hi > lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [round(k * step, 12) for k in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks


def format_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


def _scale(lo: float, hi: float, start: float, length: float, flip: bool = False):
    def to_pixels(value: float) -> float:
        frac = (value - lo) / (hi - lo)
        return start + (1 - frac if flip else frac) * length
    return to_pixels


def _polyline(points, sx, sy, color: str, name: str, width: float) -> str:
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    return (f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{color}" '
            f'stroke-width="{width}" points="{coords}"/>')


def svg_line_chart(series: Series, title: str, width: int = 480, height: int = 220,
                   x_label: str = "step", max_points: int = 2000) -> str:
    """One chart: a polyline per series, x/y axes with round tick labels, a legend and the title.
    Every point is drawn unless a series has more than ``max_points`` (see ``decimate``)."""
    left, right, top, bottom = 58, 14, 34, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    cleaned = {name: finite_points(points) for name, points in series.items()}
    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="{escape(title)}">', f"<title>{escape(title)}</title>",
             f'<text class="chart-title" x="{left}" y="16">{escape(title)}</text>']
    drawn = [p for points, _ in cleaned.values() for p in points]
    if not drawn:
        parts.append(f'<text class="no-data" x="{width / 2}" y="{height / 2}" '
                     'text-anchor="middle">no data yet</text></svg>')
        return "".join(parts)
    x0, x1, xticks = nice_range(min(p[0] for p in drawn), max(p[0] for p in drawn), 5)
    y0, y1, yticks = nice_range(min(p[1] for p in drawn), max(p[1] for p in drawn), 4)
    sx, sy = _scale(x0, x1, left, plot_w), _scale(y0, y1, top, plot_h, flip=True)
    for y in yticks:
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{sy(y):.1f}" '
                     f'y2="{sy(y):.1f}"/><text class="tick" x="{left - 6}" y="{sy(y) + 4:.1f}" '
                     f'text-anchor="end">{format_number(y)}</text>')
    for x in xticks:
        parts.append(f'<line class="axis" x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top + plot_h}" '
                     f'y2="{top + plot_h + 4}"/><text class="tick" x="{sx(x):.1f}" '
                     f'y="{top + plot_h + 16}" text-anchor="middle">{format_number(x)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
                 f'y2="{top + plot_h}"/><line class="axis" x1="{left}" x2="{left}" y1="{top}" '
                 f'y2="{top + plot_h}"/><text class="tick" x="{left + plot_w}" y="{height - 4}" '
                 f'text-anchor="end">{escape(x_label)}</text>')
    legend_x, skipped = left, 0
    for i, (name, (points, n_bad)) in enumerate(cleaned.items()):
        color, skipped = PALETTE[i % len(PALETTE)], skipped + n_bad
        parts.append(_polyline(decimate(points, max_points), sx, sy, color, name, 1.5))
        if len(points) <= 30:  # few points (evals): mark them, a lone point has no line to show
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>'
                      for x, y in points]
        parts.append(f'<line x1="{legend_x}" x2="{legend_x + 16}" y1="26" y2="26" stroke="{color}" '
                     f'stroke-width="3"/><text class="legend" x="{legend_x + 20}" y="30">'
                     f"{escape(name)}</text>")
        legend_x += 32 + 7 * len(name)
    if skipped:
        parts.append(f'<text class="note" x="{left + plot_w}" y="16" text-anchor="end">'
                     f"{skipped} non-finite value(s) not drawn</text>")
    parts.append("</svg>")
    return "".join(parts)


def svg_sparkline(series: Series, width: int = 140, height: int = 36) -> str:
    """A small chart without axes (one per sweep job); the tooltip gives each series' last value."""
    cleaned = {name: decimate(finite_points(points)[0], width) for name, points in series.items()}
    drawn = [p for points in cleaned.values() for p in points]
    tip = ", ".join(f"{name} {format_number(points[-1][1])}" for name, points in cleaned.items()
                    if points)
    head = (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f"<title>{escape(tip or 'no data yet')}</title>")
    if not drawn:
        return head + "</svg>"
    x0, x1 = min(p[0] for p in drawn), max(p[0] for p in drawn)
    y0, y1 = min(p[1] for p in drawn), max(p[1] for p in drawn)
    if not x1 > x0:
        x0, x1 = x0 - 1, x1 + 1
    if not y1 > y0:
        y0, y1 = y0 - 1, y1 + 1
    sx, sy = _scale(x0, x1, 2, width - 4), _scale(y0, y1, 2, height - 4, flip=True)
    lines = [_polyline(points, sx, sy, PALETTE[i % len(PALETTE)], name, 1.2)
             for i, (name, points) in enumerate(cleaned.items())]
    return head + "".join(lines) + "</svg>"
