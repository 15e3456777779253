"""``[clock] offset_ms``: a node whose clock runs off, through the injected clock. Within
the allowed skew its envelopes pass; beyond it peers refuse them with ``clock_skew``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import tomli_w

from core.clock import FakeClock, OffsetClock
from core.errors import ConfigError, EnvelopeRejected
from core.keys import load_key
from node.app import build_node
from node.config import ClockConfig, NodeConfig, load_config
from node.trust.envelope import seal_envelope
from simulations.local_federation import PROVINCES, prepare

DELIVER = "/yrd.peer.v1.PeerService/Deliver"


async def test_the_offset_moves_wall_time_but_not_intervals() -> None:
    base = FakeClock()
    clock = OffsetClock(base, -45_000)
    assert clock.now_ms() == base.now_ms() - 45_000
    assert clock.monotonic() == base.monotonic()
    await clock.sleep(2.5)
    assert (base.monotonic(), clock.now_ms()) == (2.5, base.now_ms() - 45_000)


def _config(tmp_path: Path, clock: object) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps({"node_id": "jiangsu", "jurisdiction": "320000", "clock": clock}))
    return load_config(path)


def test_the_offset_is_read_from_the_clock_table(tmp_path: Path) -> None:
    assert _config(tmp_path, {"offset_ms": -90_000}).clock == ClockConfig(offset_ms=-90_000)
    assert _config(tmp_path, {}).clock.offset_ms == 0


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"offset_ms": 1.5}, "clock.offset_ms"),
        ({"offset_ms": True}, "clock.offset_ms"),
        ({"offset_ms": 8 * 86_400_000}, "clock.offset_ms"),
        ({"offset": 10}, "clock.offset"),
    ],
)
def test_a_bad_offset_names_its_key(tmp_path: Path, table: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, table)
    assert e.value.field == field


@pytest.fixture
def pair(tmp_path: Path) -> tuple[NodeConfig, NodeConfig, FakeClock]:
    clock = FakeClock()
    shanghai, jiangsu = prepare(tmp_path, PROVINCES[:2], now_ms=clock.now_ms())
    return shanghai, jiangsu, clock


@pytest.mark.parametrize(
    ("offset_ms", "refused"), [(29_000, False), (-29_000, False), (31_000, True), (-31_000, True)]
)
async def test_a_skewed_senders_envelopes_are_refused_only_beyond_the_allowed_skew(
    pair: tuple[NodeConfig, NodeConfig, FakeClock], offset_ms: int, refused: bool
) -> None:
    shanghai_config, jiangsu_config, clock = pair
    skewed = build_node(dataclasses.replace(shanghai_config, clock=ClockConfig(offset_ms=offset_ms)), clock)
    receiver = build_node(jiangsu_config, clock)
    try:
        assert skewed.clock.now_ms() == clock.now_ms() + offset_ms
        assert receiver.clock.now_ms() == clock.now_ms()
        env = seal_envelope(
            load_key(shanghai_config.key_file),
            sender="shanghai",
            destination="jiangsu",
            method=DELIVER,
            body=b"",
            now_ms=skewed.clock.now_ms(),
        )
        if refused:
            with pytest.raises(EnvelopeRejected) as e:
                receiver.delivery.verifier.check_request(env, DELIVER)
            assert e.value.code == "clock_skew"
        else:
            receiver.delivery.verifier.check_request(env, DELIVER)
    finally:
        for node in (skewed, receiver):
            node.db.close()
            node.users.close()
