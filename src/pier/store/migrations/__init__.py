"""Versioned SQL migrations, one folder a backend: NNNN_name.sql applied in order, each recorded in
the `schema_migrations` table in the same transaction as its changes."""

from __future__ import annotations

from importlib import resources


def migrations(backend: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration of `backend`, in order."""
    folder = resources.files(__package__).joinpath(backend)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)
