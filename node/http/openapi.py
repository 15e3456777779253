"""The OpenAPI 3.1 description of the HTTP front, written by hand.

Written rather than generated so the document is the contract we mean, reviewed like code;
a test keeps it and the router in step, route for route.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.cases.statuses import TO_WIRE
from node.http.session_routes import OPENAPI_PATH

routes = web.RouteTableDef()

_STATUSES = list(TO_WIRE)  # one list of statuses: the wire enum's


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], properties: dict[str, Any], *, closed: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": "problem",
            "content": {"application/problem+json": {"schema": _ref("Problem")}},
        }
        for s in statuses
    }


_TEXT = {"type": "string", "minLength": 1, "maxLength": 512}
_BASE64 = {"type": "string", "contentEncoding": "base64"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}

_SCHEMAS: dict[str, Any] = {
    "Problem": _obj(
        ["type", "title", "status"],
        {
            "type": {"type": "string", "examples": ["urn:yrd:problem:invalid_input"]},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "code": {"type": "string", "description": "stable machine-readable reason"},
            "detail": {"type": "string"},
            "field": {"type": "string", "description": "the input at fault, e.g. attachments[1].data"},
            "rule_id": {"type": "string", "description": "the deciding policy rule (policy_denied)"},
        },
        closed=False,
    ),
    "SessionRequest": _obj(
        ["username", "password"], {"username": {"type": "string"}, "password": {"type": "string"}}
    ),
    "Session": _obj(
        ["token", "expires_at", "role"],
        {
            "token": {"type": "string"},
            "expires_at": {"type": "string", "format": "date-time"},
            "role": {"enum": ["clerk", "operator"]},
        },
    ),
    "Material": _obj(
        ["name", "required"], {"name": {"type": "string"}, "required": {"type": "boolean"}}, closed=False
    ),
    "Service": _obj(
        ["id", "name", "name_en", "owner", "department", "time_limit_days", "form_schema", "materials"],
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "name_en": {"type": "string"},
            "owner": {"type": "string", "description": "GB/T 2260 division code of the owning jurisdiction"},
            "department": {"type": "string"},
            "time_limit_days": {"type": "integer"},
            "form_schema": {"type": "object", "description": "JSON Schema the form must satisfy"},
            "materials": {"type": "array", "items": _ref("Material")},
        },
        closed=False,
    ),
    "Attachment": _obj(
        ["material", "filename", "content_type", "data"],
        {"material": _TEXT, "filename": _TEXT, "content_type": _TEXT, "data": _BASE64},
    ),
    "Document": _obj(
        ["name", "content_type", "data"], {"name": _TEXT, "content_type": _TEXT, "data": _BASE64}
    ),
    "SubmitApplication": _obj(
        ["service_id", "applicant", "form", "consent"],
        {
            "service_id": _TEXT,
            "applicant": _obj(["name", "id_number"], {"name": _TEXT, "id_number": _TEXT}),
            "form": {"type": "object", "description": "valid under the service's form_schema"},
            "attachments": {"type": "array", "maxItems": 10, "items": _ref("Attachment")},
            "consent": {"type": "boolean"},
            "purpose": {**_TEXT, "default": "service-delivery"},
        },
    ),
    "Status": {"enum": _STATUSES},
    "Submitted": _obj(
        ["id", "owner_node", "status"],
        {"id": {"type": "string"}, "owner_node": {"type": "string"}, "status": _ref("Status")},
        closed=False,
    ),
    "HistoryEntry": _obj(
        ["status", "reason", "at"],
        {
            "status": _ref("Status"),
            "sequence": {
                "type": "integer",
                "description": "order of the change: -1 held, 0 submitted, owner's changes from 1",
            },
            "reason": {"type": "string"},
            "rule_id": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
        },
        closed=False,
    ),
    "Application": _obj(
        [
            "id",
            "service_id",
            "owner_node",
            "status",
            "submitted_at",
            "overdue",
            "history",
            "receipts",
            "documents",
        ],
        {
            "id": {"type": "string"},
            "service_id": {"type": "string"},
            "owner_node": {"type": "string"},
            "status": _ref("Status"),
            "submitted_at": {"type": "string", "format": "date-time"},
            "overdue": {"type": "boolean"},
            "history": {"type": "array", "items": _ref("HistoryEntry")},
            "receipts": {
                "type": "array",
                "items": {"type": "object", "description": "the owner's signed receipts"},
            },
            "documents": {"type": "array", "items": _ref("Document")},
        },
        closed=False,
    ),
    "WorkItem": _obj(
        ["id", "status"],
        {
            "id": {"type": "string"},
            "service_id": {"type": "string"},
            "status": _ref("Status"),
            "submitted_at": {"type": "string", "format": "date-time"},
            "overdue": {"type": "boolean"},
        },
        closed=False,
    ),
    "Decision": _obj(
        ["decision"],
        {
            "decision": {"enum": ["approve", "reject", "need_materials"]},
            "reason": {"type": "string", "maxLength": 4000, "description": "required unless approving"},
            "documents": {"type": "array", "maxItems": 10, "items": _ref("Document")},
        },
    ),
}

_PATHS: dict[str, Any] = {
    "/api/v1/session": {
        "post": {
            "summary": "Log in; returns a bearer token valid for 12 hours",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SessionRequest")}},
            },
            "responses": {"200": _json(_ref("Session"), "logged in"), **_problems(400, 401)},
        },
        "delete": {
            "summary": "Log out: the bearer token stops working at once",
            "responses": {"204": {"description": "logged out"}, **_problems(401)},
        },
    },
    "/api/v1/services": {
        "get": {
            "summary": "Search the federated catalogue",
            "parameters": [
                {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "free text"},
                {
                    "name": "owner",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "division prefix",
                },
            ],
            "responses": {
                "200": _json(
                    _obj(["services"], {"services": {"type": "array", "items": _ref("Service")}}), "found"
                ),
                **_problems(401),
            },
        }
    },
    "/api/v1/applications": {
        "post": {
            "summary": "Submit an application; repeating an Idempotency-Key returns the same application",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 128,
                        "pattern": "^[\\x20-\\x7e]+$",
                    },
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SubmitApplication")}},
            },
            "responses": {
                "201": _json(_ref("Submitted"), "stored"),
                **_problems(400, 401, 403, 404, 409, 413),
            },
        }
    },
    "/api/v1/applications/{id}": {
        "get": {
            "summary": "Status, history, receipts and result documents of one application",
            "parameters": [_ID],
            "responses": {"200": _json(_ref("Application"), "the application"), **_problems(401, 403, 404)},
        }
    },
    "/api/v1/applications/{id}/decision": {
        "post": {
            "summary": "The owner's decision on an application in its work queue",
            "parameters": [_ID],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Decision")}}},
            "responses": {
                "200": _json(_ref("WorkItem"), "decided; the application's new state"),
                **_problems(400, 401, 403, 404, 409, 413),
            },
        }
    },
    "/api/v1/applications/{id}/release": {
        "post": {
            "summary": "A second clerk releases an application a policy held for four-eyes approval",
            "parameters": [_ID],
            "responses": {
                "200": _json(_ref("Submitted"), "released; the application is on its way"),
                **_problems(401, 403, 404, 409),
            },
        }
    },
    "/api/v1/worklist": {
        "get": {
            "summary": "Applications this node owns that wait for a decision",
            "responses": {
                "200": _json(
                    _obj(["applications"], {"applications": {"type": "array", "items": _ref("WorkItem")}}),
                    "the queue",
                ),
                **_problems(401),
            },
        }
    },
    "/api/v1/policy/decisions": {
        "get": {
            "summary": "The policy decision log, newest first (operators only)",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
                {
                    "name": "since",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "ms",
                },
            ],
            "responses": {
                "200": _json(
                    _obj(["decisions"], {"decisions": {"type": "array", "items": {"type": "object"}}}), "log"
                ),
                **_problems(400, 401, 403),
            },
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }
    },
    "/healthz": {
        "get": {
            "summary": "Whether the node can serve; fails closed",
            "security": [],
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"status": {"enum": ["ok", "degraded"]}}},
                    "healthy; degraded names stalled_peers, links that make no progress",
                ),
                "503": _json({"type": "object", "properties": {"status": {"const": "fail"}}}, "unhealthy"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}},
        }
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "yrd-gateway counter and operator API", "version": "1"},
    "security": [{"bearer": []}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


@routes.get(OPENAPI_PATH)
async def openapi_document(_request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)
