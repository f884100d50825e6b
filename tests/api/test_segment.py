"""POST /api/client/segment: every request of tests/fixtures/segment-wire.json (bodies exactly as
Segment's libraries and the Parcelvoy JS SDK send them) is accepted and stored as `expect` says;
then the mapping, the all-or-nothing rule (validation and a refused alias alike), the ways a key
can travel, and the limits."""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from conftest import Tenant
from pier.api.segment import SUB_PATHS

WIRE = json.loads((Path(__file__).parent.parent / "fixtures" / "segment-wire.json").read_text())


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def replay(t: Tenant, step: dict) -> httpx.Response:
    headers = dict(step["headers"])
    if step["auth"] == "basic":
        headers["Authorization"] = basic(t.public_key)
    elif step["auth"] == "bearer":
        headers["Authorization"] = f"Bearer {t.public_key}"
    body = json.dumps(step["body"]).replace("{{WRITE_KEY}}", t.public_key).encode()
    if step.get("gzip"):
        body = gzip.compress(body)
    with httpx.Client(base_url=t.server.url, timeout=30) as http:  # no default Authorization
        return http.request(step["method"], step["path"], content=body, headers=headers)


def step_of(sdk: str) -> dict:
    (step,) = [s for s in WIRE["requests"] if s["sdk"].startswith(sdk)]
    return step


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def named(events: list[dict], name: str) -> dict:
    found = [e for e in events if e["name"] == name]
    assert len(found) == 1, (name, [e["name"] for e in events])
    return found[0]


def check_python(t: Tenant, sent_ms: int) -> None:
    user = t.user("py-user-1")
    assert user["email"] == "py@example.com" and user["phone"] == "+14155552671"
    assert user["data"] == {
        "name": "Py User",
        "plan": "pro",
        "phone_country": "US",
        "phone_is_valid": True,
    }
    assert "py-anon-1" in user["anonymous_ids"]  # alias: previousId → the user's anonymous ids
    events = t.events("py-user-1")
    order = named(events, "Order Completed")
    assert order["data"] == {"total": 99.5, "currency": "EUR"}
    assert order["message_id"] == "0b9f3c4e-5d8a-4e4b-a1f2-9c7e6d5b4a31"
    # the call was made 4.123456 s before sentAt: it is stored 4.123 s before the server's clock
    assert abs(sent_ms - ms(order["created_at"]) - 4123) < 3000
    assert named(events, "Page Viewed")["data"] == {
        "title": "Pricing",
        "name": "Pricing",
        "category": "Docs",
    }
    assert named(events, "Screen Viewed")["data"] == {"name": "Settings"}
    assert not [e for e in events if "Acme" in json.dumps(e["data"])]  # group: ignored


def check_browser_batch(t: Tenant, sent_ms: int) -> None:
    user = t.user("web-seg-1")
    assert user["email"] == "web@example.com"
    assert user["data"]["firstName"] == "Wen"
    assert (user["locale"], user["timezone"]) == ("en-US", "Europe/Berlin")  # from context
    assert user["anonymous_ids"] == ["6c1a0f39-3a2e-4a55-8e6b-0b7f3d0f6c2a"]
    events = t.events("web-seg-1")
    page = named(events, "Page Viewed")
    assert page["data"]["url"] == "https://shop.example.com/pricing"
    assert page["data"]["name"] == "Pricing"
    assert named(events, "Product Viewed")["data"] == {"product_id": "p-1", "price": 12}


def check_browser_single(t: Tenant, sent_ms: int) -> None:
    event = named(t.events("web-seg-1"), "Added to Cart")
    assert event["data"] == {"product_id": "p-1", "quantity": 2}
    assert abs(sent_ms - ms(event["created_at"]) - 250) < 3000


def check_node(t: Tenant, sent_ms: int) -> None:
    user = t.user("node-user-1")
    assert (user["email"], user["timezone"]) == ("node@example.com", "America/Chicago")
    assert named(t.events("node-user-1"), "Invoice Paid")["data"] == {
        "amount": 120,
        "invoice": "inv-7",
    }


def check_webhook(t: Tenant, sent_ms: int) -> None:
    event = named(t.events("hook-user-1"), "Trial Started")
    assert event["data"] == {"plan": "team"}  # context is not stored
    assert event["message_id"] == "api-2mQk8v3ZpLx0b1n4yW7r"


def check_pv_anonymous(t: Tenant, sent_ms: int) -> None:
    anon = "0e6b1f9a-7c2d-4a8b-9e3f-5d4c3b2a1f0e"
    assert named(t.events(anon, by="anonymous_id"), "Tapped Button")["data"] == {"Key": "Value"}


def check_pv_identified(t: Tenant, sent_ms: int) -> None:
    user = t.user("pv-web-1")
    assert user["anonymous_ids"] == ["0e6b1f9a-7c2d-4a8b-9e3f-5d4c3b2a1f0e"]
    names = {e["name"] for e in t.events("pv-web-1")}
    assert {"Tapped Button", "Checkout Started"} <= names


def check_rudder_python(t: Tenant, sent_ms: int) -> None:
    user = t.user("rp-user-1")  # the traits came only under context.traits
    assert (user["email"], user["timezone"]) == ("rp@example.com", "America/Chicago")
    assert user["data"] == {"plan": "pro"}
    assert "rp-anon-1" in user["anonymous_ids"]
    tapped = named(t.events("rp-user-1"), "Tapped")
    assert tapped["message_id"] == "0c7e2a64-3b7d-4f0a-8f5e-3d7c8a1b2e41"


def check_rudder_node(t: Tenant, sent_ms: int) -> None:
    user = t.user("rn-user-1")  # traits win over context.traits key by key
    assert (user["email"], user["locale"]) == ("rn@example.com", "de-DE")
    assert user["data"] == {"plan": "team"}
    assert "rn-anon-1" in user["anonymous_ids"]
    sent = named(t.events("rn-user-1"), "Invoice Sent")
    assert sent["data"] == {"invoice": "inv-9"}
    assert sent["message_id"] == "b071a85b-6566-431d-8461-78dd28e9826f"
    # originalTimestamp is 10 s before sentAt: the call was made 10 s before the server's now
    assert abs(sent_ms - ms(sent["created_at"]) - 10_000) < 3000


def check_old_python(t: Tenant, sent_ms: int) -> None:
    assert t.user("op-user-1")["email"] == "op@example.com"
    assert named(t.events("op-user-1"), "Tapped")["data"] == {"x": 1}


CHECKS: list[Callable[[Tenant, int], None]] = [
    check_python,
    check_browser_batch,
    check_browser_single,
    check_node,
    check_webhook,
    check_pv_anonymous,
    check_pv_identified,
    check_rudder_python,
    check_rudder_node,
    check_old_python,
]


def test_every_sdk_request_is_accepted_and_stored(tenant: Tenant) -> None:
    assert len(CHECKS) == len(WIRE["requests"])
    for step, check in zip(WIRE["requests"], CHECKS, strict=True):
        sent_ms = int(time.time() * 1000)
        r = replay(tenant, step)
        if "/segment" in step["path"]:  # what Segment-format servers answer
            assert (r.status_code, r.json()) == (200, {"success": True}), (step["step"], r.text)
        else:
            assert (r.status_code, r.content) == (204, b""), (step["step"], r.text)
        check(tenant, sent_ms)


# -- what real SDKs need (issue 15); tests/sdk drives the libraries themselves ----------------
def test_every_segment_path_answers_200_with_success(tenant: Tenant) -> None:
    # analytics-python 1.x and rudder-sdk-python take anything but a 200 for a failure
    step = step_of("analytics-python 1.4")
    assert replay(tenant, step).json() == {"success": True}
    check_old_python(tenant, 0)
    call = {"type": "track", "userId": "ok-200", "event": "E"}
    group = {"type": "group", "userId": "ok-200", "groupId": "acme"}  # stores nothing
    sent = [("segment", [call]), ("segment", [group])]
    sent += [(f"segment/{p}", [call] if kind == "batch" else call) for p, kind in SUB_PATHS.items()]
    for path, body in sent:
        r = post(tenant, body, path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"success": True}
    for _ in range(2):  # a repeat with the same Idempotency-Key answers as the first did
        r = post(tenant, [call], headers={"Idempotency-Key": "ok-200-1"})
        assert (r.status_code, r.json()) == (200, {"success": True}), r.text
    r = post(tenant, {"batch": [{"type": "track", "userId": "ok-200"}]})  # errors keep their shape
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/batch/0/event"


def test_identify_traits_under_context_traits(tenant: Tenant) -> None:
    step = step_of("rudder-sdk-python")
    assert replay(tenant, step).status_code == 200
    check_rudder_python(tenant, 0)
    # both: traits win key by key; a problem points where the value was
    body = [
        {
            "type": "identify",
            "userId": "ct-1",
            "traits": {"email": "t@example.com"},
            "context": {"traits": {"email": "c@example.com", "phone": "+14155552671"}},
        },
    ]
    assert post(tenant, body).status_code == 200
    user = tenant.user("ct-1")
    assert (user["email"], user["phone"]) == ("t@example.com", "+14155552671")
    bad = [
        {"type": "identify", "userId": "ct-2", "context": {"traits": {"timezone": "Mars/Base"}}},
        {"type": "track", "userId": "ct-2", "event": "E", "context": {"traits": [1]}},
    ]
    assert set(errors(post(tenant, bad))) == {"/0/context/traits/timezone", "/1/context/traits"}
    assert tenant.secret.get("/api/client/users/ct-2").status_code == 404


def test_any_content_type_is_read_as_json(tenant: Tenant) -> None:
    step = step_of("@rudderstack/rudder-sdk-node")
    assert step["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert replay(tenant, step).status_code == 200
    check_rudder_node(tenant, int(time.time() * 1000))
    headers = {"Authorization": basic(tenant.public_key)}
    with httpx.Client(base_url=tenant.server.url, timeout=30) as http:
        for content_type in ("application/x-www-form-urlencoded", "text/xml", None):
            h = {**headers, **({"Content-Type": content_type} if content_type else {})}
            r = http.post("/api/client/segment", content=b"userId=u&event=E", headers=h)
            assert r.status_code == 400 and "JSON" in r.json()["error"], r.text
        r = http.post(
            "/api/client/segment",
            content=b"{}",
            headers={**headers, "Content-Encoding": "br"},
        )
        assert r.status_code == 415, r.text  # the encoding is still checked
    # the Parcelvoy routes keep their rule
    r = tenant.public.post(
        "/api/client/events", content=b"[]", headers={"Content-Type": "text/xml"}
    )
    assert r.status_code == 415


def test_original_timestamp_when_timestamp_is_absent(tenant: Tenant) -> None:
    before = int(time.time() * 1000)
    body = {
        "sentAt": "2026-01-15T10:00:10.000Z",
        "batch": [
            {
                "type": "track",
                "userId": "ot-1",
                "event": "Queued",
                "originalTimestamp": "2026-01-15T10:00:00.000Z",
            },
            {
                "type": "track",
                "userId": "ot-1",
                "event": "Both",
                "originalTimestamp": "2026-01-15T10:00:00.000Z",
                "timestamp": "2026-01-15T10:00:07.000Z",
            },
        ],
    }
    assert post(tenant, body).status_code == 200
    after = int(time.time() * 1000)
    events = tenant.events("ot-1")
    queued, both = named(events, "Queued"), named(events, "Both")
    # the server's clock at the request, less how long before sentAt the call was made
    assert before - 10_000 - 1 <= ms(queued["created_at"]) <= after - 10_000 + 1
    assert before - 3_000 - 1 <= ms(both["created_at"]) <= after - 3_000 + 1  # timestamp wins
    bad = [{"type": "track", "userId": "ot-2", "event": "E", "originalTimestamp": "then"}]
    assert set(errors(post(tenant, bad))) == {"/0/originalTimestamp"}


def test_a_repeated_batch_stores_its_events_once(tenant: Tenant) -> None:
    step = WIRE["requests"][0]  # analytics-python retries a batch after a timeout
    assert replay(tenant, step).status_code == 200
    before = [e["name"] for e in tenant.events("py-user-1")]
    assert replay(tenant, step).status_code == 200
    assert [e["name"] for e in tenant.events("py-user-1")] == before


def test_gzip_body_as_analytics_python_sends_with_gzip_true(tenant: Tenant) -> None:
    body = {"batch": [{"type": "track", "userId": "gz-1", "event": "Zipped", "properties": {}}]}
    r = tenant.public.post(
        "/api/client/segment/v1/batch",
        content=gzip.compress(msgspec.json.encode(body)),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert named(tenant.events("gz-1"), "Zipped")


# -- all or nothing ----------------------------------------------------------------------
def post(t: Tenant, body: object, path: str = "segment", **kw: object) -> httpx.Response:
    return t.post(path, body, **kw)


def errors(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["status"] == "error" and body["error"] == body["errors"][0]["message"]
    return {e["path"]: e["message"] for e in body["errors"]}


def test_one_bad_call_fails_the_batch_and_every_problem_is_listed(tenant: Tenant) -> None:
    body = {
        "batch": [
            {"type": "identify", "userId": "ok-1", "traits": {"email": "a@b.c"}},
            {"type": "track", "userId": "ok-1"},
            {"type": "track", "event": "No Ids"},
            {"type": "teleport", "userId": "ok-1"},
            {"type": "identify", "userId": "ok-1", "traits": {"timezone": "Mars/Olympus"}},
            {"type": "page", "userId": "x" * 256},
            {"type": "track", "userId": "ok-1", "event": "E", "timestamp": "yesterday"},
            {"type": "track", "userId": "ok-1", "event": "E", "properties": [1]},
            {"type": "alias", "userId": "ok-1"},
            "not a call",
        ]
    }
    found = errors(post(tenant, body))
    assert set(found) == {
        "/batch/1/event",
        "/batch/2",
        "/batch/3/type",
        "/batch/4/traits/timezone",
        "/batch/5/userId",
        "/batch/6/timestamp",
        "/batch/7/properties",
        "/batch/8/previousId",
        "/batch/9",
    }
    assert found["/batch/4/traits/timezone"] == "The timezone value must be in the IANA format."
    r = tenant.secret.get("/api/client/users/ok-1")
    assert r.status_code == 404  # nothing of the batch was stored


def test_shapes_and_limits(tenant: Tenant) -> None:
    assert set(errors(post(tenant, {"batch": []}))) == {"/batch"}
    assert set(errors(post(tenant, []))) == {""}
    assert set(errors(post(tenant, {"calls": []}))) == {"/batch"}
    assert set(errors(post(tenant, "hello"))) == {""}
    call = {"type": "track", "userId": "lim-1", "event": "E"}
    assert set(errors(post(tenant, [call] * 1001))) == {""}
    assert set(errors(post(tenant, {"batch": [call], "sentAt": "soon"}))) == {"/sentAt"}
    nul = {"batch": [{"type": "track", "userId": "lim-1", "event": "E\u0000"}]}
    assert set(errors(post(tenant, nul))) == {"/batch/0/event"}
    before = tenant.counts()["events"]
    r = post(tenant, [call] * 1000)
    assert r.status_code == 200, r.text
    assert tenant.counts()["events"] - before == 1002  # and user_created, user_updated


def test_every_field_is_checked_on_every_call(tenant: Tenant) -> None:
    # fields a call does not use are still checked against the format (as the OpenAPI says)
    body = {
        "writeKey": 7,
        "context": "web",
        "batch": [
            {"type": "identify", "userId": "fc-1", "name": "n" * 256, "timestamp": "soon"},
            {"type": "group", "userId": "fc-1", "traits": [], "sentAt": {}},
            {"type": "alias", "userId": "fc-1", "previousId": "fc-a", "properties": 1},
            {"type": "track", "userId": "fc-1", "event": "E", "writeKey": 1, "category": 2},
        ],
    }
    assert set(errors(post(tenant, body))) == {
        "/writeKey",
        "/context",
        "/batch/0/name",
        "/batch/0/timestamp",
        "/batch/1/traits",
        "/batch/1/sentAt",
        "/batch/2/properties",
        "/batch/3/writeKey",
        "/batch/3/category",
    }
    assert tenant.secret.get("/api/client/users/fc-1").status_code == 404


def test_a_refused_alias_fails_the_whole_batch(tenant: Tenant) -> None:
    r = tenant.post("identify", {"anonymous_id": "ra-anon", "external_id": "ra-1"})
    assert r.status_code == 204
    body = {
        "batch": [
            {"type": "identify", "userId": "ra-new", "traits": {"email": "new@example.com"}},
            {"type": "track", "userId": "ra-new", "event": "Before"},
            {"type": "alias", "previousId": "ra-anon", "userId": "ra-2"},
            {"type": "track", "userId": "ra-1", "event": "After"},
        ]
    }
    found = errors(post(tenant, body))
    assert list(found) == ["/batch/2/previousId"]
    assert "already aliased" in found["/batch/2/previousId"]
    assert tenant.secret.get("/api/client/users/ra-new").status_code == 404
    assert tenant.secret.get("/api/client/users/ra-2").status_code == 404
    assert "After" not in {e["name"] for e in tenant.events("ra-1")}


def test_an_alias_refused_because_of_an_earlier_call_of_the_batch(tenant: Tenant) -> None:
    # the identify gives rb-anon its external id, then the alias re-keys it: refused, and the
    # identify (already applied in memory when the alias is reached) is not stored either
    body = [
        {"type": "identify", "anonymousId": "rb-anon", "userId": "rb-1"},
        {"type": "alias", "previousId": "rb-anon", "userId": "rb-2"},
    ]
    assert list(errors(post(tenant, body))) == ["/1/previousId"]
    assert tenant.secret.get("/api/client/users/rb-1").status_code == 404
    assert tenant.secret.get("/api/client/users/rb-anon?by=anonymous_id").status_code == 404


def test_a_refused_batch_does_not_disturb_requests_committed_with_it(tenant: Tenant) -> None:
    import concurrent.futures

    r = tenant.post("identify", {"anonymous_id": "cc-anon", "external_id": "cc-1"})
    assert r.status_code == 204
    bad = [
        {"type": "track", "userId": "cc-bad", "event": "Never"},
        {"type": "alias", "previousId": "cc-anon", "userId": "cc-2"},
    ]
    good = [{"name": "Fine", "external_id": f"cc-good-{i}"} for i in range(5)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, tenant, bad) for _ in range(4)]
        futures += [pool.submit(tenant.post, "events", [g]) for g in good]
        codes = [f.result().status_code for f in futures]
    assert codes == [422] * 4 + [204] * 5
    assert tenant.secret.get("/api/client/users/cc-bad").status_code == 404
    for i in range(5):
        assert named(tenant.events(f"cc-good-{i}"), "Fine")


# -- mapping details ---------------------------------------------------------------------
def test_mapping_details(tenant: Tenant) -> None:
    body = [
        {"type": "identify", "userId": 42, "traits": {"email": "n@example.com", "locale": "fr"}},
        {"type": "identify", "userId": 42, "traits": {"email": None, "plan": "free"}},
        {"type": "track", "userId": 42, "event": "Numbered", "properties": None},
        {"type": "screen", "userId": 42, "name": None, "category": "Onboarding"},
        {"type": "alias", "userId": 42, "previousId": 42},  # to itself: nothing to do
        {"type": "group", "userId": 42, "groupId": "g"},
        {"type": "identify", "userId": "", "anonymousId": "md-anon", "context": {"locale": "de"}},
    ]
    assert post(tenant, body).status_code == 200
    user = tenant.user("42")
    assert (user["email"], user["locale"], user["data"]) == (None, "fr", {"plan": "free"})
    events = tenant.events("42")
    assert named(events, "Numbered")["data"] == {}
    assert named(events, "Screen Viewed")["data"] == {"category": "Onboarding"}
    anon = tenant.user("md-anon", by="anonymous_id")
    assert (anon["external_id"], anon["locale"]) == (None, "de")


def test_only_group_calls_store_nothing(tenant: Tenant) -> None:
    before = tenant.counts()
    r = post(tenant, [{"type": "group", "userId": "grp-1", "groupId": "acme"}])
    assert r.status_code == 200
    assert tenant.counts() == before


def test_single_call_paths(tenant: Tenant) -> None:
    for path, call in [
        ("segment/i", {"userId": "sp-1", "traits": {"email": "sp@example.com"}}),
        ("segment/v1/track", {"userId": "sp-1", "event": "Via Track"}),
        ("segment/p", {"type": "page", "userId": "sp-1", "name": "Home"}),
        ("segment/v1/screen", {"userId": "sp-1", "name": "Main"}),
        ("segment/a", {"type": "alias", "userId": "sp-1", "previousId": "sp-anon"}),
        ("segment/g", {"userId": "sp-1", "groupId": "acme"}),
    ]:
        r = post(tenant, call, path)
        assert r.status_code == 200, (path, r.text)
    user = tenant.user("sp-1")
    assert user["email"] == "sp@example.com" and "sp-anon" in user["anonymous_ids"]
    names = {e["name"] for e in tenant.events("sp-1")}
    assert {"Via Track", "Page Viewed", "Screen Viewed"} <= names
    assert set(errors(post(tenant, [1], "segment/t"))) == {""}
    r = post(tenant, {"userId": "sp-1"}, "segment/nope")
    assert r.status_code == 404 and r.json()["status"] == "error"


# -- keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["bearer", "basic", "basic-password", "body", "batch-body"])
def test_the_key_can_travel_as_the_segment_libraries_send_it(tenant: Tenant, how: str) -> None:
    key = tenant.public_key
    call = {"type": "track", "userId": f"key-{how}", "event": "Keyed"}
    headers: dict[str, str] = {"Content-Type": "text/plain"}
    body: object = [call]
    if how == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif how == "basic":
        headers["Authorization"] = basic(key)
    elif how == "basic-password":
        headers["Authorization"] = "Basic " + base64.b64encode(f":{key}".encode()).decode()
    elif how == "body":
        body = [{**call, "writeKey": key}]
    else:
        body = {"writeKey": key, "batch": [call]}
    with httpx.Client(base_url=tenant.server.url, timeout=30) as http:
        r = http.post("/api/client/segment", content=msgspec.json.encode(body), headers=headers)
    assert r.status_code == 200, r.text
    assert named(tenant.events(f"key-{how}"), "Keyed")


def test_bad_keys_are_refused(tenant: Tenant) -> None:
    call = [{"type": "track", "userId": "bad-key", "event": "E"}]
    with httpx.Client(base_url=tenant.server.url, timeout=30) as http:

        def status(headers: dict[str, str], body: object = call) -> int:
            return http.post(
                "/api/client/segment", content=msgspec.json.encode(body), headers=headers
            ).status_code

        assert status({}) == 401
        assert status({}, [{**call[0], "writeKey": "pk_" + "0" * 32}]) == 401
        assert status({"Authorization": basic("pk_" + "1" * 32)}) == 401
        assert status({"Authorization": "Basic %%%"}) == 401
        # a header wins over the body, and is checked before the body is read
        assert status({"Authorization": "Bearer nope"}, [{**call[0], "writeKey": "x"}]) == 401
    assert tenant.secret.get("/api/client/users/bad-key").status_code == 404
