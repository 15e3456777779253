"""The OpenAPI 3.1 description of the HTTP front, derived from the contract's models.

Bodies come from :mod:`node.counter.contract` (the models that also validate them), so the
document cannot drift from what the server accepts; this module only says which route takes
and answers which model, and every 4xx a route can answer. A test keeps it and the router in
step, route for route.
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from node.counter import certificate_contract, clue_contract, contract, sharing_contract
from node.counter.contract import CounterLimits
from node.http.context import LIMITS
from node.http.session_routes import OPENAPI_PATH

routes = web.RouteTableDef()

_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "a retry with the same key and body returns the stored application; "
    "the same key with another body is refused (422 idempotency_key_reused)",
    "schema": {"type": "string", "pattern": contract.IDEMPOTENCY_KEY_PATTERN},
}
# What the front itself can answer before a handler runs: a missing or dead token (401), a
# body past client_max_size (413), a body that is not JSON (415).
_AUTH = (401,)
_BODY = (400, 413, 415)


class _Builder:
    """Collects the models the paths name, so components hold exactly those."""

    def __init__(self) -> None:
        self.models: dict[type[BaseModel], str] = {}

    def ref(self, model: type[BaseModel], mode: str = "serialization") -> dict[str, str]:
        self.models.setdefault(model, mode)
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def body(self, model: type[BaseModel]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": self.ref(model, "validation")}}}

    def answer(self, model: type[BaseModel], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": self.ref(model)}}}

    def problems(self, *statuses: int) -> dict[str, Any]:
        problem = {"application/problem+json": {"schema": self.ref(contract.Problem)}}
        return {str(s): {"description": "problem", "content": problem} for s in sorted(set(statuses))}

    def schemas(self) -> dict[str, Any]:
        _, top = models_json_schema(
            [(m, mode) for m, mode in self.models.items()],  # type: ignore[misc]
            ref_template="#/components/schemas/{model}",
        )
        schemas: dict[str, Any] = top["$defs"]
        return schemas


def _paths(b: _Builder) -> dict[str, Any]:
    return {
        "/api/v1/session": {
            "post": {
                "summary": "Log in; returns a bearer token valid for 12 hours",
                "security": [],
                "requestBody": b.body(contract.SessionRequest),
                "responses": {"200": b.answer(contract.Session, "logged in"), **b.problems(*_BODY, 401, 429)},
            },
            "delete": {
                "summary": "Log out: the bearer token stops working at once",
                "responses": {"204": {"description": "logged out"}, **b.problems(*_AUTH)},
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
                "responses": {"200": b.answer(contract.Services, "found"), **b.problems(*_AUTH, 403)},
            }
        },
        "/api/v1/applications": {
            "post": {
                "summary": "Submit an application; repeating an Idempotency-Key returns the same application",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": b.body(contract.SubmitApplication),
                "responses": {
                    "201": b.answer(contract.Submitted, "stored (or stored before under this key)"),
                    **b.problems(*_BODY, *_AUTH, 403, 404, 409, 422),
                },
            }
        },
        "/api/v1/applications/{id}": {
            "get": {
                "summary": "Status, history, receipts and result documents of one application",
                "parameters": [_ID],
                "responses": {
                    "200": b.answer(contract.Application, "the application"),
                    **b.problems(*_AUTH, 403, 404),
                },
            }
        },
        "/api/v1/applications/{id}/decision": {
            "post": {
                "summary": "The owner's decision on an application in its work queue",
                "parameters": [_ID],
                "requestBody": b.body(contract.Decision),
                "responses": {
                    "200": b.answer(contract.WorkItem, "decided; the application's new state"),
                    **b.problems(*_BODY, *_AUTH, 403, 404, 409),
                },
            }
        },
        "/api/v1/applications/{id}/release": {
            "post": {
                "summary": "A second clerk releases an application a policy held for four-eyes approval",
                "parameters": [_ID],
                "responses": {
                    "200": b.answer(contract.Submitted, "released; the application is on its way"),
                    **b.problems(*_AUTH, 403, 404, 409),
                },
            }
        },
        "/api/v1/applications/{id}/components/{component}/resubmit": {
            "post": {
                "summary": "Resubmit a bundle's failed part, corrected; the other parts are not redone",
                "parameters": [
                    _ID,
                    {"name": "component", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "requestBody": b.body(contract.ResubmitComponent),
                "responses": {
                    "200": b.answer(contract.Resubmitted, "sent to the bundle's lead"),
                    **b.problems(*_BODY, *_AUTH, 403, 404, 409),
                },
            }
        },
        "/api/v1/worklist": {
            "get": {
                "summary": "Applications this node owns that wait for a decision",
                "responses": {"200": b.answer(contract.Worklist, "the queue"), **b.problems(*_AUTH, 403)},
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
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                        "description": "ms",
                    },
                ],
                "responses": {"200": b.answer(contract.Decisions, "log"), **b.problems(400, *_AUTH, 403)},
            }
        },
        # -- supervision clues (docs/clues.md) --
        "/api/v1/clues": {
            "post": {
                "summary": "Take a supervision clue in; it goes to the member that owns its region",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": b.body(clue_contract.SubmitClue),
                "responses": {
                    "201": b.answer(clue_contract.ClueSubmitted, "stored (or stored before under this key)"),
                    **b.problems(*_BODY, *_AUTH, 403, 404, 422),
                },
            },
            "get": {
                "summary": "A regulator's queue of open clue tasks, or the clues taken in here",
                "responses": {"200": b.answer(clue_contract.Clues, "the clues"), **b.problems(*_AUTH, 403)},
            },
        },
        "/api/v1/clues/{id}": {
            "get": {
                "summary": "A clue with its tasks and its history, every step of the closed loop",
                "parameters": [_ID],
                "responses": {
                    "200": b.answer(clue_contract.Clue, "the clue"),
                    **b.problems(*_AUTH, 403, 404),
                },
            }
        },
        **{
            f"/api/v1/clues/{{id}}/{action}": {
                "post": {
                    "summary": summary,
                    "parameters": [_ID],
                    "requestBody": b.body(model),
                    "responses": {
                        "200": b.answer(clue_contract.Clue, "done; the clue as it now stands"),
                        **b.problems(*_BODY, *_AUTH, 403, 404, 409),
                    },
                }
            }
            for action, model, summary in (
                ("acknowledge", clue_contract.ClueAction, "The department acknowledges its task"),
                (
                    "findings",
                    clue_contract.ClueFindings,
                    "The department records findings and any rectification",
                ),
                (
                    "close",
                    clue_contract.ClueClose,
                    "The department closes its task; the clue closes with the last",
                ),
            )
        },
        # -- e-certificates (docs/protocol.md, 15) --
        "/api/v1/certificates/verify": {
            "post": {
                "summary": "Check an e-certificate offline against this node's manifest; "
                "a refused certificate is an answer (valid false, reason), not an error",
                "requestBody": b.body(certificate_contract.VerifyCertificate),
                "responses": {
                    "200": b.answer(certificate_contract.CertificateVerdict, "the verdict"),
                    **b.problems(*_BODY, *_AUTH, 403),
                },
            }
        },
        **_sharing_paths(b),
        OPENAPI_PATH: {
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
                    "200": {
                        "description": "healthy; degraded names stalled_peers, links that make no progress",
                        "content": {"application/json": {"schema": _health("ok", "degraded")}},
                    },
                    "503": {
                        "description": "unhealthy",
                        "content": {"application/json": {"schema": _health("fail")}},
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {"description": "text exposition format", "content": {"text/plain": {}}}
                },
            }
        },
    }


def _param(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": "string", **schema}}


def _sharing_paths(b: _Builder) -> dict[str, Any]:
    """Data sharing (docs/sharing.md)."""
    s = sharing_contract
    return {
        "/api/v1/data-resources": {
            "get": {
                "summary": "Search the federated data catalogue",
                "parameters": [
                    _param("q", "free text"),
                    _param("holder", "division prefix of the holder", pattern=r"^\d{2,12}$"),
                    _param("sharing", "sharing class", enum=["unconditional", "conditional", "not_shared"]),
                ],
                "responses": {"200": b.answer(s.DataResources, "found"), **b.problems(*_AUTH, 400, 403)},
            }
        },
        "/api/v1/queries": {
            "post": {
                "summary": "Ask the holders of several resources about one subject; the merged view",
                "requestBody": b.body(s.QueryIn),
                "responses": {
                    "200": b.answer(s.MergedView, "every holder answered, refused or is missing"),
                    **b.problems(*_BODY, *_AUTH, 403),
                },
            }
        },
        "/api/v1/data-requests": {
            "post": {
                "summary": "Ask the holder of a conditional resource for a grant",
                "parameters": [
                    {
                        **_IDEMPOTENCY_KEY,
                        "required": False,
                        "description": "optional: a retry with the same key and body returns the request "
                        "made the first time; the same key with another body is refused (422)",
                    }
                ],
                "requestBody": b.body(s.DataRequestBody),
                "responses": {
                    "201": b.answer(s.DataRequestView, "sent to the holder"),
                    **b.problems(*_BODY, *_AUTH, 403, 404, 422),
                },
            },
            "get": {
                "summary": "Data requests this node sent, and those it received",
                "responses": {"200": b.answer(s.DataRequests, "the requests"), **b.problems(*_AUTH, 403)},
            },
        },
        "/api/v1/data-requests/{id}/decision": {
            "post": {
                "summary": "The holder department approves (perhaps fewer fields, a shorter term) or refuses",
                "parameters": [_ID],
                "requestBody": b.body(s.DecisionBody),
                "responses": {
                    "200": b.answer(s.DataRequestView, "decided; the asker is told"),
                    **b.problems(*_BODY, *_AUTH, 403, 404, 409),
                },
            }
        },
        "/api/v1/grants/{id}/revoke": {
            "post": {
                "summary": "The holder department revokes a grant; later queries are refused",
                "parameters": [_ID],
                "requestBody": b.body(s.RevokeBody),
                "responses": {
                    "200": b.answer(s.DataRequestView, "revoked; the asker is told"),
                    **b.problems(*_BODY, *_AUTH, 403, 404, 409),
                },
            }
        },
        "/api/v1/disclosures": {
            "get": {
                "summary": "The disclosure log: what this node disclosed (holder) and asked (asker)",
                "parameters": [
                    _param(
                        "subject_id", "one person's or company's only (required of a clerk)", maxLength=18
                    ),
                    _param("subject_kind", "the subject's kind", enum=["person", "company"]),
                    _param("side", "holder or asker records only", enum=["asker", "holder"]),
                ],
                "responses": {"200": b.answer(s.Disclosures, "newest first"), **b.problems(*_AUTH, 400, 403)},
            }
        },
        "/api/v1/data-meter": {
            "get": {
                "summary": "Calls per day, resource, asker and outcome at this holder",
                "parameters": [
                    _param("since", "first day (CST)", format="date"),
                    _param("until", "last day (CST)", format="date"),
                    _param("resource", "one resource"),
                ],
                "responses": {"200": b.answer(s.Meter, "the meter"), **b.problems(*_AUTH, 400, 403)},
            }
        },
    }


def _plain_json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _health(*statuses: str) -> dict[str, Any]:
    return {"type": "object", "required": ["status"], "properties": {"status": {"enum": list(statuses)}}}


@functools.lru_cache(maxsize=4)
def build_openapi(limits: CounterLimits) -> dict[str, Any]:
    """The document for a node with these limits (counts are configurable, so is the doc)."""
    b = _Builder()
    paths = _paths(b)
    schemas = b.schemas()
    schemas["SubmitApplication"]["properties"]["attachments"]["maxItems"] = limits.max_attachments
    schemas["Decision"]["properties"]["documents"]["maxItems"] = limits.max_attachments
    return {
        "openapi": "3.1.0",
        "info": {"title": "yrd-gateway counter and operator API", "version": "1"},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@routes.get(OPENAPI_PATH)
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app[LIMITS]))
