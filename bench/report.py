"""The results table, the informational targets, and the JSON file."""

from __future__ import annotations

import json
import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrkrun import WrkResult


@dataclass
class Row:
    """One measured scenario."""

    key: str  # "a", "b", "c", "a@scale"
    label: str
    result: WrkResult
    events_per_request: int  # 0 when the scenario commits no events
    rss_kb: int | None  # peak summed VmRSS of the server tree, sampled
    pss_kb: int | None = None  # peak summed PSS of the same: shared pages counted once
    other_cpu_pct: float = 0.0  # CPU used by other processes on the machine meanwhile
    server_cpu_s: float = 0.0  # CPU time of the server's processes during the run
    db_cpu_s: float | None = None  # CPU time of a local PostgreSQL meanwhile (None: SQLite)
    load_cpu_s: float = 0.0  # CPU time of wrk (and run.py) meanwhile
    # (d) only: the destination's largest lag seen, in seconds and items; seconds from wrk's
    # end until it had caught up; its events/s over those of the (a) just before
    lag_s: float | None = None
    lag_items: int | None = None
    catch_up_s: float | None = None
    ratio_to_a: float | None = None
    deliverer_cpu_s: float | None = None  # (d): the CPU of the process delivering apart
    # (role, CPU seconds) of each server process during the run: procs.ROLES
    process_cpu_s: list[tuple[str, float]] = field(default_factory=list)
    # (role, PSS in kB) of each server process when their summed PSS peaked
    process_pss_kb: list[tuple[str, int]] = field(default_factory=list)

    @property
    def events_per_s(self) -> float | None:
        if not self.events_per_request:
            return None
        return self.result.ok_rps * self.events_per_request

    @property
    def delivered_ratio(self) -> float | None:
        """(d): ratio_to_a with the catch-up counted, as if the run's events had been committed
        over its seconds and the seconds delivery needed after wrk stopped: a delivery that
        falls behind pushes CPU past the run and so lifts ratio_to_a; this does not reward it."""
        d = self.result.duration_s
        if self.ratio_to_a is None or self.catch_up_s is None or not d:
            return None
        return self.ratio_to_a * d / (d + self.catch_up_s)

    @property
    def server_cpu_pct(self) -> float:
        """Server CPU as a percentage of one core (100 = one core busy all the time)."""
        d = self.result.duration_s
        return self.server_cpu_s / d * 100 if d else 0.0

    @property
    def process_cpu_pct(self) -> list[tuple[str, float]]:
        """(role, % of one core) of each server process, busiest first."""
        d = self.result.duration_s
        shares = [(role, t / d * 100 if d else 0.0) for role, t in self.process_cpu_s]
        return sorted(shares, key=lambda share: -share[1])

    def process_cpu_text(self) -> str:
        shares = ", ".join(f"{role} {pct:.0f}" for role, pct in self.process_cpu_pct)
        return f"{self.label}: server processes, % of one core: {shares}"

    def process_memory_text(self) -> str:
        each = sorted(self.process_pss_kb, key=lambda share: -share[1])
        shares = ", ".join(f"{role} {kb / 1024:.0f}" for role, kb in each)
        return f"{self.label}: server processes, PSS MB at the peak: {shares}"

    @property
    def load_cpu_pct(self) -> float:
        d = self.result.duration_s
        return self.load_cpu_s / d * 100 if d else 0.0

    @property
    def db_cpu_pct(self) -> float | None:
        d = self.result.duration_s
        return None if self.db_cpu_s is None or not d else self.db_cpu_s / d * 100

    @property
    def server_us_per_request(self) -> float | None:
        r = self.result.requests
        return self.server_cpu_s / r * 1e6 if r else None

    def ms(self, pct: str) -> float:
        return self.result.latency_us[pct] / 1000.0

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "label": self.label,
            "duration_s": round(r.duration_s, 3),
            "requests": r.requests,
            "requests_per_s": round(r.rps, 1),
            "ok_requests": r.ok,
            "ok_requests_per_s": round(r.ok_rps, 1),
            "events_per_request": self.events_per_request,
            "events_per_s": None if self.events_per_s is None else round(self.events_per_s, 1),
            "latency_ms": {k: round(v / 1000.0, 3) for k, v in r.latency_us.items()},
            "non_2xx": r.non_2xx,
            "socket_errors": r.socket_errors,
            "rss_peak_mb": None if self.rss_kb is None else round(self.rss_kb / 1024, 1),
            "pss_peak_mb": None if self.pss_kb is None else round(self.pss_kb / 1024, 1),
            "other_cpu_pct": round(self.other_cpu_pct, 1),
            "server_cpu_pct_of_one_core": round(self.server_cpu_pct, 1),
            "server_cpu_us_per_request": _round(self.server_us_per_request),
            "db_cpu_pct_of_one_core": _round(self.db_cpu_pct),
            "wrk_cpu_pct_of_one_core": round(self.load_cpu_pct, 1),
            "destination_lag_max_s": _round(self.lag_s, 3),
            "destination_lag_max_items": self.lag_items,
            "destination_catch_up_s": _round(self.catch_up_s, 2),
            "events_per_s_ratio_to_a": _round(self.ratio_to_a, 3),
            "delivered_ratio_to_a": _round(self.delivered_ratio, 3),
            "deliverer_cpu_s": _round(self.deliverer_cpu_s, 2),
            "server_processes_cpu_pct_of_one_core": [
                {"role": role, "pct": round(pct, 1)} for role, pct in self.process_cpu_pct
            ],
        }


COLUMNS = (
    ("scenario", "<22"),
    ("req/s", ">10"),
    ("events/s", ">12"),
    ("p50 ms", ">9"),
    ("p95 ms", ">9"),
    ("p99 ms", ">9"),
    ("non-2xx", ">9"),
    ("sock err", ">10"),
    ("RSS MB", ">9"),
    ("PSS MB", ">9"),
    ("srv CPU", ">9"),
    ("us/req", ">8"),
    ("db CPU", ">8"),
    ("wrk CPU", ">9"),
    ("other CPU", ">11"),
)


def table(rows: list[Row]) -> str:
    """The results table; the db CPU column only when a local PostgreSQL was measured."""
    with_db = any(row.db_cpu_s is not None for row in rows)
    cols = [(name, spec) for name, spec in COLUMNS if with_db or name != "db CPU"]
    header = "".join(f"{name:{spec}}" for name, spec in cols)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = _cells(row)
        lines.append("".join(f"{cells[name]:{spec}}" for name, spec in cols))
    return "\n".join(lines)


def _cells(row: Row) -> dict[str, str]:
    r = row.result
    db = row.db_cpu_pct
    return {
        "scenario": row.label,
        "req/s": f"{r.rps:,.0f}",
        "events/s": "-" if row.events_per_s is None else f"{row.events_per_s:,.0f}",
        "p50 ms": f"{row.ms('p50'):.2f}",
        "p95 ms": f"{row.ms('p95'):.2f}",
        "p99 ms": f"{row.ms('p99'):.2f}",
        "non-2xx": f"{r.non_2xx:,}",
        "sock err": f"{r.errors:,}",
        "RSS MB": "-" if row.rss_kb is None else f"{row.rss_kb / 1024:.1f}",
        "PSS MB": "-" if row.pss_kb is None else f"{row.pss_kb / 1024:.1f}",
        "srv CPU": f"{row.server_cpu_pct:.0f}%",
        "us/req": "-" if row.server_us_per_request is None else f"{row.server_us_per_request:.0f}",
        "db CPU": "-" if db is None else f"{db:.0f}%",
        "wrk CPU": f"{row.load_cpu_pct:.0f}%",
        "other CPU": f"{row.other_cpu_pct:.0f}%",
    }


@dataclass
class Target:
    scenario: str
    what: str
    op: str  # ">=", "<=", "<" or "=="
    goal: float
    value: float | None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return OPS[self.op](self.value, self.goal)


OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}


def against_a(row: Row) -> tuple[str, str]:
    """A row read against the (a) before it ((d); (l): the mean of the (a) before and after
    it): (a)'s events/s, and the ratio."""
    ratio = "-" if row.ratio_to_a is None else f"{row.ratio_to_a:.3f}"
    base = row.result.ok_rps * row.events_per_request / row.ratio_to_a if row.ratio_to_a else None
    return ("-" if base is None else f"{base:,.0f}"), ratio


def destination_text(row: Row) -> str:
    """(d)'s line: its rate against (a)'s just before, and the destination's lag."""
    without, ratio = against_a(row)
    lag = "not read" if row.lag_s is None else f"{row.lag_s:.2f} s ({row.lag_items:,} items)"
    catch_up = "-" if row.catch_up_s is None else f"{row.catch_up_s:.1f} s"
    delivered = row.delivered_ratio
    if delivered is not None:
        catch_up += f" (ratio counting the catch-up {delivered:.3f})"
    apart = ""
    if row.deliverer_cpu_s is not None and row.result.duration_s:
        share = row.deliverer_cpu_s / row.result.duration_s
        apart = f"; the delivering process apart used {share:.0%} of a core"
    return (
        f"{row.label}: {row.events_per_s or 0:,.0f} events/s with the destination, {without}"
        f" without (ratio {ratio}); destination lag at most {lag}, caught up {catch_up}"
        f" after wrk stopped{apart}"
    )


def lists_text(row: Row) -> str:
    """(l)'s line: its rate against the mean of (a)'s just before and just after."""
    without, ratio = against_a(row)
    return (
        f"{row.events_per_s or 0:,.0f} events/s with 20 lists, {without} without (the mean of"
        f" (a) before and after; ratio {ratio})"
    )


def message_ids_text(row: Row) -> str:
    """(m)'s line: its rate against the mean of the (a) just before it and the (a) just
    after it."""
    without, ratio = against_a(row)
    return (
        f"{row.events_per_s or 0:,.0f} events/s with a message id on every event, {without}"
        f" without (the mean of the (a) before and the (a) after; ratio {ratio})"
    )


def ratio_to_bare(rows: dict[str, Row]) -> float | None:
    """Pier's 2xx requests/s in (a) over the bare ASGI app's requests/s in (c)."""
    a, c = rows.get("a"), rows.get("c")
    return a.result.ok_rps / c.result.rps if a and c and c.result.rps else None


def targets(rows: dict[str, Row]) -> list[Target]:
    """The targets, with the measured value each is read against (None: not measured)."""
    a, b, e, lists = rows.get("a"), rows.get("b"), rows.get("e"), rows.get("l")
    ratio = ratio_to_bare(rows)
    # (d) over every pair (--pairs): the median ratio, the largest lag
    d_ratios = [r.ratio_to_a for k, r in rows.items() if k[0] == "d" and r.ratio_to_a is not None]
    d_lags = [r.lag_s for k, r in rows.items() if k[0] == "d" and r.lag_s is not None]
    pier_pss = [r.pss_kb for k, r in rows.items() if k != "c" and r.pss_kb is not None]
    return [
        Target("a", "events/s", ">=", 100_000, a.events_per_s if a else None),
        Target("a", "2xx req/s", ">=", 10_000, a.result.ok_rps if a else None),
        Target("a", "req/s ratio to (c)", ">=", 0.16, ratio),
        Target("a", "p99 ms", "<=", 25, a.ms("p99") if a else None),
        Target("a", "non-2xx + socket errors", "==", 0, _failures(a)),
        Target("b", "identify/s (2xx)", ">=", 8_000, b.result.ok_rps if b else None),
        Target("e", "events/s, 1 a request", ">=", 15_000, e.events_per_s if e else None),
        Target("d", "events/s ratio to (a), median", ">=", 0.8, _median(d_ratios)),
        Target("d", "destination lag max s", "<", 5, max(d_lags) if d_lags else None),
        Target("l", "events/s ratio to (a)", ">=", 0.7, lists.ratio_to_a if lists else None),
        # issue 16: "RSS <= 300 MB for all processes together" (workers, writer and delivery
        # processes; issue 4's 200 MB was for the one process of then). The memory they hold
        # together is their summed PSS: a page that several map (libpython, the other
        # libraries) counted once. Their summed VmRSS counts it in each (about 12 MB a
        # process): shown beside it in the table, not read against the target.
        Target(
            "pier",
            "peak memory MB, all processes (PSS)",
            "<=",
            300,
            max(pier_pss) / 1024 if pier_pss else None,
        ),
    ]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _failures(row: Row | None) -> float | None:
    return None if row is None else row.result.non_2xx + row.result.errors


def targets_text(items: list[Target]) -> str:
    lines = ["targets (information only, not asserted):"]
    for t in items:
        value = "not run" if t.value is None else _num(t.value)
        verdict = {True: "met", False: "MISSED", None: ""}[t.met]
        goal = f"{t.op} {_num(t.goal)}"
        lines.append(f"  ({t.scenario}) {t.what:<30}{goal:>12}{value:>14}   {verdict}")
    return "\n".join(lines)


def _num(x: float) -> str:
    if abs(x) >= 100 or x == int(x):
        return f"{x:,.0f}"
    return f"{x:,.1f}" if abs(x) >= 1 else f"{x:.3f}"


def _round(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
