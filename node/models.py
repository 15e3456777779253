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
    idempotency key must repeat it. Its own table (node/migrations 0002 adds it to older databases)."""

    __tablename__ = "submission_digest"

    application_id: str = Field(primary_key=True)
    digest: str


class StatusEvent(SQLModel, table=True):
    """One status change of an application at the origin; (application, sequence) is unique
    so a status update delivered twice is applied once."""

    __tablename__ = "status_event"

    id: int | None = Field(default=None, primary_key=True)
    application_id: str  # looked up by uq_status_seq's index, which leads with it
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
    # The serialized StatusRun that rode on the Deliver receipt instead of the outbox
    # (docs/protocol.md 10.6), kept so a re-sent copy's DUPLICATE carries the same run;
    # None when the changes went by NotifyStatus.
    receipt_run: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


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


class QuotaUsage(SQLModel, table=True):
    """One policy quota's token bucket, shared by every replica of the node (policies/quotas.py
    updates it under a row lock); ``tokens`` as of ``updated_ms`` (wall clock, the replicas'
    only common time)."""

    __tablename__ = "quota_usage"

    quota_id: str = Field(primary_key=True)
    scope_key: str = Field(primary_key=True)
    tokens: float
    updated_ms: int = Field(sa_type=BigInteger)


class AuditCheckpoint(SQLModel, table=True):
    """A signed head of an audit chain: this node's own (``node_id`` is this node) and those
    its peers handed over, kept so a truncated chain is caught (node/delivery/checkpoints.py)."""

    __tablename__ = "audit_checkpoint"

    node_id: str = Field(primary_key=True)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    head_hash: str
    at_ms: int = Field(sa_type=BigInteger)
    key_id: str
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    received_at_ms: int = Field(sa_type=BigInteger)


# --- supervision clues (node/cases/clues.py, docs/clues.md) ------------------------------------


class ClueSent(SQLModel, table=True):
    """A clue as the node that took it in sees it: where it went and its latest step. The
    reporter and the description live only inside the sealed transfer in the outbox."""

    __tablename__ = "clue_sent"

    id: str = Field(primary_key=True)
    owner_node: str
    source: str
    region_code: str
    domains: str  # comma-separated domain codes
    severity: str
    subject: str
    status: str = Field(index=True)
    status_sequence: int = 0
    created_at_ms: int = Field(sa_type=BigInteger)
    acknowledge_by_ms: int = Field(sa_type=BigInteger)
    close_by_ms: int = Field(sa_type=BigInteger)
    submitted_by: str
    idempotency_key: str
    digest: str = ""  # of the request: a retry under the same key must repeat it

    __table_args__ = (UniqueConstraint("submitted_by", "idempotency_key", name="uq_clue_idem"),)


class ClueCase(SQLModel, table=True):
    """A clue at the member that owns its region. The primary key on the clue id is what makes
    delivery idempotent; the detail stays sealed as received and is opened on read."""

    __tablename__ = "clue_case"

    id: str = Field(primary_key=True)
    source_node: str = Field(index=True)
    source: str
    region_code: str
    domains: str
    subject_credit_code: str = ""
    subject_place: str = ""
    severity: str
    reported_at_ms: int = Field(sa_type=BigInteger)
    acknowledge_by_ms: int = Field(sa_type=BigInteger)
    close_by_ms: int = Field(sa_type=BigInteger)
    received_at_ms: int = Field(sa_type=BigInteger)
    status: str = Field(index=True)  # open | closed
    sequence: int = 0
    sealed_detail: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ClueTask(SQLModel, table=True):
    """One department's part of a clue: one per domain, so a clue of several domains is one
    joint inspection shared by their departments, each recording its own findings."""

    __tablename__ = "clue_task"

    id: int | None = Field(default=None, primary_key=True)
    clue_id: str  # looked up by its unique constraint's index, which leads with it
    domain: str
    department: str = Field(index=True)
    level: str
    status: str = Field(index=True)  # dispatched | acknowledged | findings | closed
    acknowledge_by_ms: int = Field(sa_type=BigInteger)
    close_by_ms: int = Field(sa_type=BigInteger)
    escalations: int = 0
    # Serialized ClueFindings (text and documents), as the department recorded them.
    findings: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))
    rectification: str = ""

    __table_args__ = (UniqueConstraint("clue_id", "domain", name="uq_clue_task_domain"),)


class ClueEvent(SQLModel, table=True):
    """One step of a clue, at both ends; (clue, sequence) is unique so a step delivered twice
    is recorded once. ``sealed_findings`` is sealed to the clue's source node."""

    __tablename__ = "clue_event"

    id: int | None = Field(default=None, primary_key=True)
    clue_id: str  # looked up by its unique constraint's index, which leads with it
    sequence: int
    step: str
    department: str = ""
    level: str = ""
    note: str = ""
    at_ms: int = Field(sa_type=BigInteger)
    sealed_findings: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))

    __table_args__ = (UniqueConstraint("clue_id", "sequence", name="uq_clue_event_seq"),)


# --- bundles (一件事): node/cases/bundles/ -------------------------------------------------------


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


# --- data sharing (node/sharing/, docs/sharing.md) ----------------------------------------------
# A subject (person or company) is never named in the clear here: ``subject_ref`` is a keyed
# digest of its id under this node's key (node/sharing/checks.py), so the tables answer "this
# person's records and disclosures" to whoever knows the id without holding a list of ids.


class NodeSecret(SQLModel, table=True):
    """The node's random secret (node/trust/secret.py): the key of the subject digests and the
    root of the check codes' key, made once per node (shared by its replicas) and kept apart
    from the signing key so a key rotation neither orphans records nor voids receipts."""

    __tablename__ = "node_secret"

    id: int = Field(default=1, primary_key=True)
    secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class DataRecordRow(SQLModel, table=True):
    """One subject's record of one resource this node holds, as the operator loaded it."""

    __tablename__ = "data_record"

    resource_id: str = Field(primary_key=True)
    subject_ref: str = Field(primary_key=True)
    fields_json: str
    updated_at_ms: int = Field(sa_type=BigInteger)


class DataRequestSent(SQLModel, table=True):
    """A request for a conditional resource, at the asking node; the holder's decision and
    any revocation arrive through the outbox and move ``status``."""

    __tablename__ = "data_request_sent"
    __table_args__ = (UniqueConstraint("requested_by", "idempotency_key", name="uq_data_request_idem"),)

    id: str = Field(primary_key=True)
    holder_node: str
    resource_id: str
    department: str
    fields: str  # comma-separated field names asked for
    purpose: str
    legal_basis: str
    until_ms: int = Field(sa_type=BigInteger)
    requested_by: str
    created_at_ms: int = Field(sa_type=BigInteger)
    status: str = Field(index=True)  # pending | approved | refused | revoked
    granted_fields: str = ""
    granted_until_ms: int = Field(default=0, sa_type=BigInteger)
    note: str = ""
    sequence: int = 0  # the last holder update applied
    updated_at_ms: int = Field(sa_type=BigInteger)
    # An Idempotency-Key makes a retried POST the same request (None: the client sent none).
    idempotency_key: str | None = None
    digest: str = ""


class DataGrant(SQLModel, table=True):
    """A request received by the holder; once approved it is the grant every later query of
    that asker (node and department) for that resource is checked against, until revoked."""

    __tablename__ = "data_grant"

    id: str = Field(primary_key=True)  # the asker's request id
    asker_node: str = Field(index=True)
    asker_department: str
    resource_id: str = Field(index=True)
    fields: str
    purpose: str
    legal_basis: str
    until_ms: int = Field(sa_type=BigInteger)
    requested_at_ms: int = Field(sa_type=BigInteger)
    requested_by: str
    received_at_ms: int = Field(sa_type=BigInteger)
    status: str = Field(index=True)  # pending | approved | refused | revoked
    granted_fields: str = ""
    granted_until_ms: int = Field(default=0, sa_type=BigInteger)
    decided_by: str = ""
    decided_at_ms: int = Field(default=0, sa_type=BigInteger)
    note: str = ""
    sequence: int = 0  # the last update sent to the asker


class DataDisclosure(SQLModel, table=True):
    """One resource asked of one holder in one query: at the holder (``side`` = holder) what
    was disclosed to whom and why, and its mirror at the asker (``side`` = asker)."""

    __tablename__ = "data_disclosure"

    id: int | None = Field(default=None, primary_key=True)
    side: str
    query_id: str = Field(index=True)
    at_ms: int = Field(sa_type=BigInteger)
    asker_node: str
    asker_department: str
    asked_by: str
    holder_node: str
    resource_id: str
    subject_ref: str = Field(index=True)
    purpose: str
    basis: str  # consent | grant:<request id> | ""
    fields: str  # comma-separated names disclosed
    outcome: str  # answered | no_record | refused | missing
    reason_code: str = ""


class DataMeter(SQLModel, table=True):
    """Calls per resource, asker and day (UTC+8) at the holder, by outcome."""

    __tablename__ = "data_meter"

    day: str = Field(primary_key=True)
    resource_id: str = Field(primary_key=True)
    asker_node: str = Field(primary_key=True)
    outcome: str = Field(primary_key=True)
    calls: int = 0
