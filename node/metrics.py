"""Module-level Prometheus metrics of a node (``yrd_<subsystem>_<thing>_<unit>``).

Labels are bounded: peers are federation members and services are catalogue ids, both
short lists; application ids and personal data never become labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

APPLICATIONS_SUBMITTED = Counter(
    "yrd_applications_submitted_total", "Applications accepted at this counter", ["service"]
)
APPLICATIONS_BACKPRESSURED = Counter(
    "yrd_applications_backpressured_total",
    "Applications refused at this counter because the outbox to their next hop was too deep",
)
APPLICATIONS_RECEIVED = Counter(
    "yrd_applications_received_total", "Applications received as owner, by outcome", ["outcome"]
)
LOGIN_FAILURES = Counter("yrd_counter_login_failures_total", "Counter logins refused for bad credentials")
LOGIN_THROTTLED = Counter(
    "yrd_counter_login_throttled_total",
    "Counter logins refused before checking the password, by why (account, address, busy)",
    ["scope"],
)
ENVELOPES_VERIFIED = Counter(
    "yrd_envelopes_verified_total", "Inbound envelopes by verification result", ["result"]
)
DELIVERY_BATCHES = Counter(
    "yrd_delivery_batches_total", "Outbound batch calls by peer and result", ["peer", "result"]
)
DELIVERY_BATCH_SIZE = Histogram(
    "yrd_delivery_batch_size_envelopes", "Envelopes per outbound call", buckets=(1, 2, 4, 8, 16, 32, 64)
)
DELIVERY_SECONDS = Histogram("yrd_delivery_call_duration_seconds", "Outbound batch call latency", ["peer"])
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
