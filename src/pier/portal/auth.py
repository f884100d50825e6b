"""Portal accounts: argon2 passwords, server-side sessions behind an HttpOnly cookie, CSRF tokens.

- The session cookie holds a random token; the database keeps only its SHA-256, so a copy of the
  database does not log anyone in. Logging out deletes the row.
- Every form carries the session's CSRF token (synchronizer token). The login form, which has no
  session yet, carries a token that must match a short-lived cookie (double submit).
- Cookies are HttpOnly, SameSite=Lax, limited to the portal's path, and Secure over HTTPS.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from functools import wraps

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..clock import now_ms
from ..settings import Settings
from ..store.base import Admin, AdminSession, Store

SESSION_COOKIE = "pier_session"
LOGIN_COOKIE = "pier_login_csrf"
SESSION_SECONDS = 12 * 3600
MIN_PASSWORD = 10
MAX_TRACKED = 10_000  # addresses and accounts the throttle remembers
MAX_EMAIL = 320  # characters of an email the throttle keys on
MAX_HASHES = 2  # password checks at once, per process

hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (64 MiB, 3 passes)
_dummy_hash: str | None = None

Handler = Callable[[Request], Awaitable[Response]]


def hash_password(password: str) -> str:
    return hasher.hash(password)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two non-empty tokens."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


async def check_password(store: Store, email: str, password: str) -> Admin | None:
    """The admin when the password is right. Takes as long for an unknown email (a dummy hash is
    verified), so response times do not tell which emails exist. Runs argon2 off the event loop."""
    global _dummy_hash
    admin = await store.find_admin(normalize_email(email))
    if _dummy_hash is None:
        _dummy_hash = await run_in_threadpool(hasher.hash, secrets.token_hex(16))
    try:
        await run_in_threadpool(
            hasher.verify, admin.password_hash if admin else _dummy_hash, password
        )
    except (VerificationError, InvalidHashError):
        return None
    return admin


class Throttled(Exception):
    """A login refused before its password is checked: 429, try again in `retry_after` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class LoginThrottle:
    """At most `failures` attempts per client address and per account (email, from any
    address) in `window` seconds, in this process (`of`: its share of the settings
    login_failures, login_window). An attempt is counted before its password is
    checked, so concurrent guesses cannot all get past the check; a right password clears the
    address's and the account's count. A refused attempt records nothing. At most MAX_TRACKED
    addresses and accounts are remembered: past that, those whose attempts have all expired
    go first, then those attempted least recently."""

    def __init__(
        self,
        failures: int = Settings.login_failures,
        window: float = Settings.login_window,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window = window
        self.clock = clock
        self._attempts: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    @classmethod
    def of(cls, settings: Settings) -> LoginThrottle:
        """A worker's throttle: with W workers (`pier serve` sets settings.workers), each
        allows ceil(login_failures / W), so that the server as a whole allows at most about
        login_failures, whichever worker each attempt reaches."""
        return cls(
            math.ceil(settings.login_failures / max(1, settings.workers)), settings.login_window
        )

    @staticmethod
    def _keys(address: str, email: str) -> tuple[tuple[str, str], ...]:
        return ("address", address), ("account", email[:MAX_EMAIL])

    def admit(self, address: str, email: str) -> None:
        """Count an attempt for the address and the account. Raises Throttled, recording
        nothing, when either has had `failures` attempts in the window."""
        now = self.clock()
        keys = self._keys(address, email)
        for who in keys:
            attempts = self._attempts.get(who)
            while attempts and attempts[0] <= now - self.window:
                attempts.popleft()
            if attempts and len(attempts) >= self.failures:
                self._attempts.move_to_end(who)  # still active: the last to be forgotten
                wait = max(1, math.ceil(attempts[0] + self.window - now))
                raise Throttled("Too many failed logins. Wait a few minutes and try again.", wait)
        for who in keys:
            if who not in self._attempts:
                self._make_room(now)
                self._attempts[who] = deque()
            self._attempts.move_to_end(who)
            self._attempts[who].append(now)

    def _make_room(self, now: float) -> None:
        if len(self._attempts) < MAX_TRACKED:
            return
        for who in [w for w, a in self._attempts.items() if not a or a[-1] <= now - self.window]:
            del self._attempts[who]
        while len(self._attempts) >= MAX_TRACKED:
            self._attempts.popitem(last=False)

    def succeeded(self, address: str, email: str) -> None:
        """The password was right: the address and the account start afresh."""
        for who in self._keys(address, email):
            self._attempts.pop(who, None)

    def clear(self) -> None:
        self._attempts.clear()

    def __len__(self) -> int:
        return len(self._attempts)


class HashSlots:
    """At most `size` password checks at once in a process (argon2id takes 64 MiB and a core
    for each): a login arriving when all are taken is refused (429), not queued. `checked` and
    `peak` count the checks run and the most at once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = self.checked = self.peak = 0

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        if self.busy >= self.size:
            raise Throttled("Too many logins at once. Try again in a moment.", 1)
        self.busy += 1
        self.peak = max(self.peak, self.busy)
        try:
            yield
        finally:
            self.busy -= 1


hash_slots = HashSlots(MAX_HASHES)


async def log_in(
    store: Store, throttle: LoginThrottle, address: str, email: str, password: str
) -> Admin | None:
    """The admin when the password is right, None when not. Raises Throttled, before any hash
    is computed, when the address or the account has failed too often or every hash slot is
    busy."""
    email = normalize_email(email)
    with hash_slots.take():
        throttle.admit(address, email)
        hash_slots.checked += 1
        admin = await check_password(store, email, password)
    if admin is not None:
        throttle.succeeded(address, email)
    return admin


async def start_session(store: Store, admin: Admin, response: Response, request: Request) -> None:
    """Create a session for `admin` and set its cookie on `response` (a new token every login)."""
    token = new_token()
    now = now_ms()
    await store.create_session(
        token_hash(token), admin.id, new_token(), now, now + SESSION_SECONDS * 1000
    )
    set_cookie(response, request, SESSION_COOKIE, token, SESSION_SECONDS)


async def end_session(store: Store, request: Request, response: Response) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await store.delete_session(token_hash(token))
    response.delete_cookie(SESSION_COOKIE, path=base_path(request))


async def current_session(request: Request) -> AdminSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await request.app.state.store.get_session(token_hash(token), now_ms())


def base_path(request: Request) -> str:
    """Where the portal is mounted (/portal, behind any root path)."""
    return request.scope.get("root_path", "").rstrip("/") or "/portal"


def set_cookie(response: Response, request: Request, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path=base_path(request),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (Origin header)."""
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every client; SameSite and the CSRF token still apply
        return True
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


def admin_only(
    *, denied: Callable[[Request, bool], Awaitable[Response]]
) -> Callable[[Handler], Handler]:
    """Decorate a portal endpoint: a session is required, and a POST must carry its CSRF token.
    `denied(request, logged_in)` answers otherwise (to the login page, or 403)."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def endpoint(request: Request) -> Response:
            session = await current_session(request)
            if session is None:
                return await denied(request, False)
            if request.method == "POST":
                form = await request.form()
                csrf = form.get("csrf")
                if not same_origin(request) or not same(
                    csrf if isinstance(csrf, str) else None, session.csrf_token
                ):
                    return await denied(request, True)
            request.state.session = session
            return await handler(request)

        return endpoint

    return decorate
