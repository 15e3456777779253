"""The node's tables. Personal data is never stored in the clear at the origin: the
application row holds routing metadata, and the applicant's data lives only inside the
sealed transfer in the outbox. The owner keeps the sealed payload and opens it on read.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


class Application(SQLModel, table=True):
    """An application as the origin counter sees it."""

    __tablename__ = "application"

    id: str = Field(primary_key=True)
    service_id: str
    owner_node: str
    status: str = Field(index=True)
    status_sequence: int = 0
    submitted_at_ms: int = Field(sa_type=BigInteger)
    due_at_ms: int = Field(sa_type=BigInteger)
    submitted_by: str
    idempotency_key: str
    purpose: str
    policy_decision_id: str = ""

    __table_args__ = (UniqueConstraint("submitted_by", "idempotency_key", name="uq_application_idem"),)


class SubmissionDigest(SQLModel, table=True):
    """The digest of the request that created an application: a retry under the same
    idempotency key must repeat it. Its own table so older databases gain it by create_all."""

    __tablename__ = "submission_digest"

    application_id: str = Field(primary_key=True)
    digest: str


class StatusEvent(SQLModel, table=True):
    """One status change of an application at the origin; (application, sequence) is unique
    so a status update delivered twice is applied once."""

    __tablename__ = "status_event"

    id: int | None = Field(default=None, primary_key=True)
    application_id: str = Field(index=True)
    sequence: int
    status: str
    reason: str = ""
    rule_id: str = ""
    at_ms: int = Field(sa_type=BigInteger)

    __table_args__ = (UniqueConstraint("application_id", "sequence", name="uq_status_seq"),)


class ReceiptRecord(SQLModel, table=True):
    """A signed receipt kept for non-repudiation: the raw envelope bytes as received."""

    __tablename__ = "receipt_record"

    id: int | None = Field(default=None, primary_key=True)
    application_id: str = Field(index=True)
    from_node: str
    outcome: str
    reason_code: str = ""
    reason: str = ""
    rule_id: str = ""
    received_at_ms: int = Field(sa_type=BigInteger)
    envelope: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ResultDocument(SQLModel, table=True):
    __tablename__ = "result_document"

    id: int | None = Field(default=None, primary_key=True)
    application_id: str = Field(index=True)
    name: str
    content_type: str
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class InboundApplication(SQLModel, table=True):
    """An application at its owner. The primary key on the application id is what makes
    delivery idempotent: a second copy finds the row and is answered as a duplicate."""

    __tablename__ = "inbound_application"

    id: str = Field(primary_key=True)
    origin_node: str = Field(index=True)
    service_id: str
    service_version: int
    handler: str
    status: str = Field(index=True)
    sequence: int
    received_at_ms: int = Field(sa_type=BigInteger)
    due_at_ms: int = Field(sa_type=BigInteger)
    purpose: str
    sealed_payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    fields_present: str = ""
    reason: str = ""
    rule_id: str = ""


class OutboxEntry(SQLModel, table=True):
    """Work to send. ``body`` is the serialized DeliverItem or StatusItem; each attempt
    wraps it in a freshly signed envelope. A claim lease (``claimed_until_ms``) lets
    several replicas share one PostgreSQL database without sending a row twice.

    ``state`` is ``pending``, ``held`` (waits for a release), ``done``, or ``dead``: a dead
    letter, set aside with its ``dead_reason`` code until an operator re-drives it
    (node/delivery/dead_letters.py says which failures make one)."""

    __tablename__ = "outbox_entry"

    id: int | None = Field(default=None, primary_key=True)
    next_hop: str = Field(index=True)
    destination: str
    method: str
    item_id: str = Field(index=True)
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at_ms: int = Field(sa_type=BigInteger)
    next_attempt_ms: int = Field(index=True, sa_type=BigInteger)
    attempts: int = 0
    state: str = Field(default="pending", index=True)
    last_error: str = ""
    claimed_until_ms: int = Field(default=0, sa_type=BigInteger)
    # Added with dead letters: a database created before them needs these two columns
    # (ALTER TABLE outbox_entry ADD COLUMN dead_reason VARCHAR NOT NULL DEFAULT '', ...).
    dead_reason: str = Field(default="", sa_column_kwargs={"server_default": ""})
    dead_at_ms: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class PeerState(SQLModel, table=True):
    """Persisted backoff per peer, so a restart does not hammer a peer that is down."""

    __tablename__ = "peer_state"

    node_id: str = Field(primary_key=True)
    failures: int = 0
    backoff_until_ms: int = Field(default=0, sa_type=BigInteger)
    last_error: str = ""
    last_success_ms: int = Field(default=0, sa_type=BigInteger)


class PeerCatalogue(SQLModel, table=True):
    """The last verified catalogue of each peer, kept so a restart can serve the union
    even while a peer is down."""

    __tablename__ = "peer_catalogue"

    node_id: str = Field(primary_key=True)
    digest: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    catalogue: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    fetched_at_ms: int = Field(sa_type=BigInteger)


class AuditRecord(SQLModel, table=True):
    """One envelope in or out. ``hash`` = SHA-256(prev_hash || record bytes); see node/audit.py."""

    __tablename__ = "audit_record"

    seq: int = Field(primary_key=True)
    at_ms: int = Field(sa_type=BigInteger)
    direction: str
    peer: str
    method: str
    envelope_digest: str
    detail: str = ""
    prev_hash: str
    hash: str


# --- bundles (一件事): node/cases/bundles.py ------------------------------------------------------


class ApplicationResult(SQLModel, table=True):
    """A named result value an owner's status change carried (StatusUpdate.results), kept
    at the origin; a later change's value for the same name replaces an earlier one's."""

    __tablename__ = "application_result"

    application_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    value: str
    sequence: int


class BundleRun(SQLModel, table=True):
    """A bundle at its lead node; its id is the bundle application's id. ``wanted`` counts
    events that may let it move, ``handled`` how many of them the runner has acted on, so a
    restart resumes every bundle with work left."""

    __tablename__ = "bundle_run"

    id: str = Field(primary_key=True)
    service_id: str
    created_at_ms: int = Field(sa_type=BigInteger)
    due_at_ms: int = Field(sa_type=BigInteger)
    wanted: int = Field(default=1, index=True)
    handled: int = 0
    sent_digest: str = ""


class BundlePart(SQLModel, table=True):
    """One component of a bundle at the lead: the application of its current attempt (made
    with an idempotency key of bundle, component and attempt, so it is made once), or why
    it could not be made; a clerk's correction stays sealed to this node's own key."""

    __tablename__ = "bundle_part"

    bundle_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    service_id: str
    attempt: int = 1
    # Looked up on every status change and receipt a node takes in (is it a bundle part?).
    application_id: str = Field(default="", index=True)
    failure: str = ""
    sealed_correction: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))
