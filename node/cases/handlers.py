"""How an owner decides: the automatic rule and the result notice it issues.

The automatic handler approves when every required material is attached (the form
itself was validated at the origin against this owner's schema and again here by the
signature chain); otherwise it asks for the missing materials by name.
"""

from __future__ import annotations

import hashlib
from typing import Any

from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from core.errors import InvalidInput
from node.cases.deadlines import iso
from registry.forms import validate_form

# GB 32100-2015: the unified social credit code's alphabet (no I, O, Z, S, V) and weights.
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# GB 11714-1997: the organisation code's weights; its check character is 0-9 or X.
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
MAX_RESULTS = 50


def auto_decision(
    defn: catalogue_pb2.ServiceDefinition, payload: peer_pb2.ApplicationPayload
) -> tuple[str, str]:
    attached = {a.material for a in payload.attachments}
    missing = [m.name for m in defn.materials if m.required and m.name not in attached]
    if missing:
        return "need_materials", "缺少材料 missing materials: " + "、".join(missing)
    return "approve", "材料齐全，自动办结 complete; approved automatically"


def uscc_check_char(first17: str) -> str:
    """The GB 32100 check character of the first 17 characters of a credit code."""
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_CHARS[(31 - total % 31) % 31]


def credit_code(division: str, seed: str) -> str:
    """A unified social credit code as a registration authority assigns one: market
    regulation (9), enterprise (1), the registering division, an organisation code with its
    GB 11714 check character, and the GB 32100 check character. ``seed`` (the application
    id) makes a retried approval assign the same code."""
    digits = str(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % 10**8).zfill(8)
    org_total = sum(int(d) * w for d, w in zip(digits, _ORG_WEIGHTS, strict=True))
    org_check = {10: "X", 11: "0"}.get(11 - org_total % 11, str(11 - org_total % 11))
    first17 = f"91{division}{digits}{org_check}"
    return first17 + uscc_check_char(first17)


def issue_results(
    defn: catalogue_pb2.ServiceDefinition | None,
    app_id: str,
    now_ms: int,
    given: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The result values an approval carries: those the department gave, checked against
    the service's declared results, and the rest assigned here (a credit code for
    ``credit_code``, else a register number of the owner's division, date and application)."""
    declared = list(defn.results) if defn is not None else []
    checked = validate_form([_optional(f) for f in declared], dict(given or {}))
    out: dict[str, str] = {}
    for f in declared:
        if f.name in checked:
            value = checked[f.name]
            out[f.name] = str(value).lower() if isinstance(value, bool) else str(value)
        elif f.name == "credit_code":
            out[f.name] = credit_code(defn.owner if defn else "000000", app_id)
        else:
            number = f"{defn.owner if defn else ''}{iso(now_ms)[:10].replace('-', '')}{app_id[-8:].upper()}"
            out[f.name] = number[: f.max_length or len(number)]
    return out


def _optional(field: catalogue_pb2.FormField) -> catalogue_pb2.FormField:
    copy = catalogue_pb2.FormField()
    copy.CopyFrom(field)
    copy.required = False
    return copy


def check_results(defn: catalogue_pb2.ServiceDefinition | None, given: dict[str, Any]) -> None:
    """A department's result values name results the service declares, in their formats."""
    if len(given) > MAX_RESULTS:
        raise InvalidInput(f"more than {MAX_RESULTS} results", code="invalid_result", field="results")
    try:
        validate_form([_optional(f) for f in (defn.results if defn else [])], dict(given))
    except InvalidInput as e:
        raise InvalidInput(
            e.reason, code="invalid_result", field=(e.field or "").replace("form", "results", 1)
        ) from e


def result_notice(
    app_id: str, defn: catalogue_pb2.ServiceDefinition | None, now_ms: int
) -> peer_pb2.Document:
    """A plain-text 办理结果通知书 for approvals that come without a document of their own."""
    name = defn.name if defn else ""
    dept = defn.department if defn else ""
    text = (
        f"办理结果通知书 / Notice of decision\n"
        f"申请编号 Application: {app_id}\n"
        f"事项 Matter: {name}\n"
        f"办理机关 Department: {dept}\n"
        f"结果 Result: 准予办理 approved\n"
        f"时间 Time: {iso(now_ms)}\n"
    )
    return peer_pb2.Document(
        name="result-notice.txt", content_type="text/plain; charset=utf-8", data=text.encode()
    )
