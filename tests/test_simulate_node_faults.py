"""A node fault's window is the time the node spends in the faulty state, whatever its own
stop and start cost: a skew whose graceful stop waited on a paused peer once left the
skewed node no time to serve, and the run reported a broken invariant for a fault that had
never been applied."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from simulations.simulate import node_faults
from simulations.simulate.faults import Fault


class SlowCluster:
    """Stands in for simulations.cluster.Cluster: stopping takes ``stop_s`` of the fake
    clock, as a stop that waits for a call to a paused peer does; it notes what ran when."""

    def __init__(self, tmp_path: Path, clock: list[float], stop_s: float) -> None:
        log = tmp_path / "node.log"
        log.write_bytes(b"")
        self.nodes = {"zhejiang": SimpleNamespace(log_path=log)}
        self.clock, self.stop_s = clock, stop_s
        self.events: list[tuple[str, float, Any]] = []

    async def stop_node(self, node_id: str) -> None:
        self.events.append(("stopping", self.clock[0], node_id))
        self.clock[0] += self.stop_s

    def configure(self, node_id: str, settings: dict[str, Any]) -> None:
        self.events.append(("configured", self.clock[0], settings))

    async def restart(self, node_id: str) -> None:
        self.clock[0] += 1.0  # the start, until the node says it is ready
        self.events.append(("ready", self.clock[0], node_id))


@pytest.mark.parametrize("stop_s", [0.1, 8.0])
async def test_a_skewed_node_serves_the_whole_window_however_long_its_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_s: float
) -> None:
    clock = [10.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(node_faults.asyncio, "sleep", sleep)
    cluster = SlowCluster(tmp_path, clock, stop_s)
    fault = Fault("skew", start_s=10.0, duration_s=5.0, node="zhejiang", offset_ms=-45_000)
    await node_faults.skew(cluster, fault, lambda: clock[0])  # type: ignore[arg-type]

    ready = [at for what, at, _ in cluster.events if what == "ready"]
    stopping = [at for what, at, _ in cluster.events if what == "stopping"]
    assert stopping[1] - ready[0] == pytest.approx(fault.duration_s)
    settings = [s for what, _, s in cluster.events if what == "configured"]
    assert settings == [{"clock": {"offset_ms": -45_000}}, {"clock": None}]
    assert fault.applied_at_s == 10.0 and fault.reverted_at_s == pytest.approx(stopping[1] + stop_s)
    assert fault.observed == {"clock_skew_refusals": 0, "refused": {}}
