"""The `pier` command: serve the API, migrate, and manage projects and keys."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from .api.render import iso
from .domain.keys import PUBLIC, SCOPES, SECRET, generate_key, hash_key
from .store import Store, database_url, make_store
from .writer import now_ms

T = TypeVar("T")

database_option = click.option(
    "--database-url",
    envvar="PIER_DATABASE_URL",
    default=None,
    help="sqlite:///PATH or postgresql://... (default: sqlite:///pier-data/pier.db).",
)


def run(url: str | None, action: Callable[[Store], Awaitable[T]]) -> T:
    """Open and migrate the store, run `action` on it, close it."""

    async def main() -> T:
        store = make_store(database_url(url))
        await store.open()
        try:
            await store.migrate()
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(main())


@click.group()
def main() -> None:
    """Pier: a customer-data ingestion server speaking the Parcelvoy Client API."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@database_option
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--durability",
    type=click.Choice(["full", "normal"]),
    default="full",
    show_default=True,
    help="full: fsync every commit. normal (SQLite): a power loss may lose the last commits.",
)
def serve(host: str, port: int, database_url: str | None, workers: int, durability: str) -> None:
    """Serve the API."""
    import uvicorn

    from .store import database_url as resolve

    os.environ["PIER_DATABASE_URL"] = resolve(database_url)
    os.environ["PIER_DURABILITY"] = durability
    uvicorn.run(
        "pier.api.app:from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


@main.command()
@database_option
def migrate(database_url: str | None) -> None:
    """Create or migrate the schema, without serving."""

    async def action(store: Store) -> None:
        return None

    run(database_url, action)
    click.echo("schema is up to date", err=True)


@main.group()
def projects() -> None:
    """Projects: each has its own users, events and keys."""


@projects.command("create")
@click.argument("name")
@database_option
def projects_create(name: str, database_url: str | None) -> None:
    """Create a project; prints its id."""
    project = run(database_url, lambda s: s.create_project(name, now_ms()))
    click.echo(project.id)


@projects.command("list")
@database_option
def projects_list(database_url: str | None) -> None:
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


@main.group()
def keys() -> None:
    """API keys: public (pk_, ingestion only) and secret (sk_, ingestion and reads)."""


@keys.command("create")
@click.option("--project", "project_id", required=True, type=int)
@click.option("--scope", type=click.Choice(SCOPES), required=True)
@click.option("--name", default=None)
@click.option("--rate-limit", type=click.IntRange(1), default=None, help="Requests per second.")
@database_option
def keys_create(
    project_id: int, scope: str, name: str | None, rate_limit: int | None, database_url: str | None
) -> None:
    """Create a key; prints its value (a secret key is shown only this once)."""
    click.echo(run(database_url, lambda s: create_key(s, project_id, scope, name, rate_limit)))


@keys.command("list")
@click.option("--project", "project_id", required=True, type=int)
@database_option
def keys_list(project_id: int, database_url: str | None) -> None:
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
def keys_revoke(key: str, database_url: str | None) -> None:
    """Revoke a key given by its id or its value."""
    key_id = int(key) if key.isdigit() else None
    digest = None if key_id is not None else hash_key(key)
    if not run(database_url, lambda s: s.revoke_key(key_id, digest, now_ms())):
        raise click.ClickException(f"no key {key!r}")
    click.echo("revoked", err=True)


@main.command()
@database_option
def demo(database_url: str | None) -> None:
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
