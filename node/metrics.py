"""Module-level Prometheus metrics of a node (``yrd_<subsystem>_<thing>_<unit>``).

Labels are bounded: peers are federation members and services are catalogue ids, both
short lists; application ids and personal data never become labels.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class Labelled(Generic[M]):
    """A labelled metric whose children are kept by their label values, for the metrics every
    application touches: prometheus_client's ``labels()`` checks the names, builds a tuple and
    takes a lock on each call (about 2.5 µs, a dozen times per routed application), where a
    kept child is one dictionary look-up. Only for metrics never cleared: a cleared metric
    would drop the children kept here from its output."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        """The child for ``values``, in the order of the metric's label names."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


APPLICATIONS_SUBMITTED = Labelled(
    Counter("yrd_applications_submitted_total", "Applications accepted at this counter", ["service"])
)
APPLICATIONS_BACKPRESSURED = Counter(
    "yrd_applications_backpressured_total",
    "Applications refused at this counter because the outbox to their next hop was too deep",
)
APPLICATIONS_RECEIVED = Labelled(
    Counter("yrd_applications_received_total", "Applications received as owner, by outcome", ["outcome"])
)
STATUS_RUNS_ON_RECEIPT = Counter(
    "yrd_status_runs_on_receipt_total",
    "Status runs an owner sent on a Deliver receipt instead of by NotifyStatus (docs/protocol.md 10.6)",
)
LOGIN_FAILURES = Counter("yrd_login_failures_total", "Counter logins refused for bad credentials")
LOGIN_THROTTLED = Counter(
    "yrd_login_throttled_total",
    "Counter logins refused before checking the password, by why (account, address, busy)",
    ["scope"],
)
PEER_CALLS_LIMITED = Counter(
    "yrd_peer_calls_limited_total",
    "Peer service calls refused by a per-peer limit, by reason (rate_limited, too_many_calls)",
    ["reason"],
)
HTTP_SLOW_CLIENTS = Counter(
    "yrd_http_slow_clients_total", "HTTP connections closed because their request headers came too slowly"
)
COUNTER_REQUESTS_LIMITED = Counter(
    "yrd_http_requests_limited_total", "HTTP requests at the counter refused by the per-account rate limit"
)
COUNTER_CALLS_LIMITED = Counter(
    "yrd_grpc_requests_limited_total",
    "Calls at the gRPC counter refused by the per-account rate limit (one budget with HTTP's)",
)
ENVELOPES_VERIFIED = Labelled(
    Counter("yrd_envelopes_verified_total", "Inbound envelopes by verification result", ["result"])
)
DELIVERY_BATCHES = Labelled(
    Counter("yrd_delivery_batches_total", "Outbound batch calls by peer and result", ["peer", "result"])
)
DELIVERY_BATCH_SIZE = Histogram(
    "yrd_delivery_batch_size_envelopes", "Envelopes per outbound call", buckets=(1, 2, 4, 8, 16, 32, 64)
)
DELIVERY_SECONDS = Labelled(
    Histogram("yrd_delivery_call_duration_seconds", "Outbound batch call latency", ["peer"])
)
OUTBOX_PENDING = Gauge("yrd_outbox_pending_entries", "Outbox entries not yet settled")
PEER_BACKOFF = Gauge("yrd_peer_backoff_seconds", "Seconds until the next attempt to a peer", ["peer"])
MANIFEST_EXPIRES = Gauge("yrd_manifest_expires_timestamp_seconds", "Expiry of the trusted manifest")
CATALOGUE_SERVICES = Gauge("yrd_catalogue_services_entries", "Services in the federated catalogue")
OUTBOX_DEAD_LETTERS = Gauge(
    "yrd_outbox_dead_letters_entries", "Outbox entries set aside as dead letters, by peer", ["peer"]
)
OUTBOX_DEAD_LETTERED = Counter(
    "yrd_outbox_dead_lettered_total", "Outbox entries made dead letters, by reason code", ["reason"]
)
DELIVERY_STALLED = Gauge(
    "yrd_delivery_stalled_peers", "Peers with work waiting and no successful call for stall_after_s"
)
AUDIT_CHECKPOINTS = Counter(
    "yrd_audit_checkpoints_total",
    "Audit checkpoints signed by this node (own) or fetched from peers and kept (peer)",
    ["source"],
)
AUDIT_CHECKPOINT_CONFLICTS = Counter(
    "yrd_audit_checkpoint_conflicts_total",
    "Checkpoints that contradict one held before (a chain cut or rewritten), by whose chain",
    ["node"],
)

# Supervision clues (node/cases/clues.py). ``region`` is the four-digit city prefix at most.
CLUES_RECEIVED = Counter(
    "yrd_clues_received_total",
    "Clues stored as the owning member, by domain and region",
    ["domain", "region"],
)
CLUES_REFUSED = Counter("yrd_clues_refused_total", "Clues refused on receipt, by reason code", ["reason"])
CLUES_ESCALATED = Counter(
    "yrd_clues_escalated_total", "Clue tasks escalated a level up, by domain and region", ["domain", "region"]
)
CLUES_CLOSED = Counter(
    "yrd_clues_closed_total",
    "Clue tasks closed by their department, by domain and region",
    ["domain", "region"],
)
CLUES_OPEN = Gauge(
    "yrd_clues_open_entries", "Clue tasks not yet closed, by domain and region", ["domain", "region"]
)
CLUES_OVERDUE = Gauge(
    "yrd_clues_overdue_entries", "Open clue tasks past a deadline, by domain and region", ["domain", "region"]
)


# From an automatic decision's fraction of a second to a worklist matter's 60 days.
DECISION_BUCKETS_S = (0.1, 1, 10, 60, 600, 3600, 4 * 3600, *(d * 86_400.0 for d in (1, 3, 7, 20, 60)))

# Read by the operator console and Prometheus alike. The gauges below are refreshed from the
# database every few seconds (NodeBackend.refresh_gauges, driven by node/web/sampler.py), so
# they hold across replicas sharing one database.
DECISION_SECONDS = Labelled(
    Histogram(
        "yrd_owner_decision_duration_seconds",
        "Time from receiving an application to deciding it at the owner, by handler"
        " (auto, worklist, webhook)",
        ["handler"],
        buckets=DECISION_BUCKETS_S,
    )
)
OUTBOX_QUEUE_DEPTH = Gauge(
    "yrd_outbox_queue_depth_entries", "Outbox entries waiting to be sent, by next hop", ["peer"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "yrd_outbox_oldest_pending_age_seconds", "Age of the oldest entry waiting for a peer", ["peer"]
)
OWNER_WORKLIST = Gauge("yrd_owner_worklist_entries", "Applications at the owner waiting for a person")
OWNER_OVERDUE = Gauge("yrd_owner_overdue_entries", "Applications at the owner past their promised time limit")
COUNTER_HELD = Gauge("yrd_origin_held_entries", "Applications held at this counter for a second person")

BUNDLE_PARTS = Counter(
    "yrd_bundle_parts_total",
    "Bundle parts the lead routed (submitted) or could not (refused), and resubmissions taken",
    ["outcome"],
)
CERTIFICATES_ISSUED = Counter(
    "yrd_certificates_issued_total", "E-certificates signed by this node as owner, by service", ["service"]
)
CERTIFICATES_VERIFIED = Counter(
    "yrd_certificates_verified_total",
    "E-certificates checked at this node's counter, by result (valid or the reason code)",
    ["result"],
)

# Data sharing (docs/sharing.md). ``resource`` is one of this holder's own catalogue ids (anything
# else counts as "unknown"), ``asker`` a federation member, ``outcome`` one of a handful of words.
DATA_CALLS = Counter(
    "yrd_data_calls_total",
    "Resources asked of this holder, by resource, asking member and outcome (answered, no_record, refused)",
    ["resource", "asker", "outcome"],
)
DATA_QUERIES = Counter(
    "yrd_data_queries_total",
    "Items of queries asked at this node, by holder and outcome (answered, no_record, refused, missing)",
    ["holder", "outcome"],
)
DATA_QUERY_SECONDS = Histogram(
    "yrd_data_query_seconds", "Time to the merged view of one query, every holder answered or missing"
)
DATA_REQUESTS = Counter(
    "yrd_data_requests_total",
    "Data requests at this holder, by step (received, approved, refused, revoked)",
    ["step"],
)
