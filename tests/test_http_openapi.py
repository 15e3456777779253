"""The OpenAPI document derived from the contract models and the router must describe the same API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import hdrs, web
from jsonschema import Draft202012Validator

from core.clock import FakeClock
from core.db import Database
from node.counter.contract import CounterLimits
from node.counter.users import UserStore
from node.http import build_http_app
from node.http.openapi import build_openapi
from node.web import register as register_pages

OPENAPI = build_openapi(CounterLimits())
METHODS = {"get", "post", "put", "delete", "patch"}


@pytest.fixture
def app() -> Iterator[web.Application]:
    db = Database("sqlite://")
    # The routes are all this test reads; nothing is ever called on the backend.
    yield build_http_app(object(), UserStore(db, FakeClock()), FakeClock(), CounterLimits())  # type: ignore[arg-type]
    db.close()


# The document describes the JSON API and the operational paths monitoring reads; the HTML
# pages (node/web/) are for people, not clients, and are compared separately below.
OPERATIONAL = {"/healthz", "/metrics"}


def _served(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != hdrs.METH_HEAD and route.resource is not None
    }


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path in OPERATIONAL


def test_every_route_is_documented_and_every_documented_route_exists(app: web.Application) -> None:
    served = {(method, path) for method, path in _served(app) if _is_api(path)}
    documented = {
        (method, path) for path, item in OPENAPI["paths"].items() for method in item if method in METHODS
    }
    assert served == documented


def test_every_route_left_out_of_the_document_is_a_page(app: web.Application) -> None:
    """Nothing escapes the document by not being under /api/: what is left out is exactly
    what node/web registers, and none of it is under /api/."""
    db = Database("sqlite://")
    pages = web.Application()
    register_pages(pages, object(), UserStore(db, FakeClock()), FakeClock(), CounterLimits())  # type: ignore[arg-type]
    db.close()
    assert {r for r in _served(app) if not _is_api(r[1])} == _served(pages)
    assert not any(_is_api(path) for _, path in _served(pages))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_reference_resolves_and_every_schema_is_used() -> None:
    schemas = OPENAPI["components"]["schemas"]
    refs = {ref.removeprefix("#/components/schemas/") for ref in _refs(OPENAPI)}
    assert refs == set(schemas)
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    json.dumps(OPENAPI)


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]})


def test_schemas_accept_what_the_api_accepts_and_refuse_what_it_refuses() -> None:
    submit = {
        "service_id": "js-001",
        "applicant": {"name": "张三", "id_number": "11010519491231002X"},
        "form": {"child_name": "张小三"},
        "attachments": [
            {
                "material": "出生医学证明",
                "filename": "b.pdf",
                "content_type": "application/pdf",
                "data": base64.b64encode(b"%PDF").decode(),
            }
        ],
        "consent": True,
    }
    assert _validator("SubmitApplication").is_valid(submit)
    assert not _validator("SubmitApplication").is_valid({**submit, "consnet": True})
    assert not _validator("SubmitApplication").is_valid({k: v for k, v in submit.items() if k != "consent"})
    assert _validator("Decision").is_valid({"decision": "reject", "reason": "材料不全"})
    assert not _validator("Decision").is_valid({"decision": "maybe"})
