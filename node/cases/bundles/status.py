"""The parts' snapshot: the lead writes it into the bundle's status changes (one status for
the whole, each part's status, owner, deadline and attempt) and any counter reads it back,
checked key by key since a peer's text is not trusted. Writer and reader sit together so
the format cannot drift."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sqlmodel import Session, col, select
from yrd.peer.v1 import peer_pb2

from core.errors import InvalidInput, NotFound
from core.json_doc import parse_json
from node.cases.bundles.state import FAILED, BundleCore, RunState
from node.cases.deadlines import bundle_due_ms, iso
from node.cases.status_checks import COMPONENTS_KEY
from node.cases.statuses import FINAL
from node.models import ApplicationResult, ResultDocument, StatusEvent
from registry.bundles import ancestors, components, longest_path_days

log = logging.getLogger(__name__)


DUE_KEY = "yrd.due_at"


class Status(BundleCore):
    def _report(self, s: Session, bundle_id: str, now: int) -> None:
        """Tell the counter how the whole goes, when that changed since it was last told."""
        st = self._state(s, bundle_id)
        if st is None or st.inbound.status in FINAL:
            return
        view = self._components_view(s, st)
        failed = [c for c in view if c["status"] in FAILED]
        done = all(c["status"] == "completed" for c in view)
        status = "completed" if done else "needs_materials" if failed else "in_review"
        results = {COMPONENTS_KEY: json.dumps(view, ensure_ascii=False, sort_keys=True)}
        results[DUE_KEY] = iso(st.run.due_at_ms)
        for name, values in st.results.items():
            results.update({f"{name}.{k}": v for k, v in values.items() if not k.startswith("yrd.")})
        digest = hashlib.sha256(f"{status}\0{results[COMPONENTS_KEY]}".encode()).hexdigest()
        if digest == st.run.sent_digest:
            return
        st.run.sent_digest = digest
        s.add(st.run)
        if done:
            docs = [
                peer_pb2.Document(name=f"{name}-{d.name}", content_type=d.content_type, data=d.data)
                for name, app in st.apps.items()
                for d in s.exec(select(ResultDocument).where(ResultDocument.application_id == app.id)).all()
            ]
            reason = "全部事项办结 every part completed"
            changes = [
                self.owner.number(st.inbound, "approved", now, reason=reason, results=results),
                self.owner.number(
                    st.inbound, "completed", now, reason=reason, documents=docs, results=results
                ),
            ]
            self.owner.emit(s, st.inbound, changes, now)
            return
        if failed:
            reason = "；".join(
                f"{c['name']}（{c['service_name']}）{c['status']}：{c['reason']}" for c in failed
            )
        else:
            finished = sum(1 for c in view if c["status"] == "completed")
            reason = f"已办结 {finished}/{len(view)} parts completed"
        change = self.owner.number(st.inbound, status, now, reason=reason[:1000], results=results)
        self.owner.emit(s, st.inbound, [change], now)

    def _components_view(self, s: Session, st: RunState) -> list[dict[str, Any]]:
        comps = components(st.defn)
        limits = {c.name: (d.time_limit_days if (d := self._lookup(c.service_id)) else 0) for c in comps}
        ends = longest_path_days(comps, limits)
        failed = {n for n in st.parts if self._status(st, n) in FAILED}
        out = []
        for c in comps:
            part = st.parts[c.name]
            defn = self._lookup(c.service_id)
            app = st.apps.get(c.name)
            status = self._status(st, c.name)
            reason = part.failure
            if app is not None:
                last = s.exec(
                    select(StatusEvent)
                    .where(StatusEvent.application_id == app.id)
                    .order_by(col(StatusEvent.sequence).desc())
                ).first()
                reason = last.reason if last is not None else ""
            elif status == "waiting" and failed & ancestors(comps, c.name):
                status = "blocked"
                reason = "等待前置事项更正 waits for a failed part: " + ", ".join(
                    sorted(failed & ancestors(comps, c.name))
                )
            try:
                owner_node = (
                    app.owner_node
                    if app
                    else self.trust.manifest.owner_of(defn.owner).node_id
                    if defn
                    else ""
                )
            except NotFound:
                owner_node = ""
            out.append(
                {
                    "name": c.name,
                    "service_id": c.service_id,
                    "service_name": defn.name if defn else "",
                    "department": defn.department if defn else "",
                    "owner": defn.owner if defn else "",
                    "owner_node": owner_node,
                    "after": list(c.after),
                    "status": status,
                    "attempt": part.attempt,
                    "application_id": app.id if app else "",
                    "due_at": iso(app.due_at_ms)
                    if app
                    else iso(bundle_due_ms(st.run.created_at_ms, ends[c.name])),
                    "reason": reason[:500],
                    "results": st.results.get(c.name, {}),
                }
            )
        return out

    # -- at the counter ----------------------------------------------------------------------

    async def view(self, app_id: str) -> dict[str, Any]:
        """What the lead last said about a bundle's parts: ``components``, ``results`` and
        the promised ``bundle_due_at``; empty for an application that is no bundle."""
        rows = await self.db.run(
            lambda s: list(
                s.exec(select(ApplicationResult).where(ApplicationResult.application_id == app_id)).all()
            )
        )
        values = {r.name: r.value for r in rows}
        out: dict[str, Any] = {}
        if values:
            out["results"] = {k: v for k, v in values.items() if not k.startswith("yrd.")}
        snapshot = parse_snapshot(values.get(COMPONENTS_KEY))
        if snapshot is not None:
            out["components"] = snapshot
            if DUE_KEY in values:
                out["bundle_due_at"] = values[DUE_KEY]
        return out


_VIEW_KEYS = {
    "name": str,
    "service_id": str,
    "service_name": str,
    "department": str,
    "owner": str,
    "owner_node": str,
    "after": list,
    "status": str,
    "attempt": int,
    "application_id": str,
    "due_at": str,
    "reason": str,
    "results": dict,
}


def parse_snapshot(raw: str | None) -> list[dict[str, Any]] | None:
    """The lead's parts snapshot, each entry with exactly the keys and types it should
    have; None (and a log line) for one that is malformed: a peer's text is not trusted."""
    if raw is None:
        return None
    try:
        doc = parse_json(raw, field="yrd.components")
    except InvalidInput:
        doc = None
    if isinstance(doc, list) and all(
        isinstance(c, dict)
        and set(c) == set(_VIEW_KEYS)
        and all(
            isinstance(c[k], t) and not (t is int and isinstance(c[k], bool)) for k, t in _VIEW_KEYS.items()
        )
        for c in doc
    ):
        return doc
    log.warning("ignored a malformed bundle snapshot")
    return None
