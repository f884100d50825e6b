"""Pier benchmark: start Pier on a fresh database, load it with wrk over loopback, report.

Usage: .venv/bin/python bench/run.py [--database-url URL] [--workers N] [--scale] ...
See bench/README.md for the scenarios and what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import database
import report
from destination import Destination, LagWatch
from lists_a import Lists
from procs import CpuWatch, RssSampler, Server, free_port, pids_cpu_s, pin_prefix, tree_kb
from report import Row
from wrkrun import BENCH_DIR, WrkResult, require_wrk, run_wrk

from pier.settings import Settings, layout

ROOT = BENCH_DIR.parent
PIER = ROOT / ".venv" / "bin" / "pier"
SERVER_CPU, WRK_CPU = 0, 1
EVENT_USERS, IDENTIFY_USERS, POOL = 10_000, 100_000, 4000
PRELOAD_BODY_EVENTS, PRELOAD_POOL, PRELOAD_CONNECTIONS = 1000, 32, 16
PRELOAD_MAX_CHUNK_S, PRELOAD_MAX_S = 60, 3 * 3600  # bounds: one wrk run, the whole preload
OTHER_CPU_WARN_PCT = 20  # ~10% is loopback network work in the kernel on a quiet machine
BOTTLENECK_PCT = 90  # wrk, or a server process, using this much of one core limits the run


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    script: str
    events_per_request: int  # events committed by one 2xx response (0: none)
    message_ids: bool = False  # each event with a new message id (events.lua's "ids")

    def script_args(self, api_key: str) -> list[str]:
        if self.script == "identify.lua":
            return [api_key, str(IDENTIFY_USERS), str(POOL)]
        ids = ["ids"] if self.message_ids else []
        return [api_key, str(self.events_per_request or 10), str(EVENT_USERS), str(POOL), *ids]


SCENARIOS = {
    "a": Scenario("a", "(a) events x10", "events.lua", 10),
    "b": Scenario("b", "(b) identify", "identify.lua", 0),
    "c": Scenario("c", "(c) bare ASGI", "events.lua", 0),
    "d": Scenario("d", "(d) (a) + webhook dest.", "events.lua", 10),
    "l": Scenario("l", "(l) (a) + 20 dyn. lists", "events.lua", 10),
    "e": Scenario("e", "(e) events x1", "events.lua", 1),
    "m": Scenario("m", "(m) (a) + message ids", "events.lua", 10, message_ids=True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark Pier with wrk over loopback.")
    p.add_argument("--database-url", help="default: a temporary SQLite file")
    p.add_argument(
        "--reuse-database",
        action="store_true",
        help="with a PostgreSQL URL, use that database as is instead of a temporary one",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="pier serve --workers (default 0: the server chooses, pier.settings.layout)",
    )
    p.add_argument("--durability", choices=["full", "normal"], help="pier serve --durability")
    p.add_argument(
        "--writer-process",
        choices=["on", "off"],
        help="pier serve --writer-process / --no-writer-process (default: the server's)",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per scenario (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds before each (default 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument(
        "--scenarios",
        default="a,b,c,d,l,e,m",
        help="comma-separated subset of a,b,c,d,l,e,m (d: (a) with one webhook destination;"
        " l: ingestion with 20 dynamic lists against none, bench/lists_ingest.py; e: (a) with 1"
        " event a request; m: (a) with a new message id on every event, as the SDKs send)",
    )
    p.add_argument("--pairs", type=int, default=1, help="(a) then (d), this many times (default 1)")
    p.add_argument(
        "--deliver",
        choices=["process", "in-server", "separate"],
        default="process",
        help="(d): delivery by pier serve's delivery process (default); by the serving"
        " process itself (--no-deliver-process); or by a `pier deliver` process (pier serve"
        " --no-deliver). Pinned to wrk's CPU where the server is pinned (--workers 1)",
    )
    p.add_argument("--scale", action="store_true", help="preload events, then run (a) again")
    p.add_argument("--preload-events", type=int, default=10_000_000, help="for --scale")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to CPUs")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    keys = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not keys or any(k not in SCENARIOS for k in keys):
        p.error(f"--scenarios: expected a subset of {','.join(SCENARIOS)}, got {args.scenarios!r}")
    args.lists = "l" in keys
    if (args.scale or {"d", "l", "m"} & set(keys)) and "a" not in keys:
        keys.insert(0, "a")  # the scale, (d), (l) and (m) figures are read against (a)
    args.scenario_keys = [k for k in SCENARIOS if k in keys]
    if min(args.duration, args.connections, args.pairs) < 1 or min(args.warmup, args.workers) < 0:
        p.error("--duration, --connections and --pairs must be >= 1, --workers, --warmup >= 0")
    # what pier serve makes of these options on this machine's cores (settings.layout), to say
    # it, to pin one process and to give (c) as many workers
    asked = Settings(workers=args.workers, writer_process=args.writer_process != "off")
    args.http_workers, args.writer_proc = layout(asked, len(os.sched_getaffinity(0)))
    args.one_process = args.http_workers == 1 and not args.writer_proc
    return args


class Bench:
    """One benchmark run: owns the temporary directory, the servers and the results."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.pin = args.one_process and not args.no_pin and (os.cpu_count() or 1) >= 2
        self.rows: dict[str, Row] = {}
        self.servers: list[Server] = []
        self.db: database.BenchDatabase | None = None
        self.committed = 0  # events acknowledged with a 2xx, warm-ups and preload included
        self.in_flight = 0  # at most this many more may be committed unacknowledged (wrk stops)
        self.db_events: int | None = None
        self.pier_hwm_kb: int | None = None
        self.notes: list[str] = []
        self.idle_other_pct: float | None = None
        self.preloaded = 0  # events stored before the scale run of (a)
        self.deliverer: Server | None = None  # --deliver separate: `pier deliver`
        self.lists_lines: list[str] = []  # bench/lists_ingest.py's figures

    # -- orchestration ---------------------------------------------------------------------

    def run(self) -> None:
        print(self.setup_text(), flush=True)
        self.check_idle()
        if set(self.args.scenario_keys) - {"c"}:  # every scenario but the bare app's is Pier's
            self.run_pier()
        if "c" in self.args.scenario_keys:
            self.run_bare()
        if self.args.lists:
            self.run_lists()

    def run_pier(self) -> None:
        if not PIER.exists():
            raise RuntimeError(f"{PIER} not found: install the project (pip install -e .)")
        self.db = database.prepare(
            self.args.database_url, self.workdir, fresh=not self.args.reuse_database
        )
        print(f"database: {self.db.url}", flush=True)
        project, api_key = create_key(self.db.url)
        server = self.start_server("pier", self.pier_argv(self.db.url))
        self.smoke_test(server, api_key)
        keys = self.args.scenario_keys
        pairs = self.args.pairs if "d" in keys else 1
        receiver = self.start_receiver() if "d" in keys else None
        if receiver is not None and self.args.deliver == "separate":
            self.deliverer = self.start_deliverer(self.db.url)
        # before any measure: a key written by another process makes the server read who is
        # who again, and its SQLite indexer distrust its pending rows for a pass
        secret = create_key(self.db.url, project, "secret")[1] if receiver or "l" in keys else ""
        for n in range(1, pairs + 1):
            suffix = "" if n == 1 else f"#{n}"
            self.measure(server, SCENARIOS["a"], api_key, row_key="a" + suffix)
            if receiver is not None:
                self.measure_destination(server, api_key, secret, receiver, suffix)
        if receiver is not None:
            self.stop_server(receiver)
        if self.deliverer is not None:
            self.stop_server(self.deliverer)
        if "l" in keys:
            self.measure_lists(server, api_key, secret)
        if "b" in keys:
            self.measure(server, SCENARIOS["b"], api_key)
        if "e" in keys:
            self.measure(server, SCENARIOS["e"], api_key)
        if "m" in keys:
            self.measure_message_ids(server, api_key)
        if self.args.scale:
            ids = "m" in keys  # then the preloaded events have message ids, and (m) runs too
            self.preload(server, api_key, ids)
            self.preloaded = self.committed
            at = f"@{human(self.preloaded)} events"
            self.measure(server, SCENARIOS["a"], api_key, row_key="a@scale", label=f"(a) {at}")
            if ids:
                self.measure_message_ids(server, api_key, "@scale", at)
        self.pier_hwm_kb = tree_kb(server.tree(), "VmHWM")
        self.stop_server(server)
        self.db_events = database.count_events(self.db)

    def run_bare(self) -> None:
        server = self.start_server("bare ASGI", self.bare_argv())
        self.measure(server, SCENARIOS["c"], "unused")
        self.stop_server(server)

    def start_deliverer(self, url: str) -> Server:
        """`pier deliver` in a process of its own, on wrk's CPU (the other core)."""
        cmd = [*pin_prefix(WRK_CPU if self.pin else None), str(PIER), "deliver"]
        server = Server("deliverer", [*cmd, "--database-url", url], 0, self.workdir / "deliver.log")
        self.servers.append(server)
        server.start()
        print(f"pier deliver running (pid {server.proc.pid})", flush=True)  # type: ignore[union-attr]
        return server

    def start_receiver(self) -> Server:
        """(d)'s webhook receiver: the bare ASGI app, in its own process, on wrk's CPU."""
        return self.start_server("receiver", self.bare_argv(workers=1), cpu=WRK_CPU)

    def measure_destination(
        self, server: Server, api_key: str, secret: str, receiver: Server, suffix: str
    ) -> None:
        """(d): (a) again with one webhook destination added from now, its lag watched from the
        warm-up until it has caught up after wrk stopped; then the destination is removed."""
        destination = Destination(server.url, secret, receiver.url + "/")
        try:
            destination.wait_leased()
            apart = self.deliverer.pids() if self.deliverer else []
            if self.args.deliver == "process":  # pier serve's own: measured apart, on wrk's CPU
                pid = int(destination.view()["lease_holder"].split(":")[1])
                if self.pin:
                    os.sched_setaffinity(pid, {WRK_CPU})
                server.apart.add(pid)
                apart = [pid]
            before = pids_cpu_s(apart)
            with LagWatch(destination) as lag:
                row = self.measure(server, SCENARIOS["d"], api_key, row_key="d" + suffix)
                row.deliverer_cpu_s = pids_cpu_s(apart) - before if apart else None
                row.catch_up_s = destination.wait_caught_up()
            row.lag_s, row.lag_items = lag.max_seconds, lag.max_items
            if not lag.samples:
                self.notes.append("(d): the destination's lag could not be read")
            self.read_against_a(row, suffix)
            print("  " + report.destination_text(row), flush=True)
        finally:
            destination.remove()

    def read_against_a(self, row: Row, suffix: str = "", after: Row | None = None) -> None:
        """The row's events/s over those of the (a) measured just before it, or over the
        mean of that one and of `after`, (a) measured again just after it."""
        base = self.rows.get("a" + suffix)
        rates = [r.events_per_s or 0.0 for r in (base, after) if r is not None]
        if base and all(rates) and row.events_per_s is not None:
            row.ratio_to_a = row.events_per_s / (sum(rates) / len(rates))

    def measure_lists(self, server: Server, api_key: str, secret: str) -> None:
        """(l): (a) again with 20 dynamic lists (bench/lists_a.py) computed over what (a)
        stored; then the lists are removed and (a) runs once more. (l) is read against the
        mean of the (a) before and the (a) after: the machine's speed drifts within a run,
        and one (a) half a minute earlier moved the ratio by as much as that drift."""
        lists = Lists(server.url, secret)
        db = self.db
        assert db is not None
        try:
            ready = lists.wait_ready() + lists.wait_swept(lambda sql: database.scalar(db, sql))
            print(
                f"(l): 20 lists computed in {ready:.1f} s, {lists.members():,} members", flush=True
            )
            row = self.measure(server, SCENARIOS["l"], api_key, row_key="l")
            members = lists.members()
        finally:
            lists.remove()
        after = self.measure(
            server, SCENARIOS["a"], api_key, row_key="a#l", label="(a) again, after (l)"
        )
        self.read_against_a(row, after=after)
        print(f"  (l): {members:,} members after; {report.lists_text(row)}", flush=True)

    def measure_message_ids(
        self, server: Server, api_key: str, suffix: str = "", at: str = ""
    ) -> None:
        """(m): (a) with a new message id on every event, then (a) again; (m) read against
        the mean of the (a) measured first and that one (no target: what the SDKs' requests
        cost against the bench's own). With `suffix` "@scale": the same after the preload
        (`at`: how many events are stored), against (a) at that scale."""
        label = f"(m) {at}" if at else SCENARIOS["m"].label
        row = self.measure(server, SCENARIOS["m"], api_key, row_key="m" + suffix, label=label)
        after = self.measure(
            server,
            SCENARIOS["a"],
            api_key,
            row_key=f"a{suffix}#m",
            label=f"(a) {at} again, after (m)" if at else "(a) again, after (m)",
        )
        self.read_against_a(row, suffix, after=after)
        print(f"  (m){' ' + at if at else ''}: {report.message_ids_text(row)}", flush=True)

    def run_lists(self) -> None:
        """bench/lists_ingest.py (its own server, 1 process, not pinned) on the same backend:
        ingestion with 20 dynamic lists against none (issue 13's target: at least 70%)."""
        argv = [sys.executable, str(BENCH_DIR / "lists_ingest.py")]
        if self.args.database_url:
            if self.db is None:
                self.db = database.prepare(
                    self.args.database_url, self.workdir, fresh=not self.args.reuse_database
                )
            argv += ["--database-url", self.db.url]
        print("lists: bench/lists_ingest.py (0, then 20 dynamic lists)", flush=True)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"bench/lists_ingest.py failed:\n{proc.stderr.strip()[-2000:]}")
        self.lists_lines = [ln for ln in proc.stdout.splitlines() if "dynamic lists:" in ln]
        for line in self.lists_lines:
            print("  " + line.strip(), flush=True)

    def check_idle(self) -> None:
        """Warn when other processes are busy: they take CPU from the server and wrk."""
        with CpuWatch() as cpu:
            time.sleep(1.0)
        self.idle_other_pct = cpu.other_pct
        if cpu.other_pct > OTHER_CPU_WARN_PCT:
            note = (
                f"other processes used {cpu.other_pct:.0f}% of the CPUs just before the run: "
                "figures will be low and noisy"
            )
            self.notes.append(note)
            print("warning: " + note, file=sys.stderr, flush=True)

    # -- servers ---------------------------------------------------------------------------

    def pier_argv(self, url: str) -> list[str]:
        argv = [str(PIER), "serve", "--host", "127.0.0.1", "--database-url", url]
        argv += ["--workers", str(self.args.workers)]
        if self.args.deliver == "separate":
            argv += ["--no-deliver"]
        elif self.args.deliver == "in-server":
            argv += ["--no-deliver-process"]
        if self.args.durability:
            argv += ["--durability", self.args.durability]
        if self.args.writer_process:
            argv += [
                "--writer-process" if self.args.writer_process == "on" else "--no-writer-process"
            ]
        return argv

    def bare_argv(self, workers: int | None = None) -> list[str]:
        workers = workers or self.args.http_workers
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), "bare_asgi:app"]
        argv += ["--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools"]
        # info: each worker logs its pid as it starts (the roles of the CPU shares)
        argv += ["--no-access-log", "--log-level", "info"]
        if workers > 1:
            argv += ["--workers", str(workers)]
        return argv

    def start_server(self, name: str, argv: list[str], cpu: int = SERVER_CPU) -> Server:
        port = free_port()
        cmd = [*pin_prefix(cpu if self.pin else None), *argv, "--port", str(port)]
        log = self.workdir / f"{name.replace(' ', '_')}.log"
        server = Server(name, cmd, port, log)
        self.servers.append(server)
        server.start()
        server.wait_healthy()
        print(f"{name} up on {server.url} (pid {server.proc.pid}, log {log})", flush=True)
        return server

    def stop_server(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def cleanup(self) -> None:
        """Stop whatever is still running, drop the temporary database, remove the directory."""
        for server in list(self.servers):
            self.stop_server(server)
        if self.db and not self.args.keep:
            try:
                database.drop(self.db)
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning
                print(f"warning: could not drop {self.db.name}: {exc}", file=sys.stderr)
        if self.args.keep:
            print(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- load ------------------------------------------------------------------------------

    def wrk(self, server: Server, scenario: Scenario, api_key: str, seconds: int) -> WrkResult:
        result = run_wrk(
            server.url,
            scenario.script,
            scenario.script_args(api_key),
            duration_s=seconds,
            connections=self.args.connections,
            prefix=pin_prefix(WRK_CPU if self.pin else None),
        )
        if scenario.key != "c":
            self.count(result, scenario.events_per_request, self.args.connections)
        return result

    def count(self, result: WrkResult, events_per_request: int, connections: int) -> None:
        """Track acknowledged events; requests in flight when wrk stops are not acknowledged."""
        self.committed += result.ok * events_per_request
        self.in_flight += (connections + result.errors) * events_per_request

    def measure(
        self,
        server: Server,
        scenario: Scenario,
        api_key: str,
        row_key: str | None = None,
        label: str | None = None,
    ) -> Row:
        label = label or scenario.label
        if self.args.warmup:
            print(f"{label}: warm-up {self.args.warmup} s", flush=True)
            self.wrk(server, scenario, api_key, self.args.warmup)
        print(f"{label}: {self.args.duration} s, {self.args.connections} connections", flush=True)
        # A local PostgreSQL's CPU is counted apart from "other CPU" (it serves Pier).
        pg = self.db is not None and self.db.kind == "postgresql" and scenario.key != "c"
        db_comm = "postgres" if pg else None
        with RssSampler(server) as rss, CpuWatch(server, db_comm) as cpu:
            result = self.wrk(server, scenario, api_key, self.args.duration)
        key = row_key or scenario.key
        row = Row(
            key,
            label,
            result,
            scenario.events_per_request,
            rss.peak_kb,
            rss.peak_pss_kb or None,
            other_cpu_pct=cpu.other_pct,
            server_cpu_s=cpu.server_cpu_s,
            db_cpu_s=cpu.db_cpu_s if db_comm else None,
            load_cpu_s=cpu.own_cpu_s,
        )
        roles = server.roles()
        row.process_cpu_s = [(roles.get(p, "other"), t) for p, t in cpu.each_cpu_s.items()]
        row.process_pss_kb = [(roles.get(p, "other"), kb) for p, kb in rss.peak_each_pss_kb.items()]
        self.rows[row.key] = row
        print("  " + brief(row), flush=True)
        print("  " + row.process_cpu_text(), flush=True)
        self.check_bottleneck(row)
        return row

    def check_bottleneck(self, row: Row) -> None:
        """Warn when the load generator, not the server, may have set the pace: wrk (one
        thread) near a full core; or, with the server pinned to one core, when the server
        used well under it (other work took that core)."""
        notes = []
        if row.load_cpu_pct >= BOTTLENECK_PCT:
            notes.append(
                f"{row.label}: wrk used {row.load_cpu_pct:.0f}% of its core: wrk may be the bottleneck"
            )
        busiest = row.process_cpu_pct[:1]
        if busiest and busiest[0][1] >= BOTTLENECK_PCT:  # one process a core: it sets the pace
            role, pct = busiest[0]
            notes.append(f"{row.label}: one process ({role}) used {pct:.0f}% of a core")
        duration = row.result.duration_s
        if self.pin and duration and row.key[0] != "c":
            share = row.server_cpu_s / duration * 100
            if share < 100 - (100 - BOTTLENECK_PCT) * 3 and row.other_cpu_pct > OTHER_CPU_WARN_PCT:
                notes.append(
                    f"{row.label}: the server used {share:.0f}% of its core while other processes"
                    f" used {row.other_cpu_pct:.0f}% of the CPUs: they, not Pier, set the pace"
                )
        for note in notes:
            self.notes.append(note)
            print("warning: " + note, file=sys.stderr, flush=True)

    def preload(self, server: Server, api_key: str, ids: bool) -> None:
        """Bounded wrk runs of 1000-event bodies until --preload-events are acknowledged
        (`ids`: every event with a new message id, as (m) sends them)."""
        target, start_count = self.args.preload_events, self.committed
        rate: float | None = None
        started = time.monotonic()
        while self.committed < target:
            elapsed = time.monotonic() - started
            if elapsed > PRELOAD_MAX_S:
                raise RuntimeError(f"preload: only {self.committed:,} events after {elapsed:.0f} s")
            result = self.preload_chunk(server, api_key, target - self.committed, rate, ids)
            if result.ok == 0:
                raise RuntimeError(f"preload made no progress: {brief_result(result)}")
            if result.non_2xx or result.errors:
                self.notes.append(f"preload chunk: {brief_result(result)}")
            # Average over the whole preload: a chunk may stop early (the Lua limit) and idle.
            rate = (self.committed - start_count) / (time.monotonic() - started)
            print(
                f"preload: {self.committed:,} / {target:,} events, {rate:,.0f} events/s on "
                f"average (non-2xx {result.non_2xx}, socket errors {result.errors})",
                flush=True,
            )
        print(f"preload done in {time.monotonic() - started:.0f} s", flush=True)

    def preload_chunk(
        self, server: Server, api_key: str, remaining: int, rate: float | None, ids: bool
    ) -> WrkResult:
        """One wrk run, long enough for the remaining events at the rate seen so far."""
        seconds = 5 if rate is None else int(min(PRELOAD_MAX_CHUNK_S, remaining / rate + 2))
        requests = math.ceil(remaining / PRELOAD_BODY_EVENTS)
        args = [api_key, str(PRELOAD_BODY_EVENTS), str(EVENT_USERS), str(PRELOAD_POOL)]
        result = run_wrk(
            server.url,
            "preload.lua",
            [*args, str(requests), *(["ids"] if ids else [])],  # stops after `requests` 2xx
            duration_s=max(seconds, 2),
            connections=PRELOAD_CONNECTIONS,
            prefix=pin_prefix(WRK_CPU if self.pin else None),
            timeout_s=30,
        )
        self.count(result, PRELOAD_BODY_EVENTS, PRELOAD_CONNECTIONS)
        return result

    def smoke_test(self, server: Server, api_key: str) -> None:
        """One request per endpoint before measuring, so a broken setup shows its error."""
        event = {"name": "bench_smoke", "external_id": "u1", "data": {"n": 1}}
        identify = {"external_id": "u1", "email": "u1@example.com", "data": {"plan": "pro"}}
        for path, body in (("/api/client/events", [event]), ("/api/client/identify", identify)):
            status, text = post_json(server.url + path, body, api_key)
            if 200 <= status < 300:
                self.committed += 1 if path.endswith("events") else 0
                continue
            note = f"smoke test: POST {path} answered {status}: {text[:300]}"
            self.notes.append(note)
            print("warning: " + note, file=sys.stderr, flush=True)

    # -- text ------------------------------------------------------------------------------

    def setup_text(self) -> str:
        a = self.args
        pin = f"server pinned to CPU {SERVER_CPU}, wrk (1 thread) to CPU {WRK_CPU} with taskset"
        if not self.pin:
            why = "--no-pin" if a.no_pin else "< 2 CPUs" if a.one_process else "several processes"
            pin = f"not pinned ({why}): server and wrk share the CPUs"
        on_wrk = " on wrk's CPU" if self.pin else ""
        return "\n".join(
            [
                f"Pier benchmark: {machine_text()}",
                f"commit {git_commit()}, python {platform.python_version()}",
                f"server: pier serve --workers {a.workers}: {a.http_workers} HTTP worker(s)"
                + (" and the writer process" if a.writer_proc else "")
                + (", 1 process" if a.one_process else "")
                + (f" --durability {a.durability}" if a.durability else "")
                + (f" --writer-process {a.writer_process}" if a.writer_process else "")
                + "; (c): uvicorn --loop uvloop --http httptools --no-access-log"
                + (f" --workers {a.http_workers}" if a.http_workers > 1 else ", 1 process"),
                f"CPU: {pin}",
                f"(d): one webhook destination, receiver (bare ASGI){on_wrk}, delivered by "
                + {
                    "separate": f"a `pier deliver` process{on_wrk} (pier serve --no-deliver)",
                    "process": f"pier serve's delivery process{on_wrk}",
                    "in-server": "the serving process itself (--no-deliver-process)",
                }[a.deliver],
                f"load: wrk -t1 -c{a.connections}, {a.warmup} s warm-up then {a.duration} s"
                " per scenario, 127.0.0.1 only",
                "RSS: peak of the summed VmRSS of the server process and its children, "
                "sampled every 0.2 s during the measured run; PSS: peak of their summed "
                "PSS (a page several processes map counted once), sampled every second",
                "",
            ]
        )

    def scale_ratio(self, key: str = "a") -> float | None:
        """(a) (or (m)) with the preloaded database against the same on the empty one, in
        events/s."""
        empty, scaled = self.rows.get(key), self.rows.get(key + "@scale")
        if not (empty and scaled and empty.events_per_s and scaled.events_per_s is not None):
            return None
        return scaled.events_per_s / empty.events_per_s

    def report_text(self) -> str:
        rows = list(self.rows.values())
        if not rows and not self.lists_lines:
            return "no results"
        parts = [report.table(rows), ""] if rows else []
        if self.lists_lines:
            parts += [
                "lists (bench/lists_ingest.py; target: 20 lists keep >= 70% of the events/s):",
                *("  " + ln.strip() for ln in self.lists_lines),
                "",
            ]
        a, c = self.rows.get("a"), self.rows.get("c")
        ratio = report.ratio_to_bare(self.rows)
        if a and c and ratio is not None:
            parts.append(
                f"(a)/(c) request ratio: {ratio:.3f} "
                f"(Pier {a.result.ok_rps:,.0f} 2xx req/s, bare ASGI {c.result.rps:,.0f} req/s)"
            )
        for key in ("a", "m"):
            empty, scaled, scale_ratio = (
                self.rows.get(key),
                self.rows.get(key + "@scale"),
                self.scale_ratio(key),
            )
            if empty and scaled and scale_ratio is not None:
                parts.append(
                    f"scale: ({key}) with {self.preloaded:,} events stored: "
                    f"{scaled.events_per_s:,.0f} events/s vs {empty.events_per_s:,.0f} on the"
                    f" empty database (ratio {scale_ratio:.3f})"
                )
        if self.pier_hwm_kb:
            parts.append(
                f"Pier VmHWM at the end, summed over its processes: "
                f"{self.pier_hwm_kb / 1024:.1f} MB"
            )
        parts += [r.process_cpu_text() for r in rows if r.process_cpu_s]
        parts += [r.process_memory_text() for r in rows if r.process_pss_kb]
        parts += [report.destination_text(r) for r in rows if r.key.startswith("d")]
        parts.append(self.db_check_text())
        parts += [f"note: {n}" for n in self.notes]
        parts += ["", report.targets_text(report.targets(self.rows))]
        return "\n".join(p for p in parts if p is not None)

    def db_check_text(self) -> str | None:
        if self.db is None or not self.rows:
            return None
        if self.db_events is None:
            return "database check: could not count the events table"
        extra = self.db_events - self.committed
        if extra < 0:
            verdict = f"LOST: {-extra:,} acknowledged events are missing"
        elif extra <= self.in_flight:
            verdict = f"ok ({extra:,} more, sent in requests in flight when wrk stopped)"
        else:
            verdict = f"UNEXPECTED: {extra:,} more than acknowledged (> {self.in_flight:,})"
        return (
            f"database check: {self.db_events:,} bench events stored (Pier's own feed items not counted), "
            f"{self.committed:,} acknowledged with 2xx: {verdict}"
        )

    def payload(self) -> dict[str, Any]:
        a = self.args
        return {
            "machine": machine_text(),
            "commit": git_commit(),
            "config": {
                "database": self.db.kind if self.db else None,
                "workers": a.http_workers,
                "writer_process": a.writer_proc,
                "durability": a.durability,
                "duration_s": a.duration,
                "warmup_s": a.warmup,
                "connections": a.connections,
                "pinned": self.pin,
                "deliver": a.deliver,
                "pairs": a.pairs,
                "scale_preload_events": a.preload_events if a.scale else None,
                "scale_events_stored": self.preloaded if a.scale else None,
            },
            "results": {k: r.as_dict() for k, r in self.rows.items()},
            "ratio_a_to_c": report.ratio_to_bare(self.rows),
            "scale_ratio": self.scale_ratio(),
            "scale_ratio_m": self.scale_ratio("m"),
            "pier_vmhwm_mb": None if not self.pier_hwm_kb else round(self.pier_hwm_kb / 1024, 1),
            "other_cpu_pct_before_run": self.idle_other_pct,
            "lists": self.lists_lines,
            "events_acknowledged": self.committed,
            "events_in_database": self.db_events,
            "targets": [
                {
                    "scenario": t.scenario,
                    "what": t.what,
                    "op": t.op,
                    "goal": t.goal,
                    "value": t.value,
                    "met": t.met,
                }
                for t in report.targets(self.rows)
            ],
            "notes": self.notes,
        }


# -- helpers --------------------------------------------------------------------------------


def create_key(url: str, project: str | None = None, scope: str = "public") -> tuple[str, str]:
    """The project (a new one unless given) and a new key of it, through the pier CLI."""
    project = project or pier_cli("projects", "create", "bench", "--database-url", url)
    key = pier_cli("keys", "create", "--project", project, "--scope", scope, "--database-url", url)
    return project, key


def pier_cli(*args: str) -> str:
    proc = subprocess.run([str(PIER), *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(
            f"pier {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr.strip()}"
        )
    out = proc.stdout.strip()
    if not out or len(out.split()) != 1:
        raise RuntimeError(f"pier {' '.join(args[:2])}: expected one value, got {out!r}")
    return out


def post_json(url: str, body: object, api_key: str) -> tuple[int, str]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def brief(row: Row) -> str:
    eps = f", {row.events_per_s:,.0f} events/s" if row.events_per_s else ""
    return brief_result(row.result) + eps


def brief_result(r: WrkResult) -> str:
    lat = r.latency_us
    return (
        f"{r.rps:,.0f} req/s, p50 {lat['p50'] / 1000:.2f} ms, p99 {lat['p99'] / 1000:.2f} ms, "
        f"non-2xx {r.non_2xx}, socket errors {r.errors}"
    )


def human(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}".replace(".0" + unit, unit)
    return str(n)


def machine_text() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model or platform.machine()}), {platform.system()}"


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha or 'unknown'}{' (dirty)' if dirty else ''}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_wrk()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    bench = Bench(args, Path(tempfile.mkdtemp(prefix="pier-bench-")))
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping servers", file=sys.stderr)
        status = 130
    except Exception as exc:  # noqa: BLE001 - report it, clean up, show what was measured
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    finally:
        # Ignore a second Ctrl-C while the servers stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bench.cleanup()
    print()
    print(bench.report_text())
    if args.json:
        report.write_json(args.json, bench.payload())
        print(f"\nwrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
