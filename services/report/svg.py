"""Small inline-SVG charts for the report (no plotting library, nothing to fetch): lines over time with vertical
markers and horizontal reference lines, and overlaid histograms. Every mark carries a <title> tooltip."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 920
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 44, 36
HEIGHT = 266


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    color: str
    dashed: bool = False
    step: bool = False


@dataclass(frozen=True)
class Marker:
    """A vertical line at ``x`` (a decision), labelled, with a tooltip."""

    x: float
    color: str
    label: str
    tooltip: str


@dataclass(frozen=True)
class HLine:
    y: float
    color: str
    label: str


@dataclass
class _Scale:
    lo: float
    hi: float
    a: float
    b: float
    log: bool = False

    def __call__(self, v: float) -> float:
        lo, hi, v = (math.log10(self.lo), math.log10(self.hi), math.log10(max(v, self.lo))) if self.log else (self.lo, self.hi, v)
        return self.a + (v - lo) / ((hi - lo) or 1.0) * (self.b - self.a)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def _tick_value(scale: _Scale, fraction: float) -> float:
    if scale.log:
        return float(10 ** (math.log10(scale.lo) + (math.log10(scale.hi) - math.log10(scale.lo)) * fraction))
    return scale.lo + (scale.hi - scale.lo) * fraction


def _frame(title: str, x: _Scale, y: _Scale, x_ticks: Sequence[tuple[float, str]], y_label: str) -> list[str]:
    parts = [f'<text x="{LEFT}" y="16" class="t">{escape(title)}</text>']
    for i in range(5):
        v = _tick_value(y, i / 4)
        py = y(v)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" class="g"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py + 4:.1f}" class="yl">{_fmt(v)}</text>')
    for v, label in x_ticks:
        px = x(v)
        parts.append(f'<text x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" class="xl">{escape(label)}</text>')
    parts.append(f'<text x="12" y="{TOP + (HEIGHT - TOP - BOTTOM) / 2:.0f}" class="ax" '
                 f'transform="rotate(-90 12 {TOP + (HEIGHT - TOP - BOTTOM) / 2:.0f})">{escape(y_label)}</text>')
    return parts


def line_chart(
    title: str, series: Sequence[Series], *, x_max: float, y_label: str, markers: Sequence[Marker] = (),
    hlines: Sequence[HLine] = (), x_ticks: Sequence[tuple[float, str]] = (), y_min: float | None = None,
    y_max: float | None = None,
) -> str:
    """Lines over x in [0, x_max] (seconds since the rollout started), decisions as vertical markers."""
    ys = [p[1] for s in series for p in s.points] + [h.y for h in hlines]
    lo = min(ys, default=0.0) if y_min is None else y_min
    hi = max(ys, default=1.0) if y_max is None else y_max
    if hi <= lo:
        hi = lo + 1.0
    pad = (hi - lo) * 0.08
    x = _Scale(0.0, x_max or 1.0, LEFT, WIDTH - RIGHT)
    y = _Scale(lo - (pad if y_min is None else 0), hi + (pad if y_max is None else 0), HEIGHT - BOTTOM, TOP)
    parts = _frame(title, x, y, x_ticks, y_label)
    for h in hlines:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(h.y):.1f}" y2="{y(h.y):.1f}" stroke="{h.color}" '
                     f'stroke-dasharray="6 4" class="th"><title>{escape(h.label)}</title></line>')
        parts.append(f'<text x="{LEFT + 40}" y="{y(h.y) - 4:.1f}" class="hl" fill="{h.color}">{escape(h.label)}</text>')
    for m in markers:
        near_end = x(m.x) > WIDTH - 90
        anchor = ' text-anchor="end"' if near_end else ""
        parts.append(f'<g class="decision"><title>{escape(m.tooltip)}</title>'
                     f'<line x1="{x(m.x):.1f}" x2="{x(m.x):.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{m.color}" '
                     f'stroke-width="1.5" opacity="0.7"/>'
                     f'<text x="{x(m.x) + (-3 if near_end else 3):.1f}" y="{TOP + 10}" class="ml" fill="{m.color}"{anchor}>'
                     f"{escape(m.label)}</text></g>")
    for s in series:
        if not s.points:
            continue
        coords: list[tuple[float, float]] = []
        for i, (px, py) in enumerate(s.points):
            if s.step and i:
                coords.append((x(px), coords[-1][1]))
            coords.append((x(px), y(py)))
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
        dash = ' stroke-dasharray="4 3"' if s.dashed else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2"{dash}>'
                     f"<title>{escape(s.name)}</title></polyline>")
        for px, py in s.points:
            parts.append(f'<circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="2.5" fill="{s.color}">'
                         f"<title>{escape(s.name)}: {_fmt(py)}</title></circle>")
    parts.append(_legend([(s.name, s.color, s.dashed) for s in series]))
    return _svg(parts)


def histogram(
    title: str, samples: Mapping[str, Sequence[float]], colors: Mapping[str, str], *, x_label: str, bins: int = 30,
    marks: Sequence[float] = (0.5, 0.95),
) -> str:
    """Overlaid histograms on log-spaced bins (share of each side's samples per bin), with percentile ticks."""
    values = [v for vs in samples.values() for v in vs if v > 0]
    if not values:
        return _svg([f'<text x="{LEFT}" y="16" class="t">{escape(title)}</text>',
                     f'<text x="{LEFT}" y="60" class="xl">no samples</text>'])
    lo, hi = min(values), max(values)
    hi = hi * 1.0001 if hi > lo else lo * 2
    edges = [lo * (hi / lo) ** (i / bins) for i in range(bins + 1)]
    shares: dict[str, list[float]] = {}
    for name, vs in samples.items():
        counts = [0] * bins
        for v in vs:
            if v > 0:
                idx = min(bins - 1, max(0, int(math.log(v / lo) / math.log(hi / lo) * bins)))
                counts[idx] += 1
        total = sum(counts) or 1
        shares[name] = [c / total for c in counts]
    top = max(max(s) for s in shares.values()) or 1.0
    x = _Scale(lo, hi, LEFT, WIDTH - RIGHT, log=True)
    y = _Scale(0.0, top * 1.1, HEIGHT - BOTTOM, TOP)
    ticks = [(v, _fmt(v)) for v in _log_ticks(lo, hi)]
    parts = _frame(title, x, y, ticks, "share of requests")
    for name, share in shares.items():
        color = colors.get(name, "#555")
        for i, s in enumerate(share):
            if s:
                x0, x1 = x(edges[i]), x(edges[i + 1])
                tip = f"{escape(name)}: {s:.1%} in {_fmt(edges[i])}-{_fmt(edges[i + 1])} {escape(x_label)}"
                parts.append(f'<rect x="{x0:.1f}" y="{y(s):.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                             f'height="{y(0) - y(s):.1f}" fill="{color}" opacity="0.45"><title>{tip}</title></rect>')
        ordered = sorted(v for v in samples[name] if v > 0)
        for q in marks:
            v = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            parts.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="{color}" '
                         f'stroke-dasharray="3 3"><title>{escape(name)} p{q * 100:g}: {_fmt(v)} {escape(x_label)}</title></line>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 4}" class="xl" text-anchor="end">{escape(x_label)} (log scale)</text>')
    parts.append(_legend([(f"{n} (n={len(samples[n])})", colors.get(n, "#555"), False) for n in samples]))
    return _svg(parts)


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks


def _legend(items: Sequence[tuple[str, str, bool]]) -> str:
    out, px = [], LEFT
    for name, color, dashed in items:
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(f'<line x1="{px}" x2="{px + 18}" y1="29" y2="29" stroke="{color}" stroke-width="3"{dash}/>'
                   f'<text x="{px + 22}" y="33" class="lg">{escape(name)}</text>')
        px += 30 + 7 * len(name)
    return "".join(out)


def _svg(parts: list[str]) -> str:
    body = "".join(parts)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
            f'class="chart">{body}</svg>')
