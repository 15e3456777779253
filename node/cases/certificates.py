"""Issuing e-certificates (电子证照) at the owner when it approves (docs/protocol.md, 15).

A matter that declares named results (a licence's credit code, a certificate's number)
makes a certificate on approval: the results are what it attests, the applicant (or, when
a credit code is assigned, the enterprise) is its holder. It travels to the origin as one
more result document, so no new route or table is needed and the counter can hand it over
as a file or a QR code that any member verifies offline (registry/certificates.py).
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timedelta, timezone

from yrd.catalogue.v1 import catalogue_pb2
from yrd.certificate.v1.certificate_pb2 import (
    HOLDER_KIND_ORGANISATION,
    HOLDER_KIND_PERSON,
    Certificate,
    CertifiedField,
    Holder,
)
from yrd.peer.v1 import peer_pb2

from core.errors import CertificateRejected
from core.keys import NodeKey
from node import metrics
from registry.certificates import (
    CONTENT_TYPE,
    FILE_NAME,
    MAX_FIELDS,
    MAX_NAME_CHARS,
    MAX_TEXT_VALUE_CHARS,
    mask_id,
    mask_name,
    sign_certificate,
)

log = logging.getLogger(__name__)

CST = timezone(timedelta(hours=8))
# A result of this name (a date, YYYY-MM-DD) sets the end of the certificate's validity: the
# end of that day in China Standard Time. Without it a certificate does not expire.
VALID_UNTIL_RESULT = "valid_until"
ORGANISATION_NAME_FIELDS = ("company_name", "organisation_name", "entity_name")


def certificate_document(
    key: NodeKey,
    issuer: str,
    defn: catalogue_pb2.ServiceDefinition | None,
    app_id: str,
    payload: peer_pb2.ApplicationPayload,
    results: dict[str, str],
    now_ms: int,
) -> peer_pb2.Document | None:
    """The signed certificate of an approval as a result document; None when the matter
    declares no results (nothing to attest) or the certificate would not be well formed (too
    large for a QR code, a ``valid_until`` already past): the approval still goes out with its
    other documents, and a WARNING names the application."""
    if defn is None or not results:
        return None
    labels = {f.name: f.label for f in defn.results}
    fields = [
        CertifiedField(
            name=name[:MAX_NAME_CHARS],
            label=labels.get(name, "")[:MAX_NAME_CHARS],
            value=value[:MAX_TEXT_VALUE_CHARS],
        )
        for name, value in results.items()
        if name != VALID_UNTIL_RESULT
    ][:MAX_FIELDS]
    cert = Certificate(
        certificate_id=f"{issuer}/{app_id}",
        name=defn.name[:MAX_TEXT_VALUE_CHARS],
        name_en=defn.name_en[:MAX_TEXT_VALUE_CHARS],
        holder=_holder(payload, results),
        fields=fields,
        issued_at_ms=now_ms,
        valid_until_ms=_valid_until(results.get(VALID_UNTIL_RESULT, "")),
        issuer=issuer,
        department=defn.department[:MAX_TEXT_VALUE_CHARS],
        service_id=defn.service_id,
        application_id=app_id,
    )
    try:
        signed = sign_certificate(cert, key)
    except CertificateRejected as e:
        log.warning("no certificate for %s of %s: %s", app_id, defn.service_id, e.code)
        return None
    metrics.CERTIFICATES_ISSUED.labels(service=defn.service_id).inc()
    return peer_pb2.Document(name=FILE_NAME, content_type=CONTENT_TYPE, data=signed.SerializeToString())


def _holder(payload: peer_pb2.ApplicationPayload, results: dict[str, str]) -> Holder:
    """An enterprise holds what assigns it a credit code (a business licence); a person
    holds everything else. A person's name and id are masked: the QR code is shown to
    whoever stands at a counter, and a clerk needs only enough to compare with the ID card."""
    credit_code = results.get("credit_code", "")
    if credit_code:
        try:
            form = json.loads(payload.form_json or b"{}")
        except ValueError:
            form = {}
        names = [str(form[n]) for n in ORGANISATION_NAME_FIELDS if isinstance(form, dict) and form.get(n)]
        name = names[0] if names else payload.applicant_name
        return Holder(
            kind=HOLDER_KIND_ORGANISATION, display_name=name[:MAX_TEXT_VALUE_CHARS], display_id=credit_code
        )
    return Holder(
        kind=HOLDER_KIND_PERSON,
        display_name=mask_name(payload.applicant_name)[:MAX_TEXT_VALUE_CHARS],
        display_id=mask_id(payload.applicant_id_number)[:MAX_TEXT_VALUE_CHARS],
    )


def _valid_until(value: str) -> int:
    """The end of day ``value`` in CST in milliseconds; 0 (no end) when absent. A day before
    the issue makes the certificate malformed, so none is issued (and a WARNING says so)."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return 0
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), CST)
    return int(end.timestamp() * 1000)
