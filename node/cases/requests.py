"""What a person asks of the node, as plain values both doors (HTTP and the gRPC counter)
build and the case code consumes: who is asking, a submission, a decision's documents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established by a bearer token."""

    username: str
    role: str  # one of node.counter.users.ROLES
    department: str = ""  # an owner clerk's department, as the catalogue names it


@dataclass(frozen=True)
class Attachment:
    material: str  # the name of the service's material this file satisfies
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Document:
    """A result document a department attaches to its decision."""

    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class SubmitRequest:
    service_id: str
    applicant_name: str
    applicant_id_number: str
    form: dict[str, Any]
    attachments: tuple[Attachment, ...]
    consent: bool
    purpose: str = "service-delivery"
    # sha256 of the request as the client sent it: a retry under the same idempotency key
    # must repeat it, or it is a different request reusing the key.
    digest: str = ""
