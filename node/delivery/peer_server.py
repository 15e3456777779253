"""PeerService: what other nodes call. Every envelope of a batch is verified on its own
and answered on its own; the batch's effects, its nonces, its audit records and its signed
receipts are made in one transaction, so a crash either keeps all of them or none (and the
sender retries the same envelopes unchanged)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from sqlmodel import Session
from yrd.envelope.v1 import envelope_pb2
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.clock import Clock
from core.db import Database
from core.errors import EnvelopeRejected, InvalidInput, NotFound
from node import metrics
from node.config import PEER_CALL_TIMEOUT_S
from node.delivery import checkpoints
from node.delivery.outbox import enqueue, unhanded_hops
from node.delivery.peer_client import parse_body
from node.delivery.peer_limits import PeerLimits
from node.delivery.relaying import DELIVER, NOTIFY_STATUS, forward_item
from node.grpc_errors import REASON_KEY, grpc_errors
from node.trust import audit
from node.trust.audit import AuditEntry
from node.trust.envelope import EnvelopeVerifier, answer, request_digest, seal_envelope
from node.trust.keyring import Trust

log = logging.getLogger(__name__)

SERVICE = "/yrd.peer.v1.PeerService/"
GET_CATALOGUE = SERVICE + "GetCatalogue"
GET_MANIFEST = SERVICE + "GetManifest"
QUERY_DATA = SERVICE + "QueryData"
Outcome = peer_pb2.ReceiptOutcome
Env = envelope_pb2.Envelope


def item_receipt(item_id: str, outcome: int, code: str, reason: str, now: int) -> peer_pb2.Receipt:
    """The receipt a receiver signs for one item; every kind of item is answered alike."""
    return peer_pb2.Receipt(
        item_id=item_id,
        outcome=outcome,  # type: ignore[arg-type]
        reason_code=code,
        reason=reason,
        received_at_ms=now,
    )


def envelope_item_id(env: Env) -> str:
    """The ``item_id`` of a receipt for an item whose own id cannot be trusted (its envelope
    failed verification, or its body does not parse): the envelope's digest, which the
    sender can compute, rather than anything read from unverified bytes."""
    return "env:" + request_digest(env).hex()


def _count_refusal(env: Env, e: EnvelopeRejected) -> None:
    metrics.ENVELOPES_VERIFIED.labels(e.code).inc()
    log.warning("refused envelope from %r: %s", env.sender, e.code)


def _parse_item(method: str, body: bytes) -> peer_pb2.DeliverItem | peer_pb2.StatusItem | None:
    """The item an envelope body carries on ``method``; None when it does not parse."""
    item: peer_pb2.DeliverItem | peer_pb2.StatusItem = (
        peer_pb2.DeliverItem() if method == DELIVER else peer_pb2.StatusItem()
    )
    try:
        item.ParseFromString(body)
    except DecodeError:
        return None
    return item


def status_changes(item: peer_pb2.StatusItem) -> Sequence[peer_pb2.StatusUpdate]:
    """The application status changes a StatusItem carries: a ``run``'s, or its one ``status``
    (docs/protocol.md 10.2); the receiver checks and applies both alike."""
    return item.run.updates if item.HasField("run") else [item.status]


# The case code that takes an item in, inside the batch's transaction: the owner accepting an
# application from ``sender`` (the last argument: True when the envelope of the call is the
# sender's own, so the receipt reaches the origin and may carry its status run, docs/protocol.md
# 10.6; False at the destination of a relayed envelope), the origin applying status changes (one
# ``status``, or the changes of a ``run``, one receipt for them all). Injected by the
# composition root so delivery does not import case handling, which sits above it.
AcceptApplication = Callable[[Session, str, peer_pb2.ApplicationTransfer, int, bool], peer_pb2.Receipt]
ApplyStatus = Callable[[Session, str, Sequence[peer_pb2.StatusUpdate]], peer_pb2.Receipt]
# The same for supervision clues (node/cases/clues.py): taking a clue in, applying one of its steps.
AcceptClue = Callable[[Session, str, peer_pb2.ClueTransfer, int], peer_pb2.Receipt]
ApplyClueUpdate = Callable[[Session, str, peer_pb2.ClueUpdate], peer_pb2.Receipt]
# Data sharing (node/sharing/): a request for a conditional resource taken in by its holder, the
# holder's decision applied by the asker, and a query answered by the holder (docs/sharing.md).
AcceptDataRequest = Callable[[Session, str, peer_pb2.DataRequestTransfer, int], peer_pb2.Receipt]
ApplyDataUpdate = Callable[[Session, str, peer_pb2.DataRequestUpdate], peer_pb2.Receipt]
AnswerQuery = Callable[[str, peer_pb2.DataQuery], Awaitable[peer_pb2.DataAnswer]]
# A relay's call to a member it relays for (docs/protocol.md 14.1): the asker's request passed on
# unchanged within the seconds given, the member's response returned unchanged. Injected by the
# composition root, which holds the channels; without it this node relays no queries.
ForwardQuery = Callable[[str, peer_pb2.QueryDataRequest, float], Awaitable[peer_pb2.QueryDataResponse]]


def _no_clues(s: Session, sender: str, item: object, *now: int) -> peer_pb2.Receipt:
    return peer_pb2.Receipt(
        outcome=Outcome.RECEIPT_OUTCOME_REJECTED,
        reason_code="unsupported_item",
        reason="clues not taken here",
    )


async def _no_queries(sender: str, query: peer_pb2.DataQuery) -> peer_pb2.DataAnswer:
    raise NotFound("this node answers no data queries", code="unsupported_item")


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):
    def __init__(
        self,
        *,
        db: Database,
        trust: Trust,
        verifier: EnvelopeVerifier,
        accept: AcceptApplication,
        apply_status: ApplyStatus,
        catalogue: Callable[[], tuple[bytes, bytes]],
        clock: Clock,
        wake: Callable[[str], None],
        peer_seen: Callable[[str], None],
        max_batch: int,
        accept_clue: AcceptClue = _no_clues,
        apply_clue_update: ApplyClueUpdate = _no_clues,
        accept_data_request: AcceptDataRequest = _no_clues,
        apply_data_update: ApplyDataUpdate = _no_clues,
        answer_query: AnswerQuery = _no_queries,
        forward_query: ForwardQuery | None = None,
        limits: PeerLimits | None = None,
    ) -> None:
        self.db, self.trust, self.verifier = db, trust, verifier
        self.accept, self.apply_status = accept, apply_status
        self.catalogue, self.clock, self.wake, self.peer_seen = catalogue, clock, wake, peer_seen
        self.max_batch = max_batch
        self.accept_clue, self.apply_clue_update = accept_clue, apply_clue_update
        self.accept_data_request, self.apply_data_update = accept_data_request, apply_data_update
        self.answer_query, self.forward_query = answer_query, forward_query

        self.limits = limits

    # -- batches -----------------------------------------------------------------------

    @grpc_errors
    async def Deliver(
        self, request: peer_pb2.DeliverRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> peer_pb2.DeliverResponse:
        with self._admit(context, request.envelopes):
            receipts = await self._batch(list(request.envelopes), DELIVER)
        return peer_pb2.DeliverResponse(receipts=receipts)

    @grpc_errors
    async def NotifyStatus(
        self, request: peer_pb2.NotifyStatusRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> peer_pb2.NotifyStatusResponse:
        with self._admit(context, request.envelopes):
            receipts = await self._batch(list(request.envelopes), NOTIFY_STATUS)
        return peer_pb2.NotifyStatusResponse(receipts=receipts)

    def _admit(self, context: grpc.aio.ServicerContext[object, object], envelopes: Sequence[Env]) -> Any:
        """The per-peer limits (node/delivery/peer_limits.py), checked before any work."""
        return contextlib.nullcontext() if self.limits is None else self.limits.admit(context, envelopes)

    def _relaying(self, destination: str) -> Any:
        """The bound on queries relayed to one member (node/delivery/peer_limits.py)."""
        return contextlib.nullcontext() if self.limits is None else self.limits.relaying(destination)

    async def _verify(self, env: Env, method: str) -> None:
        """A single-envelope call (catalogue, manifest): every check, the nonce included."""
        try:
            await self.verifier.verify_request(env, method)
        except EnvelopeRejected as e:
            _count_refusal(env, e)
            raise
        metrics.ENVELOPES_VERIFIED.labels("ok").inc()

    async def _batch(self, envelopes: list[Env], method: str) -> list[Env]:
        """Each envelope on its own (docs/protocol.md, "Batches"): one that fails its checks
        gets a signed REJECTED receipt naming the reason, the others are acted on; nonces
        are recorded in the transaction that acts, so a refused envelope uses up none. A
        call in which no envelope is acted on is refused whole (UNAUTHENTICATED, the first
        envelope's reason) and leaves no trace: a stranger's garbage costs no signature."""
        if not envelopes:
            return []
        if len(envelopes) > self.max_batch:
            raise InvalidInput(f"at most {self.max_batch} envelopes per call", code="batch_too_large")
        refused: dict[int, EnvelopeRejected] = {}
        for i, env in enumerate(envelopes):
            try:
                self.verifier.check_request(env, method)
            except EnvelopeRejected as e:
                _count_refusal(env, e)
                refused[i] = e
        if len(refused) == len(envelopes):
            raise refused[0]
        now = self.clock.now_ms()
        hops: set[str] = set()  # whose senders to wake: what the unit queued and did not hand over
        acted: set[str] = set()

        def work(s: Session) -> list[Env]:
            answers, records = [], []
            # Every checked envelope's nonce in one statement, before any item is acted on.
            checked = [i for i in range(len(envelopes)) if i not in refused]
            replays = self.verifier.record_nonces(s, [envelopes[i] for i in checked])
            for i, replay in zip(checked, replays, strict=True):
                if replay is not None:
                    _count_refusal(envelopes[i], replay)
                    refused[i] = replay
            for i, env in enumerate(envelopes):
                rejected = refused.get(i)
                if rejected is None:
                    metrics.ENVELOPES_VERIFIED.labels("ok").inc()
                    receipt = self._item(s, env, method, now)
                    acted.add(env.sender)
                else:
                    receipt = item_receipt(
                        envelope_item_id(env),
                        Outcome.RECEIPT_OUTCOME_REJECTED,
                        rejected.code,
                        rejected.reason,
                        now,
                    )
                reply = self._reply(env, receipt, now)
                answers.append(reply)
                # The reply's in_reply_to is the request's digest (_reply): not hashed again.
                records.append(AuditEntry("in", env.sender, method, reply.in_reply_to, receipt.item_id))
                records.append(
                    AuditEntry("out", env.sender, method, request_digest(reply), receipt.reason_code)
                )
            if not acted:  # every nonce replayed: roll back, answer as a wholly refused call
                raise refused[0]
            audit.append(s, records, now)
            hops.update(unhanded_hops(s))
            return answers

        answers = await self.db.run(work)
        for sender in acted:
            self.peer_seen(sender)
        for hop in hops:
            self.wake(hop)
        return answers

    def _reply(self, env: Env, receipt: peer_pb2.Receipt, now: int) -> Env:
        body = receipt.SerializeToString()
        if env.destination == self.trust.node_id:
            return answer(self.trust.key, env, body, now, sender=self.trust.node_id)
        # Not addressed to us, so we cannot answer as its addressee; signed in our own name and
        # bound by in_reply_to all the same, which its sender's response check refuses. Only a
        # forged or misrouted envelope gets here: a sender addresses a whole batch to one peer.
        return seal_envelope(
            self.trust.key,
            sender=self.trust.node_id,
            destination=env.sender,
            method=env.method,
            body=body,
            now_ms=now,
            in_reply_to=request_digest(env),
        )

    def _item(self, s: Session, env: Env, method: str, now: int) -> peer_pb2.Receipt:
        """Act on one verified envelope; ``env.sender`` is authenticated."""
        item = _parse_item(method, env.body)
        if item is None or item.WhichOneof("item") is None:
            why = "body does not parse" if item is None else "empty item"
            return item_receipt(
                envelope_item_id(env), Outcome.RECEIPT_OUTCOME_REJECTED, "malformed_body", why, now
            )
        if item.WhichOneof("item") == "forward":
            return self._forward(s, env, item.forward, method, now)
        return self._local(s, env.sender, item, now, direct=True)

    def _local(
        self,
        s: Session,
        sender: str,
        item: peer_pb2.DeliverItem | peer_pb2.StatusItem,
        now: int,
        direct: bool,
    ) -> peer_pb2.Receipt:
        """Act on an item from ``sender``: ``direct`` when the call's envelope is its own (the
        receipt goes back to it), not a relay's."""
        if isinstance(item, peer_pb2.DeliverItem) and item.HasField("application"):
            return self.accept(s, sender, item.application, now, direct)
        if isinstance(item, peer_pb2.DeliverItem) and item.HasField("clue"):
            return self.accept_clue(s, sender, item.clue, now)
        if isinstance(item, peer_pb2.DeliverItem) and item.HasField("data_request"):
            return self.accept_data_request(s, sender, item.data_request, now)
        assert isinstance(item, peer_pb2.StatusItem)  # the oneof's only other local fields
        if item.HasField("clue_update"):
            return self.apply_clue_update(s, sender, item.clue_update)
        if item.HasField("data_request_update"):
            return self.apply_data_update(s, sender, item.data_request_update)
        return self.apply_status(s, sender, status_changes(item))

    def _forward(self, s: Session, outer: Env, inner: Env, method: str, now: int) -> peer_pb2.Receipt:
        """A relayed envelope: open it when it is for us, pass it on when we relay for its
        destination. The origin's signature travels intact; the outer hop gave freshness,
        so the inner envelope's age is not held against it (retries may wait at a relay)."""
        item_id = "fwd:" + request_digest(inner).hex()
        try:
            self._verify_inner(inner, method)
        except EnvelopeRejected as e:
            return item_receipt(item_id, Outcome.RECEIPT_OUTCOME_REJECTED, e.code, e.reason, now)
        if inner.destination == self.trust.node_id:
            item = _parse_item(method, inner.body)
            if item is None:
                return item_receipt(
                    item_id, Outcome.RECEIPT_OUTCOME_REJECTED, "malformed_body", "inner body", now
                )
            if item.WhichOneof("item") == "forward":
                return item_receipt(
                    item_id, Outcome.RECEIPT_OUTCOME_REJECTED, "nested_forward", "one relay hop", now
                )
            return self._local(s, inner.sender, item, now, direct=False)
        enqueue(
            s,
            next_hop=inner.destination,
            destination=inner.destination,
            method=method,
            item_id=item_id,
            body=forward_item(method, inner),
            now_ms=now,
        )
        return item_receipt(
            item_id, Outcome.RECEIPT_OUTCOME_ACCEPTED, "relayed", f"relayed by {outer.destination}", now
        )

    def _verify_inner(self, inner: Env, method: str) -> None:
        self.verifier.verify_forwarded(inner, method)

    # -- exchange ------------------------------------------------------------------------

    @grpc_errors
    async def GetCatalogue(
        self, request: peer_pb2.GetCatalogueRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> peer_pb2.GetCatalogueResponse:
        env = request.envelope
        await self._verify(env, GET_CATALOGUE)
        query = parse_body(peer_pb2.CatalogueQuery, env.body)
        digest, catalogue = self.catalogue()
        unchanged = query.known_digest == digest
        body = peer_pb2.CatalogueAnswer(
            digest=digest, unchanged=unchanged, catalogue=b"" if unchanged else catalogue
        )
        return peer_pb2.GetCatalogueResponse(
            envelope=await self._answer(env, body.SerializeToString(), GET_CATALOGUE)
        )

    @grpc_errors
    async def GetManifest(
        self, request: peer_pb2.GetManifestRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> peer_pb2.GetManifestResponse:
        env = request.envelope
        await self._verify(env, GET_MANIFEST)
        query = parse_body(peer_pb2.ManifestQuery, env.body)
        current = self.trust.manifest
        body = peer_pb2.ManifestAnswer()
        if current.manifest.version > query.known_version:
            body.manifest.CopyFrom(current.signed)
        return peer_pb2.GetManifestResponse(
            envelope=await self._answer(env, body.SerializeToString(), GET_MANIFEST)
        )

    @grpc_errors
    async def GetAuditCheckpoint(
        self, request: peer_pb2.GetAuditCheckpointRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> peer_pb2.GetAuditCheckpointResponse:
        env = request.envelope
        await self._verify(env, checkpoints.GET_AUDIT_CHECKPOINT)
        query = parse_body(peer_pb2.AuditCheckpointQuery, env.body)
        body = await self.db.run(lambda s: checkpoints.answer(s, self.trust.node_id, query))
        return peer_pb2.GetAuditCheckpointResponse(
            envelope=await self._answer(env, body.SerializeToString(), checkpoints.GET_AUDIT_CHECKPOINT)
        )

    @grpc_errors
    async def QueryData(
        self, request: peer_pb2.QueryDataRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> peer_pb2.QueryDataResponse:
        """A consented query, answered at once (docs/protocol.md 14): the envelope checked like
        every other, the per-peer limits applied, the answer signed and bound to the request."""
        env = request.envelope
        with self._admit(context, [env]):
            if env.destination != self.trust.node_id and self.forward_query is not None:
                return await self._relay_query(request, context)
            await self._verify(env, QUERY_DATA)
            query = parse_body(peer_pb2.DataQuery, env.body)
            answer_body = await self.answer_query(env.sender, query)
        return peer_pb2.QueryDataResponse(
            envelope=await self._answer(env, answer_body.SerializeToString(), QUERY_DATA)
        )

    async def _relay_query(
        self, request: peer_pb2.QueryDataRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> peer_pb2.QueryDataResponse:
        """A query for a member this node relays for (docs/protocol.md 14.1): checked as a relay
        checks a forwarded envelope, passed on unchanged within what is left of the caller's
        deadline, the member's answer (or refusal) passed back unchanged. The member checks the
        rest (time window, nonce) and answers the asker, who verifies the answer as the member's;
        this node reads neither the subject, sealed to the member, nor the records."""
        env = request.envelope
        try:
            self.verifier.verify_forwarded(env, QUERY_DATA)
        except EnvelopeRejected as e:
            _count_refusal(env, e)
            raise
        assert self.forward_query is not None
        # The asker's own deadline (a query's is at most 30 s); the call holds one of the asker's
        # per-peer slots here for as long, so a long one spends only its own budget.
        remaining = context.time_remaining()
        within_s = PEER_CALL_TIMEOUT_S if remaining is None else remaining
        try:
            with self._relaying(env.destination):
                response = await self.forward_query(env.destination, request, within_s)
        except asyncio.CancelledError:
            # The asker's call ended first (its deadline passed, or it gave up): recorded all the same.
            await self._relayed(env, "CANCELLED")
            raise
        except grpc.aio.AioRpcError as e:
            # The member's own status (a refusal, its deadline, its absence) is the asker's answer.
            await self._relayed(env, e.code().name)
            reason = dict(e.trailing_metadata() or ()).get(REASON_KEY, "")
            context.set_trailing_metadata(((REASON_KEY, str(reason)),) if reason else ())
            await context.abort(e.code(), e.details() or "")
        await self._relayed(env, "OK")
        return response

    async def _relayed(self, env: Env, status: str) -> None:
        """The relay's own record of a query it passed on, whatever the member answered."""
        digest = request_digest(env)
        records = [
            AuditEntry("in", env.sender, QUERY_DATA, digest, f"relayed to {env.destination}"),
            AuditEntry("out", env.destination, QUERY_DATA, digest, f"relayed from {env.sender}: {status}"),
        ]
        now = self.clock.now_ms()
        await self.db.run(lambda s: audit.append(s, records, now))

    async def _answer(self, env: Env, body: bytes, method: str) -> Env:
        now = self.clock.now_ms()
        reply = answer(self.trust.key, env, body, now, sender=self.trust.node_id)
        records = [
            AuditEntry("in", env.sender, method, reply.in_reply_to),  # the request's digest (answer)
            AuditEntry("out", env.sender, method, request_digest(reply)),
        ]
        await self.db.run(lambda s: audit.append(s, records, now))
        self.peer_seen(env.sender)
        return reply
