"""The OpenAPI 3.1 description of the Client API, served at GET /api/openapi.json (no key).

Written by hand from docs/client-api.md; the string fields' schemas come from their declarations
(api/fields.py), as do the validators' limits;
tests/faults/test_fuzz.py generates requests from these schemas and checks the server's answers
against them, and tests/faults/test_openapi.py checks that every /api/client route is here.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..domain import feed
from . import list_csv
from .fields import ID, IDEMPOTENCY_KEY, MAX_EVENTS, field
from .ingest import EXTRA_MODES
from .segment import SUB_PATHS, TYPES

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def string(name: str, *, nullable: bool = True, nonempty: bool = False) -> Schema:
    """The schema of the body field `name`, from its declaration (fields.py)."""
    return field(name).schema(nullable=nullable, nonempty=nonempty)


def one_id(extra: list[Schema] | None = None) -> list[Schema]:
    """anyOf: a non-empty anonymous_id or external_id (contract section 3)."""
    return [
        {"required": [k], "properties": {k: {"type": "string", "minLength": 1}}}
        for k in ("anonymous_id", "external_id")
    ] + (extra or [])


TIME = "ISO-8601 UTC with milliseconds, e.g. 2026-11-26T08:39:35.123Z"
RESERVED = sorted(feed.RESERVED_EVENT_NAMES)
EVENT_NAME = {
    **string("name", nullable=False, nonempty=True),
    "not": {"enum": RESERVED},
    "description": "Not one of Pier's own item names (422): " + ", ".join(RESERVED) + ".",
}
NULLABLE_STRING = {"type": ["string", "null"]}
STRINGS = {"type": "array", "items": {"type": "string"}}


def _feed_items() -> dict[str, Schema]:
    """The data of each of Pier's own feed items (docs/client-api.md, "The change feed")."""
    return {
        "UserCreatedData": {
            "type": "object",
            "description": "user_created: a user was created. As Parcelvoy records it: the"
            " creating request's data plus the fields it set (external_id, anonymous_id when"
            " sent, email, phone, timezone, locale). A user_updated with the new user's whole"
            " state follows it: rebuild from that.",
        },
        "UserUpdatedData": {
            "type": "object",
            "description": "user_updated: identify, alias or an event's user block changed the"
            " user (or it was just created, or gained what a merge brought). Only what changed,"
            " with the new values.",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "external_id": {"type": "string"},
                "email": NULLABLE_STRING,
                "phone": NULLABLE_STRING,
                "timezone": NULLABLE_STRING,
                "locale": NULLABLE_STRING,
                "anonymous_ids_added": {**STRINGS, "minItems": 1},
                "data": {
                    "type": "object",
                    "minProperties": 1,
                    "description": "The changed keys with their new values; null: removed (or"
                    " set to null).",
                },
            },
        },
        "UserMergedData": {
            "type": "object",
            "description": "user_merged: the anonymous user merged_user_id was merged into this"
            " one, and is gone. Its own items left the feed; what this user gained follows in a"
            " user_updated, its devices in device_registered items.",
            "required": ["merged_user_id", "anonymous_ids"],
            "properties": {"merged_user_id": {"type": "integer"}, "anonymous_ids": STRINGS},
        },
        "DeviceRegisteredData": {
            "type": "object",
            "description": "device_registered: a device of this user, as stored after the"
            " change (a devices call, a token moving away from it, a merge). Upsert it by"
            " device_id; a device renamed (found by its token) has a device_removed of its"
            " former id (reason renamed) just before.",
            "required": [*feed.DEVICE_FIELDS, "extra"],
            "additionalProperties": False,
            "properties": {
                **{f: NULLABLE_STRING for f in feed.DEVICE_FIELDS},
                "device_id": {"type": "string"},
                "extra": {"type": "object"},
            },
        },
        "DeviceRemovedData": {
            "type": "object",
            "description": "device_removed: the device device_id is gone, whoever holds it:"
            " pushed out by the 25-device cap (device_cap: before the items of the change that"
            " pushed it out; in a merge, before user_merged, the device may still be the"
            " merged user's), renamed (found by its token under a new device_id, in the"
            " device_registered that follows) or removed by DELETE /api/client/devices/{id}"
            " (deleted). It stays in the feed when its user is merged away.",
            "required": ["device_id", "reason"],
            "additionalProperties": False,
            "properties": {
                "device_id": {"type": "string"},
                "reason": {"type": "string", "enum": list(feed.REMOVED_REASONS)},
            },
        },
        "UserDeletedData": {
            "type": "object",
            "description": "user_deleted: the user was deleted; its other items left the"
            " feed. Also gone: any user holding one of anonymous_ids (merged into it), and the"
            " devices device_ids.",
            "required": ["external_id", "anonymous_ids", "device_ids"],
            "properties": {
                "external_id": NULLABLE_STRING,
                "anonymous_ids": STRINGS,
                "device_ids": STRINGS,
            },
        },
        "ListMembershipData": {
            "type": "object",
            "description": "list_entered / list_exited: the user entered or left a list"
            " (docs/lists.md), in the transaction of the change that moved it.",
            "required": ["list_id", "name"],
            "properties": {"list_id": {"type": "integer"}, "name": {"type": "string"}},
        },
    }


ITEM_DATA = {
    feed.USER_CREATED: "UserCreatedData",
    feed.USER_UPDATED: "UserUpdatedData",
    feed.USER_MERGED: "UserMergedData",
    feed.DEVICE_REGISTERED: "DeviceRegisteredData",
    feed.DEVICE_REMOVED: "DeviceRemovedData",
    feed.USER_DELETED: "UserDeletedData",
    feed.LIST_ENTERED: "ListMembershipData",
    feed.LIST_EXITED: "ListMembershipData",
}


def _traits_properties() -> dict[str, Schema]:
    return {
        "anonymous_id": string("anonymous_id"),
        "external_id": string("external_id"),
        "email": string("email"),
        "phone": string("phone"),
        "timezone": string("timezone"),
        "locale": string("locale"),
        "data": {
            "type": ["object", "null"],
            "description": "Merged one level deep; null leaves data as it is.",
        },
    }


SEGMENT_ID = {"type": ["string", "integer", "null"], "maxLength": ID.max_len}
SEGMENT_CALLS = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_EVENTS,
    "items": {"allOf": [ref("SegmentCall")], "required": ["type"]},
}


def schemas() -> dict[str, Schema]:
    traits = _traits_properties()
    nullable_time = {"type": ["string", "null"], "format": "date-time", "description": TIME}
    return {
        "Identify": {
            "type": "object",
            "description": "A field sent as null is cleared; a field left out is kept.",
            "properties": traits,
            "additionalProperties": False,
            "anyOf": one_id(),
        },
        "Traits": {
            "type": "object",
            "description": "An identify applied before the event; unknown keys are ignored.",
            "properties": traits,
        },
        "Alias": {
            "type": "object",
            "required": ["anonymous_id", "external_id"],
            "properties": {
                "anonymous_id": string("anonymous_id", nullable=False, nonempty=True),
                "external_id": string("external_id", nullable=False, nonempty=True),
            },
        },
        "Device": {
            "type": "object",
            "description": "Other keys (such as sdk_version) are kept in the device's extra.",
            "required": ["device_id", "os", "model", "app_build", "app_version"],
            "properties": {
                "anonymous_id": string("anonymous_id"),
                "external_id": string("external_id"),
                "device_id": string("device_id", nullable=False, nonempty=True),
                "token": {**string("token"), "description": "Left out: kept; null: cleared."},
                "os": string("os", nullable=False),
                "os_version": string("os_version"),
                "model": string("model", nullable=False),
                "app_build": string("app_build", nullable=False),
                "app_version": string("app_version", nullable=False),
            },
            "anyOf": one_id(),
        },
        "Event": {
            "type": "object",
            "description": "Unknown keys are ignored.",
            "required": ["name"],
            "properties": {
                "name": EVENT_NAME,
                "anonymous_id": string("anonymous_id"),
                "external_id": string("external_id"),
                "data": {"type": ["object", "null"]},
                "properties": {
                    "type": ["object", "null"],
                    "description": "Another name for data (Android SDK); data wins on conflicts.",
                },
                "user": {"anyOf": [ref("Traits"), {"type": "null"}]},
                "message_id": {
                    **string("message_id"),
                    "description": "Deduplicates: an event whose message_id the project already"
                    " has is not stored again (forever), and the request still succeeds.",
                },
                "timestamp": {
                    "description": "The event's time: ISO-8601 with a UTC offset, or epoch"
                    " milliseconds; corrected by X-Sent-At; at most 1 day ahead, not before 2000.",
                    "anyOf": [
                        {"type": "string", "format": "date-time"},
                        {"type": "integer"},
                        {"type": "null"},
                    ],
                },
            },
            "anyOf": one_id(
                [
                    {
                        "required": ["user"],
                        "properties": {"user": {"type": "object", "anyOf": one_id()}},
                    }
                ]
            ),
        },
        "Track": {
            "type": "object",
            "description": "One event, as the Parcelvoy JS SDK's track() sends it. Other keys"
            " are ignored.",
            "required": ["event"],
            "properties": {
                "event": EVENT_NAME,
                "anonymous_id": string("anonymous_id"),
                "external_id": string("external_id"),
                "data": {"type": ["object", "null"]},
                "properties": {"type": ["object", "null"], "description": "Merged under data."},
                "message_id": string("message_id"),
                "timestamp": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
            },
            "anyOf": one_id(),
        },
        "SegmentCall": {
            "type": "object",
            "description": "A Segment call: identify, track, page, screen, alias or group"
            " (accepted and ignored). userId is the external id, anonymousId the anonymous id"
            " (numbers are taken as strings). The other fields are checked as the call's type"
            f" uses them (422 with a pointer): event (track: 1-{ID.max_len} characters), name and"
            f" category (page, screen: at most {ID.max_len}), properties and traits (objects),"
            " previousId (alias), event (track: not one of Pier's own item names),"
            " messageId (events: deduplicates), timestamp (else originalTimestamp) and sentAt"
            " (as on /events), context (an object; its timezone and locale fill an identify's,"
            " its traits (an object) are an identify's traits, overlaid by traits key by key)."
            " Other keys are ignored.",
            "properties": {
                "type": {"enum": list(TYPES)},
                "userId": SEGMENT_ID,
                "anonymousId": SEGMENT_ID,
                "writeKey": {"description": "The key, for analytics.js (without a header)."},
            },
        },
        "SegmentSuccess": {
            "type": "object",
            "required": ["success"],
            "properties": {"success": {"const": True}},
        },
        "SegmentBatch": {
            "description": f"1..{MAX_EVENTS} calls, each with its type; all-or-nothing.",
            "anyOf": [
                SEGMENT_CALLS,
                {
                    "type": "object",
                    "required": ["batch"],
                    "properties": {
                        "batch": SEGMENT_CALLS,
                        "sentAt": {"type": ["string", "integer", "null"]},
                        "context": {"description": "An object: the calls' default context."},
                        "writeKey": {"description": "The key, for analytics.js."},
                    },
                },
            ],
        },
        "Events": {
            "type": "array",
            "items": ref("Event"),
            "minItems": 1,
            "maxItems": MAX_EVENTS,
            "description": "All-or-nothing: one bad event is a 422 and nothing is stored.",
        },
        "Error": {
            "type": "object",
            "required": ["status", "error"],
            "properties": {
                "status": {"const": "error"},
                "error": {"type": "string", "description": "The first problem."},
                "code": {"type": "integer", "description": "1000: bad key; 1007: denied."},
                "errors": {"type": "array", "items": ref("Problem")},
            },
        },
        "Problem": {
            "type": "object",
            "required": ["path", "message"],
            "properties": {
                "path": {"type": "string", "description": "A JSON Pointer into the request."},
                "message": {"type": "string"},
            },
        },
        "StoredDevice": {
            "type": "object",
            "properties": {
                "device_id": {"type": "string"},
                "token": {"type": ["string", "null"]},
                "os": {"type": ["string", "null"]},
                "os_version": {"type": ["string", "null"]},
                "model": {"type": ["string", "null"]},
                "app_build": {"type": ["string", "null"]},
                "app_version": {"type": ["string", "null"]},
                "extra": {"type": "object"},
                "created_at": {"type": "string", "description": TIME},
                "updated_at": {"type": "string", "description": TIME},
            },
        },
        "User": {
            "type": "object",
            "required": ["id", "anonymous_ids", "data", "devices", "created_at"],
            "properties": {
                "id": {"type": "integer"},
                "anonymous_id": {"type": ["string", "null"], "description": "The first one."},
                "anonymous_ids": {"type": "array", "items": {"type": "string"}},
                "external_id": {"type": ["string", "null"]},
                "email": {"type": ["string", "null"]},
                "phone": {"type": ["string", "null"]},
                "timezone": {"type": ["string", "null"]},
                "locale": {"type": ["string", "null"]},
                "data": {"type": "object"},
                "devices": {"type": "array", "items": ref("StoredDevice")},
                "created_at": {"type": "string", "description": TIME},
                "updated_at": {"type": "string", "description": TIME},
            },
        },
        "StoredEvent": {
            "type": "object",
            "required": ["id", "name", "data", "created_at", "received_at", "message_id"],
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "data": {"type": "object"},
                "created_at": {"type": "string", "description": "The event's time. " + TIME},
                "received_at": nullable_time,
                "message_id": {"type": ["string", "null"]},
            },
        },
        **_feed_items(),
        "FeedEvent": {
            "description": "An item of the change feed: a tracked event, or one of Pier's own"
            " items ("
            + ", ".join((*feed.ITEMS, feed.LIST_ENTERED, feed.LIST_EXITED))
            + "), whose data is described by its schema."
            " The items alone rebuild the project's users and devices; user_id,"
            " external_id and anonymous_id are the user's as they are when read.",
            "allOf": [
                ref("StoredEvent"),
                *(
                    {
                        "if": {"required": ["name"], "properties": {"name": {"const": name}}},
                        "then": {"properties": {"data": ref(schema)}},
                    }
                    for name, schema in ITEM_DATA.items()
                ),
            ],
            "type": "object",
            "properties": {
                "user_id": {"type": ["integer", "null"]},
                "external_id": {"type": ["string", "null"]},
                "anonymous_id": {"type": ["string", "null"]},
            },
        },
        "RuleTree": {
            "type": "object",
            "description": "A Parcelvoy rule tree (docs/segments-contract.md): checked whole,"
            " each problem answered with its JSON Pointer; stored and returned as received.",
        },
        "List": {
            "type": "object",
            "required": ["id", "name", "type", "rule", "state", "users_count", "published"],
            "properties": {
                "id": {"type": "integer"},
                "project_id": {"type": "integer"},
                "name": {"type": "string"},
                "type": {"enum": ["dynamic", "static"]},
                "rule": {"anyOf": [ref("RuleTree"), {"type": "null"}]},
                "state": {
                    "enum": ["draft", "loading", "ready"],
                    "description": "loading: being computed; then ready if published, else"
                    " draft. The state never changes who the members are.",
                },
                "progress": {"type": ["number", "null"], "description": "0..1 while loading."},
                "users_count": {"type": "integer"},
                "published": {"type": "boolean"},
                "created_at": {"type": "string", "description": TIME},
                "updated_at": {"type": "string", "description": TIME},
                "error": {
                    "anyOf": [ref("ListError"), {"type": "null"}],
                    "description": "Set while the list's computation fails (it stays loading"
                    " and is tried again, later after each failure); null otherwise.",
                },
            },
        },
        "ListError": {
            "type": "object",
            "required": ["message", "failures", "failed_at", "retry_at"],
            "properties": {
                "message": {"type": "string", "description": "The last failure's error."},
                "failures": {"type": "integer", "description": "Failures in a row."},
                "failed_at": {"type": "string", "description": TIME},
                "retry_at": {
                    "type": "string",
                    "description": "When the next try may start: a minute after the first"
                    " failure, doubling after each, an hour at most.",
                },
            },
        },
        "ListCreate": {
            "type": "object",
            "required": ["name", "type"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "type": {"enum": ["dynamic", "static"]},
                "rule": {
                    "anyOf": [ref("RuleTree"), {"type": "null"}],
                    "description": "Required for dynamic lists, refused for static ones.",
                },
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Ignored."},
                "is_visible": {"type": "boolean", "description": "Ignored."},
            },
        },
        "ListPatch": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "rule": {
                    "anyOf": [ref("RuleTree"), {"type": "null"}],
                    "description": "A new rule: the list is computed again (loading).",
                },
                "published": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Ignored."},
            },
        },
        "ExternalIds": {
            "type": "object",
            "required": ["external_ids"],
            "additionalProperties": False,
            "properties": {
                "external_ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {"type": "string", "minLength": 1},
                }
            },
        },
        "Preview": {
            "type": "object",
            "required": ["rule"],
            "additionalProperties": False,
            "properties": {"rule": ref("RuleTree")},
        },
        "Page": {
            "type": "object",
            "required": ["results", "next_cursor"],
            "properties": {
                "results": {"type": "array"},
                "next_cursor": {"type": ["string", "null"], "description": "null: last page."},
            },
        },
        **destination_schemas(),
    }


# -- responses and parameters ----------------------------------------------------------------
def _error(description: str, headers: dict[str, Schema] | None = None) -> Schema:
    out: Schema = {"description": description, "content": {JSON: {"schema": ref("Error")}}}
    if headers:
        out["headers"] = headers
    return out


def _header(description: str) -> Schema:
    return {"description": description, "schema": {"type": "integer"}}


RETRY_AFTER = {"Retry-After": _header("Seconds to wait before retrying.")}
RATE_HEADERS = {
    **RETRY_AFTER,
    "RateLimit-Limit": _header("The key's requests a second."),
    "RateLimit-Remaining": _header("Requests left now (0)."),
    "RateLimit-Reset": _header("Seconds until a request is accepted again."),
    "RateLimit-Policy": {"description": "N;w=1", "schema": {"type": "string"}},
}

COMMON_ERRORS = {
    "401": _error("Missing, malformed, unknown or revoked key."),
    "429": _error("The key's rate limit is exceeded.", RATE_HEADERS),
}
WRITE_ERRORS = {
    "409": _error("The Idempotency-Key was already used with a different request."),
    "400": _error("The body is not valid JSON, or a gzip body is corrupt."),
    "413": _error("The body is over 1 MiB (after decompression)."),
    "415": _error("A Content-Type other than JSON or text/plain, or an encoding other than gzip."),
    "422": _error("Validation failed: errors lists every problem; nothing was stored."),
    "503": _error(
        "The database is unavailable, the server is busy or shutting down: nothing was"
        " stored; retry after Retry-After.",
        RETRY_AFTER,
    ),
}
SECRET_ERRORS = {"403": _error("A public key on a secret route (code 1007).")}


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}
BY = _query(
    "by",
    "How the path value is looked up (default external_id).",
    {"type": "string", "enum": ["external_id", "anonymous_id"]},
)
REF = {
    "name": "ref",
    "in": "path",
    "required": True,
    "description": "The id as one percent-encoded path segment: %2F is part of the id, / is not;"
    " . and .. as %2E and %2E%2E.",
    "schema": {"type": "string"},
}
CURSOR = _query("cursor", "next_cursor of the previous page.", {"type": "string"})


IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes the request safe to repeat: a repeat (same key, same body) answers"
    " as the first did (204; 200 on the Segment routes) and writes nothing; the same"
    " key with another request is a 409. Kept 7 days.",
    "schema": IDEMPOTENCY_KEY.schema(nullable=False, nonempty=True),
}
DEVICE_ID = {**REF, "name": "device_id"}


def _ingest(summary: str, body: str, *parameters: Schema) -> Schema:
    return {
        "summary": summary,
        "x-pier-scope": "public",
        "parameters": [IDEMPOTENCY_HEADER, *parameters],
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": ref(body)}, "text/plain": {"schema": ref(body)}},
        },
        "responses": {
            "204": {"description": "Committed to the database."},
            **COMMON_ERRORS,
            **WRITE_ERRORS,
        },
    }


def _body(name: str) -> Schema:
    """A Segment-format body: JSON whatever the Content-Type says."""
    schema = {"schema": ref(name)}
    return {"required": True, "content": {JSON: schema, "text/plain": schema, "*/*": schema}}


def _segment(summary: str) -> Schema:
    op = _ingest(summary, "SegmentBatch")
    op["security"] = [{"bearer": []}, {"basic": []}, {}]
    op["description"] = (
        "The key: Authorization Bearer, Basic with the key as user name (the Segment server"
        " libraries), or the body's writeKey (analytics.js). The body is JSON whatever its"
        ' Content-Type. Success is 200 {"success": true}, what Segment-format servers answer:'
        " analytics-python 1.x and rudder-sdk-python take any other status for a failure."
    )
    responses = op["responses"]
    del responses["204"]
    responses["200"] = {
        "description": "Committed to the database.",
        "content": {JSON: {"schema": ref("SegmentSuccess")}},
    }
    responses["415"] = _error("A Content-Encoding other than gzip.")
    return op


def _read(summary: str, params: list[Schema], schema: Schema, *, found: bool = True) -> Schema:
    responses: Schema = {
        "200": {"description": "OK", "content": {JSON: {"schema": schema}}},
        **COMMON_ERRORS,
        **SECRET_ERRORS,
        "422": _error("A query parameter is invalid."),
        "503": _error("The database is unavailable.", RETRY_AFTER),
    }
    if found:
        responses["404"] = _error("No such user in this project.")
    return {
        "summary": summary,
        "x-pier-scope": "secret",
        "parameters": params,
        "responses": responses,
    }


def _page(item: str, extra: dict[str, Schema] | None = None) -> Schema:
    return {
        "allOf": [ref("Page")],
        "type": "object",
        "properties": {"results": {"type": "array", "items": ref(item)}, **(extra or {})},
    }


LIST_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The list's id.",
    "schema": {"type": "integer"},
}


def _results(item: str) -> Schema:
    return {
        "type": "object",
        "required": ["results"],
        "properties": {"results": {"type": "array", "items": ref(item)}},
    }


def _list_op(
    summary: str,
    params: list[Schema],
    schema: Schema | None,
    *,
    body: str | None = None,
    status: str = "200",
    conflict: bool = False,
) -> Schema:
    """An operation of the list routes (secret keys)."""
    op = _read(summary, params, schema or {}, found=bool(params))
    if params:
        op["responses"]["404"] = _error("No such list (or user) in this project.")
    if schema is None or status != "200":
        content = op["responses"].pop("200")
        op["responses"][status] = (
            {"description": "Committed."} if schema is None else content | {"description": "OK"}
        )
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
        op["responses"]["422"] = _error("Invalid body: errors gives a JSON Pointer per problem.")
        op["responses"]["400"] = _error("The body is not valid JSON.")
        op["responses"]["413"] = _error("The body is over 1 MiB.")
        op["responses"]["415"] = _error("A Content-Type other than JSON.")
    if conflict:
        op["responses"]["409"] = _error("The list is dynamic: its rule decides its members.")
    return op


CSV_IMPORT = (
    "Or Parcelvoy's CSV import (text/csv, or the first file of a multipart/form-data upload):"
    " an external_id column is required; email, phone, timezone and locale are profile fields,"
    " created_at is not applied, any other column is a trait (an empty cell leaves it as it"
    " is). Each row creates or updates its user as identify would, and every user joins the"
    " list, in one transaction: all or nothing. A bad row or column is a 422 at"
    f" /rows/{{row}}/{{column}} (row: the line it starts on; the header's is 1); at most"
    f" {list_csv.MAX_ROWS:,} rows."
)


def _csv_import(op: Schema) -> Schema:
    """The add-members operation, with Parcelvoy's CSV import beside the JSON body."""
    csv = {"type": "string", "description": "CSV text, UTF-8, a header row first."}
    upload = {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
    op["requestBody"]["content"]["text/csv"] = {"schema": csv}
    op["requestBody"]["content"]["multipart/form-data"] = {"schema": upload}
    op["description"] = CSV_IMPORT
    op["responses"]["415"] = _error("A Content-Type other than JSON, CSV or a multipart form.")
    return op


def list_paths() -> dict[str, Schema]:
    members = "External ids of the project's users"
    return {
        "/api/client/lists": {
            "get": _list_op("The project's lists.", [], _results("List")),
            "post": _list_op(
                "Create a list (a dynamic one is computed in the background).",
                [],
                ref("List"),
                body="ListCreate",
                status="201",
            ),
        },
        "/api/client/lists/preview": {
            "post": _list_op(
                "How many users a rule holds now, and a few of them; nothing is saved.",
                [],
                {
                    "type": "object",
                    "required": ["count", "sample"],
                    "properties": {
                        "count": {"type": "integer"},
                        "sample": {"type": "array", "items": ref("User")},
                    },
                },
                body="Preview",
            )
        },
        "/api/client/lists/{id}": {
            "get": _list_op("A list.", [LIST_ID], ref("List")),
            "patch": _list_op(
                "Rename, publish, or give a new rule.", [LIST_ID], ref("List"), body="ListPatch"
            ),
            "delete": _list_op("Delete a list and its members.", [LIST_ID], None, status="204"),
        },
        "/api/client/lists/{id}/recount": {
            "post": _list_op("Compute a dynamic list again.", [LIST_ID], ref("List"))
        },
        "/api/client/lists/{id}/users": {
            "get": _list_op(
                "A list's members, newest users first.",
                [LIST_ID, _query("limit", "Page size (default 25).", LIMIT), CURSOR],
                _page("User"),
            ),
            "post": _csv_import(
                _list_op(
                    f"Add members to a static list: {members}, all or none; or a CSV import.",
                    [LIST_ID],
                    None,
                    body="ExternalIds",
                    status="204",
                    conflict=True,
                )
            ),
            "delete": _list_op(
                f"Remove members from a static list: {members}.",
                [LIST_ID],
                None,
                body="ExternalIds",
                status="204",
                conflict=True,
            ),
        },
        "/api/client/users/{ref}/lists": {
            "get": _list_op("The lists a user is a member of.", [REF, BY], _results("List"))
        },
    }


def paths() -> dict[str, Schema]:
    events_post = _ingest(f"Track events (1..{MAX_EVENTS}, all-or-nothing).", "Events")
    events_post["parameters"].append(
        {
            "name": "X-Sent-At",
            "in": "header",
            "required": False,
            "description": "When the client sent the request, by its clock: corrects timestamps.",
            "schema": {"type": "string"},
        }
    )
    feed_get = _read(
        "The project's change feed in storage order: tracked events and Pier's own items"
        " (FeedEvent), from which users and devices can be rebuilt; for export and polling.",
        [
            _query("after", "Continue after this cursor.", {"type": "string"}),
            _query("limit", "Page size (default 100).", LIMIT),
        ],
        _page("FeedEvent", {"has_more": {"type": "boolean"}}),
        found=False,
    )
    segment_batch = _segment("Segment calls in a batch (analytics.js, the server libraries).")
    segment_batch["requestBody"] = _body("SegmentBatch")
    segment_call = _segment("The paths the Segment libraries append to a host.")
    segment_call["parameters"].append(
        {
            "name": "call",
            "in": "path",
            "required": True,
            "description": "b, batch, v1/batch, v1/import: a batch; else one call of that type.",
            "schema": {"enum": sorted(SUB_PATHS)},
        }
    )
    segment_call["requestBody"] = _body("SegmentCall")
    segment_call["responses"]["404"] = _error("Not a path of the Segment libraries.")
    delete = _read("Delete a user with its ids, devices and events.", [REF, BY], {}, found=True)
    delete["responses"].pop("200")
    delete["responses"]["204"] = {"description": "Deleted (committed)."}
    device_delete = _read(
        "Remove one device, whoever holds it: a device_removed item (reason deleted) in the"
        " feed. Idempotency-Key as on the POST routes.",
        [IDEMPOTENCY_HEADER, DEVICE_ID],
        {},
        found=False,
    )
    device_delete["responses"].pop("200")
    device_delete["responses"]["204"] = {"description": "Removed (committed)."}
    device_delete["responses"]["404"] = _error("No such device in this project.")
    device_delete["responses"]["409"] = WRITE_ERRORS["409"]
    device_delete["responses"]["422"] = _error("The Idempotency-Key header is invalid.")
    return {
        "/api/client/identify": {
            "post": _ingest("Identify a user and patch its fields.", "Identify")
        },
        "/api/client/alias": {"post": _ingest("Link an anonymous id to an external id.", "Alias")},
        "/api/client/devices": {
            "post": _ingest(
                "Register or update a device.",
                "Device",
                _query(
                    "extra",
                    "merge (default): the body's other keys are merged into the device's extra;"
                    " replace: they become its whole extra (keys left out are removed).",
                    {"type": "string", "enum": list(EXTRA_MODES)},
                ),
            )
        },
        "/api/client/devices/{device_id}": {"delete": device_delete},
        "/api/client/events": {"post": events_post, "get": feed_get},
        "/api/client/track": {"post": _ingest("Track one event (Parcelvoy JS SDK).", "Track")},
        "/api/client/segment": {"post": segment_batch},
        "/api/client/segment/{call}": {"post": segment_call},
        "/api/client/users": {
            "get": _read(
                "The project's users, newest first.",
                [
                    _query("limit", "Page size (default 25).", LIMIT),
                    CURSOR,
                    _query(
                        "q", "An external id, anonymous id, email or phone.", {"type": "string"}
                    ),
                ],
                _page("User"),
                found=False,
            )
        },
        "/api/client/users/{ref}": {
            "get": _read("A user.", [REF, BY], ref("User")),
            "delete": delete,
        },
        "/api/client/users/{ref}/events": {
            "get": _read(
                "A user's events, newest first (by created_at).",
                [REF, BY, _query("limit", "Page size (default 25).", LIMIT), CURSOR],
                _page("StoredEvent"),
            )
        },
        "/api/client/users/{ref}/devices": {
            "get": _read(
                "A user's devices.",
                [REF, BY],
                {
                    "type": "object",
                    "required": ["results"],
                    "properties": {"results": {"type": "array", "items": ref("StoredDevice")}},
                },
            )
        },
        **list_paths(),
        **destination_paths(),
    }


# -- destinations (docs/destinations.md) -----------------------------------------------------
def destination_schemas() -> dict[str, Schema]:
    text = {"type": ["string", "null"]}
    time = {"type": ["string", "null"], "format": "date-time", "description": TIME}
    globs = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 255}}
    return {
        "NewDestination": {
            "type": "object",
            "required": ["kind", "url"],
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": ["webhook", "parcelvoy", "pier", "segment"]},
                "url": {"type": "string", "description": "http or https."},
                "key": {**text, "description": "The target's key (parcelvoy, pier, segment)."},
                "secret_key": {**text, "description": "pier: the target's secret key."},
                "name": {"type": ["string", "null"], "maxLength": 255},
                "batch_size": {"type": ["integer", "null"], "minimum": 1, "maximum": 5000},
                "max_bytes": {"type": ["integer", "null"], "minimum": 1024, "maximum": 1048576},
                "retry_window": {"type": ["number", "null"], "minimum": 0},
                "only": globs,
                "skip": globs,
                "from": {"enum": ["beginning", "now"]},
            },
        },
        "Destination": {
            "type": "object",
            "description": "Keys and secrets appear only as their first characters; a new"
            " webhook's signing_secret is given whole in the answer that created it, only.",
            "properties": {
                "id": {"type": "integer"},
                "kind": {"type": "string"},
                "name": text,
                "url": {"type": "string"},
                "key": text,
                "secret_key": text,
                "signing_secret": text,
                "state": {"enum": ["active", "paused"]},
                "cursor": {**text, "description": "A feed cursor: the last item delivered."},
                "lag_items": {"type": "integer"},
                "lag_seconds": {"type": "number"},
                "delivered": {"type": "integer"},
                "dead_letters": {"type": "integer"},
                "last_success_at": time,
                "last_error": text,
                "last_error_at": time,
                "only": globs,
                "skip": globs,
            },
        },
        "DeadLetter": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "item": ref("FeedEvent"),
                "answer": {"type": "string", "description": "What the destination answered."},
                "created_at": time,
            },
        },
    }


def destination_paths() -> dict[str, Schema]:
    one = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

    def op(summary: str, schema: Schema | None, body: Schema | None = None) -> Schema:
        out = _read(summary, [] if summary.startswith("The project") else [one], schema or {})
        out["responses"]["404"] = _error("No such destination in this project.")
        if schema is None:
            out["responses"].pop("200")
            out["responses"]["204"] = {"description": "Done."}
        if body is not None:
            out["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
            out["responses"]["400"] = _error("The body is not valid JSON.")
        return out

    results = {
        "type": "object",
        "required": ["results"],
        "properties": {"results": {"type": "array", "items": ref("Destination")}},
    }
    add = op("The project's destinations: add one.", ref("Destination"), ref("NewDestination"))
    add["responses"]["201"] = add["responses"].pop("200")
    add["responses"]["422"] = _error("Bad input: errors lists every problem; nothing created.")
    add["responses"].pop("404")
    listing = op("The project's destinations.", results)
    listing["responses"].pop("404")
    replay = {
        "type": "object",
        "required": ["from"],
        "properties": {"from": {"type": "string", "description": "beginning, a cursor, a time."}},
    }
    redeliver = {
        "type": "object",
        "properties": {"all": {"type": "boolean"}, "dead_letter": {"type": "integer"}},
    }
    letters = {
        "type": "object",
        "properties": {"results": {"type": "array", "items": ref("DeadLetter")}},
    }
    base = "/api/client/destinations"
    return {
        base: {"get": listing, "post": add},
        base + "/{id}": {
            "get": op("A destination.", ref("Destination")),
            "delete": op("Remove a destination and its dead letters.", None),
        },
        base + "/{id}/pause": {
            "post": op("Pause delivery (the cursor stays).", ref("Destination"))
        },
        base + "/{id}/resume": {"post": op("Resume delivery.", ref("Destination"))},
        base + "/{id}/replay": {
            "post": op(
                "Rewind: everything after the point is sent again.", ref("Destination"), replay
            )
        },
        base + "/{id}/dead-letters": {"get": op("Items that failed alone.", letters)},
        base + "/{id}/redeliver": {
            "post": op("Send dead letters again, each alone.", {"type": "object"}, redeliver)
        },
    }


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pier Client API",
            "version": "1",
            "description": "Customer-data ingestion speaking the Parcelvoy Client API."
            " A 204 is sent only after the data is committed.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Segment routes only: the key as the user name.",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Public keys (pk_) may call the four POST ingestion endpoints;"
                    " secret keys (sk_) also the read and management routes.",
                },
            },
        },
    }


@functools.cache
def encoded() -> bytes:
    return msgspec.json.encode(document())


async def serve(request: Request) -> Response:
    """GET /api/openapi.json: no key needed."""
    return Response(encoded(), media_type=JSON)
