"""The bundle in force, reloaded without a restart when its file or signature changes.

A reload that fails (unreadable, unsigned, altered, invalid) keeps the old engine in force:
refusing every application because an operator saved a half-edited file would turn a typo
into an outage. The failure is made loud instead, through ``yrd_policy_bundle_ok`` (0 until
a good bundle loads again) and ``yrd_policy_bundle_reload_failures_total``, for alerting.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from prometheus_client import Counter, Gauge

from core.clock import Clock
from core.errors import ConfigError
from policies.engine import PolicyEngine
from policies.quotas import QuotaBook, QuotaCounter
from policies.schema import parse_bundle
from policies.signing import read_signed, sig_path_for

log = logging.getLogger(__name__)

BUNDLE_OK = Gauge(
    "yrd_policy_bundle_ok",
    "1 when the last load of the policy bundle succeeded, 0 while an older bundle stays in force",
    ["bundle"],
)
RELOAD_FAILURES = Counter(
    "yrd_policy_bundle_reload_failures_total",
    "Policy bundle loads refused (unreadable, unsigned, altered or invalid)",
    ["bundle"],
)
RELOADS = Counter(
    "yrd_policy_bundle_reloads_total", "Policy bundles swapped in without a restart", ["bundle"]
)

Stamp = tuple[tuple[int, int, int, int] | None, ...]


def _stat(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class PolicyHolder:
    """Holds the engine for one signed bundle. The first load must succeed (there is no
    older bundle to fall back to), so the constructor raises ConfigError on failure.

    With ``node_id`` a bundle written for another node is refused even when signed, since
    copying a neighbour's bundle and signing it is an easy mistake with wide consequences.
    Metrics are labelled with the node id (or the file name), so several nodes in one
    process keep apart.
    """

    def __init__(
        self,
        path: Path,
        public_key: bytes,
        clock: Clock,
        *,
        node_id: str | None = None,
        quotas: QuotaCounter | None = None,
    ) -> None:
        self.path = path
        self.sig_path = sig_path_for(path)
        self.last_error: str | None = None
        self._public_key = public_key
        self._clock = clock
        self._node_id = node_id
        # Shared by successive engines, see policies.quotas; in the database for replicas.
        self._quotas = quotas if quotas is not None else QuotaBook(clock)
        self._label = node_id or path.name
        self._seen = self._stamp()
        try:
            self._engine = self._load()
        except ConfigError:
            BUNDLE_OK.labels(self._label).set(0)
            RELOAD_FAILURES.labels(self._label).inc()
            raise
        BUNDLE_OK.labels(self._label).set(1)
        log.info("policy bundle %s loaded, revision %s", self.path, self._engine.revision)

    def current(self) -> PolicyEngine:
        return self._engine

    def maybe_reload(self) -> bool:
        """Load the bundle again if the file or its signature changed; True when swapped."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp  # a failed version is tried once, not on every poll
        try:
            engine = self._load()
        except ConfigError as e:
            self.last_error = str(e)
            BUNDLE_OK.labels(self._label).set(0)
            RELOAD_FAILURES.labels(self._label).inc()
            log.warning(
                "policy bundle %s refused, revision %s stays in force: %s",
                self.path,
                self._engine.revision,
                e,
            )
            return False
        self.last_error = None
        BUNDLE_OK.labels(self._label).set(1)
        if engine.bundle.digest == self._engine.bundle.digest:
            return False
        self._engine = engine
        RELOADS.labels(self._label).inc()
        log.info("policy bundle %s reloaded, revision %s", self.path, engine.revision)
        return True

    async def watch(self, interval_s: float = 2.0) -> None:
        """Poll for changes until cancelled (run it as a task of the node)."""
        while True:
            await self._clock.sleep(interval_s)
            self.maybe_reload()

    def _stamp(self) -> Stamp:
        return (_stat(self.path), _stat(self.sig_path))

    def _load(self) -> PolicyEngine:
        data = read_signed(self.path, self._public_key)
        bundle = parse_bundle(data, str(self.path))
        if self._node_id is not None and bundle.node != self._node_id:
            raise ConfigError(
                f"{self.path} is the bundle of {bundle.node!r}, not of this node {self._node_id!r}",
                code="bundle_wrong_node",
                field="node",
            )
        return PolicyEngine(bundle, self._clock, self._quotas)
