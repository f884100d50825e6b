"""The portal's Destinations tab on both backends: add (bad input refused, nothing created; a
webhook's signing secret shown once), pause, resume, replay, dead letters redelivered, remove."""

from __future__ import annotations

from conftest import Tenant, db_call
from delivery.receiver import delivering, pause_afterwards, receiver, wait_for  # noqa: F401
from pier.store.destinations import Destinations


def destinations(tenant: Tenant) -> list:  # type: ignore[type-arg]
    return db_call(tenant.server.database_url, lambda s: Destinations(s).of_project(tenant.id))


def test_destinations_tab(portal, tenant: Tenant) -> None:  # type: ignore[no-untyped-def]
    tab = f"/projects/{tenant.id}/destinations"
    page = portal.get(tab)
    assert page.status_code == 200 and "No destinations yet" in page.text
    bad = portal.submit(tab, {"kind": "webhook", "url": "ftp://x", "only": "[a"}, page=tab)
    assert bad.status_code == 422
    assert "url must be an http or https URL" in bad.text and "never closed" in bad.text
    assert destinations(tenant) == []
    assert tenant.post("events", [{"name": "poison", "external_id": "u"}]).status_code == 204

    def decide(got, n):  # type: ignore[no-untyped-def]
        return (400, {}, b"refused") if b'"poison"' in got.body else None

    with receiver(decide) as r:
        made = portal.submit(tab, {"kind": "webhook", "url": r.url, "name": "hook"}, page=tab)
        assert made.status_code == 201 and "whsec_" in made.text
        (d,) = destinations(tenant)
        assert "whsec_" not in portal.get(tab).text  # shown once
        with delivering(tenant.server.database_url):
            wait_for(
                lambda: destinations(tenant)[0].cursor > 0 and "refused" in portal.get(tab).text
            )
        listing = portal.get(tab).text
        assert "1 dead letter" in listing and "hook" in listing
        paused = portal.submit(f"{tab}/{d.id}/pause", page=tab)
        assert paused.status_code == 303 and destinations(tenant)[0].state == "paused"
        assert portal.submit(f"{tab}/{d.id}/resume", page=tab).status_code == 303
        assert destinations(tenant)[0].state == "active"
        r.decide = lambda got, n: None
        assert portal.submit(f"{tab}/{d.id}/redeliver", page=tab).status_code == 303
        assert "Redeliver all" not in portal.get(tab).text
    bad_replay = portal.submit(f"{tab}/{d.id}/replay", {"from": "soon"}, page=tab)
    assert bad_replay.status_code == 422 and "from must be beginning" in bad_replay.text
    assert portal.submit(f"{tab}/{d.id}/replay", {"from": "beginning"}, page=tab).status_code == 303
    assert destinations(tenant)[0].cursor == 0
    assert portal.submit(f"{tab}/{d.id}/remove", page=tab).status_code == 303
    assert destinations(tenant) == []
    assert portal.submit(f"{tab}/{d.id}/pause", page=tab).status_code == 404
