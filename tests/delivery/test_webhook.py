"""Webhook destinations over real HTTP, on both backends: order, signatures, and the faults a
receiver can have (down, 500s, 429 with Retry-After, too slow, 400 for one item)."""

from __future__ import annotations

import dataclasses
import random
import time

import httpx
import msgspec

from conftest import Tenant, db_call
from delivery.receiver import FAST, delivering, pause_afterwards, receiver, wait_for  # noqa: F401
from pier.delivery import manage
from pier.delivery.secrets import verify
from pier.store.destinations import Destinations


def add_webhook(tenant: Tenant, url: str, **options) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    d, secret = manage.new_destination(tenant.id, "webhook", url, **options)

    async def action(store):  # type: ignore[no-untyped-def]
        return await manage.add(Destinations(store), d, "beginning")

    return db_call(tenant.server.database_url, action), secret or ""


def destination(tenant: Tenant, destination_id: int):  # type: ignore[no-untyped-def]
    return db_call(tenant.server.database_url, lambda s: Destinations(s).get(destination_id))


def dead_letters(tenant: Tenant, destination_id: int):  # type: ignore[no-untyped-def]
    return db_call(
        tenant.server.database_url, lambda s: Destinations(s).dead_letters(destination_id)
    )


def track(tenant: Tenant, n: int, start: int = 0, **extra) -> None:  # type: ignore[no-untyped-def]
    for i in range(start, start + n, 100):
        body = [
            {
                "name": "seen",
                "external_id": "u-1",
                "message_id": f"m-{j}",
                "data": {"n": j},
                **extra,
            }
            for j in range(i, min(i + 100, start + n))
        ]
        assert tenant.post("events", body).status_code == 204


def items_of(got) -> list[dict]:  # type: ignore[no-untyped-def]
    return [item for g in got for item in g.json()["items"]]


def sent_numbers(got) -> list[int]:  # type: ignore[no-untyped-def]
    return [i["data"]["n"] for i in items_of(got) if i["name"] == "seen"]


def test_in_order_signed_and_cursor_at_the_end(tenant: Tenant) -> None:
    with receiver() as r:
        did, secret = add_webhook(tenant, r.url + "/hook", batch_size=7)
        track(tenant, 30)
        with delivering(tenant.server.database_url):
            wait_for(
                lambda: destination(tenant, did).delivered == 32
            )  # + user_created, user_updated
            track(tenant, 20, start=30)  # delivered as they come
            wait_for(lambda: destination(tenant, did).delivered == 52)
    assert sent_numbers(r.accepted()) == list(range(50))
    ids = [i["id"] for i in items_of(r.accepted())]
    assert ids == sorted(ids) and len(set(ids)) == 52
    now = int(time.time())
    for g in r.got:
        assert g.path == "/hook"
        assert g.headers["Pier-Destination"] == str(did)
        assert (
            g.headers["Pier-Batch"]
            == f"{did}-{g.json()['items'][0]['id']}-{g.json()['items'][-1]['id']}"
        )
        assert len(g.json()["items"]) <= 7
        assert verify(secret, g.headers["Pier-Signature"], g.body, now)
        assert not verify(secret, g.headers["Pier-Signature"], g.body.replace(b'"n"', b'"N"'), now)
        assert not verify("whsec_other", g.headers["Pier-Signature"], g.body, now)
    d = destination(tenant, did)
    assert d.cursor == ids[-1] and d.last_success_at is not None and d.attempts == 0


def test_a_destination_that_keeps_up_gathers_a_batch_instead_of_a_call_per_commit(
    tenant: Tenant,
) -> None:
    """After a batch that took every item there was, the next waits `poll_every` and takes
    what was committed meanwhile: here two commits, one while the first call was answered and
    one a moment after it, go out in one call (they went in two, read again at once)."""

    def decide(got, n):  # type: ignore[no-untyped-def]
        if n == 0:
            track(tenant, 1, start=1)  # committed before the first call is answered
        return None

    with receiver(decide) as r:
        did, _ = add_webhook(tenant, r.url)
        track(tenant, 1)
        with delivering(tenant.server.database_url, dataclasses.replace(FAST, poll_every=2.0)):
            wait_for(lambda: destination(tenant, did).delivered >= 3)
            time.sleep(0.3)  # a moment: read again at once, the next call would be gone
            track(tenant, 1, start=2)
            wait_for(lambda: destination(tenant, did).delivered == 5)
    assert [[i["data"].get("n") for i in g.json()["items"]] for g in r.got] == [
        [None, None, 0],  # user_created, user_updated, the first event
        [1, 2],
    ]


def test_receiver_down_then_back(tenant: Tenant) -> None:
    with receiver() as r:
        url = r.url
    # nothing listens at `url` now: connection refused, retried in order
    did, _ = add_webhook(tenant, url, batch_size=10)
    track(tenant, 25)
    with delivering(tenant.server.database_url):
        wait_for(lambda: destination(tenant, did).attempts >= 3)
        assert destination(tenant, did).delivered == 0
        assert "ConnectError" in (destination(tenant, did).last_error or "")
        with receiver(port=int(url.rsplit(":", 1)[1])) as back:
            wait_for(lambda: destination(tenant, did).delivered == 27)
    assert sent_numbers(back.accepted()) == list(range(25))
    assert destination(tenant, did).attempts == 0


def test_500_to_a_third_of_batches(tenant: Tenant) -> None:
    rng = random.Random(12)

    def decide(got, n):  # type: ignore[no-untyped-def]
        return (500, {}, b"oops") if rng.random() < 1 / 3 else None

    with receiver(decide) as r:
        did, _ = add_webhook(tenant, r.url, batch_size=5)
        track(tenant, 60)
        with delivering(tenant.server.database_url):
            wait_for(lambda: destination(tenant, did).delivered == 62)
    assert sent_numbers(r.accepted()) == list(range(60))  # in order, each once
    assert any(status == 500 for _, status in r.answered)
    # a batch retried is the same batch: same items, same Pier-Batch
    batches = {}
    for g, _ in r.answered:
        batches.setdefault(g.headers["Pier-Batch"], set()).add(g.body.split(b'"items"')[1])
    assert all(len(bodies) == 1 for bodies in batches.values())
    assert dead_letters(tenant, did) == []


def test_429_with_retry_after_is_honoured(tenant: Tenant) -> None:
    def decide(got, n):  # type: ignore[no-untyped-def]
        return (429, {"Retry-After": "1"}, b"slow down") if n == 0 else None

    with receiver(decide) as r:
        did, _ = add_webhook(tenant, r.url)
        track(tenant, 3)
        with delivering(tenant.server.database_url):  # its backoff is at most 0.1 s
            wait_for(lambda: destination(tenant, did).delivered == 5)
    assert [status for _, status in r.answered] == [429, 200]
    assert r.got[1].at - r.got[0].at >= 1.0
    assert (
        r.got[1].body == r.got[0].body
        or r.got[1].headers["Pier-Batch"] == r.got[0].headers["Pier-Batch"]
    )


def test_a_slow_receiver_times_out_and_is_retried(tenant: Tenant) -> None:
    slow = {"left": 2}

    def decide(got, n):  # type: ignore[no-untyped-def]
        if slow["left"] > 0:
            slow["left"] -= 1
            time.sleep(FAST.timeout + 0.5)  # past the engine's timeout
        return None

    with receiver(decide) as r:
        did, _ = add_webhook(tenant, r.url)
        track(tenant, 3)
        with delivering(tenant.server.database_url):
            wait_for(lambda: destination(tenant, did).delivered == 5)
            assert "timed out" in (destination(tenant, did).last_error or "")
    assert len(r.got) == 3  # two timed out, the third was delivered
    assert sent_numbers([r.got[2]]) == [0, 1, 2]


def test_400_for_a_marked_item_dead_letters_only_it(tenant: Tenant) -> None:
    def decide(got, n):  # type: ignore[no-untyped-def]
        if b'"poison":true' in got.body:
            return 400, {}, b'{"error":"poisoned"}' + b"x" * 100_000
        return None

    with receiver(decide) as r:
        did, _ = add_webhook(tenant, r.url, batch_size=20)
        track(tenant, 17)
        assert (
            tenant.post(
                "events",
                [{"name": "seen", "external_id": "u-1", "data": {"n": 17, "poison": True}}],
            ).status_code
            == 204
        )
        track(tenant, 22, start=18)
        with delivering(tenant.server.database_url):
            wait_for(
                lambda: (
                    destination(tenant, did).cursor > 0 and destination(tenant, did).delivered == 41
                )
            )
    delivered = sent_numbers(r.accepted())
    assert delivered == [n for n in range(40) if n != 17]
    letters = dead_letters(tenant, did)
    assert len(letters) == 1
    item = msgspec.json.decode(letters[0].item)
    assert item["data"] == {"n": 17, "poison": True}
    assert letters[0].answer.startswith('400 {"error":"poisoned"}')
    assert len(letters[0].answer) < 5000  # the answer was read up to a small limit


def test_a_batch_failing_past_its_retry_window_is_split(tenant: Tenant) -> None:
    """503 (retryable) for any batch holding the marked item: once the window (1 s here) ends,
    the batch is split; only the marked item is dead-lettered, the rest delivered in order."""

    def decide(got, n):  # type: ignore[no-untyped-def]
        return (503, {}, b"down for it") if b'"poison":true' in got.body else None

    with receiver(decide) as r:
        did, _ = add_webhook(tenant, r.url, batch_size=10, retry_window=1)
        track(tenant, 6)
        body = [{"name": "seen", "external_id": "u-1", "data": {"n": 6, "poison": True}}]
        assert tenant.post("events", body).status_code == 204
        track(tenant, 5, start=7)
        with delivering(tenant.server.database_url):
            wait_for(lambda: len(dead_letters(tenant, did)) == 1)
            wait_for(lambda: destination(tenant, did).delivered == 13)
    assert sent_numbers(r.accepted()) == [n for n in range(12) if n != 6]
    assert dead_letters(tenant, did)[0].answer == "503 down for it"
    assert sum(1 for _, status in r.answered if status == 503) > 2  # retried meanwhile


def test_items_the_filters_skip_count_as_delivered(tenant: Tenant) -> None:
    with receiver() as r:
        did, _ = add_webhook(tenant, r.url, only=["Order *", "seen"], skip=["seen"])
        track(tenant, 3)
        body = [{"name": n, "external_id": "u-1"} for n in ("Order Paid", "Order Sent", "Orders")]
        assert tenant.post("events", body).status_code == 204
        with delivering(tenant.server.database_url):
            wait_for(lambda: destination(tenant, did).delivered == 8)
    assert [i["name"] for i in items_of(r.accepted())] == ["Order Paid", "Order Sent"]
    d = destination(tenant, did)
    assert d.cursor == max(
        e["id"] for e in tenant.secret.get("/api/client/events").json()["results"]
    )


def test_a_batch_stops_at_its_byte_budget_and_the_filters_still_apply(tenant: Tenant) -> None:
    """max_bytes cuts a batch before the item that would pass it (each item's JSON and a comma
    count), a lone item larger than it goes alone, and skipped items before the cut count."""
    with receiver() as r:
        did, _ = add_webhook(tenant, r.url, max_bytes=1024, skip=["noise"])
        body = [
            {"name": "noise" if j % 3 == 2 else "seen", "external_id": "u-1", "data": {"n": j}}
            for j in range(30)
        ]
        body[7]["data"]["pad"] = "x" * 2000  # alone over the budget
        assert tenant.post("events", body).status_code == 204
        with delivering(tenant.server.database_url):
            wait_for(lambda: destination(tenant, did).delivered == 32)
    batches = [g.json()["items"] for g in r.accepted()]
    assert sent_numbers(r.accepted()) == [j for j in range(30) if j % 3 != 2]
    assert len(batches) > 3
    frame = len(b'{"destination":%d,"items":[]}' % did)
    for g, items in zip(r.accepted(), batches, strict=True):
        assert len(items) == 1 or len(g.body) - frame + 1 <= 1024
    assert [len(i) for i in batches if any(x["data"].get("pad") for x in i)] == [1]
    assert destination(tenant, did).cursor == max(
        e["id"] for e in tenant.secret.get("/api/client/events").json()["results"]
    )


def test_hostile_receivers_answer_huge_bodies_garbage_and_redirect_loops(tenant: Tenant) -> None:
    def huge(got, n):  # type: ignore[no-untyped-def]
        return 200, {}, (b"\xff\x00garbage" * 8192 for _ in range(160_000))  # "10 GiB"

    def loop(got, n):  # type: ignore[no-untyped-def]
        return 307, {"Location": got.path}, b""

    track(tenant, 3)
    with receiver(huge) as big, receiver(loop) as redirecting:
        big_id, _ = add_webhook(tenant, big.url)
        loop_id, _ = add_webhook(tenant, redirecting.url + "/hook", retry_window=0.5)
        with delivering(tenant.server.database_url):
            wait_for(lambda: destination(tenant, big_id).delivered == 5)
            wait_for(lambda: len(dead_letters(tenant, loop_id)) == 5)
        assert big.streamed < 50 * 2**20  # the answer was not read to its end
    assert len(big.got) == 1
    letters = dead_letters(tenant, loop_id)
    assert len(letters) == 5 and all(x.answer.startswith("307") for x in letters)
    assert all(g.path == "/hook" and g.method == "POST" for g in redirecting.got)


def metric(tenant: Tenant, name: str, destination_id: int) -> float:
    text = httpx.get(f"{tenant.server.url}/metrics").text
    for line in text.splitlines():
        if line.startswith(f'{name}{{destination="{destination_id}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_per_destination(tenant: Tenant) -> None:
    def decide(got, n):  # type: ignore[no-untyped-def]
        if n == 0:
            return 503, {}, b"once"
        return (400, {}, b"no") if b'"poison"' in got.body else None

    names = ["items_delivered", "dead_letters", "retries", "batches_failed"]
    with receiver(decide) as r:
        did, _ = add_webhook(tenant, r.url)
        # counters are per process: this one serves both backends, whose ids may be the same
        before = {n: metric(tenant, f"pier_destination_{n}_total", did) for n in names}
        track(tenant, 4)
        assert tenant.post("events", [{"name": "poison", "external_id": "u-1"}]).status_code == 204
        with delivering(tenant.server.database_url):
            wait_for(lambda: metric(tenant, "pier_destination_lag_items", did) == 7)
            wait_for(lambda: destination(tenant, did).cursor > 0 and dead_letters(tenant, did))
            wait_for(lambda: metric(tenant, "pier_destination_lag_items", did) == 0)
        assert r.got
    after = {n: metric(tenant, f"pier_destination_{n}_total", did) - before[n] for n in names}
    assert after["items_delivered"] == 6 and after["dead_letters"] == 1
    assert after["retries"] == 1 and after["batches_failed"] >= 3  # 503, then 400s
