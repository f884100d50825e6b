"""What each kind of destination sends for a batch of feed items: a list of HTTP calls, made in
order (a batch is delivered when every call is answered 2xx).

- webhook: one signed POST of `{"destination": ID, "items": [...]}`, every item as it is;
- parcelvoy: the Client API calls that reproduce each item (identify with only the fields
  Parcelvoy's identify accepts; alias; devices; events, consecutive ones in one call);
- pier: as parcelvoy, plus message_id and timestamp on events, an Idempotency-Key on every call,
  a device's whole extra (?extra=replace), and, when the target's secret key is given, DELETE of
  a deleted user and of a removed device;
- segment: one `POST {url}/v1/batch` of track / identify / alias calls (HTTP Basic write key);
  list_entered / list_exited become the track events "List Entered" / "List Exited" with the
  item's data (list_id, name) as properties.

Items the kind has no call for are skipped and counted as delivered (docs/destinations.md says
why, kind by kind): user_deleted on Parcelvoy; device_removed on parcelvoy, segment, and pier
without the target's secret key (the targets apply their own cap); list_entered / list_exited
on parcelvoy and pier (the target computes its own lists); devices on Segment."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec

from ..api.manage import feed_event
from ..domain.feed import (
    DEVICE_FIELDS,
    DEVICE_REGISTERED,
    DEVICE_REMOVED,
    LIST_ENTERED,
    LIST_EXITED,
    RESERVED_EVENT_NAMES,
    USER_CREATED,
    USER_DELETED,
    USER_MERGED,
    USER_UPDATED,
)
from ..domain.model import PROFILE_FIELDS
from ..store.base import FeedEvent
from ..store.destinations import Destination
from .secrets import signature, unseal

KINDS = ("webhook", "parcelvoy", "pier", "segment")
NEEDS_KEY = ("parcelvoy", "pier", "segment")
MAX_EVENTS_PER_CALL = 1000  # the Client API's limit

# Pier's own feed items (domain/feed.py) are not events; any other name is a client's event
RESERVED = RESERVED_EVENT_NAMES
IDS = ("external_id", "anonymous_id")
# parcelvoy and pier: what the target decides itself (its own device cap, its own lists); pier
# sends device_removed when it has the target's secret key
TARGETS_OWN = (DEVICE_REMOVED, LIST_ENTERED, LIST_EXITED)
# segment: a user entering or leaving a list, as a track event (Segment's "Object Action" names)
LIST_TRACKS = {LIST_ENTERED: "List Entered", LIST_EXITED: "List Exited"}
DERIVED = ("phone_country", "phone_is_valid")  # set by the target from the phone

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


@dataclass
class Call:
    method: str
    url: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)


def item_json(e: FeedEvent) -> bytes:
    """A feed item as the feed and the webhook give it."""
    return _encode(feed_event(e))


def items_json(items: list[FeedEvent]) -> bytes:
    """The JSON array of these feed items, in one call (the items of a webhook's batch)."""
    return _encode([feed_event(e) for e in items])


def calls(
    d: Destination,
    items: list[FeedEvent],
    batch_id: str,
    encoded: bytes | None = None,
    *,
    sealing: str = "",
) -> list[Call]:
    """The calls of a batch; `encoded`: these items already encoded (items_json); `sealing`:
    the secret_key setting, which opens the destination's sealed keys (secrets.unseal)."""
    d = msgspec.structs.replace(
        d,
        key=unseal(d.key, sealing),
        secret_key=unseal(d.secret_key, sealing),
        signing_secret=unseal(d.signing_secret, sealing),
    )
    if d.kind == "webhook":
        return _webhook(d, items, batch_id, encoded or items_json(items))
    return BUILDERS[d.kind](d, items, batch_id)


# -- webhook -------------------------------------------------------------------------------
def _webhook(d: Destination, items: list[FeedEvent], batch_id: str, encoded: bytes) -> list[Call]:
    body = b'{"destination":%d,"items":%b}' % (d.id, encoded)
    secret = d.signing_secret or ""
    headers = {
        "Content-Type": "application/json",
        "Pier-Signature": signature(secret, int(time.time()), body),
        "Pier-Destination": str(d.id),
        "Pier-Batch": batch_id,
    }
    return [Call("POST", d.url, body, headers)]


# -- parcelvoy and pier: the Client API -----------------------------------------------------
def _ids(e: FeedEvent) -> dict[str, str]:
    return {
        k: v for k, v in (("external_id", e.external_id), ("anonymous_id", e.anonymous_id)) if v
    }


def _data(e: FeedEvent) -> dict[str, Any]:
    value = _decode(e.data)
    return value if isinstance(value, dict) else {}


def _identify_of_created(e: FeedEvent) -> dict[str, Any]:
    """`user_created` data is the creating request's data plus the fields it set: the ids and
    profile fields come back out of it. Its ids are those it was created with (the item's are the
    user's now, after merges); a user created without an anonymous id has the generated one."""
    data = _data(e)
    body: dict[str, Any] = {k: data.pop(k) for k in (*IDS, *PROFILE_FIELDS) if k in data}
    for k in DERIVED:
        data.pop(k, None)
    if "anonymous_id" not in body and e.anonymous_id:
        body["anonymous_id"] = e.anonymous_id
    if "external_id" not in body and "anonymous_id" not in body and e.external_id:
        body["external_id"] = e.external_id
    if data:
        body["data"] = data
    return body


def _identify_of_updated(e: FeedEvent) -> tuple[dict[str, Any], list[str]]:
    """`user_updated` data holds only what changed; added anonymous ids become aliases."""
    data = _data(e)
    body: dict[str, Any] = _ids(e)
    for k in ("external_id", *PROFILE_FIELDS):
        if k in data:
            body[k] = data[k]
    changed = data.get("data")
    if isinstance(changed, dict):
        changed = {k: v for k, v in changed.items() if k not in DERIVED}
        if changed:
            body["data"] = changed
    return body, list(data.get("anonymous_ids_added") or [])


def _device(e: FeedEvent, with_extra: bool) -> dict[str, Any]:
    data = _data(e)
    body: dict[str, Any] = _ids(e)
    body.update({k: data[k] for k in DEVICE_FIELDS if data.get(k) is not None})
    if "token" in data:
        body["token"] = data["token"]
    extra = data.get("extra")
    if with_extra and isinstance(extra, dict):  # Pier keeps unknown keys in `extra`
        body.update({k: v for k, v in extra.items() if k not in body})
    return body


def _event(e: FeedEvent, pier: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"name": e.name, **_ids(e), "data": e.data}
    if pier:
        body["timestamp"] = e.created_at
        if e.message_id is not None:
            body["message_id"] = e.message_id
    return body


def _client_api(d: Destination, items: list[FeedEvent], pier: bool) -> list[Call]:
    base = d.url.rstrip("/") + "/api/client"
    auth = {"Authorization": f"Bearer {d.key}", "Content-Type": "application/json"}
    out: list[Call] = []
    events: list[FeedEvent] = []

    def call(
        path: str, body: Any, key_of: FeedEvent | None, method: str = "POST", secret: bool = False
    ) -> None:
        raw = _encode(body) if body is not None else None
        headers = {**auth, "Authorization": f"Bearer {d.secret_key}"} if secret else dict(auth)
        if pier and key_of is not None:  # stable for the same item and the same call
            digest = hashlib.sha256(raw or b"").hexdigest()[:16]
            headers["Idempotency-Key"] = f"pier-d{d.id}-i{key_of.id}-{digest}"
        out.append(Call(method, base + path, raw, headers))

    def flush() -> None:
        # events with a message id are deduplicated by it at the target: in one call; without
        # one, each goes alone under an Idempotency-Key of its own (pier) so that a retried
        # batch stores it once
        grouped = [e for e in events if e.message_id is not None or not pier]
        for i in range(0, len(grouped), MAX_EVENTS_PER_CALL):
            chunk = grouped[i : i + MAX_EVENTS_PER_CALL]
            call("/events", [_event(e, pier) for e in chunk], chunk[0] if pier else None)
        for e in events:
            if pier and e.message_id is None:
                call("/events", [_event(e, pier)], e)
        events.clear()

    for e in items:
        if e.name == DEVICE_REMOVED and pier and d.secret_key:
            flush()  # the same device, whoever holds it at the target (a 404: it never had it)
            device_id = _data(e).get("device_id")
            if isinstance(device_id, str):
                call(f"/devices/{quote(device_id, safe='')}", None, e, "DELETE", secret=True)
            continue
        if e.name in TARGETS_OWN:
            continue  # skipped, between events too: they still go many to a call
        if e.name not in RESERVED:
            if not e.external_id and not e.anonymous_id:
                continue  # the user is gone (deleted): nothing to reproduce
            events.append(e)
            continue
        flush()
        if e.name == USER_CREATED:
            body = _identify_of_created(e)
            if body.keys() & set(IDS):
                call("/identify", body, e)
        elif e.name == USER_UPDATED:
            body, added = _identify_of_updated(e)
            call("/identify", body, e)
            for anon in added if e.external_id else []:
                call("/alias", {"anonymous_id": anon, "external_id": e.external_id}, e)
        elif e.name == USER_MERGED:
            for anon in _data(e).get("anonymous_ids") or [] if e.external_id else []:
                call("/alias", {"anonymous_id": anon, "external_id": e.external_id}, e)
        elif e.name == DEVICE_REGISTERED:
            if e.external_id or e.anonymous_id:  # to a Pier: the device's whole extra
                call("/devices?extra=replace" if pier else "/devices", _device(e, pier), e)
        elif e.name == USER_DELETED and pier and d.secret_key:
            _delete(e, base, d.secret_key, call, out)
    flush()
    return out


def _delete(
    e: FeedEvent,
    base: str,
    secret_key: str,
    call: Callable[[str, Any, FeedEvent | None], None],
    out: list[Call],
) -> None:
    """A user_deleted at the target, whatever of it the target has seen: the items of the
    deleted user (and of those merged into it) left the feed, so the target may hold the user
    under fewer ids, users that were merged into it still apart, and devices that were moved
    to it still under their former users. So: the tombstone's devices are registered to the
    user (their fields do not matter: they go with it), the user is deleted, then whatever user
    still holds one of its anonymous ids. A 404 is a user the target never had."""
    data = _data(e)
    anons = [a for a in data.get("anonymous_ids") or [] if isinstance(a, str)]
    ref, by = (
        (data["external_id"], "external_id")
        if data.get("external_id")
        else (anons[0] if anons else None, "anonymous_id")
    )
    if not ref:
        return
    for device_id in data.get("device_ids") or []:
        placeholder = {"os": "-", "model": "-", "app_build": "-", "app_version": "-"}
        call("/devices", {by: ref, "device_id": device_id, **placeholder}, e)
    auth = {"Authorization": f"Bearer {secret_key}"}
    refs = [(ref, by), *((a, "anonymous_id") for a in anons if (a, "anonymous_id") != (ref, by))]
    for value, key in refs:
        out.append(Call("DELETE", f"{base}/users/{quote(value, safe='')}?by={key}", None, auth))


def _parcelvoy(d: Destination, items: list[FeedEvent], batch_id: str) -> list[Call]:
    return _client_api(d, items, pier=False)


def _pier(d: Destination, items: list[FeedEvent], batch_id: str) -> list[Call]:
    return _client_api(d, items, pier=True)


# -- segment -------------------------------------------------------------------------------
def _segment_ids(e: FeedEvent) -> dict[str, str]:
    ids = {}
    if e.external_id:
        ids["userId"] = e.external_id
    if e.anonymous_id:
        ids["anonymousId"] = e.anonymous_id
    return ids


def _iso(ms: int) -> str:
    from ..api.render import iso

    return iso(ms) or ""


def _segment(d: Destination, items: list[FeedEvent], batch_id: str) -> list[Call]:
    batch: list[dict[str, Any]] = []
    for e in items:
        common = {
            "messageId": e.message_id or f"pier-{d.id}-{e.id}",
            "timestamp": _iso(e.created_at),
        }
        if e.name not in RESERVED or e.name in LIST_TRACKS:
            if _segment_ids(e):
                batch.append(
                    {
                        "type": "track",
                        "event": LIST_TRACKS.get(e.name, e.name),
                        "properties": e.data,
                        **_segment_ids(e),
                        **common,
                    }
                )
        elif e.name in (USER_CREATED, USER_UPDATED):
            if e.name == USER_CREATED:
                body = _identify_of_created(e)
                added: list[str] = []
            else:
                body, added = _identify_of_updated(e)
            traits = {k: body[k] for k in PROFILE_FIELDS if k in body}
            traits.update(body.get("data") or {})
            ids = {}
            if body.get("external_id"):
                ids["userId"] = body["external_id"]
            if body.get("anonymous_id"):
                ids["anonymousId"] = body["anonymous_id"]
            if ids:
                batch.append({"type": "identify", "traits": traits, **ids, **common})
            for n, anon in enumerate(added if e.external_id else []):
                batch.append(_alias(e, anon, f"{common['messageId']}-a{n}"))
        elif e.name == USER_MERGED and e.external_id:
            for n, anon in enumerate(_data(e).get("anonymous_ids") or []):
                batch.append(_alias(e, anon, f"{common['messageId']}-a{n}"))
    if not batch:
        return []
    key = base64.b64encode(f"{d.key}:".encode()).decode()
    headers = {"Authorization": f"Basic {key}", "Content-Type": "application/json"}
    url = d.url.rstrip("/") + "/v1/batch"
    return [Call("POST", url, _encode({"batch": batch}), headers)]


def _alias(e: FeedEvent, anon: str, message_id: str) -> dict[str, Any]:
    return {
        "type": "alias",
        "previousId": anon,
        "userId": e.external_id,
        "messageId": message_id,
        "timestamp": _iso(e.created_at),
    }


BUILDERS: dict[str, Callable[[Destination, list[FeedEvent], str], list[Call]]] = {
    "parcelvoy": _parcelvoy,
    "pier": _pier,
    "segment": _segment,
}
