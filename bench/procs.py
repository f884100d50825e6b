"""Server processes for the benchmark: start, wait for health, measure memory, stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


# what pier serve's processes log as they start, and the role that names them in the results
ROLES = (
    (re.compile(r"writer process (\d+): serving the workers"), "writer"),
    (re.compile(r"Started server process \[(\d+)\]"), "worker"),  # uvicorn's, in each worker
    (re.compile(r"delivering as [^\s:]+:(\d+):"), "delivery"),
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pin_prefix(cpu: int | None) -> list[str]:
    """`taskset -c CPU` to pin a command to one CPU, or nothing."""
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


class Server:
    """One server process (and its children) in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.apart: set[int] = set()  # its processes measured apart (its delivery process)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("wb")
        # A new session, so that stopping can reach every worker by the group id.
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_healthy(self, path: str = "/health", timeout: float = HEALTH_TIMEOUT_S) -> None:
        """Poll GET path until it answers 2xx; raise with the log's tail if it never does."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode}\n{self.tail()}"
                )
            if _get_ok(self.url + path):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy after {timeout:.0f} s\n{self.tail()}")

    def roles(self) -> dict[int, str]:
        """What each of its processes is, as they logged it when they started (ROLES); the
        server itself is "parent" unless it logged a role (one process: "worker")."""
        assert self.proc is not None
        found = {self.proc.pid: "parent"}
        try:
            log = self.log_path.read_text(errors="replace")
        except OSError:
            return found
        for pattern, role in ROLES:
            found.update((int(pid), role) for pid in pattern.findall(log))
        return found

    def pids(self) -> list[int]:
        """The server's pid and those of all its descendants, but those measured apart."""
        return [p for p in self.tree() if p not in self.apart]

    def tree(self) -> list[int]:
        """The server's pid and those of all its descendants (for memory: all of them)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return process_tree(self.proc.pid)

    def stop(self) -> None:
        """SIGTERM the main process, then make sure nothing of its group is left."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                self.proc.wait()
        _reap_group(pgid)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pgid: int, sig: int) -> bool:
    """Send sig to the process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _reap_group(pgid: int) -> None:
    """Stragglers of the group (orphaned workers): SIGTERM, then SIGKILL."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not _signal_group(pgid, 0):
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


def process_tree(root: int) -> list[int]:
    """root and its descendants, found through /proc/*/stat parent ids."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _proc_kb(pid: int, name: str, field: str) -> int:
    """A `kB` field of /proc/PID/<name>, 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), 0 if the process is gone."""
    return _proc_kb(pid, "status", field)


def pids_named(comm: str) -> list[int]:
    """Pids of the processes whose /proc/PID/comm is comm (e.g. a local PostgreSQL's)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(entry.path, "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def tree_kb(pids: list[int], field: str) -> int:
    return sum(status_kb(pid, field) for pid in pids)


def pss_kb(pid: int) -> int:
    """The process's proportional set size: its resident pages, each shared page divided
    among the processes sharing it (libpython and the other libraries every process maps).
    Summed over processes, each page is counted once: the memory they hold together. 0 if
    the process is gone."""
    return _proc_kb(pid, "smaps_rollup", "Pss")


TICK = os.sysconf("SC_CLK_TCK")


def busy_cpu_s() -> float:
    """CPU seconds spent by all processes (user, nice, system) since boot, per /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return sum(int(x) for x in fields[1:4]) / TICK


def pids_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes, per /proc/PID/stat."""
    return sum(each_cpu_s(pids).values())


def each_cpu_s(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each of these processes still running."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return found


def own_cpu_s() -> float:
    """CPU seconds of this process and of its waited-for children (wrk, the pier CLI)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWatch:
    """CPU used by the server, and by processes other than the server, wrk and this script.

    Other work on the machine (a test suite, a build) takes CPU from the server and wrk,
    so figures measured while it runs are low and noisy.
    """

    def __init__(self, server: Server | None = None, db_comm: str | None = None) -> None:
        self.server = server
        self.db_comm = db_comm  # a local database server's process name, e.g. "postgres"
        self.other_pct = 0.0  # of all CPUs
        self.server_cpu_s = 0.0
        self.db_cpu_s = 0.0
        self.own_cpu_s = 0.0  # this script and its waited-for children: mostly wrk
        self.each_cpu_s: dict[int, float] = {}  # each server process's CPU seconds

    def _sample(self) -> tuple[float, float, float, float, float]:
        self._each = each_cpu_s(self.server.pids()) if self.server else {}
        server = sum(self._each.values())
        db = pids_cpu_s(pids_named(self.db_comm)) if self.db_comm else 0.0
        return time.monotonic(), busy_cpu_s(), own_cpu_s(), server, db

    def __enter__(self) -> CpuWatch:
        self._start = self._sample()
        self._each_start = self._each
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        # a process started meanwhile counts from 0
        self.each_cpu_s = {p: t - self._each_start.get(p, 0.0) for p, t in self._each.items()}
        wall, busy, own, server, db = (e - s for e, s in zip(end, self._start, strict=True))
        capacity = wall * (os.cpu_count() or 1)
        self.server_cpu_s, self.db_cpu_s = max(0.0, server), max(0.0, db)
        self.own_cpu_s = max(0.0, own)
        others = busy - own - server - self.db_cpu_s
        self.other_pct = max(0.0, others) / capacity * 100 if capacity else 0.0


class RssSampler:
    """Samples the summed VmRSS of a server's process tree in a thread, and its summed PSS
    (each page once, however many processes map it) every `pss_every` seconds, reading
    smaps_rollup costs about a millisecond for 200 MB; keeps the peaks."""

    def __init__(self, server: Server, interval: float = 0.2, pss_every: float = 1.0) -> None:
        self.server = server
        self.interval = interval
        self.pss_every = pss_every
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self.peak_each_pss_kb: dict[int, int] = {}  # each process's PSS at that peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pids = self.server.tree()
        next_scan = time.monotonic() + 2.0
        next_pss = time.monotonic()
        while True:
            self.peak_kb = max(self.peak_kb, tree_kb(pids, "VmRSS"))
            if time.monotonic() >= next_pss:
                next_pss += self.pss_every
                each = {p: pss_kb(p) for p in pids}
                total = sum(each.values())
                if total > self.peak_pss_kb:
                    self.peak_pss_kb, self.peak_each_pss_kb = total, each
            if self._stop.wait(self.interval):
                return
            if time.monotonic() > next_scan:  # workers may come and go
                pids, next_scan = self.server.tree(), time.monotonic() + 2.0
