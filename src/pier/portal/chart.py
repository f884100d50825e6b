"""The events-per-minute chart: an SVG bar chart drawn on the server (no chart library)."""

from __future__ import annotations

import time

MINUTE = 60_000
MINUTES = 60
WIDTH, HEIGHT = 1160, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 26  # margins for the axis labels


def since(now: int) -> int:
    """Start of the chart's first minute: the last MINUTES minutes, the current one included."""
    return (now // MINUTE - (MINUTES - 1)) * MINUTE


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 × 10^k at or above value (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _clock(ms: int) -> str:
    return time.strftime("%H:%M", time.gmtime(ms // 1000))


def events_chart(counts: dict[int, int], now: int) -> str:
    """SVG of `counts` ({minute start ms: events}) over the last hour; one bar a minute."""
    start = since(now)
    minutes = [start + i * MINUTE for i in range(MINUTES)]
    values = [counts.get(m, 0) for m in minutes]
    total = sum(values)
    top = nice_ceiling(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / MINUTES
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-label="Events received per minute over the last hour: {total} in all">',
        f"<title>Events per minute, last hour ({total} in all)</title>",
    ]
    for fraction in (0, 0.5, 1):  # grid lines with their values
        y = TOP + plot_h * (1 - fraction)
        label = f"{top * fraction:g}"
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"'
            ' stroke="#d9dee7" stroke-width="1"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end"'
            f' font-size="11" fill="#667085">{label}</text>'
        )
    for i, (minute, value) in enumerate(zip(minutes, values, strict=True)):
        height = plot_h * value / top
        x = LEFT + i * slot + 1
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - height:.1f}"'
            f' width="{slot - 2:.1f}" height="{height:.1f}" fill="#4f6bed">'
            f"<title>{_clock(minute)} UTC: {value} event{'' if value == 1 else 's'}</title></rect>"
        )
    for i in (0, 15, 30, 45, MINUTES - 1):  # time labels under the bars
        x = LEFT + (i + 0.5) * slot
        label = "now" if i == MINUTES - 1 else f"{_clock(minutes[i])}"
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle"'
            f' font-size="11" fill="#667085">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
