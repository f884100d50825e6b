"""Running wrk with one of the Lua scripts in bench/ and reading its results."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPORT_PREFIX = "BENCH_JSON "
NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
SOCKET_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
INSTALL_HINT = "wrk not found: install it with `apt-get install -y wrk` (Debian package `wrk`)."


class WrkError(RuntimeError):
    pass


@dataclass
class WrkResult:
    """One wrk run. Latencies in microseconds, as wrk's Lua API reports them."""

    duration_s: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    latency_us: dict[str, float]
    output: str = field(repr=False, default="")

    @property
    def ok(self) -> int:
        """Responses with a 2xx (or 3xx) status."""
        return self.requests - self.non_2xx

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def require_wrk() -> str:
    """The wrk executable's path; exit with an install hint if it is missing."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(INSTALL_HINT)
    return path


def run_wrk(
    url: str,
    script: str,
    script_args: list[str],
    *,
    duration_s: int,
    connections: int,
    prefix: list[str] | None = None,
    timeout_s: int = 10,
) -> WrkResult:
    """Run `wrk -t1` against url for duration_s seconds with bench/<script>."""
    argv = [
        *(prefix or []),
        require_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s}s",
        "--latency",
        "-s",
        str(BENCH_DIR / script),
        url,
        "--",
        *script_args,
    ]
    # Bounded: wrk stops itself after duration_s; the margin covers the Lua pool setup.
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 120)
    if proc.returncode != 0:
        raise WrkError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return parse_output(proc.stdout)


def parse_output(text: str) -> WrkResult:
    """Read the JSON line of common.lua's done(), cross-checked with wrk's own text."""
    line = next((ln for ln in text.splitlines() if ln.startswith(REPORT_PREFIX)), None)
    if line is None:
        raise WrkError(f"no {REPORT_PREFIX.strip()} line in wrk output:\n{text}")
    data = json.loads(line[len(REPORT_PREFIX) :])
    errors = data["errors"]
    socket_errors = {k: int(errors[k]) for k in ("connect", "read", "write", "timeout")}
    non_2xx = int(errors["status"])
    _check_text(text, non_2xx, socket_errors)
    return WrkResult(
        duration_s=data["duration_us"] / 1e6,
        requests=int(data["requests"]),
        non_2xx=non_2xx,
        socket_errors=socket_errors,
        latency_us=data["latency_us"],
        output=text,
    )


def _check_text(text: str, non_2xx: int, socket_errors: dict[str, int]) -> None:
    """wrk prints these lines only when the counts are not zero; they must agree."""
    match = NON_2XX_RE.search(text)
    text_non_2xx = int(match.group(1)) if match else 0
    if text_non_2xx != non_2xx:
        raise WrkError(f"non-2xx count mismatch: text {text_non_2xx}, Lua {non_2xx}")
    match = SOCKET_RE.search(text)
    text_errors = [int(n) for n in match.groups()] if match else [0, 0, 0, 0]
    if text_errors != list(socket_errors.values()):
        raise WrkError(f"socket error mismatch: text {text_errors}, Lua {socket_errors}")
