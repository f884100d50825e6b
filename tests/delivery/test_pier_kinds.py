"""The kinds that reproduce the feed elsewhere, over real HTTP, on both backends: a `pier`
destination from Pier A to Pier B converging on a seeded random workload; a `segment`
destination into Pier B's own /api/client/segment; a `parcelvoy` destination sending only what
Parcelvoy's identify accepts."""

from __future__ import annotations

import random
from collections import Counter
from urllib.parse import quote

import msgspec
import pytest

from api.test_lists import PRO, create, settled
from conftest import Tenant, db_call
from delivery.receiver import delivering, pause_afterwards, receiver, wait_for  # noqa: F401
from pier.delivery import manage
from pier.domain.feed import DEVICE_REMOVED, ITEMS
from pier.store.destinations import Destinations

IDENTIFY_KEYS = {"anonymous_id", "external_id", "email", "phone", "timezone", "locale", "data"}


def add(tenant: Tenant, kind: str, url: str, **options) -> int:  # type: ignore[no-untyped-def]
    d, _ = manage.new_destination(tenant.id, kind, url, **options)

    async def action(store):  # type: ignore[no-untyped-def]
        return await manage.add(Destinations(store), d, "beginning")

    return db_call(tenant.server.database_url, action)


def lag(tenant: Tenant, destination_id: int) -> int:
    async def action(store):  # type: ignore[no-untyped-def]
        ds = Destinations(store)
        d = await ds.get(destination_id)
        return (await ds.lag(d.project_id, d.cursor))[0]

    return db_call(tenant.server.database_url, action)


def pause(tenant: Tenant, destination_id: int) -> None:
    db_call(
        tenant.server.database_url, lambda s: Destinations(s).set_state(destination_id, "paused")
    )


def feed(t: Tenant) -> list[dict]:
    out, after = [], None
    while True:
        r = t.secret.get(
            "/api/client/events", params={"limit": 1000, **({"after": after} if after else {})}
        )
        assert r.status_code == 200, r.text
        out += r.json()["results"]
        if not r.json()["has_more"]:
            return out
        after = r.json()["next_cursor"]


def users(t: Tenant) -> list[dict]:
    out, cursor = [], None
    while True:
        r = t.secret.get(
            "/api/client/users", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}
        )
        assert r.status_code == 200, r.text
        out += r.json()["results"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return out


def devices(t: Tenant, u: dict) -> tuple:
    ref, by = (
        (u["external_id"], "external_id")
        if u["external_id"]
        else (u["anonymous_id"], "anonymous_id")
    )
    r = t.secret.get(f"/api/client/users/{quote(ref, safe='')}/devices", params={"by": by})
    assert r.status_code == 200, r.text
    encode = msgspec.json.encode
    return tuple(
        sorted(
            encode(
                {k: v for k, v in d.items() if k not in ("created_at", "updated_at")},
                order="sorted",
            )
            for d in r.json()["results"]
        )
    )


def user_state(t: Tenant, with_devices: bool = False) -> list[tuple]:
    data = msgspec.json.encode
    return sorted(
        (
            (
                u["external_id"],
                tuple(sorted(u["anonymous_ids"])),
                u["email"],
                u["phone"],
                u["timezone"],
                u["locale"],
                data(u["data"], order="sorted"),
                devices(t, u) if with_devices else (),
            )
            for u in users(t)
        ),
        key=repr,
    )


def client_events(t: Tenant, message_ids: bool = True) -> Counter:
    return Counter(
        (
            e["name"],
            msgspec.json.encode(e["data"]),
            e["created_at"],
            e["message_id"] if message_ids else None,
            e["external_id"] or e["anonymous_id"],
        )
        for e in feed(t)
        if e["name"] not in ITEMS
    )


def workload(
    tenant: Tenant,
    seed: int,
    steps: int = 80,
    tag: str = "",
    full: bool = False,
    people: tuple[list[str], list[str]] | None = None,
) -> None:
    """Identifies of new users, events with and without message ids (known and new users),
    aliases that merge an anonymous user into a known one. `full` adds what the feed's items
    user_updated, device_registered and user_deleted carry: re-identifies that change fields and
    data (a key set to null too), device registrations from a small pool of device ids and
    tokens (a token taken by another device, a device moving to another user, a token cleared),
    and deletions of known and anonymous users, and bursts of devices (from a pool of 60 ids
    and tokens) for an anonymous user and a known one, merged then: past the 25-device cap. `people`: the (known, anonymous) ids a run starts from and leaves behind, for a run that
    changes users of an earlier one."""
    rng = random.Random(seed)
    bursts = random.Random(-seed)  # apart, so that the seeds' other steps stay as they were
    known, anonymous = people if people is not None else ([], [])
    n = 0
    for step in range(steps):
        if full and bursts.random() < 0.08 and known and anonymous:
            # devices for an anonymous user and a known one, then the one merged into the other
            anon = anonymous.pop(bursts.randrange(len(anonymous)))
            ext = bursts.choice(known)
            for ids in ({"anonymous_id": anon}, {"external_id": ext}):
                for _ in range(bursts.randint(5, 20)):
                    device = {
                        **ids,
                        "device_id": f"c{tag}{bursts.randrange(60)}",
                        "token": bursts.choice([None, f"ct{tag}{bursts.randrange(60)}"]),
                        **{"os": "ios", "model": "m", "app_build": "1", "app_version": "1.0"},
                    }
                    r = tenant.post("devices", device)
                    assert r.status_code == 204, r.text
            r = tenant.post("alias", {"anonymous_id": anon, "external_id": ext})
            assert r.status_code in (204, 422), r.text
        roll = rng.random()
        if full and roll < 0.1 and known:
            ext = rng.choice(known)
            body = {"external_id": ext, "data": {"plan": rng.choice(["a", "b", "c"]), "v": step}}
            if rng.random() < 0.5:
                body["email"] = f"{ext}.{step}@example.com"
            if rng.random() < 0.3:
                body["data"]["n"] = None
            if rng.random() < 0.3:
                body["locale"] = rng.choice(["de", None])
            assert tenant.post("identify", body).status_code == 204
            continue
        if full and roll < 0.22 and (known or anonymous):
            ids = (
                {"external_id": rng.choice(known)}
                if known and (not anonymous or rng.random() < 0.6)
                else {"anonymous_id": rng.choice(anonymous)}
            )
            device = {
                **ids,
                "device_id": f"d{tag}{rng.randrange(8)}",
                "os": rng.choice(["ios", "android"]),
                "model": "m",
                "app_build": str(step),
                "app_version": "1.0",
            }
            token = rng.random()
            if token < 0.7:
                device["token"] = f"t{tag}{rng.randrange(5)}"  # may be another device's
            elif token < 0.8:
                device["token"] = None
            if rng.random() < 0.3:
                device["sdk_version"] = "2.1"  # kept in extra
            r = tenant.post("devices", device)
            assert r.status_code == 204, r.text
            continue
        if full and roll < 0.27 and (known or anonymous):
            if known and (not anonymous or rng.random() < 0.6):
                ref, by = known.pop(rng.randrange(len(known))), "external_id"
            else:
                ref, by = anonymous.pop(rng.randrange(len(anonymous))), "anonymous_id"
            r = tenant.secret.delete(f"/api/client/users/{quote(ref, safe='')}", params={"by": by})
            assert r.status_code in (204, 404), r.text  # 404: merged away and deleted with it
            continue
        roll = rng.random()
        if roll < 0.15:
            ext = f"e{tag}{step}"
            body = {
                "external_id": ext,
                "email": f"{ext}@example.com",
                "data": {"plan": rng.choice(["a", "b"]), "n": step},
            }
            if rng.random() < 0.5:
                body["timezone"] = "Europe/Paris"
            assert tenant.post("identify", body).status_code == 204
            known.append(ext)
        elif roll < 0.3:
            anon = f"a{tag}{step}"
            assert (
                tenant.post(
                    "identify", {"anonymous_id": anon, "locale": "fr", "data": {"seen": step}}
                ).status_code
                == 204
            )
            anonymous.append(anon)
        elif roll < 0.4 and known and anonymous:
            anon = anonymous.pop(rng.randrange(len(anonymous)))
            r = tenant.post("alias", {"anonymous_id": anon, "external_id": rng.choice(known)})
            assert r.status_code in (204, 422), r.text  # 422: aliased already (nothing stored)
        else:
            batch = []
            for _ in range(rng.randint(1, 5)):
                n += 1
                who = rng.random()
                if who < 0.5 and known:
                    ids = {"external_id": rng.choice(known)}
                elif who < 0.8 and anonymous:
                    ids = {"anonymous_id": rng.choice(anonymous)}
                else:
                    ids = {"external_id": f"new{tag}{n}"}
                    known.append(ids["external_id"])
                event = {
                    "name": rng.choice(["view", "buy", "tap"]),
                    **ids,
                    "data": {"n": n, "x": [1, 2.5]},
                    "timestamp": 1_790_000_000_000 + n,
                }
                if rng.random() < 0.6:
                    event["message_id"] = f"m{tag}{n}"
                batch.append(event)
            assert tenant.post("events", batch).status_code == 204


# 33: Pier A finds a device by its id where B finds another by its token (A had moved that
# token away, in items of a user deleted since): B must replace the device's extra, not merge it
@pytest.mark.parametrize("seed", [7, 33])
def test_pier_to_pier_converges(tenant: Tenant, target: Tenant, seed: int) -> None:
    """The whole workload, before and while delivering: B ends with A's users, anonymous ids,
    devices and events, each event once."""
    people: tuple[list[str], list[str]] = ([], [])
    workload(tenant, seed=seed, steps=150, full=True, people=people)
    did = add(
        tenant,
        "pier",
        target.server.url,
        key=target.public_key,
        secret_key=target.secret_key,
        batch_size=50,
    )
    with delivering(tenant.server.database_url):
        workload(tenant, seed=seed + 1, steps=150, tag="b", full=True, people=people)  # meanwhile
        wait_for(lambda: lag(tenant, did) == 0)
        # users B has by now: merged into others, re-identified, their devices moved, deleted
        workload(tenant, seed=seed + 2, steps=150, tag="c", full=True, people=people)
        wait_for(lambda: lag(tenant, did) == 0)
    pause(tenant, did)
    assert db_call(tenant.server.database_url, lambda s: Destinations(s).dead_letters(did)) == []
    made = Counter(e["name"] for e in feed(target))
    assert all(made[name] > 0 for name in ITEMS), made  # B was made to do each change
    # A went past the device cap, in merges too (its items there come just before user_merged)
    items = feed(tenant)
    assert any(
        (e["name"], e["data"].get("reason"), after["name"])
        == (DEVICE_REMOVED, "device_cap", "user_merged")
        for e, after in zip(items, items[1:], strict=False)
    )
    assert user_state(target, with_devices=True) == user_state(tenant, with_devices=True)
    source = client_events(tenant)
    assert client_events(target) == source
    assert max(source.values()) == 1  # each event once (their data differ)


def test_pier_replay_stores_nothing_twice(tenant: Tenant, target: Tenant) -> None:
    workload(tenant, seed=9, steps=40)
    did = add(tenant, "pier", target.server.url, key=target.public_key, batch_size=10)
    with delivering(tenant.server.database_url):
        wait_for(lambda: lag(tenant, did) == 0)
        before = target.counts()
        db_call(tenant.server.database_url, lambda s: Destinations(s).rewind(did, 0))
        wait_for(lambda: lag(tenant, did) == 0)
    pause(tenant, did)
    assert target.counts() == before
    assert client_events(target) == client_events(tenant)


def test_segment_kind_rebuilds_users_and_events_in_pier(tenant: Tenant, target: Tenant) -> None:
    workload(tenant, seed=11, steps=60)
    did = add(tenant, "segment", f"{target.server.url}/api/client/segment", key=target.public_key)
    with delivering(tenant.server.database_url):
        wait_for(lambda: lag(tenant, did) == 0)
    pause(tenant, did)
    assert db_call(tenant.server.database_url, lambda s: Destinations(s).dead_letters(did)) == []
    # events without a message id get a stable messageId of the destination's at the target
    assert client_events(target, message_ids=False) == client_events(tenant, message_ids=False)
    source = {u[0]: u for u in user_state(tenant) if u[0]}
    rebuilt = {u[0]: u for u in user_state(target) if u[0]}
    assert rebuilt.keys() == source.keys()
    for ext, u in source.items():  # the profile fields and data of each known user
        assert rebuilt[ext][2:] == u[2:], ext


def test_parcelvoy_kind_sends_only_what_parcelvoy_accepts(tenant: Tenant) -> None:
    workload(tenant, seed=3, steps=40)
    with receiver() as r:
        did = add(tenant, "parcelvoy", r.url, key="pk_parcelvoy")
        with delivering(tenant.server.database_url):
            wait_for(lambda: lag(tenant, did) == 0)
        pause(tenant, did)
    paths = Counter(g.path for g in r.got)
    assert set(paths) <= {"/api/client/identify", "/api/client/alias", "/api/client/events"}
    assert paths["/api/client/identify"] > 0 and paths["/api/client/events"] > 0
    for g in r.got:
        assert g.headers["Authorization"] == "Bearer pk_parcelvoy"
        body = g.json()
        if g.path == "/api/client/identify":
            assert set(body) <= IDENTIFY_KEYS and set(body) & {"anonymous_id", "external_id"}
        elif g.path == "/api/client/alias":
            assert set(body) == {"anonymous_id", "external_id"}
        else:
            assert all(set(e) <= {"name", "anonymous_id", "external_id", "data"} for e in body)
    sent = Counter(
        e["data"]["n"] for g in r.got if g.path == "/api/client/events" for e in g.json()
    )
    assert max(sent.values()) == 1


def test_list_items_per_kind(tenant: Tenant) -> None:
    """list_entered / list_exited: as they are to a webhook, "List Entered" / "List Exited"
    track events to a segment destination; skipped by parcelvoy and pier, whose targets compute
    their own lists."""
    list_id = create(tenant, {"name": "Pro", "type": "dynamic", "rule": PRO}).json()["id"]
    settled(tenant, list_id)
    events = [{"name": "view", "external_id": "ann", "message_id": f"m{i}"} for i in range(2)]
    for path, body in (
        ("identify", {"external_id": "ann", "data": {"plan": "pro"}}),  # enters
        ("events", events[:1]),
        ("identify", {"external_id": "ann", "data": {"plan": "free"}}),  # leaves
        ("events", events[1:]),
    ):
        assert tenant.post(path, body).status_code == 204
    data = {"list_id": list_id, "name": "Pro"}
    with receiver() as r:
        ids = [
            add(tenant, kind, f"{r.url}/{kind}", **({} if kind == "webhook" else {"key": "k"}))
            for kind in ("webhook", "segment", "parcelvoy", "pier")
        ]
        with delivering(tenant.server.database_url):
            wait_for(lambda: all(lag(tenant, did) == 0 for did in ids))

    def got(kind: str) -> list:
        return [g for g in r.got if g.path.split("/")[1] == kind]

    hooked = [i for g in got("webhook") for i in g.json()["items"]]
    assert [(i["name"], i["data"]) for i in hooked if i["name"].startswith("list_")] == [
        ("list_entered", data),
        ("list_exited", data),
    ]
    tracks = [c for g in got("segment") for c in g.json()["batch"] if c["type"] == "track"]
    assert [(c["event"], c["properties"], c["userId"]) for c in tracks] == [
        ("List Entered", data, "ann"),
        ("view", {}, "ann"),
        ("List Exited", data, "ann"),
        ("view", {}, "ann"),
    ]
    assert len({c["messageId"] for c in tracks}) == 4
    for kind in ("parcelvoy", "pier"):
        calls = got(kind)
        assert not any(b"list" in g.body.lower() for g in calls), kind
        sent = [e.get("message_id") for g in calls if g.path.endswith("/events") for e in g.json()]
        assert sent == (["m0", "m1"] if kind == "pier" else [None, None]), kind
