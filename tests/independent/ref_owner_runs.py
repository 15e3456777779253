"""Section 10.6 of docs/protocol.md, the owner's side: which `Deliver` receipt carries a status run,
and what the owner owes the origin by `NotifyStatus` instead.

Written from the document alone, like the rest of this package (sections 1, 3, 4, 4.1, 5, 8, 10.1 to
10.6, and 3.3 for relays; `docs/catalogue.md` for filling a form from the owner's catalogue entry);
each rule cites its section. Where the document leaves a choice open, the choice is named in a
comment and in OWNER_RUN_GAPS.md.

Two halves:

* **Building** what an origin sends (the writing side of the protobuf wire format, then an
  `ApplicationPayload` sealed to the owner (5), an `ApplicationTransfer` (10.1), a `DeliverItem`, a
  signed request envelope (3.1), a relay's `forward` (3.3)) and answers (a `Receipt`, 10.4, on a
  response envelope, 4), with no protobuf library: fields are written by the numbers of the
  document's tables.
* **Predicting** (`OwnerModel`): for each delivery of an application, the owner's receipt (10.3,
  10.4), whether it carries a run and which (10.6 rules 1 to 3 and the paragraphs after them), and
  which changes the owner then owes the origin by `NotifyStatus` (10.3's last paragraph, 10.6).
"""

from __future__ import annotations

import datetime
import os
import re
import tomllib
from dataclasses import dataclass, field, replace

from tests.independent import wire
from tests.independent.edwards import x25519_public_from_ed25519
from tests.independent.primitives import Rejected, key_id_for, public_key_for
from tests.independent.ref_cases import Transfer, check_transfer
from tests.independent.ref_protocol import (
    Envelope,
    envelope_digest,
    seal_with_ephemeral,
    sign_envelope,
)
from tests.independent.wire import field_bytes, field_string, field_varint

DELIVER = "/yrd.peer.v1.PeerService/Deliver"  # 3.4
NOTIFY_STATUS = "/yrd.peer.v1.PeerService/NotifyStatus"

# 10.4: ReceiptOutcome.
ACCEPTED, DUPLICATE, REJECTED, RETRY = 1, 2, 3, 4
# 10.2, field 2: ApplicationStatus.
SUBMITTED, DELIVERED, IN_REVIEW, NEEDS_MATERIALS, APPROVED = 1, 2, 3, 4, 5
REJECTED_STATUS, COMPLETED, REFUSED, AWAITING_APPROVAL = 6, 7, 8, 9
STATUS_NAMES = {
    1: "SUBMITTED", 2: "DELIVERED", 3: "IN_REVIEW", 4: "NEEDS_MATERIALS", 5: "APPROVED",
    6: "REJECTED", 7: "COMPLETED", 8: "REFUSED", 9: "AWAITING_APPROVAL",
}  # fmt: skip
# 10.2: "an automatic decision is four: DELIVERED, IN_REVIEW, APPROVED, COMPLETED".
AUTOMATIC_DECISION = (DELIVERED, IN_REVIEW, APPROVED, COMPLETED)
# 10.6: what storing numbers without a decision ("DELIVERED, IN_REVIEW and, for an automatic
# decision, the decision's changes").
STORED_UNDECIDED = (DELIVERED, IN_REVIEW)
MAX_RUN_CHANGES = 16  # 10.2 step 1, 10.6 "at most 16"
MAX_RUN_BYTES = 65_536  # 10.6 "Sizes": a serialized StatusRun over 64 KiB does not ride
# 10.1 field 5: the reference's windows, which the document gives as the reference's.
MAX_SKEW_MS = 30_000
MAX_AGE_MS = 30 * 86_400_000
MAX_AHEAD_MS = 3_600_000
# 10.1 field 1: 1 to 64 characters of 0-9 a-z -, the first not '-' (ASCII only).
_APPLICATION_ID = re.compile(r"[0-9a-z][0-9a-z-]{0,63}")


# Section 3: the envelope, its writing and a request signed by a member.


def encode_envelope(env: Envelope) -> bytes:
    return b"".join((
        field_string(1, env.sender),
        field_string(2, env.key_id),
        field_string(3, env.destination),
        field_string(4, env.method),
        field_varint(5, env.created_at_ms),
        field_bytes(6, env.nonce),
        field_bytes(7, env.body),
        field_bytes(8, env.in_reply_to),
        field_bytes(9, env.signature),
    ))  # fmt: skip


def signed_response(*, request: Envelope, seed: bytes, body: bytes, at_ms: int) -> Envelope:
    """Section 4: the addressee answers, bound to the request by `in_reply_to = digest(req)`."""
    unsigned = Envelope(
        sender=request.destination,
        key_id=key_id_for(public_key_for(seed)),
        destination=request.sender,
        method=request.method,
        created_at_ms=at_ms,
        nonce=os.urandom(16),
        body=body,
        in_reply_to=envelope_digest(request),
        signature=b"",
    )
    return replace(unsigned, signature=sign_envelope(unsigned, seed))


def batch(envelopes: list[Envelope]) -> bytes:
    """3.4: `DeliverRequest`, `NotifyStatusRequest` and their responses are `repeated Envelope = 1`."""
    return b"".join(field_bytes(1, encode_envelope(env), always=True) for env in envelopes)


def read_batch(raw: bytes) -> list[bytes]:
    """The envelopes of a batch, as carried (read with ref_protocol.read_envelope)."""
    return [
        value for _, value in wire.known_fields(raw, {1: wire.LENGTH_DELIMITED}) if isinstance(value, bytes)
    ]


# Section 5 and 10.1: the sealed payload and the transfer.


@dataclass(frozen=True)
class Attachment:
    material: str
    filename: str
    content_type: str
    data: bytes


def encode_payload(name: str, id_number: str, form_json: bytes, attachments: list[Attachment]) -> bytes:
    """The `ApplicationPayload` of section 5's table."""
    parts = [field_string(1, name), field_string(2, id_number), field_bytes(3, form_json)]
    for a in attachments:
        body = b"".join((
            field_string(1, a.material), field_string(2, a.filename),
            field_string(3, a.content_type), field_bytes(4, a.data),
        ))  # fmt: skip
        parts.append(field_bytes(4, body, always=True))
    return b"".join(parts)


def seal_to(owner_ed25519_public: bytes, plaintext: bytes) -> bytes:
    """5.2 with a fresh ephemeral key, to the X25519 key 5.1 derives from the owner's signing key."""
    recipient = x25519_public_from_ed25519(owner_ed25519_public)
    if recipient is None:
        raise Rejected("recipient_key_invalid", "5.1: the owner's key does not convert")
    return seal_with_ephemeral(plaintext, recipient, os.urandom(32))


def encode_transfer(t: Transfer) -> bytes:
    """The `ApplicationTransfer` of the 10.1 table, field by field."""
    return b"".join((
        field_string(1, t.application_id),
        field_string(2, t.origin_node),
        field_string(3, t.service_id),
        field_varint(4, t.service_version),
        field_varint(5, t.submitted_at_ms),
        field_string(6, t.purpose),
        field_varint(7, int(t.consent)),
        field_bytes(8, t.sealed_payload),
        *(field_bytes(9, name.encode("utf-8"), always=True) for name in t.fields_present),
        field_varint(10, int(t.status_on_receipt)),
    ))  # fmt: skip


def deliver_application(transfer: bytes) -> bytes:
    """3.4: a `DeliverItem` whose oneof is field 1 `application` (written even if it were empty)."""
    return field_bytes(1, transfer, always=True)


def deliver_forward(inner: Envelope) -> bytes:
    """3.3: a `DeliverItem` whose oneof is field 2 `forward`, the inner envelope unchanged."""
    return field_bytes(2, encode_envelope(inner), always=True)


def application_id(at_ms: int) -> str:
    """10.1 field 1, as the reference makes them: 12 hex digits of milliseconds, 16 random ones."""
    return f"{at_ms:012x}{os.urandom(8).hex()}"


# docs/catalogue.md: a form filled from the owner's published entry.


@dataclass(frozen=True)
class FormField:
    name: str
    type: str
    required: bool
    choices: tuple[str, ...]
    max_length: int


@dataclass(frozen=True)
class CatalogueEntry:
    service_id: str
    version: int
    handler: str
    form: tuple[FormField, ...]
    materials: tuple[tuple[str, bool], ...]  # (name, required)


def read_catalogue_entry(toml_text: str, service_id: str) -> CatalogueEntry:
    """One `[[services]]` table of a catalogue file (docs/catalogue.md, "The catalogue file")."""
    for s in tomllib.loads(toml_text).get("services", []):
        if s["id"] == service_id:
            return CatalogueEntry(
                service_id,
                int(s["version"]),
                str(s.get("handler", "")),
                tuple(
                    FormField(
                        f["name"],
                        f["type"],
                        bool(f.get("required", False)),
                        tuple(f.get("choices", ())),
                        int(f.get("max_length", 2000)),
                    )
                    for f in s.get("form", [])
                ),
                tuple((m["name"], bool(m.get("required", False))) for m in s.get("materials", [])),
            )
    raise KeyError(service_id)


_ID_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]


def resident_id(first17: str) -> str:
    """GB 11643's check character (ISO 7064 MOD 11-2), as docs/catalogue.md's `resident_id` checks."""
    assert re.fullmatch(r"[0-9]{17}", first17)
    remainder = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11
    check = (12 - remainder) % 11
    return first17 + ("X" if check == 10 else str(check))


# Values that pass docs/catalogue.md's field formats. Division codes are real GB/T 2260 codes
# (Nanjing, Hangzhou); the phone is a mainland mobile number.
_DIVISIONS = ("320100", "330100")


def fill_form(entry: CatalogueEntry, today: datetime.date) -> dict[str, object]:
    """A value for every field of the entry, each valid for its type (docs/catalogue.md)."""
    form: dict[str, object] = {}
    divisions = iter(_DIVISIONS * len(entry.form))
    for f in entry.form:
        value: object
        if f.type == "division":
            value = next(divisions)
        elif f.type == "enum":
            value = f.choices[0]
        elif f.type == "phone":
            value = "13912345678"
        elif f.type == "date":
            value = today.isoformat()
        elif f.type == "resident_id":
            value = resident_id("33010219900307123")
        elif f.type == "integer":
            value = 1
        elif f.type == "boolean":
            value = True
        else:  # string
            value = "杭州市西湖区文三路1号"[: f.max_length]
        form[f.name] = value
    return form


def attachments_for(entry: CatalogueEntry) -> list[Attachment]:
    """One attachment per required material ("every required material has an attachment")."""
    return [
        Attachment(name, "scan.pdf", "application/pdf", b"%PDF-1.4 scan")
        for name, required in entry.materials
        if required
    ]


# Reading what the owner answers: a Receipt (10.4) and status changes (10.2), every field.


@dataclass(frozen=True)
class Document:
    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Change:
    """A `StatusUpdate` by the field numbers of the 10.2 table, every field."""

    application_id: str = ""
    status: int = 0
    reason: str = ""
    changed_at_ms: int = 0
    sequence: int = 0
    documents: tuple[Document, ...] = ()
    rule_id: str = ""
    results: tuple[tuple[str, str], ...] = ()  # sorted by name


def _text(value: int | bytes) -> str:
    assert isinstance(value, bytes)
    return wire.as_string(value)


def _ld(value: int | bytes) -> bytes:
    assert isinstance(value, bytes)
    return value


def _int(value: int | bytes) -> int:
    assert isinstance(value, int)
    return value


def read_change(raw: bytes) -> Change:
    ld, vi = wire.LENGTH_DELIMITED, wire.VARINT
    schema = {1: ld, 2: vi, 3: ld, 4: vi, 5: vi, 6: ld, 7: ld, 8: ld}
    values: dict[str, object] = {}
    documents: list[Document] = []
    results: dict[str, str] = {}
    for number, value in wire.known_fields(raw, schema):
        if number == 1:
            values["application_id"] = _text(value)
        elif number == 2:
            values["status"] = wire.as_int32(_int(value))  # section 8: enums are open
        elif number == 3:
            values["reason"] = _text(value)
        elif number == 4:
            values["changed_at_ms"] = wire.as_int64(_int(value))
        elif number == 5:
            values["sequence"] = _int(value)
        elif number == 6:
            doc = {1: b"", 2: b"", 3: b""}
            doc.update((n, _ld(v)) for n, v in wire.known_fields(_ld(value), dict.fromkeys((1, 2, 3), ld)))
            documents.append(Document(wire.as_string(doc[1]), wire.as_string(doc[2]), doc[3]))
        elif number == 7:
            values["rule_id"] = _text(value)
        else:  # a map entry {1 key, 2 value}; a key given twice keeps the last (protobuf's rule)
            entry = {1: b"", 2: b""}
            entry.update((n, _ld(v)) for n, v in wire.known_fields(_ld(value), {1: ld, 2: ld}))
            results[wire.as_string(entry[1])] = wire.as_string(entry[2])
    return Change(
        documents=tuple(documents),
        results=tuple(sorted(results.items())),
        **values,  # type: ignore[arg-type]
    )


def read_run(raw: bytes) -> tuple[Change, ...]:
    """A `StatusRun { repeated StatusUpdate updates = 1 }` (3.4), in the order carried."""
    return tuple(read_change(_ld(v)) for _, v in wire.known_fields(raw, {1: wire.LENGTH_DELIMITED}))


@dataclass(frozen=True)
class Receipt:
    """A `Receipt` by the field numbers of 10.4, every field. `status_run` is None when field 7 is
    absent, else the run's bytes (several occurrences merged, section 8: joined)."""

    item_id: str = ""
    outcome: int = 0
    reason_code: str = ""
    reason: str = ""
    received_at_ms: int = 0
    rule_id: str = ""
    status_run: bytes | None = None

    def run(self) -> tuple[Change, ...] | None:
        return None if self.status_run is None else read_run(self.status_run)


def read_receipt(raw: bytes) -> Receipt:
    ld, vi = wire.LENGTH_DELIMITED, wire.VARINT
    schema = {1: ld, 2: vi, 3: ld, 4: ld, 5: vi, 6: ld, 7: ld}
    values: dict[str, object] = {}
    runs: list[bytes] = []
    for number, value in wire.known_fields(raw, schema):
        if number == 2:
            values["outcome"] = wire.as_int32(_int(value))
        elif number == 5:
            values["received_at_ms"] = wire.as_int64(_int(value))
        elif number == 7:
            runs.append(_ld(value))
        else:
            values[{1: "item_id", 3: "reason_code", 4: "reason", 6: "rule_id"}[number]] = _text(value)
    return Receipt(status_run=b"".join(runs) if runs else None, **values)  # type: ignore[arg-type]


def read_status_item(raw: bytes) -> tuple[Change, ...]:
    """The changes of a `StatusItem` (3.4): its `run` (field 5) or its one `status` (field 1). Of
    the oneof the last field is the one set; a message field repeated in a row is merged
    (section 8). A `forward` (2) or the items of sections 13 and 14 carry no change here."""
    number, parts = 0, list[bytes]()
    for seen, value in wire.known_fields(raw, {1: wire.LENGTH_DELIMITED, 5: wire.LENGTH_DELIMITED}):
        parts = [*parts, _ld(value)] if seen == number else [_ld(value)]
        number = seen
    if number == 1:
        return (read_change(b"".join(parts)),)
    return read_run(b"".join(parts)) if parts else ()


def encode_receipt(
    *, item_id: str, outcome: int, reason_code: str = "", reason: str = "", received_at_ms: int
) -> bytes:
    """10.4, as an origin answers a `NotifyStatus` item (no field 7 on such a receipt)."""
    return b"".join((
        field_string(1, item_id), field_varint(2, outcome), field_string(3, reason_code),
        field_string(4, reason), field_varint(5, received_at_ms),
    ))  # fmt: skip


# The prediction.


@dataclass(frozen=True)
class Expect:
    """One change the owner must send: its sequence and status, and, where the document fixes
    them, its `rule_id` and the start of its `reason` (None: not fixed by the document)."""

    sequence: int
    status: int
    rule_id: str | None = None
    reason_starts: str | None = None

    def matches(self, c: Change, application: str) -> bool:
        return (
            c.application_id == application
            and (c.sequence, c.status) == (self.sequence, self.status)
            and (self.rule_id is None or c.rule_id == self.rule_id)
            and (self.reason_starts is None or c.reason.startswith(self.reason_starts))
        )


def numbered(statuses: tuple[int, ...], rule_id: str | None = None) -> tuple[Expect, ...]:
    """10.6: "in sequence order from 1"."""
    return tuple(Expect(n, s, rule_id) for n, s in enumerate(statuses, start=1))


NO_RUN, NEW_RUN, KEPT_RUN = "none", "new", "kept"


@dataclass(frozen=True)
class Prediction:
    """What the owner's receipt for one delivery must be.

    `run`: NO_RUN (field 7 absent), NEW_RUN (a run of `changes`, the storing transaction's), or
    KEPT_RUN (the very run the first receipt carried, `changed_at_ms` included, 10.6).
    `rule_id`: the receipt's field 6 where the document fixes it (None: not checked).
    `reason_as_first`: a copy refused at step 3 carries "the stored reason" (10.3), read here as the
    reason of the first receipt (OWNER_RUN_GAPS.md)."""

    outcome: int
    reason_code: str
    run: str
    changes: tuple[Expect, ...] = ()
    rule_id: str | None = None
    reason_as_first: bool = False


@dataclass
class Owed:
    """What the owner owes the origin by `NotifyStatus` for one application, over all its copies:
    `changes` (shapes), or `kept` (the run that rode on the first receipt, exactly as it rode)."""

    changes: tuple[Expect, ...] = ()
    kept: bool = False
    more: bool = False  # later changes may follow (a bundle's progress, 10.6 "Changes numbered later")


@dataclass(frozen=True)
class Delivery:
    """One delivery of a transfer as the owner sees it.

    `sender`: the authenticated sender S (the inner envelope's when a relay carried it, 3.3).
    `direct`: the item is the body of the `Deliver` envelope S itself signed and sent to the owner
    (10.6 rule 2); false for the inner envelope of any `forward`.
    `form_fields`: the top-level keys of the form inside the sealed payload (10.3 step 9).
    `admission`: the code of 10.3 steps 7-8 (payload, applicant, form, materials, consent, purpose)
    the item was built to fail, None when it passes (the form checks themselves are
    docs/catalogue.md's; the test builds the failure).
    `policy`: the owner's inbound policy's refusal (10.3 step 10) as (code, rule_id), None when it
    allows (docs/policies.md decides; the test wrote the owner's bundle)."""

    sender: str
    direct: bool
    form_fields: tuple[str, ...]
    admission: str | None = None
    policy: tuple[str, str] | None = None


@dataclass
class _Stored:
    origin: str
    refused: tuple[str, str] | None  # (code, rule_id) of a step-10 refusal
    first_rode: bool


@dataclass
class OwnerModel:
    """A document-following owner `owner` publishing `services` (service id -> version in force),
    of which `automatic` are decided automatically on storing, and `bundles` are bundles (10.5),
    whose changes the reference sends by NotifyStatus even when rules 1-3 hold (10.6: an owner
    MAY; "the reference sends them by NotifyStatus for a bundle's service")."""

    owner: str
    services: dict[str, int]
    automatic: frozenset[str]
    bundles: frozenset[str] = frozenset()
    stored: dict[str, _Stored] = field(default_factory=dict)
    owed: dict[str, Owed] = field(default_factory=dict)
    refused_early: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)  # every application id delivered

    def deliver(self, t: Transfer, d: Delivery, now_ms: int) -> Prediction:
        self.delivered.add(t.application_id)
        # 10.3 steps 1 and 2: nothing is stored and nothing sent (no origin to trust, no id to name).
        if t.origin_node != d.sender:
            return Prediction(REJECTED, "origin_mismatch", NO_RUN)
        if _APPLICATION_ID.fullmatch(t.application_id) is None:
            return Prediction(REJECTED, "invalid_application_id", NO_RUN)
        rides = t.status_on_receipt and d.direct  # 10.6 rules 1 and 2
        stored = self.stored.get(t.application_id)
        if stored is not None:
            return self._copy(t, stored, rides)
        code = self._checks(t, d, now_ms)
        if code == "stamped_ahead":
            # 10.3 step 6: RETRY, "nothing is stored or told"; 10.6: no run on a RETRY receipt.
            return Prediction(RETRY, code, NO_RUN)
        if code is not None:
            # 10.3, last paragraph: a refusal at steps 4-9 is also sent to the origin as the
            # application's first change, REFUSED, sequence 1, reason "<code>: <reason>", queued
            # once per application id; 10.6: refusals at steps 1-9 carry no run.
            if t.application_id not in self.refused_early:
                self.refused_early.add(t.application_id)
                self.owed[t.application_id] = Owed((Expect(1, REFUSED, reason_starts=f"{code}: "),))
            return Prediction(REJECTED, code, NO_RUN)
        if d.policy is not None:
            # Step 10: stored as refused, its single REFUSED change (rule_id: 10.2 field 7, "the
            # policy rule behind a refusal"). The change's reason is not fixed (OWNER_RUN_GAPS.md).
            policy_code, rule_id = d.policy
            changes: tuple[Expect, ...] = (Expect(1, REFUSED, rule_id),)
            outcome, reason_code, receipt_rule = REJECTED, policy_code, rule_id
            self.stored[t.application_id] = _Stored(d.sender, d.policy, first_rode=False)
        else:
            # Step 11: DELIVERED, IN_REVIEW and, for an automatic decision, the decision's changes.
            statuses = AUTOMATIC_DECISION if t.service_id in self.automatic else STORED_UNDECIDED
            changes = numbered(statuses)
            outcome, reason_code, receipt_rule = ACCEPTED, "accepted", None
            self.stored[t.application_id] = _Stored(d.sender, None, first_rode=False)
        # 10.6: the run holds all of them or none rides (more than 16: none; over 64 KiB: none,
        # which only the bytes can tell, checked by the caller with `run_fits`).
        bundle = t.service_id in self.bundles and d.policy is None
        if rides and len(changes) <= MAX_RUN_CHANGES and not bundle:
            self.stored[t.application_id].first_rode = True
            return Prediction(outcome, reason_code, NEW_RUN, changes, receipt_rule)
        self.owed[t.application_id] = Owed(changes, more=bundle)  # MUST then come by NotifyStatus
        return Prediction(outcome, reason_code, NO_RUN, rule_id=receipt_rule)

    def _copy(self, t: Transfer, stored: _Stored, rides: bool) -> Prediction:
        """10.3 step 3 and 10.6 rule 3 with the paragraph after the rules."""
        if stored.origin != t.origin_node:
            return Prediction(REJECTED, "id_taken", NO_RUN)  # rule 3 names no run for it
        if stored.refused is not None:
            outcome, code, rule_id = REJECTED, "refused", stored.refused[1]
        else:
            outcome, code, rule_id = DUPLICATE, "duplicate", None
        reason_as_first = stored.refused is not None
        if stored.first_rode and rides:
            return Prediction(outcome, code, KEPT_RUN, rule_id=rule_id, reason_as_first=reason_as_first)
        if stored.first_rode:
            # "A copy that arrives through a relay, or whose status_on_receipt is false, gets no
            # run: the owner then sends that run by NotifyStatus, once."
            self.owed[t.application_id] = Owed(kept=True)
        # A first receipt without a run: its changes were owed by NotifyStatus from the start.
        return Prediction(outcome, code, NO_RUN, rule_id=rule_id, reason_as_first=reason_as_first)

    def _checks(self, t: Transfer, d: Delivery, now_ms: int) -> str | None:
        """10.3 steps 4 to 9 in their order; the code of the first that fails."""
        try:
            check_transfer(
                t,
                sender=d.sender,
                services=self.services,
                now_ms=now_ms,
                max_skew_ms=MAX_SKEW_MS,
                max_age_ms=MAX_AGE_MS,
                max_ahead_ms=MAX_AHEAD_MS,
                form_fields=list(d.form_fields),
            )
        except Rejected as refused:
            if refused.code != "fields_present_mismatch" or d.admission is None:
                return refused.code
        return d.admission  # steps 7-8 come before step 9


def run_fits(status_run: bytes) -> bool:
    """10.6 "Sizes": an owner MUST NOT put a run whose serialized StatusRun is over 64 KiB."""
    return len(status_run) <= MAX_RUN_BYTES


def describe(changes: tuple[Change, ...]) -> list[tuple[int, str]]:
    return [(c.sequence, STATUS_NAMES.get(c.status, str(c.status))) for c in changes]
