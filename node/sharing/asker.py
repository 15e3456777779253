"""The asker's side of data sharing (docs/sharing.md): one screen's query fanned out to every
holder at once and merged, data requests sent to holders, and their decisions taken in.

Each holder gets one signed QueryData call (through its relay when the manifest names one;
this node's own resources go through the same holder code, without the network), answered
within the query's deadline or shown as missing: a screen is never held up by the slowest
province. What comes back is checked before it is shown: bound to our request by its signature,
about the resources asked, each record sealed to us with no field we did not ask for. Every
item, answered or not, leaves a mirror record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

import grpc
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from yrd.peer.v1 import peer_pb2

from core.clock import Clock
from core.db import Database
from core.errors import InvalidInput, NotFound, PolicyDenied, Unprocessable, YrdError, clip
from core.ids import new_id
from core.json_doc import parse_json_object
from node import metrics
from node.cases.deadlines import iso
from node.cases.policy_gate import PolicyGate
from node.delivery.channels import Channels
from node.delivery.outbox import enqueue
from node.delivery.peer_client import parse_body
from node.delivery.peer_server import item_receipt
from node.delivery.relaying import DELIVER, address
from node.grpc_errors import REASON_KEY
from node.models import DataDisclosure, DataRequestSent
from node.sharing.checks import (
    DataRequestIn,
    QueryRequest,
    check_query,
    check_request,
    consent_message,
    resource_problem,
    split,
)
from node.sharing.holder import DataHolder
from node.trust.envelope import EnvelopeVerifier, seal_envelope
from node.trust.keyring import Trust
from node.trust.sealing import seal, unseal
from registry.data_catalogue import DataIndex, HeldResource

log = logging.getLogger(__name__)

Outcome = peer_pb2.ReceiptOutcome
QUERY_DATA = "/yrd.peer.v1.PeerService/QueryData"
# Not an answer (down, or too busy to take the call): the item is missing, not refused; a call
# past its deadline is missing by the deadline.
MISSING_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
UPDATE_STATUSES = ("approved", "refused", "revoked")
# What a holder's item may say about itself; anything else is a bad answer, not text to show.
REQUEST_ID_PREFIX = "dr-"
_BASIS = re.compile(r"((consent|request)(\+grant:dr-[0-9a-f]{28})?)?")
_CODE = re.compile(r"[a-z0-9_]{0,64}")
_RULE = re.compile(r"([a-z0-9][a-z0-9._-]{0,79})?")
MAX_REASON = 500


def request_view(r: DataRequestSent) -> dict[str, Any]:
    return {
        "id": r.id,
        "side": "asker",
        "holder_node": r.holder_node,
        "department": r.department,
        "resource_id": r.resource_id,
        "fields": list(split(r.fields)),
        "purpose": r.purpose,
        "legal_basis": r.legal_basis,
        "until": iso(r.until_ms),
        "requested_by": r.requested_by,
        "requested_at": iso(r.created_at_ms),
        "status": r.status,
        "granted_fields": list(split(r.granted_fields)),
        "granted_until": iso(r.granted_until_ms) if r.granted_until_ms else None,
        "note": r.note,
    }


class DataAsker:
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        index: DataIndex,
        holder: DataHolder,
        policy: PolicyGate,
        channels: Channels,
        verifier: EnvelopeVerifier,
        clock: Clock,
        wake: Callable[[str], None],
        calls_per_holder: int = 4,
    ) -> None:
        self.db, self.trust, self.index, self.holder, self.policy = db, trust, index, holder, policy
        self.channels, self.verifier, self.clock, self.wake = channels, verifier, clock, wake
        # Calls in flight to one node (a holder, or the relay of holders behind it): a burst of
        # screens waits here (within each deadline) rather than meeting that node's per-peer cap,
        # which deliveries to it share.
        self.calls_per_holder = calls_per_holder
        self._slots: dict[str, asyncio.Semaphore] = {}
        # A holder behind a relay takes at most half of that relay's slots: one that is stuck
        # leaves the other holders behind the relay the rest, as the relay keeps half of its
        # budget toward one member for its deliveries (node/delivery/peer_limits.py).
        self._behind: dict[str, asyncio.Semaphore] = {}

    # -- one screen ------------------------------------------------------------------------------

    async def query(self, asked_by: str, role: str, department: str, req: QueryRequest) -> dict[str, Any]:
        """The merged view: one item per resource asked, in the order asked, each with its
        holder, outcome and (when answered) the fields and when the holder last updated them."""
        now = self.clock.now_ms()
        check_query(req, now)
        query_id = "q-" + new_id(now)
        items: list[dict[str, Any]] = [{} for _ in req.asks]
        by_holder: dict[str, list[int]] = {}
        for i, ask in enumerate(req.asks):
            try:
                held = self.index.get(ask.resource_id)
                await self._outbound(held, ask.fields, req, role, now)
            except PolicyDenied as e:
                items[i] = _item(ask.resource_id, held.node_id, "refused", e.code, e.reason)
                items[i]["rule_id"] = str(e.extra.get("rule_id", ""))
                continue
            except NotFound as e:
                items[i] = _item(ask.resource_id, "", "refused", e.code, e.reason)
                continue
            by_holder.setdefault(held.node_id, []).append(i)
        subject = peer_pb2.DataSubject(subject_id=req.subject_id, asked_by=asked_by)
        if req.consent is not None:
            subject.consent.CopyFrom(consent_message(req.consent))
        for holder, idxs in by_holder.items():
            for i in idxs:
                items[i] = _item(req.asks[i].resource_id, holder, "missing", "interrupted", _INTERRUPTED)
        # The mirror is written before any holder hears the subject's name, and settled after:
        # a crash between the two leaves the asking on record here as well as at the holders.
        ref = self.holder.ref(req.subject_kind, req.subject_id)
        await self.db.run(
            lambda s: self._mirror(s, query_id, department, asked_by, ref, req.purpose, items, now)
        )
        answers = await asyncio.gather(
            *(
                self._ask(holder, idxs, query_id, department, req, subject, now)
                for holder, idxs in by_holder.items()
            )
        )
        settled = [(i, item) for found in answers for i, item in found]
        for i, item in settled:
            items[i] = item
        await self.db.run(lambda s: _settle_mirror(s, query_id, settled))
        for item in items:
            metrics.DATA_QUERIES.labels(holder=item["holder_node"] or "none", outcome=item["outcome"]).inc()
        metrics.DATA_QUERY_SECONDS.observe(max(0, self.clock.now_ms() - now) / 1000)
        return {
            "query_id": query_id,
            "subject_kind": req.subject_kind,
            "purpose": req.purpose,
            "asked_at": iso(now),
            "complete": all(i["outcome"] in ("answered", "no_record") for i in items),
            "items": items,
        }

    async def _outbound(
        self, held: HeldResource, fields: tuple[str, ...], req: QueryRequest, role: str, now: int
    ) -> None:
        """This node's own policy before a subject is named to another member (PolicyDenied);
        asking this node's own resources crosses no boundary."""
        if held.node_id == self.trust.node_id:
            return
        res = held.resource
        asked = frozenset(fields or (f.name for f in res.fields))
        consent = req.consent is not None and req.subject_kind == "person"
        await self.policy.data_outbound(held.node_id, res, req.purpose, asked, consent, role, now)

    async def _ask(
        self,
        holder: str,
        idxs: list[int],
        query_id: str,
        department: str,
        req: QueryRequest,
        subject: peer_pb2.DataSubject,
        now: int,
    ) -> list[tuple[int, dict[str, Any]]]:
        """One holder's items: its answer checked and opened, or every item refused or missing."""
        asks = [req.asks[i] for i in idxs]

        def all_items(outcome: str, code: str, reason: str) -> list[tuple[int, dict[str, Any]]]:
            return [
                (i, _item(a.resource_id, holder, outcome, code, reason))
                for i, a in zip(idxs, asks, strict=True)
            ]

        q = peer_pb2.DataQuery(
            query_id=query_id,
            asker_node=self.trust.node_id,
            asker_department=department,
            purpose=req.purpose,
            asks=[peer_pb2.DataAsk(resource_id=a.resource_id, fields=list(a.fields)) for a in asks],
            asked_at_ms=now,
            subject_kind=req.subject_kind,
        )
        try:
            q.sealed_subject = seal(self.trust.public_key_of(holder, now), subject.SerializeToString())
            if holder == self.trust.node_id:
                answer = await self.holder.answer(holder, q)
            else:
                timeout_s = req.deadline_ms / 1000
                answer = await asyncio.wait_for(self._call_in_slot(holder, q, timeout_s), timeout_s)
        except (TimeoutError, grpc.aio.AioRpcError) as e:
            # The call carries the same deadline as the wait for it: whichever timer fires first,
            # the holder did not answer in time (under load gRPC's came first).
            if isinstance(e, TimeoutError) or e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return all_items(
                    "missing", "deadline", f"{holder} did not answer within {req.deadline_ms} ms"
                )
            code = str(dict(e.trailing_metadata() or ()).get(REASON_KEY, ""))
            if e.code() in MISSING_CODES:
                code = code if code and _CODE.fullmatch(code) else "unreachable"
                return all_items("missing", code, f"{holder} did not answer: {e.code().name}")
            code = code if code and _CODE.fullmatch(code) else "refused"
            return all_items("refused", code, (e.details() or "")[:MAX_REASON])
        except YrdError as e:
            return all_items("refused", e.code, e.reason)
        try:
            return self._open(holder, idxs, asks, q, answer)
        except YrdError as e:
            log.warning("unusable data answer from %s: %s", holder, e.code)
            return all_items("refused", "bad_answer", f"{holder} answered something unusable: {e.reason}")

    async def _call_in_slot(
        self, holder: str, q: peer_pb2.DataQuery, timeout_s: float
    ) -> peer_pb2.DataAnswer:
        # Counted per node called, which is the relay for the holders behind it: their calls all
        # meet that relay's per-peer cap for this node, beside this node's deliveries to it.
        hop = self.trust.next_hop(holder)
        slots = self._slots.setdefault(hop, asyncio.Semaphore(self.calls_per_holder))
        own: contextlib.nullcontext[None] | asyncio.Semaphore = (
            contextlib.nullcontext()
            if hop == holder
            else self._behind.setdefault(holder, asyncio.Semaphore(max(1, self.calls_per_holder // 2)))
        )
        async with own, slots:
            return await self._call(holder, hop, q, timeout_s)

    async def _call(
        self, holder: str, hop: str, q: peer_pb2.DataQuery, timeout_s: float
    ) -> peer_pb2.DataAnswer:
        env = seal_envelope(
            self.trust.key,
            sender=self.trust.node_id,
            destination=holder,
            method=QUERY_DATA,
            body=q.SerializeToString(),
            now_ms=self.clock.now_ms(),
        )
        # A holder behind a relay is called through it, with the same envelope (protocol 14.1).
        call = self.channels.peer(hop).QueryData(peer_pb2.QueryDataRequest(envelope=env), timeout=timeout_s)
        response = await asyncio.wait_for(call, timeout_s)
        self.verifier.verify_response(response.envelope, env)
        return parse_body(peer_pb2.DataAnswer, response.envelope.body)

    def _open(
        self,
        holder: str,
        idxs: list[int],
        asks: list[Any],
        q: peer_pb2.DataQuery,
        answer: peer_pb2.DataAnswer,
    ) -> list[tuple[int, dict[str, Any]]]:
        """Trust nothing a holder answers: it must be about exactly what was asked, and carry
        no field the asker did not ask for or the catalogue does not list."""
        if answer.query_id != q.query_id or len(answer.items) != len(asks):
            raise InvalidInput("not an answer to this query", code="bad_answer")
        out = []
        for i, ask, it in zip(idxs, asks, answer.items, strict=True):
            if it.resource_id != ask.resource_id or not _well_formed(it):
                raise InvalidInput(f"item {clip(it.resource_id)} does not match the ask", code="bad_answer")
            item = _item(it.resource_id, holder, it.outcome, it.reason_code, it.reason[:MAX_REASON])
            item["basis"], item["rule_id"] = it.basis, it.rule_id
            if it.outcome == "answered":
                record = parse_body(peer_pb2.DataRecord, unseal(self.trust.opening_keys(), it.sealed_record))
                fields = _json_object(record.fields_json)
                allowed = set(ask.fields) or {f.name for f in self.index.get(ask.resource_id).resource.fields}
                if not set(fields) <= allowed or list(fields) != list(it.fields):
                    raise InvalidInput(f"{it.resource_id} carries fields not asked for", code="bad_answer")
                item["fields"] = fields
                item["updated_at"] = iso(record.updated_at_ms)
                item["answered_at"] = iso(answer.answered_at_ms)
            out.append((i, item))
        return out

    def _mirror(
        self,
        s: Session,
        query_id: str,
        department: str,
        asked_by: str,
        ref: str,
        purpose: str,
        items: list[dict[str, Any]],
        now: int,
    ) -> None:
        for item in items:
            s.add(
                DataDisclosure(
                    side="asker",
                    query_id=query_id,
                    at_ms=now,
                    asker_node=self.trust.node_id,
                    asker_department=department,
                    asked_by=asked_by,
                    holder_node=item["holder_node"],
                    resource_id=item["resource_id"],
                    subject_ref=ref,
                    purpose=purpose,
                    basis=item.get("basis", ""),
                    fields=",".join(item["fields"] or {}),
                    outcome=item["outcome"],
                    reason_code=item["reason_code"],
                )
            )

    # -- data requests ---------------------------------------------------------------------------

    async def request(
        self, requested_by: str, department: str, req: DataRequestIn, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Send a request for a conditional resource to its holder through the outbox; a retry
        under the same idempotency key and body is answered with the request made the first time."""
        if idempotency_key is not None:
            found = await self.db.run(lambda s: _replayed(s, requested_by, idempotency_key, req.digest))
            if found is not None:
                return request_view(found)
        now = self.clock.now_ms()
        check_request(req, now)
        held = self.index.get(req.resource_id)
        res = held.resource
        if res.sharing != "conditional":
            raise Unprocessable(
                f"{res.resource_id} is {res.sharing}: only a conditional resource is requested",
                code="not_conditional",
                field="resource_id",
            )
        problem = resource_problem(res, res.subject_kind, req.fields)
        if problem is not None:
            raise InvalidInput(problem[1], code=problem[0], field="fields")
        request_id = REQUEST_ID_PREFIX + new_id(now)
        transfer = peer_pb2.DataRequestTransfer(
            request_id=request_id,
            asker_node=self.trust.node_id,
            asker_department=department,
            resource_id=req.resource_id,
            fields=list(req.fields),
            purpose=req.purpose,
            legal_basis=req.legal_basis,
            until_ms=req.until_ms,
            requested_at_ms=now,
            requested_by=requested_by,
        )
        row = DataRequestSent(
            id=request_id,
            holder_node=held.node_id,
            resource_id=req.resource_id,
            department=department,
            fields=",".join(req.fields),
            purpose=req.purpose,
            legal_basis=req.legal_basis,
            until_ms=req.until_ms,
            requested_by=requested_by,
            created_at_ms=now,
            status="pending",
            updated_at_ms=now,
            idempotency_key=idempotency_key,
            digest=req.digest,
        )
        hop = ""

        def store(s: Session) -> DataRequestSent:
            nonlocal hop
            s.add(row)
            s.flush()
            if held.node_id == self.trust.node_id:  # our own department: the holder's code, here
                receipt = self.holder.accept_request(s, self.trust.node_id, transfer, now)
                self.apply_receipt(s, request_id, held.node_id, receipt, b"", now)
                return row
            body = peer_pb2.DeliverItem(data_request=transfer).SerializeToString()
            hop, body = address(self.trust, held.node_id, DELIVER, body, now)
            enqueue(
                s,
                next_hop=hop,
                destination=held.node_id,
                method=DELIVER,
                item_id=request_id,
                body=body,
                now_ms=now,
            )
            return row

        try:
            stored = await self.db.run(store)
        except IntegrityError:  # a concurrent retry under the same key won the race
            found = None
            if idempotency_key is not None:
                found = await self.db.run(lambda s: _replayed(s, requested_by, idempotency_key, req.digest))
            if found is None:
                raise
            return request_view(found)
        if hop:
            self.wake(hop)
        return request_view(stored)

    async def list_requests(self, department: str | None) -> list[dict[str, Any]]:
        def read(s: Session) -> list[DataRequestSent]:
            q = select(DataRequestSent).order_by(col(DataRequestSent.created_at_ms).desc()).limit(500)
            if department is not None:
                q = q.where(DataRequestSent.department == department)
            return list(s.exec(q).all())

        return [request_view(r) for r in await self.db.run(read)]

    def apply_update(self, s: Session, sender: str, u: peer_pb2.DataRequestUpdate) -> peer_pb2.Receipt:
        """The holder's decision or revocation, each sequence once, only from that holder."""
        now = self.clock.now_ms()
        sent = s.get(DataRequestSent, u.request_id)
        item_id = f"{u.request_id}/{u.sequence}"
        if sent is None or sent.holder_node != sender:
            return item_receipt(
                item_id, Outcome.RECEIPT_OUTCOME_REJECTED, "unknown_request", "no such request", now
            )
        if u.status not in UPDATE_STATUSES or (
            u.status == "approved" and not set(u.fields) <= set(split(sent.fields))
        ):
            return item_receipt(
                item_id, Outcome.RECEIPT_OUTCOME_REJECTED, "invalid_update", "status or fields", now
            )
        if u.sequence <= sent.sequence:
            return item_receipt(item_id, Outcome.RECEIPT_OUTCOME_DUPLICATE, "", "", now)
        sent.status, sent.sequence, sent.note, sent.updated_at_ms = u.status, u.sequence, u.note[:500], now
        if u.status == "approved":
            sent.granted_fields, sent.granted_until_ms = ",".join(u.fields), u.until_ms
        s.add(sent)
        return item_receipt(item_id, Outcome.RECEIPT_OUTCOME_ACCEPTED, "", "", now)

    @staticmethod
    def apply_receipt(
        s: Session, item_id: str, from_node: str, receipt: peer_pb2.Receipt, envelope: bytes, at_ms: int
    ) -> None:
        """A holder that refuses a request on receipt (not conditional, a field it lacks) ends it.
        Every delivery receipt passes here; only a request's id (``dr-…``) is worth a look-up."""
        if not item_id.startswith(REQUEST_ID_PREFIX):
            return
        sent = s.get(DataRequestSent, item_id)
        if sent is None or from_node != sent.holder_node or sent.status != "pending":
            return
        if receipt.outcome == Outcome.RECEIPT_OUTCOME_REJECTED:
            sent.status, sent.note = "refused", f"{receipt.reason_code}: {receipt.reason}"[:500]
            sent.updated_at_ms = at_ms
            s.add(sent)


_INTERRUPTED = "the asking node stopped before the holder's answer was recorded"
_MIRROR = DataDisclosure.__table__  # type: ignore[attr-defined]


def _settle_mirror(s: Session, query_id: str, settled: list[tuple[int, dict[str, Any]]]) -> None:
    """Each asked item's mirror, written as interrupted before the calls, gets its outcome."""
    for _, item in settled:
        s.execute(
            _MIRROR.update()
            .where(
                _MIRROR.c.side == "asker",
                _MIRROR.c.query_id == query_id,
                _MIRROR.c.resource_id == item["resource_id"],
            )
            .values(
                basis=item.get("basis", ""),
                fields=",".join(item["fields"] or {}),
                outcome=item["outcome"],
                reason_code=item["reason_code"],
            )
        )


def _well_formed(it: peer_pb2.DataItem) -> bool:
    """Outcome, basis, reason code and rule id of the shapes a holder gives (docs/protocol.md 14.1)."""
    return bool(
        it.outcome in ("answered", "no_record", "refused")
        and _BASIS.fullmatch(it.basis)
        and _CODE.fullmatch(it.reason_code)
        and _RULE.fullmatch(it.rule_id)
    )


def _replayed(s: Session, requested_by: str, key: str, digest: str) -> DataRequestSent | None:
    found = s.exec(
        select(DataRequestSent).where(
            DataRequestSent.requested_by == requested_by, DataRequestSent.idempotency_key == key
        )
    ).first()
    if found is not None and found.digest != digest:
        raise Unprocessable(
            "this idempotency key was used for a different request; use a new key",
            code="idempotency_key_reused",
            field="idempotency_key",
        )
    return found


def _item(resource_id: str, holder: str, outcome: str, code: str, reason: str) -> dict[str, Any]:
    return {
        "resource_id": resource_id,
        "holder_node": holder,
        "outcome": outcome,
        "reason_code": code,
        "reason": reason,
        "basis": "",
        "rule_id": "",
        "fields": None,
        "updated_at": None,
        "answered_at": None,
    }


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        return parse_json_object(data, field="record")
    except InvalidInput as e:
        raise InvalidInput(
            f"record is not a JSON object (protocol section 1): {e.reason}", code="bad_answer"
        ) from e
