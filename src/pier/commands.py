"""Every `pier` command but `serve`: migrate, and manage projects, keys, lists, admins and
destinations. Imported only when one of them runs (cli.py), so that `pier serve` and the
processes it starts do not carry what these need."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import msgspec

from . import lists
from .api import list_csv
from .api.errors import HTTPProblem
from .api.lists import render_list
from .api.render import iso
from .clock import now_ms
from .domain.keys import PUBLIC, SCOPES, SECRET, generate_key, hash_key
from .domain.segments import RuleInvalid, parse_rule
from .options import STORED_ID, database_option, delivery_options, project_option
from .settings import Settings
from .store import Store, opened
from .store.base import ListRow, lease_holder
from .writer import Writer

T = TypeVar("T")


def run(url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    """Open and migrate the store, run `action` on it, close it."""

    async def main() -> T:
        async with opened(url) as store:
            return await action(store)

    return asyncio.run(main())


@click.group()
def commands() -> None:
    """The commands of `pier` but `serve`, which cli.main lists and runs as its own."""


@commands.command()
@database_option
def migrate(database_url: str) -> None:
    """Create or migrate the schema, without serving."""

    async def action(store: Store) -> None:
        return None

    run(database_url, action)
    click.echo("schema is up to date", err=True)


@commands.group()
def projects() -> None:
    """Projects: each has its own users, events and keys."""


@projects.command("create")
@click.argument("name")
@database_option
def projects_create(name: str, database_url: str) -> None:
    """Create a project; prints its id."""
    project = run(database_url, lambda s: s.create_project(name, now_ms()))
    click.echo(project.id)


@projects.command("list")
@database_option
def projects_list(database_url: str) -> None:
    """List projects."""
    for p in run(database_url, lambda s: s.list_projects()):
        click.echo(f"{p.id}\t{p.name}\t{iso(p.created_at)}")


async def create_key(
    store: Store, project_id: int, scope: str, name: str | None, rate_limit: int | None = None
) -> str:
    """A new key for the project; returns its value (secret keys: shown this once)."""
    if await store.get_project(project_id) is None:
        raise click.ClickException(f"no project with id {project_id}")
    value = generate_key(scope)
    stored_value = value if scope == PUBLIC else None  # only a hash of a secret key is kept
    await store.create_key(
        project_id, scope, name, hash_key(value), value[:7], stored_value, now_ms(), rate_limit
    )
    return value


@commands.group()
def keys() -> None:
    """API keys: public (pk_, ingestion only) and secret (sk_, ingestion and reads)."""


@keys.command("create")
@project_option
@click.option("--scope", type=click.Choice(SCOPES), required=True)
@click.option("--name", default=None)
@click.option("--rate-limit", type=click.IntRange(1), default=None, help="Requests per second.")
@database_option
def keys_create(
    project_id: int, scope: str, name: str | None, rate_limit: int | None, database_url: str
) -> None:
    """Create a key; prints its value (a secret key is shown only this once)."""
    click.echo(run(database_url, lambda s: create_key(s, project_id, scope, name, rate_limit)))


@keys.command("list")
@project_option
@database_option
def keys_list(project_id: int, database_url: str) -> None:
    """List a project's keys (secret values are never shown)."""
    rows = run(database_url, lambda s: s.list_keys(project_id))
    click.echo("id\tname\tscope\tkey\tcreated_at\trevoked_at")
    for k in rows:
        shown = k.value if k.value else f"{k.prefix}… (secret)"
        click.echo(
            f"{k.id}\t{k.name or ''}\t{k.scope}\t{shown}\t{iso(k.created_at)}\t"
            f"{iso(k.revoked_at) or ''}"
        )


@keys.command("revoke")
@click.argument("key")
@database_option
def keys_revoke(key: str, database_url: str) -> None:
    """Revoke a key given by its id or its value."""
    key_id = int(key) if key.isdigit() else None
    digest = None if key_id is not None else hash_key(key)
    if not run(database_url, lambda s: s.revoke_key(key_id, digest, now_ms())):
        raise click.ClickException(f"no key {key!r}")
    click.echo("revoked", err=True)


@commands.group("lists")
def lists_group() -> None:
    """Lists (docs/lists.md): dynamic (a rule tree) or static (members by external id)."""


async def _list(store: Store, project_id: int, list_id: int) -> ListRow:
    row = await store.get_list(project_id, list_id)
    if row is None:
        raise click.ClickException(f"no list {list_id} in project {project_id}")
    return row


@lists_group.command("create")
@project_option
@click.option("--name", required=True)
@click.option("--rule-file", type=click.File("rb"), help="A rule tree (JSON): a dynamic list.")
@click.option("--static", "static", is_flag=True, help="A static list (members by external id).")
@database_option
def lists_create(
    project_id: int, name: str, rule_file: Any, static: bool, database_url: str
) -> None:
    """Create a list; a dynamic one is computed before this returns. Prints its id."""
    if bool(rule_file) == static or not name:
        raise click.UsageError("give a --name and one of --rule-file or --static")
    text = None
    if rule_file is not None:
        raw = rule_file.read()
        try:
            parse_rule(msgspec.json.decode(raw), now_ms())
        except msgspec.DecodeError as exc:
            raise click.ClickException(f"the rule file is not JSON: {exc}") from exc
        except RuleInvalid as exc:
            problems = "\n".join(f"  {p or '/'}: {m}" for p, m in exc.problems)
            raise click.ClickException(f"the rule is invalid:\n{problems}") from exc
        text = raw.decode()

    async def action(store: Store) -> int:
        if await store.get_project(project_id) is None:
            raise click.ClickException(f"no project with id {project_id}")
        kind = "static" if static else "dynamic"
        holder = lease_holder()  # the list is created with its lease ours: no server takes it
        row = await lists.create(store, project_id, name, kind, text, holder, now_ms())
        if text is not None:
            try:
                await lists.compute(store, row, holder)
            except Exception as exc:  # noted on the list; a server tries again later
                raise click.ClickException(
                    f"list {row.id} was created, but computing it failed (a server tries again"
                    f" in {lists.retry_after(1) // 1000} s; pier lists show says why): {exc}"
                ) from exc
        return row.id

    click.echo(run(database_url, action))


@lists_group.command("list")
@project_option
@database_option
def lists_list(project_id: int, database_url: str) -> None:
    """A project's lists."""
    click.echo("id\tname\ttype\tstate\tusers_count\tupdated_at")
    for r in run(database_url, lambda s: s.lists(project_id)):
        click.echo(f"{r.id}\t{r.name}\t{r.type}\t{r.state}\t{r.users_count}\t{iso(r.updated_at)}")


@lists_group.command("show")
@click.argument("list_id", type=STORED_ID)
@project_option
@database_option
def lists_show(list_id: int, project_id: int, database_url: str) -> None:
    """A list as the API shows it (JSON)."""
    row = run(database_url, lambda s: _list(s, project_id, list_id))
    click.echo(msgspec.json.encode(render_list(row)).decode())


@lists_group.command("members")
@click.argument("list_id", type=STORED_ID)
@project_option
@database_option
def lists_members(list_id: int, project_id: int, database_url: str) -> None:
    """The external ids of a list's members (user id where there is none), newest first."""

    async def action(store: Store) -> list[str]:
        await _list(store, project_id, list_id)
        out: list[str] = []
        before = None
        while True:
            page = await store.list_members(project_id, list_id, 1000, before)
            out += [u.external_id or f"(user {u.id})" for u in page]
            if len(page) < 1000:
                return out
            before = (page[-1].created_at, page[-1].id)

    for line in run(database_url, action):
        click.echo(line)


def _change_static(
    url: str, project_id: int, list_id: int, external_ids: list[str], add: bool
) -> None:
    async def action(store: Store) -> None:
        row = await _list(store, project_id, list_id)
        if row.type != "static":
            raise click.ClickException("this list is dynamic: its rule decides its members")
        if not add:
            return await lists.remove_members(store, row, external_ids, now_ms())
        unknown = await lists.add_members(store, row, external_ids, now_ms())
        if unknown:
            names = ", ".join(external_ids[i] for i in unknown)
            raise click.ClickException(f"no user with these external ids: {names}")

    run(url, action)


@lists_group.command("add")
@click.argument("list_id", type=STORED_ID)
@click.argument("external_ids", nargs=-1)
@click.option(
    "--csv",
    "csv_file",
    type=click.File("rb"),
    help="Parcelvoy's CSV import: creates or updates the users of its rows and adds them.",
)
@project_option
@database_option
def lists_add(
    list_id: int, external_ids: tuple[str, ...], csv_file: Any, project_id: int, database_url: str
) -> None:
    """Add users to a static list, all of them or none: existing users by external id, or the
    rows of a CSV (an external_id column; docs/lists.md)."""
    if bool(external_ids) == bool(csv_file):
        raise click.UsageError("give external ids or --csv FILE")
    if csv_file is None:
        return _change_static(database_url, project_id, list_id, list(external_ids), add=True)
    raw = csv_file.read()

    async def action(store: Store) -> None:
        row = await _list(store, project_id, list_id)
        if row.type != "static":
            raise click.ClickException("this list is dynamic: its rule decides its members")
        try:
            cmd = list_csv.sequence(raw, project_id, list_id)
        except HTTPProblem as exc:
            problems = "\n".join(f"  {p.path or '/'}: {p.message}" for p in exc.errors or [])
            raise click.ClickException(f"the CSV is refused, nothing written:\n{problems}") from exc
        (error,) = await Writer(store).run_batch([cmd])  # one transaction, as the API's
        if error is not None:
            raise click.ClickException(str(error))
        click.echo(f"{len(cmd.commands)} users imported", err=True)

    run(database_url, action)


@lists_group.command("remove")
@click.argument("list_id", type=STORED_ID)
@click.argument("external_ids", nargs=-1, required=True)
@project_option
@database_option
def lists_remove(
    list_id: int, external_ids: tuple[str, ...], project_id: int, database_url: str
) -> None:
    """Remove users (by external id) from a static list."""
    _change_static(database_url, project_id, list_id, list(external_ids), add=False)


@lists_group.command("delete")
@click.argument("list_id", type=STORED_ID)
@project_option
@database_option
def lists_delete(list_id: int, project_id: int, database_url: str) -> None:
    """Delete a list and its members."""
    if not run(database_url, lambda s: s.delete_list(project_id, list_id)):
        raise click.ClickException(f"no list {list_id} in project {project_id}")
    click.echo("deleted", err=True)


@commands.command()
@database_option
def demo(database_url: str) -> None:
    """Make sure a 'demo' project with a public key exists, and print them."""

    async def action(store: Store) -> dict[str, Any]:
        project = next((p for p in await store.list_projects() if p.name == "demo"), None)
        secret = None
        if project is None:
            project = await store.create_project("demo", now_ms())
            await create_key(store, project.id, PUBLIC, "demo public")
            secret = await create_key(store, project.id, SECRET, "demo secret")
        public = next(k.value for k in await store.list_keys(project.id) if k.value)
        return {"project": project.id, "public": public, "secret": secret}

    info = run(database_url, action)
    click.echo(f"Demo project id: {info['project']}")
    click.echo(f"Public key:      {info['public']}")
    if info["secret"]:
        click.echo(f"Secret key:      {info['secret']}   (shown once: keep it)")
    else:
        click.echo("Secret key:      shown when the demo project was created; make another with")
        click.echo(f"                 pier keys create --project {info['project']} --scope secret")


@commands.command()
@project_option
@click.option("--after", default=None, help="A cursor of the event feed: start after it.")
@click.option("--page-size", default=1000, type=click.IntRange(1, 10_000), hidden=True)
@database_option
def export(project_id: int, after: str | None, page_size: int, database_url: str) -> None:
    """Write a project's change feed to stdout as NDJSON, in storage order (as GET
    /api/client/events): tracked events and Pier's own items, user_created, user_updated,
    user_merged, device_registered, device_removed, user_deleted, list_entered and list_exited,
    from which the users and devices can be rebuilt (docs/client-api.md, "The change feed",
    gives each item's data).

    Reads page by page (constant memory) up to the newest item stored when it started, then
    prints on stderr the cursor to continue from with --after."""
    import sys

    import msgspec

    from .api.errors import HTTPProblem
    from .api.manage import decode_feed_cursor, feed_cursor, feed_event

    try:
        start = decode_feed_cursor(after)
    except HTTPProblem:
        raise click.BadParameter("not a cursor of the event feed", param_hint="--after") from None
    out = sys.stdout.buffer
    encode = msgspec.json.Encoder().encode

    async def action(store: Store) -> tuple[int, int | None]:
        if await store.get_project(project_id) is None:
            raise click.ClickException(f"no project with id {project_id}")
        newest = await store.latest_events(project_id, 1)
        last = newest[0].id if newest else 0  # later events are left for the next run
        cursor, count = start, 0
        while cursor is None or cursor < last:
            page = [
                e for e in await store.event_feed(project_id, cursor, page_size) if e.id <= last
            ]
            if not page:
                break
            out.write(b"".join(encode(feed_event(e)) + b"\n" for e in page))
            cursor, count = page[-1].id, count + len(page)
        out.flush()
        return count, cursor

    count, cursor = run(database_url, action)
    resume = f"; continue with --after {feed_cursor(cursor)}" if cursor is not None else ""
    click.echo(f"exported {count} items{resume}", err=True)


@commands.group()
def admins() -> None:
    """Portal administrators: they log in at /portal and manage every project."""


password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)


def _password_hash(password_stdin: bool) -> str:
    """A new password, asked for (or read from stdin), checked and hashed."""
    import sys

    from .portal.auth import MIN_PASSWORD, hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise click.ClickException(f"the password needs at least {MIN_PASSWORD} characters")
    return hash_password(password)


@admins.command("create")
@click.argument("email")
@password_stdin_option
@database_option
def admins_create(email: str, password_stdin: bool, database_url: str) -> None:
    """Create a portal administrator; the password is asked for (or read from stdin)."""
    from .portal.auth import normalize_email

    email = normalize_email(email)
    if "@" not in email or len(email) > 255:
        raise click.BadParameter("not an email address", param_hint="EMAIL")
    hashed = _password_hash(password_stdin)

    async def action(store: Store) -> None:
        if await store.find_admin(email) is not None:
            raise click.ClickException(f"an administrator {email} already exists")
        await store.create_admin(email, hashed, now_ms())

    run(database_url, action)
    click.echo(f"administrator {email} created: log in at /portal", err=True)


@admins.command("list")
@database_option
def admins_list(database_url: str) -> None:
    """List portal administrators: id, email, created_at."""
    for a in run(database_url, lambda s: s.list_admins()):
        click.echo(f"{a.id}\t{a.email}\t{iso(a.created_at)}")


@admins.command("password")
@click.argument("email")
@password_stdin_option
@database_option
def admins_password(email: str, password_stdin: bool, database_url: str) -> None:
    """Set an administrator's password (asked for, or read from stdin); logs them out."""
    from .portal.auth import normalize_email

    email = normalize_email(email)
    if run(database_url, lambda s: s.find_admin(email)) is None:
        raise click.ClickException(f"no administrator {email}")
    hashed = _password_hash(password_stdin)
    if not run(database_url, lambda s: s.set_admin_password(email, hashed)):
        raise click.ClickException(f"no administrator {email}")  # removed meanwhile
    click.echo(f"password of {email} changed; their portal sessions are ended", err=True)


@admins.command("remove")
@click.argument("email")
@database_option
def admins_remove(email: str, database_url: str) -> None:
    """Remove an administrator; logs them out."""
    from .portal.auth import normalize_email

    email = normalize_email(email)
    if not run(database_url, lambda s: s.delete_admin(email)):
        raise click.ClickException(f"no administrator {email}")
    click.echo(f"administrator {email} removed; their portal sessions are ended", err=True)


@commands.command()
@database_option
@delivery_options
def deliver(database_url: str, **values: Any) -> None:
    """Deliver every destination (alone, without serving the API) until SIGTERM or Ctrl-C.

    With several processes, each destination is delivered by one at a time."""
    from .delivery import engine

    settings = Settings(database_url=database_url, **values)
    engine.deliver(settings, lambda text: click.echo(text, err=True))


@commands.group()
@delivery_options
@click.pass_context
def destinations(context: click.Context, **values: Any) -> None:
    """Destinations: a project's feed delivered to webhooks, Parcelvoy, another Pier, Segment.
    The options here (or their variables) are the delivery settings of docs/settings.md."""
    context.obj = Settings(**values)


def _destination_action(
    destination_id: int, action: Callable[[Any, Any], Awaitable[T]]
) -> Callable[[Store], Awaitable[T]]:
    """`action(destinations, destination)`, or an error when there is no such destination."""
    from .store.destinations import Destinations

    async def wrapped(store: Store) -> T:
        ds = Destinations(store)  # type: ignore[arg-type]
        d = await ds.get(destination_id)
        if d is None:
            raise click.ClickException(f"no destination {destination_id}")
        return await action(ds, d)

    return wrapped


def _invalid(exc: Exception) -> click.ClickException:
    problems = getattr(exc, "problems", [])
    lines = [f"--{p.field.replace('_', '-')}: {p.message}" for p in problems] or [str(exc)]
    return click.ClickException("\n".join(lines))


@destinations.command("add")
@click.pass_obj
@project_option
@click.option("--kind", required=True, help="webhook, parcelvoy, pier or segment.")
@click.option("--url", required=True)
@click.option("--key", default=None, help="The target's key (parcelvoy, pier) or write key.")
@click.option("--secret-key", default=None, help="pier: the target's secret key, for deletions.")
@click.option("--name", default=None)
@click.option("--batch-size", default=None, type=int, help="Batch size (webhook 2000, others 500).")
@click.option("--max-bytes", default=None, type=int, help="Bytes per batch at most (1 MiB).")
@click.option(
    "--retry-window",
    default=None,
    type=float,
    help="Seconds a failing batch is retried before its failing items are dead-lettered (86400).",
)
@click.option("--only", multiple=True, help="Send only the items whose name matches (a glob).")
@click.option("--skip", multiple=True, help="Skip the items whose name matches (a glob).")
@click.option("--from", "start", type=click.Choice(["beginning", "now"]), default="beginning")
@database_option
def destinations_add(
    config: Settings,
    project_id: int,
    kind: str,
    url: str,
    key: str | None,
    secret_key: str | None,
    name: str | None,
    batch_size: int | None,
    max_bytes: int | None,
    retry_window: float | None,
    only: tuple[str, ...],
    skip: tuple[str, ...],
    start: str,
    database_url: str,
) -> None:
    """Add a destination; prints its id (and a webhook's signing secret, shown only this once)."""
    from .delivery import manage
    from .store.destinations import Destinations

    try:
        d, signing = manage.new_destination(
            project_id,
            kind,
            url,
            key=key,
            secret_key=secret_key,
            name=name,
            batch_size=batch_size,
            max_bytes=max_bytes,
            retry_window=retry_window,
            only=list(only),
            skip=list(skip),
            sealing=config.secret_key,
        )
    except manage.Invalid as exc:
        raise _invalid(exc) from None

    async def action(store: Store) -> int:
        if await store.get_project(project_id) is None:
            raise click.ClickException(f"no project with id {project_id}")
        return await manage.add(Destinations(store), d, start)  # type: ignore[arg-type]

    click.echo(run(database_url, action))
    if signing:
        click.echo(f"signing secret: {signing}   (shown once: keep it)", err=True)


def _echo_json(value: Any) -> None:
    import json

    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@destinations.command("list")
@project_option
@database_option
def destinations_list(project_id: int, database_url: str) -> None:
    """id, kind, state, name, url, delivered count and last error of a project's destinations."""
    from .store.destinations import Destinations

    rows = run(database_url, lambda s: Destinations(s).of_project(project_id))  # type: ignore[arg-type]
    click.echo("id\tkind\tstate\tname\turl\tdelivered\tlast_error")
    for d in rows:
        click.echo(
            f"{d.id}\t{d.kind}\t{d.state}\t{d.name or ''}\t{d.url}\t{d.delivered}\t"
            f"{(d.last_error or '')[:80]}"
        )


@destinations.command("show")
@click.argument("destination_id", type=STORED_ID)
@database_option
def destinations_show(destination_id: int, database_url: str) -> None:
    """A destination as JSON: state, cursor, lag, counts, last success and error (keys never)."""
    from .delivery.manage import view

    _echo_json(run(database_url, _destination_action(destination_id, view)))


def _set_state(destination_id: int, state: str, database_url: str) -> None:
    async def action(ds: Any, d: Any) -> None:
        await ds.set_state(d.id, state)

    run(database_url, _destination_action(destination_id, action))
    click.echo(f"destination {destination_id} {state}", err=True)


@destinations.command("pause")
@click.argument("destination_id", type=STORED_ID)
@database_option
def destinations_pause(destination_id: int, database_url: str) -> None:
    """Stop delivering (the cursor stays; the lag grows)."""
    _set_state(destination_id, "paused", database_url)


@destinations.command("resume")
@click.argument("destination_id", type=STORED_ID)
@database_option
def destinations_resume(destination_id: int, database_url: str) -> None:
    """Deliver again from the cursor."""
    _set_state(destination_id, "active", database_url)


@destinations.command("replay")
@click.argument("destination_id", type=STORED_ID)
@click.option("--from", "point", required=True, help="beginning, a feed cursor or an ISO time.")
@database_option
def destinations_replay(destination_id: int, point: str, database_url: str) -> None:
    """Rewind the cursor: everything after it is sent again."""
    from .delivery import manage

    async def action(ds: Any, d: Any) -> int:
        cursor = await manage.replay_cursor(ds, d, point)
        await ds.rewind(d.id, cursor)
        return cursor

    try:
        run(database_url, _destination_action(destination_id, action))
    except manage.Invalid as exc:
        raise _invalid(exc) from None
    click.echo(f"destination {destination_id} replays from {point}", err=True)


@destinations.command("dead-letters")
@click.argument("destination_id", type=STORED_ID)
@database_option
def destinations_dead_letters(destination_id: int, database_url: str) -> None:
    """The items that failed alone: id, item id, time, the answer they got, the item."""

    async def action(ds: Any, d: Any) -> list[Any]:
        return await ds.dead_letters(d.id)

    click.echo("id\titem\tcreated_at\tanswer\titem_json")
    for x in run(database_url, _destination_action(destination_id, action)):
        answer = x.answer.replace("\t", " ").replace("\n", " ")[:200]
        click.echo(f"{x.id}\t{x.event_id}\t{iso(x.created_at)}\t{answer}\t{bytes(x.item).decode()}")


@destinations.command("redeliver")
@click.argument("destination_id", type=STORED_ID)
@click.option("--all", "every", is_flag=True, help="Every dead letter.")
@click.option("--dead-letter", type=int, default=None, help="The dead letter with this id.")
@database_option
@click.pass_obj
def destinations_redeliver(
    config: Settings, destination_id: int, every: bool, dead_letter: int | None, database_url: str
) -> None:
    """Send dead letters again, each alone; those delivered leave the list."""
    from .delivery import manage
    from .delivery.pacing import Pacing

    if every == (dead_letter is not None):
        raise click.UsageError("give either --all or --dead-letter N")

    async def action(ds: Any, d: Any) -> list[tuple[int, bool, str]]:
        return await manage.redeliver(ds, d, dead_letter, Pacing.of(config))

    try:
        results = run(database_url, _destination_action(destination_id, action))
    except manage.Invalid as exc:
        raise _invalid(exc) from None
    for letter_id, ok, answer in results:
        click.echo(f"{letter_id}\t{'delivered' if ok else 'failed'}\t{answer[:200]}")
    if not all(ok for _, ok, _ in results):
        raise click.ClickException("some dead letters failed again; they stay in the list")


@destinations.command("remove")
@click.argument("destination_id", type=STORED_ID)
@database_option
def destinations_remove(destination_id: int, database_url: str) -> None:
    """Remove a destination and its dead letters."""

    async def action(ds: Any, d: Any) -> None:
        await ds.remove(d.id)

    run(database_url, _destination_action(destination_id, action))
    click.echo(f"destination {destination_id} removed", err=True)
