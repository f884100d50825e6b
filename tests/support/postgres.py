"""A real, throwaway PostgreSQL server for tests.

`PostgresServer` runs `initdb` into a fresh temporary directory, starts `postgres` on
127.0.0.1 (free TCP port) plus a unix socket inside that directory, and removes everything
on `stop()`. Authentication is `trust`; the superuser is `pier`.

Fixtures (import them into tests/conftest.py):

- `pg_server` (session): one running server. Skips when PostgreSQL is unavailable or fails
  to start, unless PIER_REQUIRE_POSTGRES=1, which turns that into a failure.
- `pg_url` (function): URL of a fresh, empty database, dropped WITH (FORCE) afterwards.

Environment:

- PIER_PG_BINDIR: directory holding initdb/pg_ctl/postgres; when set, nothing else is searched.
- PIER_PG_USER: OS user that runs the server when we are root (default: `postgres` if it
  exists, else a system user `piertest`, created on demand).
- PIER_REQUIRE_POSTGRES=1: fail instead of skip when the server cannot be had.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import asyncpg
import pytest

ENV_BINDIR = "PIER_PG_BINDIR"
ENV_USER = "PIER_PG_USER"
ENV_REQUIRE = "PIER_REQUIRE_POSTGRES"

SUPERUSER = "pier"
FALLBACK_OS_USER = "piertest"
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")

# Appended to postgresql.conf; later lines win over initdb's defaults.
DEFAULT_SETTINGS: dict[str, str | int] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": 200,
    "shared_buffers": "32MB",
    "fsync": "on",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

T = TypeVar("T")


class PostgresError(RuntimeError):
    """The throwaway server could not be set up, started or used."""


# --- finding the binaries ---------------------------------------------------------------


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> (15,) or (9, 6); junk sorts first.
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_bindir() -> tuple[Path | None, str]:
    """Locate the PostgreSQL server binaries: (bindir, "") or (None, why not)."""
    override = os.environ.get(ENV_BINDIR)
    if override:
        if _has_binaries(Path(override)):
            return Path(override), ""
        return None, f"{ENV_BINDIR}={override} does not hold {', '.join(REQUIRED_BINARIES)}"

    tried: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        # Debian's libpq-dev ships pg_config without the server: check, don't trust.
        if out and _has_binaries(Path(out)):
            return Path(out), ""
        tried.append(f"pg_config --bindir ({out or 'failed'})")
    else:
        tried.append("pg_config (not on PATH)")

    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
        if _has_binaries(bindir):
            return bindir, ""
    tried.append("/usr/lib/postgresql/*/bin")

    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(initdb).resolve().parent  # follow e.g. /usr/local/bin symlinks
        if _has_binaries(bindir):
            return bindir, ""
    tried.append("initdb on PATH")

    return None, (
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; tried "
        + ", ".join(tried)
        + f". Install them (.ci/install-postgres.sh) or set {ENV_BINDIR}."
    )


def postgres_available() -> tuple[bool, str]:
    """(True, description) if the server binaries are present, else (False, reason)."""
    bindir, reason = find_bindir()
    if bindir is None:
        return False, reason
    return True, f"PostgreSQL binaries in {bindir}"


# --- helpers ----------------------------------------------------------------------------


def _run_coro(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quote_ident(name: str) -> str:
    if not name or "\x00" in name or len(name.encode()) > 63:
        raise ValueError(f"invalid database name: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _conf_value(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _ensure_os_user() -> pwd.struct_passwd:
    """The unprivileged account that runs postgres when we are root."""
    wanted = os.environ.get(ENV_USER)
    names = [wanted] if wanted else ["postgres", FALLBACK_OS_USER]
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise PostgresError(f"{ENV_USER}={name} is root; postgres refuses to run as root")
        return entry
    if wanted:
        raise PostgresError(f"{ENV_USER}={wanted}: no such user")

    useradd = shutil.which("useradd")
    if useradd is None:
        raise PostgresError(
            "running as root, no 'postgres' user and no useradd to create "
            f"'{FALLBACK_OS_USER}'; set {ENV_USER} to an unprivileged user"
        )
    proc = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        + ["--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
        capture_output=True,
        text=True,
    )
    try:  # another process may have created it meanwhile
        return pwd.getpwnam(FALLBACK_OS_USER)
    except KeyError:
        raise PostgresError(
            f"useradd {FALLBACK_OS_USER} failed ({proc.returncode}): {proc.stderr.strip()}"
        ) from None


def _traversable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether `user` can reach directories below `path` (ignores supplementary groups)."""
    for part in [path, *path.parents]:
        try:
            st = part.stat()
        except OSError:
            return False
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == user.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def _pick_parent_dir(user: pwd.struct_passwd | None) -> Path:
    # Unix socket paths are limited to ~107 bytes, and `user` must reach the directory.
    for candidate in (Path(tempfile.gettempdir()), Path("/tmp")):
        if len(str(candidate)) > 60 or not candidate.is_dir():
            continue
        if user is None or _traversable(candidate, user):
            return candidate
    raise PostgresError("no usable temporary directory (short path, reachable by the server user)")


# --- the server -------------------------------------------------------------------------


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory.

    Use as a context manager or call start()/stop(). `settings` are extra postgresql.conf
    entries merged over DEFAULT_SETTINGS.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        bindir: Path | str | None = None,
        *,
        settings: Mapping[str, str | int] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._bindir = Path(bindir) if bindir is not None else None
        self.settings: dict[str, str | int] = {**DEFAULT_SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.port = 0
        self.base_dir: Path | None = None
        self.server_version: tuple[int, ...] = ()  # (major, minor), e.g. (15, 18)
        self._user: pwd.struct_passwd | None = None
        self._env: dict[str, str] = {}
        self._running = False
        self._owner_pid = 0

    # paths inside the temp dir
    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            found, reason = find_bindir()
            if found is None:
                raise PostgresError(reason)
            self._bindir = found
        return self._bindir

    @property
    def data_dir(self) -> Path:
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._base()

    @property
    def log_file(self) -> Path:
        return self._base() / "server.log"

    def _base(self) -> Path:
        if self.base_dir is None:
            raise PostgresError("server not started")
        return self.base_dir

    # URLs
    @property
    def url(self) -> str:
        """URL of the maintenance database `postgres`."""
        return self.dsn("postgres")

    def dsn(self, dbname: str) -> str:
        if not self._running:
            raise PostgresError("server not running")
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    # lifecycle
    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> PostgresServer:
        if self._running:
            return self
        bindir = self.bindir
        self._user = _ensure_os_user() if os.geteuid() == 0 else None
        # Drop PG* variables (PGDATA, PGPORT, ...) that could redirect the tools.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.base_dir = Path(tempfile.mkdtemp(prefix="pier-pg-", dir=_pick_parent_dir(self._user)))
        try:
            if self._user is not None:
                os.chown(self.base_dir, self._user.pw_uid, self._user.pw_gid)
            self._initdb(bindir)
            self._launch(bindir)
            self._running = True
            self._owner_pid = os.getpid()
            atexit.register(self._atexit_stop)
            self.server_version = _run_coro(self._fetch_version())
        except PostgresError:
            self.stop()
            raise
        except Exception as exc:  # e.g. asyncpg could not connect
            tail = self.log_tail()
            self.stop()
            raise PostgresError(
                f"PostgreSQL start-up failed: {exc!r}\n--- server log tail ---\n{tail}"
            ) from exc
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory. Idempotent."""
        atexit.unregister(self._atexit_stop)
        if self.base_dir is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._shutdown()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        self.base_dir = None
        self._running = False

    def _atexit_stop(self) -> None:
        if os.getpid() == self._owner_pid:  # not in a forked child
            self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, PostgresError):
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"

    def _run(self, args: list[str | Path], timeout: float) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self._user is not None:
            extra = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        try:
            return subprocess.run(
                [str(a) for a in args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._env,
                cwd=self._base(),
                **extra,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(
                f"{Path(args[0]).name} timed out after {timeout:.0f}s\n"
                f"--- server log tail ---\n{self.log_tail()}"
            ) from exc

    def _initdb(self, bindir: Path) -> None:
        args: list[str | Path] = [bindir / "initdb", "-D", self.data_dir, "-U", SUPERUSER]
        args += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        if _has_c_utf8():
            args.append("--lc-ctype=C.UTF-8")  # lower()/upper() beyond ASCII; collation stays C
        proc = self._run(args, timeout=120)
        if proc.returncode != 0:
            raise PostgresError(
                f"initdb failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}".rstrip()
            )
        lines = [f"{key} = {_conf_value(value)}" for key, value in self.settings.items()]
        lines.append(f"unix_socket_directories = {_conf_value(str(self.socket_dir))}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# pier test harness\n" + "\n".join(lines) + "\n")

    def _launch(self, bindir: Path) -> None:
        # pg_ctl -w polls postmaster.pid until the server accepts connections.
        for attempt in range(3):
            self.port = _free_port()
            proc = self._run(
                [bindir / "pg_ctl", "start", "-D", self.data_dir, "-l", self.log_file, "-w"]
                + ["-t", str(int(self.start_timeout)), "-o", f"-p {self.port}"],
                timeout=self.start_timeout + 10,
            )
            if proc.returncode == 0:
                self._wait_for_port()
                return
            tail = self.log_tail()
            if "could not bind" in tail and attempt < 2:
                continue  # lost the port race; pick another
            raise PostgresError(
                f"PostgreSQL failed to start on {self.host}:{self.port} "
                f"(pg_ctl exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()}\n"
                f"--- server log tail ---\n{tail}"
            )

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"server not accepting TCP connections on port {self.port}: {exc}\n"
                        f"--- server log tail ---\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def _shutdown(self) -> None:
        pg_ctl = self.bindir / "pg_ctl"
        for mode in ("fast", "immediate"):
            try:
                proc = self._run([pg_ctl, "stop", "-D", self.data_dir, "-m", mode, "-w"], 30)
            except PostgresError:
                continue
            if proc.returncode == 0 or "Is server running?" in proc.stderr:
                return
        # Last resort: kill the postmaster named in postmaster.pid.
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    # SQL helpers
    async def _fetch_version(self) -> tuple[int, ...]:
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            num = int(await conn.fetchval("SHOW server_version_num"))  # e.g. 150018
            return (
                (num // 10000, num % 10000) if num >= 100000 else (num // 10000, num // 100 % 100)
            )
        finally:
            await conn.close()

    def execute(self, *statements: str, dbname: str = "postgres") -> None:
        """Run SQL statements (each in autocommit) as the superuser in `dbname`."""

        async def run() -> None:
            conn = await asyncpg.connect(self.dsn(dbname), timeout=10)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        _run_coro(run())

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        """Create an empty database (random name when None) and return its URL.

        `template` clones another database instead (it must have no open connections).
        """
        name = name or f"pier_test_{secrets.token_hex(6)}"
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if template:
            sql += f" TEMPLATE {_quote_ident(template)}"
        self.execute(sql)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions first."""
        ident = _quote_ident(name)
        if self.server_version >= (13,):
            self.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
        else:
            literal = "'" + name.replace("'", "''") + "'"
            self.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = {literal} AND pid <> pg_backend_pid()",
                f"DROP DATABASE IF EXISTS {ident}",
            )


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(re.fullmatch(r"c\.utf-?8", line.strip().lower()) for line in out.splitlines())


# --- pytest fixtures --------------------------------------------------------------------


def postgres_required() -> bool:
    """Whether PIER_REQUIRE_POSTGRES asks to fail (not skip) without PostgreSQL."""
    return os.environ.get(ENV_REQUIRE, "").strip().lower() in {"1", "true", "yes", "on"}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test for want of PostgreSQL, or fail it under PIER_REQUIRE_POSTGRES=1."""
    if postgres_required():
        pytest.fail(f"{reason}\n({ENV_REQUIRE} is set, so this is an error)", pytrace=False)
    pytest.skip(reason)


def _try_start(**kwargs: Any) -> tuple[PostgresServer | None, str]:
    available, reason = postgres_available()
    if not available:
        return None, reason
    try:
        return PostgresServer(**kwargs).start(), ""
    except PostgresError as exc:
        return None, f"could not start PostgreSQL: {exc}"


def start_server_or_skip(**kwargs: Any) -> PostgresServer:
    """Start a PostgresServer(**kwargs), or skip_or_fail() if that cannot be done."""
    server, reason = _try_start(**kwargs)
    if server is None:
        skip_or_fail(reason)
    return server


# pytest makes a separate session fixture wherever pg_server is imported (conftest.py and a
# test module, say); they all share this one server, stopped when the last one is torn down.
_session_server: PostgresServer | None = None
_session_error = ""
_session_users = 0


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole test session."""
    global _session_server, _session_error, _session_users
    if _session_server is None and not _session_error:
        _session_server, _session_error = _try_start()
    if _session_server is None:
        skip_or_fail(_session_error)
    server = _session_server
    _session_users += 1
    try:
        yield server
    finally:
        _session_users -= 1
        if _session_users == 0:
            server.stop()
            _session_server = None


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database for one test; dropped WITH (FORCE) afterwards."""
    name = f"pier_test_{secrets.token_hex(6)}"
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        pg_server.drop_database(name)
