"""GET /api/openapi.json: served without a key, OpenAPI 3.1, valid JSON Schemas, and describing
exactly the /api/client routes the app serves (test_fuzz.py checks the answers against it)."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
from starlette.routing import Route

from conftest import LiveServer
from pier.api.openapi import document
from pier.app import routes


def test_served_without_a_key(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}/api/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.json() == json.loads(json.dumps(document()))
    assert r.json()["openapi"] == "3.1.0"


def test_describes_every_client_route_and_no_other() -> None:
    served = {
        (method.lower(), re.sub(r":\w+}", "}", route.path))  # {ref:ref} is {ref}
        for route in routes()
        if isinstance(route, Route) and route.path.startswith("/api/client/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    doc = document()
    described = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert described == served


def test_schemas_are_valid_json_schema_and_refs_resolve() -> None:
    doc = document()
    text = json.dumps(doc)
    for name in doc["components"]["schemas"]:
        jsonschema.Draft202012Validator.check_schema(doc["components"]["schemas"][name])
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], ref
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "responses" in op and op["responses"], (method, path)
            for status, response in op["responses"].items():
                assert status.isdigit() and "description" in response


def test_documented_limits_match_the_validators() -> None:
    schemas = document()["components"]["schemas"]
    event = schemas["Event"]["properties"]
    assert schemas["Events"]["maxItems"] == 1000
    assert event["name"]["maxLength"] == 255 and event["name"]["minLength"] == 1
    assert schemas["Identify"]["properties"]["phone"]["maxLength"] == 64
    assert schemas["Identify"]["properties"]["timezone"]["maxLength"] == 50
    assert schemas["Identify"]["additionalProperties"] is False


def test_the_csv_import_of_a_static_list_is_documented() -> None:
    op = document()["paths"]["/api/client/lists/{id}/users"]["post"]
    assert set(op["requestBody"]["content"]) == {
        "application/json",
        "text/csv",
        "multipart/form-data",
    }
    assert "/rows/{row}/{column}" in op["description"] and "409" in op["responses"]
