"""Fixtures of the delivery tests: a second Pier, the target of `pier` and `segment`
destinations, and a fresh project on it per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import LiveServer, Tenant, make_tenant


@pytest.fixture(scope="session")
def pier_b(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LiveServer]:
    """A second Pier serving on a database of its own, of the same backend as `database_url`."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path_factory.mktemp('pier-b')}/pier.db"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    live = LiveServer(url)
    live.start()
    yield live
    live.stop()


@pytest.fixture
def target(pier_b: LiveServer) -> Iterator[Tenant]:
    """A fresh project on the second Pier, with clients carrying its keys."""
    t = make_tenant(pier_b)
    yield t
    t.public.close()
    t.secret.close()
