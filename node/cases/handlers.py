"""How an owner decides: the automatic rule and the result notice it issues.

The automatic handler approves when every required material is attached (the form
itself was validated at the origin against this owner's schema and again here by the
signature chain); otherwise it asks for the missing materials by name.
"""

from __future__ import annotations

from yrd.catalogue.v1 import catalogue_pb2
from yrd.peer.v1 import peer_pb2

from node.cases.deadlines import iso


def auto_decision(
    defn: catalogue_pb2.ServiceDefinition, payload: peer_pb2.ApplicationPayload
) -> tuple[str, str]:
    attached = {a.material for a in payload.attachments}
    missing = [m.name for m in defn.materials if m.required and m.name not in attached]
    if missing:
        return "need_materials", "缺少材料 missing materials: " + "、".join(missing)
    return "approve", "材料齐全，自动办结 complete; approved automatically"


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
