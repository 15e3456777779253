"""The owner re-checks every application a member delivers, as its own counter would.

Built as a buggy or hostile member would: real envelopes signed with the member's key, sent
to the owner's PeerService over gRPC. Each bad item gets a signed REJECTED receipt with its
documented code (docs/protocol.md §10), and the owner keeps nothing: no row, no policy
decision, no status change queued.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import VerifyKey
from sqlmodel import Session, select
from yrd.peer.v1 import peer_pb2, peer_pb2_grpc

from core.clock import SystemClock
from core.db import Database
from core.errors import InvalidInput
from core.json_doc import MAX_JSON_DEPTH
from node.cases.admission import admit, is_application_id
from node.cases.origin import apply_delivery_receipt
from node.cases.owner import Owner
from node.models import Application, InboundApplication, OutboxEntry
from node.trust.envelope import seal_envelope, signing_input
from node.trust.sealing import seal
from policies.decision_log import PolicyDecisionRow
from registry.forms import resident_id_check_char
from simulations.local_federation import PROVINCES
from simulations.sample_applications import application_body
from tests.support.federation import Federation, allow_all_specs, node_channel

DELIVER = "/yrd.peer.v1.PeerService/Deliver"
SERVICE = "zj.medical.cross-region-filing"
YEAR_MS = 365 * 86_400_000
Outcome = peer_pb2.ReceiptOutcome


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    specs = [s for s in allow_all_specs(tmp_path, PROVINCES) if s.node_id in ("jiangsu", "zhejiang")]
    f = await Federation(tmp_path, specs).start()
    try:
        yield f
    finally:
        await f.close()


class Member:
    """Jiangsu as a sender that builds its own transfers instead of using its counter."""

    def __init__(self, fed: Federation) -> None:
        self.js, self.zj = fed.nodes["jiangsu"], fed.nodes["zhejiang"]
        self.defn = self.js.index.get(SERVICE)
        self.body = application_body(self.defn, random.Random(7))
        self.count = 0

    def transfer(
        self,
        form: Callable[[dict[str, Any]], None] = lambda f: None,
        applicant_id: str | None = None,
        materials: list[str] | None = None,
        sealed: bytes | None = None,
        **fields: Any,
    ) -> peer_pb2.ApplicationTransfer:
        self.count += 1
        now = self.js.clock.now_ms()
        the_form = dict(self.body["form"])
        form(the_form)
        wanted = [a["material"] for a in self.body["attachments"]] if materials is None else materials
        payload = peer_pb2.ApplicationPayload(
            applicant_name=self.body["applicant"]["name"],
            applicant_id_number=applicant_id or self.body["applicant"]["id_number"],
            form_json=json.dumps(the_form, ensure_ascii=False).encode(),
            attachments=[
                peer_pb2.Attachment(
                    material=m, filename="scan.pdf", content_type="application/pdf", data=b"%"
                )
                for m in wanted
            ],
        )
        t = peer_pb2.ApplicationTransfer(
            application_id=f"member-{self.count:04d}",
            origin_node="jiangsu",
            service_id=SERVICE,
            service_version=self.defn.version,
            submitted_at_ms=now,
            purpose="service-delivery",
            consent=True,
            sealed_payload=sealed
            or seal(self.js.trust.public_key_of("zhejiang", now), payload.SerializeToString()),
            fields_present=sorted(the_form),
        )
        for name, value in fields.items():
            if name == "fields_present":
                del t.fields_present[:]
                t.fields_present.extend(value)
            else:
                setattr(t, name, value)
        return t

    async def deliver(self, t: peer_pb2.ApplicationTransfer) -> peer_pb2.Receipt:
        env = seal_envelope(
            self.js.trust.key,
            sender="jiangsu",
            destination="zhejiang",
            method=DELIVER,
            body=peer_pb2.DeliverItem(application=t).SerializeToString(),
            now_ms=self.js.clock.now_ms(),
        )
        async with node_channel(self.zj) as ch:
            answer = await peer_pb2_grpc.PeerServiceStub(ch).Deliver(peer_pb2.DeliverRequest(envelopes=[env]))
        (reply,) = answer.receipts
        VerifyKey(self.zj.trust.key.public_key).verify(signing_input(reply), reply.signature)
        assert (reply.sender, reply.destination) == ("zhejiang", "jiangsu")
        return peer_pb2.Receipt.FromString(reply.body)

    async def kept_by_owner(self) -> tuple[int, int, list[str]]:
        """(inbound rows, policy decisions, the item ids queued in the outbox) at the owner."""

        def count(s: Session) -> tuple[int, int, list[str]]:
            return (
                len(s.exec(select(InboundApplication)).all()),
                len(s.exec(select(PolicyDecisionRow)).all()),
                sorted(e.item_id for e in s.exec(select(OutboxEntry)).all()),
            )

        return await self.zj.db.run(count)


def bad_check_digit(id_number: str) -> str:
    right = resident_id_check_char(id_number[:17])
    return id_number[:17] + ("0" if right != "0" else "1")


def set_field(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda form: form.__setitem__(name, value)


def drop_field(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda form: form.pop(name)


async def test_every_bad_item_is_refused_with_its_code_and_nothing_is_kept(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    m = Member(fed)
    required = next(f.name for f in m.defn.form if f.required)
    now = m.js.clock.now_ms()
    forged_id = "x/../y\n2026-01-01 INFO forged line"
    cases: list[tuple[str, peer_pb2.ApplicationTransfer, str]] = [
        ("empty id", m.transfer(application_id=""), "invalid_application_id"),
        ("4000-character id", m.transfer(application_id="a" * 4000), "invalid_application_id"),
        ("path and newline in id", m.transfer(application_id=forged_id), "invalid_application_id"),
        ("upper-case id", m.transfer(application_id="APP-1"), "invalid_application_id"),
        ("origin is not the sender", m.transfer(origin_node="zhejiang"), "origin_mismatch"),
        ("origin is no member", m.transfer(origin_node="node-zz"), "origin_mismatch"),
        ("service the owner lacks", m.transfer(service_id="zj.nothing"), "unknown_service"),
        ("version 0", m.transfer(service_version=0), "unknown_version"),
        ("version 99", m.transfer(service_version=99), "unknown_version"),
        ("a year in the future", m.transfer(submitted_at_ms=now + YEAR_MS), "bad_time"),
        ("before the epoch", m.transfer(submitted_at_ms=-1), "bad_time"),
        ("sealed to nobody", m.transfer(sealed=b"\x00" * 60), "sealed_payload_invalid"),
        ("wrong type", m.transfer(form=set_field(required, 12345)), "invalid_form_field"),
        (
            "unknown field",
            m.transfer(form=set_field("bogus", "x"), fields_present=[*sorted(m.body["form"]), "bogus"]),
            "invalid_form_field",
        ),
        (
            "required field missing",
            m.transfer(form=drop_field(required), fields_present=sorted(set(m.body["form"]) - {required})),
            "invalid_form_field",
        ),
        ("required materials missing", m.transfer(materials=[]), "missing_material"),
        ("unknown material", m.transfer(materials=["香烟"]), "unknown_material"),
        (
            "resident ID check digit",
            m.transfer(applicant_id=bad_check_digit(m.body["applicant"]["id_number"])),
            "invalid_form_field",
        ),
        ("no consent", m.transfer(consent=False), "consent_required"),
        ("purpose with a newline", m.transfer(purpose="audit\nforged"), "invalid_purpose"),
        ("lying fields_present", m.transfer(fields_present=["bogus"]), "fields_present_mismatch"),
        (
            "fields_present with a repeat",
            m.transfer(fields_present=[*m.body["form"], next(iter(m.body["form"]))]),
            "fields_present_mismatch",
        ),
    ]
    caplog.set_level(logging.DEBUG)
    for name, t, code in cases:
        receipt = await m.deliver(t)
        assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_REJECTED, code), name
        assert receipt.item_id == t.application_id, name
    # No application and no policy decision; only the refusal as a status change to the origin
    # (a relay would otherwise have the only receipt), once per well-formed id of the sender's.
    told = [t for _, t, code in cases if code not in ("invalid_application_id", "origin_mismatch")]
    assert await m.kept_by_owner() == (0, 0, sorted(f"{t.application_id}#1" for t in told))
    again = await m.deliver(told[0])
    assert again.reason_code == cases[[c[1] for c in cases].index(told[0])][2]
    assert len((await m.kept_by_owner())[2]) == len(told)
    # The forged id reached the log only escaped: no record holds its line break.
    assert not [r for r in caplog.records if "\n2026-01-01 INFO forged" in r.getMessage()]
    assert any(repr(forged_id) in r.getMessage() for r in caplog.records)

    good = m.transfer()
    receipt = await m.deliver(good)
    assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_ACCEPTED, "accepted")
    rows, decisions, _ = await m.kept_by_owner()
    assert (rows, decisions) == (1, 1)
    again = await m.deliver(good)
    assert again.reason_code == "duplicate"


async def test_an_application_stamped_by_a_clock_running_ahead_waits_instead_of_being_refused(
    fed: Federation,
) -> None:
    """Beyond the allowed skew but within an hour ahead is a skewed origin's clock, which
    time cures: RETRY ``stamped_ahead``, nothing kept, nothing told; the same item within the
    skew is taken (the sender re-sends it once the owner's clock has caught up)."""
    m = Member(fed)
    now = m.zj.clock.now_ms()
    ahead = m.transfer(submitted_at_ms=now + 45_000)
    receipt = await m.deliver(ahead)
    assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_RETRY, "stamped_ahead")
    assert await m.kept_by_owner() == (0, 0, [])
    ahead.submitted_at_ms = now + 20_000  # what the same stamp is once 25 s have passed
    receipt = await m.deliver(ahead)
    assert (receipt.outcome, receipt.reason_code) == (Outcome.RECEIPT_OUTCOME_ACCEPTED, "accepted")


async def test_the_owner_checks_its_own_fields_present_not_the_senders(fed: Federation) -> None:
    m = Member(fed)
    t = m.transfer(fields_present=list(reversed(sorted(m.body["form"]))))  # any order is the same set
    assert (await m.deliver(t)).reason_code == "accepted"
    row = await m.zj.db.run(lambda s: s.get(InboundApplication, t.application_id))
    assert row is not None and row.fields_present == ",".join(sorted(m.body["form"]))


async def test_the_origin_shows_a_refusal_with_the_owners_code(fed: Federation) -> None:
    """A counter still on an old catalogue version sends what the owner refuses; the
    origin's own receipt handling turns the owner's signed refusal into ``refused``."""
    m = Member(fed)
    receipt = await m.deliver(m.transfer(service_version=m.defn.version + 1))
    app = Application(
        id="stale-1",
        service_id=SERVICE,
        owner_node="zhejiang",
        status="submitted",
        submitted_at_ms=0,
        due_at_ms=0,
        submitted_by="clerk",
        idempotency_key="stale-1",
        purpose="service-delivery",
    )

    def record(s: Session) -> None:
        s.add(app)
        s.flush()
        apply_delivery_receipt(s, "stale-1", "zhejiang", receipt, b"", 1)

    await m.js.db.run(record)
    view = await m.js.backend.origin.get("stale-1")
    assert view["status"] == "refused"
    assert view["receipts"][0]["reason_code"] == "unknown_version"


def test_application_ids() -> None:
    assert is_application_id("0193a1b2c3d4e5f60718293a4b5c")  # what origins generate
    assert is_application_id("app-0001") and not is_application_id("-app")
    assert not is_application_id("a" * 65) and not is_application_id("a\n")


async def test_the_counter_refuses_what_the_owner_would(fed: Federation) -> None:
    """Missing materials: refused at the counter by the same function the owner calls."""
    m = Member(fed)
    status, problem = await fed.submit("jiangsu", dict(m.body, attachments=[]), "no-materials")
    assert (status, problem["code"]) == (400, "missing_material")
    with pytest.raises(InvalidInput) as err:
        admit(
            m.defn,
            applicant_name=m.body["applicant"]["name"],
            applicant_id_number=m.body["applicant"]["id_number"],
            form=m.body["form"],
            materials=[],
            consent=True,
            purpose="service-delivery",
        )
    assert err.value.code == "missing_material"


def test_an_earlier_copy_is_found_even_while_only_in_the_batchs_session(tmp_path: Path) -> None:
    """A bundle's row goes into the batch's session, not straight to the table: a second copy
    later in the batch must still find it (a duplicate, not an integrity error), and the
    answers to a copy read the stored row's origin, status, reason and rule."""
    db = Database(f"sqlite:///{tmp_path / 'owner.sqlite'}")
    db.create_all()
    owner = Owner(db=db, trust=None, services=dict, policy=None, clock=SystemClock(), wake=print)  # type: ignore[arg-type]

    def row(app_id: str, status: str, reason: str = "", rule_id: str = "") -> InboundApplication:
        return InboundApplication(
            id=app_id,
            origin_node="jiangsu",
            service_id=SERVICE,
            service_version=1,
            handler="bundle",
            status=status,
            sequence=2,
            received_at_ms=1,
            due_at_ms=2,
            purpose="p",
            sealed_payload=b"",
            reason=reason,
            rule_id=rule_id,
        )

    def answer(s: Session, sender: str, app_id: str) -> tuple[int, str, str, str]:
        t = peer_pb2.ApplicationTransfer(application_id=app_id, origin_node=sender)
        r = owner.accept(s, sender, t, 3)
        return r.outcome, r.reason_code, r.reason, r.rule_id

    with db.session() as s, s.begin():
        s.add(row("a1", "in_review"))
        s.add(row("a2", "refused", "no", "rule-7"))
        assert answer(s, "jiangsu", "a1") == (
            Outcome.RECEIPT_OUTCOME_DUPLICATE,
            "duplicate",
            "already received",
            "",
        )
        assert answer(s, "jiangsu", "a2") == (Outcome.RECEIPT_OUTCOME_REJECTED, "refused", "no", "rule-7")
        assert answer(s, "anhui", "a1")[:2] == (Outcome.RECEIPT_OUTCOME_REJECTED, "id_taken")
    db.close()


# JSON that Python's json.loads takes but a counter refuses (core/json_doc.py): the text of a
# form with its first field written twice, one field's text a lone surrogate escape, a field
# nested too deep, and bytes that are not UTF-8.
def _hostile_forms(form: dict[str, Any]) -> dict[str, bytes]:
    first = next(iter(form))
    members = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in form.items()]
    text_field = next(k for k, v in form.items() if isinstance(v, str))
    nested: Any = "x"
    for _ in range(MAX_JSON_DEPTH + 1):
        nested = [nested]
    return {
        "repeated name": ("{" + ", ".join([*members, members[0]]) + "}").encode(),
        "lone surrogate": json.dumps({**form, text_field: "\ud800"}).encode(),
        "nested too deep": json.dumps({**form, first: nested}).encode(),
        "not UTF-8": json.dumps(form, ensure_ascii=False).encode("utf-16"),
    }


async def test_an_owner_reads_a_peers_form_json_as_strictly_as_its_counter_reads_a_body(
    fed: Federation,
) -> None:
    """The class: JSON from a peer parsed laxer than the counter's door parses its clients'.
    A repeated name and a lone surrogate were stored (the surrogate then broke every page
    that wrote the form); each is now refused at step 8 with the form's code."""
    m = Member(fed)
    now = m.js.clock.now_ms()
    for name, raw in _hostile_forms(dict(m.body["form"])).items():
        t = m.transfer()
        payload = peer_pb2.ApplicationPayload(
            applicant_name=m.body["applicant"]["name"],
            applicant_id_number=m.body["applicant"]["id_number"],
            form_json=raw,
            attachments=[
                peer_pb2.Attachment(
                    material=a["material"], filename="s.pdf", content_type="application/pdf", data=b"%"
                )
                for a in m.body["attachments"]
            ],
        )
        t.sealed_payload = seal(m.js.trust.public_key_of("zhejiang", now), payload.SerializeToString())
        receipt = await m.deliver(t)
        assert (receipt.outcome, receipt.reason_code) == (
            Outcome.RECEIPT_OUTCOME_REJECTED,
            "invalid_form_field",
        ), (
            name,
            receipt.reason,
        )
    rows, decisions, _ = await m.kept_by_owner()
    assert (rows, decisions) == (0, 0)
