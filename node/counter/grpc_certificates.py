"""E-certificates at the gRPC counter: the verdict of ``POST /api/v1/certificates/verify`` as
a message. The request is the same one-field document, checked by the same contract
(node/counter/certificate_contract.py), so the doors cannot disagree on what is refused."""

from __future__ import annotations

from typing import Any

from yrd.counter.v1 import counter_pb2

_SCALARS = (
    "certificate_id",
    "name",
    "name_en",
    "issued_at_ms",
    "issuer",
    "department",
    "service_id",
    "application_id",
    "key_id",
)


def verify_document(request: counter_pb2.VerifyCertificateRequest) -> dict[str, Any]:
    return {"certificate": request.certificate}


def verdict_message(verdict: dict[str, Any]) -> counter_pb2.VerifyCertificateResponse:
    out = counter_pb2.VerifyCertificateResponse(
        valid=verdict["valid"], reason=verdict["reason"], detail=verdict["detail"]
    )
    cert = verdict["certificate"]
    if cert is not None:
        view = out.certificate
        for name in _SCALARS:
            setattr(view, name, cert[name])
        if cert["valid_until_ms"] is not None:  # absent: does not expire
            view.valid_until_ms = cert["valid_until_ms"]
        view.holder.CopyFrom(counter_pb2.CertificateHolder(**cert["holder"]))
        view.fields.extend(counter_pb2.CertifiedField(**f) for f in cert["fields"])
    return out
