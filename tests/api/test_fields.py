"""Each string field is declared once (api/fields.py): the fast path's msgspec types, the slow
path's messages and the OpenAPI document all say the same limit for it."""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect
import pytest

from pier.api import fields, openapi, schemas, validation

NOW = 1_790_000_000_000


def wire_limits(struct: type) -> dict[str, int]:
    """max_length of each string field of a msgspec Struct, as msgspec sees it."""
    limits = {}
    for f in msgspec.inspect.type_info(struct).fields:
        kind = f.type
        for option in kind.types if isinstance(kind, msgspec.inspect.UnionType) else [kind]:
            if isinstance(option, msgspec.inspect.StrType) and option.max_length is not None:
                limits[f.name] = option.max_length
    return limits


def openapi_limits(schema: str) -> dict[str, int]:
    props: dict[str, Any] = openapi.document()["components"]["schemas"][schema]["properties"]
    return {k: p["maxLength"] for k, p in props.items() if "maxLength" in p}


@pytest.mark.parametrize(
    ("struct", "schema"),
    [(schemas.WireIdentify, "Identify"), (schemas.WireEvent, "Event")],
)
def test_the_fast_path_and_the_openapi_document_take_the_declared_limits(
    struct: type, schema: str
) -> None:
    declared = {name: fields.field(name).max_len for name in wire_limits(struct)}
    assert wire_limits(struct) == declared
    assert openapi_limits(schema) == declared


@pytest.mark.parametrize("name", ["anonymous_id", "external_id", *fields.PROFILE])
def test_the_slow_path_refuses_one_past_the_declared_limit_with_its_message(name: str) -> None:
    limit = fields.field(name).max_len
    body = {"external_id": "u", name: "x" * limit}
    if name == "timezone":
        body[name] = "UTC"  # (a valid zone: its length is far below the limit)
    assert validation.problems_identify(body) == []
    body[name] = "x" * (limit + 1)
    (problem,) = validation.problems_identify(body)
    assert (problem.path, problem.message) == (
        f"/{name}",
        f"{name} must be at most {limit} characters",
    )
    events = [{"name": "e", "external_id": "u", "user": body}]
    (problem,) = validation.problems_events(events, NOW)
    assert problem.path == f"/0/user/{name}"
