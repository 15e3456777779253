"""docs/protocol-vectors.json against our implementation, vector by vector.

Another implementation is held to the same file, so a failure here means either our
code or the published spec changed; both need a deliberate decision.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from typing import Any

import pytest
from nacl.bindings import crypto_box_easy, crypto_scalarmult_base
from sqlmodel import Session, col, delete, select
from yrd.catalogue.v1.catalogue_pb2 import ServiceDefinition
from yrd.federation.v1.manifest_pb2 import SignedManifest
from yrd.peer.v1.peer_pb2 import (
    ApplicationPayload,
    ApplicationTransfer,
    Receipt,
    ReceiptOutcome,
    StatusItem,
    StatusUpdate,
)

from core.clock import FakeClock
from core.db import Database
from core.errors import EnvelopeRejected, InvalidInput, ManifestRejected, NotFound, YrdError
from core.json_doc import parse_json
from core.keys import NodeKey
from node.cases.admission import (
    MAX_AHEAD_MS,
    MAX_APPLICATION_AGE_MS,
    check_fields_present,
    check_sender,
    check_transfer,
)
from node.cases.origin import apply_delivery_receipt, apply_receipt_run, apply_status_changes
from node.delivery.peer_server import status_changes
from node.delivery.sender import FINAL_OUTCOMES
from node.models import Application, ReceiptRecord, ResultDocument, StatusEvent
from node.trust.envelope import EnvelopeVerifier, request_digest, signing_input
from node.trust.nonces import MemoryNonceStore
from node.trust.sealing import unseal, x25519_public_key, x25519_secret_key
from registry.manifest import (
    TrustedManifest,
    fingerprint,
    manifest_signing_input,
    verify_anchor,
    verify_successor,
)
from tests.support.vectors import ROOT, SEEDS, VECTORS, envelope

SIGNED = {m["name"]: m for m in VECTORS["manifests"]["signed"]}


def by_name(cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in cases}


REQUESTS = by_name(VECTORS["envelopes"]["requests"]["cases"])
RESPONSES = by_name(VECTORS["envelopes"]["responses"]["cases"])


def signed_manifest(name: str) -> SignedManifest:
    return SignedManifest.FromString(bytes.fromhex(SIGNED[name]["signed_manifest"]))


def trusted(name: str) -> TrustedManifest:
    return verify_anchor(signed_manifest(name))


def test_the_committed_vectors_are_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "scripts" / "make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build() == VECTORS


@pytest.mark.parametrize("vector", VECTORS["keys"], ids=lambda k: k["name"])
def test_keys_derive_from_their_seeds(vector: dict[str, Any]) -> None:
    key = NodeKey.from_seed(bytes.fromhex(vector["seed"]))
    assert key.public_key.hex() == vector["public_key"]
    assert key.key_id == vector["key_id"]
    assert x25519_public_key(key.public_key).hex() == vector["x25519_public_key"]
    assert x25519_secret_key(key).hex() == vector["x25519_secret_key"]
    assert crypto_scalarmult_base(x25519_secret_key(key)).hex() == vector["x25519_public_key"]


@pytest.mark.parametrize("vector", REQUESTS.values(), ids=list(REQUESTS))
async def test_request_vectors(vector: dict[str, Any]) -> None:
    env = envelope(vector["envelope"])
    assert signing_input(env).hex() == vector["signing_input"]
    assert request_digest(env).hex() == vector["digest"]
    assert hashlib.sha256(bytes.fromhex(vector["signing_input"])).hexdigest() == vector["digest"]
    nonces, now = MemoryNonceStore(), vector["now_ms"]
    for seen in vector["seen_nonces"]:
        assert await nonces.remember(seen["sender"], bytes.fromhex(seen["nonce"]), now, now)
    verifier = EnvelopeVerifier(
        VECTORS["envelopes"]["requests"]["receiver"],
        trusted(VECTORS["envelopes"]["manifest"]),
        nonces,
        FakeClock(now),
        VECTORS["envelopes"]["max_skew_ms"],
    )
    if vector["expect"] == "valid":
        # Ed25519 is deterministic, so the signature itself is a vector too.
        assert NodeKey.from_seed(SEEDS[env.key_id]).sign(signing_input(env)) == env.signature
        await verifier.verify_request(env, vector["method_called"])
    else:
        with pytest.raises(EnvelopeRejected) as err:
            await verifier.verify_request(env, vector["method_called"])
        assert err.value.code == vector["expect"]


@pytest.mark.parametrize("vector", RESPONSES.values(), ids=list(RESPONSES))
def test_response_vectors(vector: dict[str, Any]) -> None:
    context = VECTORS["envelopes"]["responses"]
    request = envelope(REQUESTS[context["request"]]["envelope"])
    response = envelope(vector["envelope"])
    assert signing_input(response).hex() == vector["signing_input"]
    verifier = EnvelopeVerifier(
        context["receiver"],
        trusted(VECTORS["envelopes"]["manifest"]),
        MemoryNonceStore(),
        FakeClock(context["now_ms"]),
        VECTORS["envelopes"]["max_skew_ms"],
    )
    if vector["expect"] == "valid":
        assert response.in_reply_to == request_digest(request)
        assert NodeKey.from_seed(SEEDS[response.key_id]).sign(signing_input(response)) == response.signature
        verifier.verify_response(response, request)
    else:
        with pytest.raises(EnvelopeRejected) as err:
            verifier.verify_response(response, request)
        assert err.value.code == vector["expect"]


@pytest.mark.parametrize("vector", VECTORS["sealed"]["valid"], ids=lambda v: v["name"])
def test_sealed_vectors_open_and_are_built_as_specified(vector: dict[str, Any]) -> None:
    recipient = NodeKey.from_seed(bytes.fromhex(vector["recipient_seed"]))
    sealed = bytes.fromhex(vector["sealed"])
    plaintext = unseal(recipient, sealed)
    assert plaintext.hex() == vector["plaintext"]
    ApplicationPayload.FromString(plaintext)
    # Rebuild from the spec's construction with the vector's fixed ephemeral key.
    esk = bytes.fromhex(vector["ephemeral_secret_key"])
    epk = crypto_scalarmult_base(esk)
    rpk = x25519_public_key(recipient.public_key)
    assert rpk.hex() == vector["recipient_x25519_public_key"]
    box_nonce = hashlib.blake2b(epk + rpk, digest_size=24).digest()
    assert (epk.hex(), box_nonce.hex()) == (vector["ephemeral_public_key"], vector["box_nonce"])
    assert epk + crypto_box_easy(plaintext, box_nonce, rpk, esk) == sealed


@pytest.mark.parametrize("vector", VECTORS["sealed"]["invalid"], ids=lambda v: v["name"])
def test_sealed_negative_vectors(vector: dict[str, Any]) -> None:
    recipient = NodeKey.from_seed(bytes.fromhex(vector["recipient_seed"]))
    with pytest.raises(InvalidInput) as err:
        unseal(recipient, bytes.fromhex(vector["sealed"]))
    assert err.value.code == vector["expect"]


@pytest.mark.parametrize("vector", SIGNED.values(), ids=list(SIGNED))
def test_signed_manifest_bytes(vector: dict[str, Any]) -> None:
    signed = signed_manifest(vector["name"])
    assert signed.manifest.hex() == vector["manifest"]
    assert manifest_signing_input(signed.manifest).hex() == vector["signing_input"]
    assert fingerprint(signed.manifest) == vector["fingerprint"]
    assert fingerprint(signed.manifest).replace(" ", "") == hashlib.sha256(signed.manifest).hexdigest()
    carried = [(s.node_id, s.key_id, s.signature.hex()) for s in signed.signatures]
    assert carried == [(s["node_id"], s["key_id"], s["signature"]) for s in vector["signatures"]]


@pytest.mark.parametrize("vector", VECTORS["manifests"]["anchors"], ids=lambda v: v["signed_manifest"])
def test_anchor_vectors(vector: dict[str, Any]) -> None:
    signed = signed_manifest(vector["signed_manifest"])
    if vector["expect"] == "valid":
        assert verify_anchor(signed).fingerprint == SIGNED[vector["signed_manifest"]]["fingerprint"]
    else:
        with pytest.raises(ManifestRejected) as err:
            verify_anchor(signed)
        assert err.value.code == vector["expect"]


@pytest.mark.parametrize(
    "vector",
    VECTORS["manifests"]["successors"],
    ids=lambda v: f"{v['current']}->{v['candidate']}@{v['now_ms']}",
)
def test_successor_vectors(vector: dict[str, Any]) -> None:
    current = trusted(vector["current"])
    candidate = signed_manifest(vector["candidate"])
    if vector["expect"] == "valid":
        assert verify_successor(current, candidate, vector["now_ms"]).signed == candidate
    else:
        with pytest.raises(ManifestRejected) as err:
            verify_successor(current, candidate, vector["now_ms"])
        assert err.value.code == vector["expect"]


APPLICATIONS = VECTORS["applications"]


@pytest.mark.parametrize("vector", APPLICATIONS["cases"], ids=lambda v: v["name"])
def test_application_vectors(vector: dict[str, Any]) -> None:
    """The owner's checks of a member's transfer (protocol §10.3), in their order."""
    assert APPLICATIONS["max_age_ms"] == MAX_APPLICATION_AGE_MS
    assert APPLICATIONS["max_ahead_ms"] == MAX_AHEAD_MS
    t = ApplicationTransfer.FromString(bytes.fromhex(vector["transfer"]))
    services = {
        sid: ServiceDefinition(service_id=sid, version=version)
        for sid, version in APPLICATIONS["services"].items()
    }

    def check() -> None:
        check_sender(t, vector["sender"])
        check_transfer(
            t,
            services.get(t.service_id),
            now_ms=APPLICATIONS["now_ms"],
            max_skew_ms=APPLICATIONS["max_skew_ms"],
        )
        check_fields_present(t, dict.fromkeys(vector["form_fields"], "x"))

    if vector["expect"] == "valid":
        check()
    else:
        with pytest.raises(YrdError) as err:
            check()
        assert err.value.code == vector["expect"]


STATUS = VECTORS["status"]
OUTCOMES = {
    ReceiptOutcome.RECEIPT_OUTCOME_ACCEPTED: "accepted",
    ReceiptOutcome.RECEIPT_OUTCOME_DUPLICATE: "duplicate",
}


@pytest.fixture(scope="module")
def origin_db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('status') / 'origin.db'}")
    db.create_all()
    return db


def _start(db: Database, app_id: str, owner: str, known: list[int]) -> None:
    """The origin holding ``app_id``, owned by ``owner``, with the changes ``known`` recorded."""

    def start(s: Session) -> None:
        for table in (StatusEvent, ResultDocument, ReceiptRecord, Application):
            s.exec(delete(table))
        s.add(
            Application(
                id=app_id, service_id="x", owner_node=owner, status="submitted",
                submitted_at_ms=0, due_at_ms=0, submitted_by="clerk", idempotency_key="k", purpose="p",
            )
        )  # fmt: skip
        s.flush()
        for sequence in known:
            s.add(StatusEvent(application_id=app_id, sequence=sequence, status="in_review", at_ms=0))
        if known:
            s.get_one(Application, app_id).status_sequence = max(known)

    db.transact(start)


@pytest.mark.parametrize("vector", STATUS["cases"], ids=lambda v: v["name"])
def test_status_vectors(vector: dict[str, Any], origin_db: Database) -> None:
    """The origin's handling of a status item, a single change or a run (protocol §10.2),
    through the code a NotifyStatus envelope reaches, against a real database."""
    app_id = STATUS["application_id"]
    _start(origin_db, app_id, STATUS["owner"], vector["known"])

    def apply(s: Session) -> tuple[str, str, list[int], int]:
        item = StatusItem.FromString(bytes.fromhex(vector["item"]))
        receipt, applied = apply_status_changes(s, vector["sender"], status_changes(item))
        outcome = OUTCOMES.get(receipt.outcome, receipt.reason_code)
        shows = s.get_one(Application, app_id).status_sequence
        return outcome, receipt.item_id, [u.sequence for u in applied], shows

    outcome, item_id, applied, shows = origin_db.transact(apply)
    assert (outcome, item_id, applied, shows) == (
        vector["expect"],
        vector["item_id"],
        vector["applied"],
        vector["shows"],
    )
    events = origin_db.transact(
        lambda s: list(s.exec(select(StatusEvent.sequence).where(col(StatusEvent.application_id) == app_id)))
    )
    assert sorted(events) == sorted({*vector["known"], *vector["applied"]})


RECEIPT_RUNS = VECTORS["receipt_runs"]


@pytest.mark.parametrize("vector", RECEIPT_RUNS["cases"], ids=lambda v: v["name"])
def test_receipt_run_vectors(vector: dict[str, Any], origin_db: Database) -> None:
    """The origin's handling of a status run on its Deliver receipt (protocol §10.6), through
    the code the sender's settle reaches: the run checked and applied, then the receipt kept."""
    app_id = RECEIPT_RUNS["application_id"]
    _start(origin_db, app_id, RECEIPT_RUNS["owner"], vector["known"])

    def settle(s: Session) -> tuple[str, list[int], int]:
        receipt = Receipt.FromString(bytes.fromhex(vector["receipt"]))
        applied: list[int] = []
        if receipt.outcome not in FINAL_OUTCOMES:  # the sender's settle reads nothing of it
            return "not_settled", applied, s.get_one(Application, app_id).status_sequence

        def apply_status(s: Session, sender: str, updates: Sequence[StatusUpdate]) -> Receipt:
            answer, fresh = apply_status_changes(s, sender, updates)
            applied.extend(u.sequence for u in fresh)
            return answer

        problem = apply_receipt_run(s, app_id, vector["sender"], receipt, b"", 0, apply_status)
        if problem is None:
            apply_delivery_receipt(s, app_id, vector["sender"], receipt, b"", 0)
        shows = s.get_one(Application, app_id).status_sequence
        return ("usable" if problem is None else problem.split(":")[0]), applied, shows

    outcome, applied, shows = origin_db.transact(settle)
    assert (outcome, applied, shows) == (vector["expect"], vector["applied"], vector["shows"])
    kept = origin_db.transact(lambda s: len(s.exec(select(ReceiptRecord)).all()))
    assert kept == (1 if outcome == "usable" else 0)  # an unusable receipt keeps nothing


@pytest.mark.parametrize("vector", VECTORS["json_text"], ids=lambda v: v["name"])
def test_json_text_vectors(vector: dict[str, Any]) -> None:
    """Section 1, JSON text: what every door and every peer's text is parsed by."""
    try:
        parse_json(bytes.fromhex(vector["text"]), "text")
        verdict = "valid"
    except InvalidInput:
        verdict = "invalid"
    assert verdict == vector["expect"]


@pytest.mark.parametrize("vector", VECTORS["routing"]["cases"], ids=lambda v: v["name"])
def test_routing_vectors(vector: dict[str, Any]) -> None:
    manifest = trusted(VECTORS["routing"]["manifest"])
    if vector["expect"] == "no_route":
        with pytest.raises(NotFound) as err:
            manifest.owner_of(vector["division_code"])
        assert err.value.code == "no_route"
    else:
        assert manifest.owner_of(vector["division_code"]).node_id == vector["expect"]


@pytest.mark.parametrize("vector", VECTORS["signing_keys"]["cases"], ids=lambda v: v["name"])
def test_signing_key_vectors(vector: dict[str, Any]) -> None:
    manifest = trusted(VECTORS["signing_keys"]["manifest"])
    if vector["expect"] == "no_signing_key":
        with pytest.raises(NotFound) as err:
            manifest.signing_key_id(vector["node_id"], vector["at_ms"])
        assert err.value.code == "no_signing_key"
    else:
        assert manifest.signing_key_id(vector["node_id"], vector["at_ms"]) == vector["expect"]
