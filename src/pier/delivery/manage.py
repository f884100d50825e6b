"""The administrators' commands on destinations, checked once for the CLI and the API: adding
(every problem found before anything is written), replay targets, redelivering dead letters,
and the view of a destination (secrets by their prefix only)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import msgspec

from ..api.errors import HTTPProblem
from ..api.fields import ID
from ..api.manage import decode_feed_cursor, feed_cursor
from ..api.render import iso
from ..clock import now_ms
from ..store.base import FeedEvent
from ..store.destinations import Destination, Destinations
from .kinds import KINDS, NEEDS_KEY
from .pacing import Pacing
from .secrets import prefix, seal, signing_secret

MAX_BATCH_SIZE = 5000
# items a batch when not given: a webhook takes one POST a batch whatever its size, so a larger
# batch spreads that call's cost (and the batch's reads and cursor write) over more items
# (docs/performance.md: 5.9 -> 3.7 us an item); the Client API and Segment kinds keep 500
# (Segment's batch call takes at most 500 KB)
BATCH_SIZE = {"webhook": 2000}
DEFAULT_BATCH_SIZE = 500
MAX_BYTES = 1 << 20  # a batch's body at most (the default), and the most it may be set to
MAX_RETRY_WINDOW = 30 * 86_400  # seconds
MAX_GLOB = 255


@dataclass
class Problem:
    field: str  # the option (CLI) or body member (API) that is wrong
    message: str


class Invalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].message)
        self.problems = problems


def _url_problem(url: str) -> str | None:
    import httpx  # here: the workers need httpx only when a destination is written

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "not a URL"
    if parsed.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not parsed.host:
        return "must name a host"
    return None


def _glob_problem(glob: str) -> str | None:
    if not glob or len(glob) > MAX_GLOB:
        return f"a glob must hold 1 to {MAX_GLOB} characters"
    depth = 0
    for ch in glob:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        return f"{glob!r} has a '[' that is never closed"
    return None


def new_destination(
    project_id: int,
    kind: str,
    url: str,
    *,
    key: str | None = None,
    secret_key: str | None = None,
    name: str | None = None,
    batch_size: int | None = None,
    max_bytes: int | None = None,
    retry_window: float | None = None,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    sealing: str = "",
) -> tuple[Destination, str | None]:
    """A destination to add, and the webhook signing secret (to show once); Invalid lists
    every problem. `sealing`: the secret_key setting, which seals the keys (secrets.seal)."""
    problems = []
    if kind not in KINDS:
        problems.append(Problem("kind", f"unknown kind {kind!r}: one of {', '.join(KINDS)}"))
    if (why := _url_problem(url)) is not None:
        problems.append(Problem("url", f"url {why}"))
    if kind in NEEDS_KEY and not key:
        problems.append(Problem("key", f"a {kind} destination needs --key (the target's key)"))
    if kind not in NEEDS_KEY and key:
        problems.append(Problem("key", f"a {kind} destination takes no key"))
    if secret_key and kind != "pier":
        problems.append(Problem("secret_key", "only a pier destination takes a secret key"))
    if batch_size is not None and not 1 <= batch_size <= MAX_BATCH_SIZE:
        problems.append(Problem("batch_size", f"batch size must be 1 to {MAX_BATCH_SIZE}"))
    if max_bytes is not None and not 1024 <= max_bytes <= MAX_BYTES:
        problems.append(Problem("max_bytes", f"max bytes must be 1024 to {MAX_BYTES}"))
    if retry_window is not None and not 0 <= retry_window <= MAX_RETRY_WINDOW:
        problems.append(
            Problem("retry_window", f"retry window must be 0 to {MAX_RETRY_WINDOW} seconds")
        )
    for field, globs in (("only", only or []), ("skip", skip or [])):
        for glob in globs:
            if (why := _glob_problem(glob)) is not None:
                problems.append(Problem(field, why))
    if name is not None and not ID.fits(name):
        problems.append(Problem("name", ID.too_long("name")))
    if problems:
        raise Invalid(problems)
    signing = signing_secret() if kind == "webhook" else None
    d = Destination(
        project_id=project_id,
        kind=kind,
        name=name,
        url=url,
        key=seal(key, sealing),
        key_prefix=prefix(key),
        secret_key=seal(secret_key, sealing),
        secret_key_prefix=prefix(secret_key),
        signing_secret=seal(signing, sealing),
        signing_secret_prefix=prefix(signing),
        batch_size=batch_size or BATCH_SIZE.get(kind, DEFAULT_BATCH_SIZE),
        max_bytes=max_bytes or MAX_BYTES,
        retry_window_ms=int((86_400 if retry_window is None else retry_window) * 1000),
        only=list(only or []),
        skip=list(skip or []),
        created_at=now_ms(),
    )
    return d, signing


async def add(destinations: Destinations, d: Destination, start: str) -> int:
    """Add it, its cursor at the beginning of the feed or at its newest item (`now`)."""
    if start not in ("beginning", "now"):
        raise Invalid([Problem("from", "from must be beginning or now")])
    d.cursor = 0 if start == "beginning" else await destinations.newest(d.project_id)
    return await destinations.add(d)


async def replay_cursor(destinations: Destinations, d: Destination, point: str) -> int:
    """The cursor a replay starts after: `beginning`, a feed cursor, or an ISO-8601 time (the
    items received from then on are sent again)."""
    if point == "beginning":
        return 0
    try:
        cursor = decode_feed_cursor(point)
    except HTTPProblem:
        cursor = None
    if cursor is not None:
        return cursor
    try:
        when = datetime.datetime.fromisoformat(point.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(
            [Problem("from", "from must be beginning, a feed cursor or an ISO-8601 time")]
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return await destinations.cursor_at(d.project_id, int(when.timestamp() * 1000))


async def redeliver(
    destinations: Destinations, d: Destination, only: int | None, pacing: Pacing
) -> list[tuple[int, bool, str]]:
    """Send dead letters again, each alone (all, or the one numbered `only`); a delivered one
    leaves the list. Returns (dead letter id, delivered, answer) for each."""
    letters = [x for x in await destinations.dead_letters(d.id) if only in (None, x.id)]
    if only is not None and not letters:
        raise Invalid([Problem("dead_letter", f"destination {d.id} has no dead letter {only}")])
    import httpx

    from .engine import send_batch  # (with httpx: only here, in the processes that serve)

    results = []
    async with httpx.AsyncClient(follow_redirects=False, timeout=pacing.timeout) as http:
        for letter in letters:
            item = _item(letter.item)
            answer = await send_batch(http, d, [item], f"{d.id}-dl{letter.id}", pacing)
            if answer.ok:
                await destinations.delete_dead_letter(d.id, letter.id)
            results.append((letter.id, answer.ok, answer.text))
    return results


def _item(raw: msgspec.Raw) -> FeedEvent:
    """A dead letter's item (as the feed gave it) back into a FeedEvent."""
    v = msgspec.json.decode(raw)

    def ms(value: str | None) -> int:
        if value is None:
            return 0
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return int(when.timestamp() * 1000)

    return FeedEvent(
        v["id"],
        v["name"],
        msgspec.Raw(msgspec.json.encode(v.get("data"))),
        ms(v.get("created_at")),
        ms(v.get("received_at")),
        v.get("message_id"),
        v.get("user_id") or 0,
        v.get("external_id"),
        v.get("anonymous_id"),
    )


async def view(destinations: Destinations, d: Destination) -> dict[str, Any]:
    """A destination as the CLI and the API show it: no key or secret, only their prefixes."""
    items, oldest = await destinations.lag(d.project_id, d.cursor)
    lag_seconds = max(0.0, (now_ms() - oldest) / 1000) if oldest is not None else 0.0
    return {
        "id": d.id,
        "project_id": d.project_id,
        "kind": d.kind,
        "name": d.name,
        "url": d.url,
        "key": d.key_prefix,
        "secret_key": d.secret_key_prefix,
        "signing_secret": d.signing_secret_prefix,
        "batch_size": d.batch_size,
        "max_bytes": d.max_bytes,
        "retry_window_seconds": d.retry_window_ms // 1000,
        "only": d.only,
        "skip": d.skip,
        "state": d.state,
        "cursor": feed_cursor(d.cursor) if d.cursor else None,
        "lag_items": items,
        "lag_seconds": round(lag_seconds, 3),
        "delivered": d.delivered,
        "attempts": d.attempts,
        "failing_since": iso(d.failing_since),
        "next_try_at": iso(d.next_try_at),
        "last_success_at": iso(d.last_success_at),
        "last_error": d.last_error,
        "last_error_at": iso(d.last_error_at),
        "dead_letters": await destinations.dead_letter_count(d.id),
        "lease_holder": d.lease_holder,
        "lease_expires_at": iso(d.lease_expires_at),
        "created_at": iso(d.created_at),
    }
