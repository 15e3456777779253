"""The delta topology: real GB/T 2260 codes, cities behind their province, a manifest the
node code accepts and routes through; topology files; fault schedules; the proxy's cut."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.errors import ConfigError
from node.sharing.records import read_records_file
from registry.catalogue import load_catalogue_file
from registry.data_catalogue import load_data_resources
from registry.divisions import is_valid_code, name_of
from registry.manifest import load_signed_manifest, verify_anchor
from simulations.local_federation import prepare
from simulations.simulate.faults import MIN_ROTATE_S, parse_kinds, random_schedule, schedule_from_file
from simulations.simulate.proxy import LinkFaults, Proxy
from simulations.simulate.queries import screen_of
from simulations.simulate.topology import Topology, delta, from_file, persons_on_record
from simulations.traffic import open_specs, owner_of


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    return delta(tmp_path_factory.mktemp("delta"))


def test_delta_is_the_four_provinces_and_their_forty_prefecture_level_cities(topo: Topology) -> None:
    assert len(topo.specs) == 44
    cities = [s for s in topo.specs if s.node_id in topo.light]
    assert len(cities) == 40
    by_province = {p: sum(1 for c in cities if c.jurisdiction[:2] == p) for p in ("32", "33", "34")}
    assert by_province == {"32": 13, "33": 11, "34": 16}
    for city in cities:
        assert is_valid_code(city.jurisdiction) and city.jurisdiction.endswith("00")
        assert name_of(city.jurisdiction).endswith("市")
        assert city.prefixes == (city.jurisdiction[:4],)
        assert city.relay == {"32": "jiangsu", "33": "zhejiang", "34": "anhui"}[city.jurisdiction[:2]]
    assert "c320500" in topo.node_ids and "c340100" in topo.node_ids  # Suzhou, Hefei


def test_every_city_owns_an_auto_matter_routed_to_it(topo: Topology) -> None:
    owners: dict[str, int] = {}
    for spec in topo.specs:
        node_id, definitions = load_catalogue_file(spec.catalogue)
        assert node_id == spec.node_id
        for d in definitions:
            owner = owner_of(d.owner, topo.specs)
            assert owner == spec.node_id, f"{d.service_id} published by {spec.node_id} routes to {owner}"
            owners[owner] = owners.get(owner, 0) + (d.handler == "auto")
    assert all(owners.get(s.node_id, 0) >= 1 for s in topo.specs if s.node_id in topo.light)


def test_every_city_holds_residence_permits_that_a_query_asks_through_its_relay(topo: Topology) -> None:
    persons = persons_on_record()
    assert "310101199003071230" in persons
    cities = [s for s in topo.specs if s.node_id in topo.light]
    for city in cities:
        (permits,) = load_data_resources(city.catalogue)
        assert (permits.holder, permits.subject_kind, permits.sharing) == (
            city.jurisdiction,
            "person",
            "unconditional",
        )
        assert city.records is not None
        held = read_records_file(city.records, city.node_id, {permits.resource_id: permits})
        assert len(held[permits.resource_id]) == len(persons)
    screen = screen_of(topo.specs)
    assert screen is not None
    # The provinces' screen, and one city's permits beside it in each query.
    assert set(screen.resources) == {"sh.health-code", "js.nucleic-acid", "zj.vaccination"}
    assert len(screen.relayed) == 40 and all(".residence-permit" in r for r in screen.relayed)
    assert set(screen.subjects) <= set(persons)


def test_the_delta_manifest_verifies_and_relays_cities_through_their_province(
    topo: Topology, tmp_path: Path
) -> None:
    specs = open_specs(tmp_path, topo.specs)
    configs = prepare(
        tmp_path / "nodes",
        specs,
        now_ms=1_780_000_000_000,
        grpc_ports=list(range(20000, 20044)),
        http_ports=list(range(21000, 21044)),
    )
    trusted = verify_anchor(load_signed_manifest(configs[0].anchor_manifest))
    members = {m.node_id: m for m in trusted.manifest.members}
    assert members["c330100"].relay == "zhejiang" and members["zhejiang"].relay == ""
    assert trusted.owner_of("330106").node_id == "c330100"  # a Hangzhou district goes to Hangzhou
    assert trusted.owner_of("330000").node_id == "zhejiang"


def test_a_topology_file_is_read_and_checked(tmp_path: Path) -> None:
    good = tmp_path / "two.toml"
    good.write_text(
        '[[nodes]]\nid = "jiangsu"\njurisdiction = "320000"\n\n'
        '[[nodes]]\nid = "suzhou"\njurisdiction = "320500"\nrelay = "jiangsu"\n'
    )
    topo = from_file(good, tmp_path)
    assert topo.node_ids == ["jiangsu", "suzhou"] and topo.light == {"suzhou"}
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[nodes]]\nid = "x"\njurisdiction = "320050"\n\n[[nodes]]\nid = "y"\njurisdiction = "320000"\n'
    )
    with pytest.raises(ConfigError) as e:
        from_file(bad, tmp_path)
    assert e.value.field == "nodes[0].jurisdiction"


def test_every_fault_of_the_issue_is_a_kind_and_unknown_kinds_are_refused() -> None:
    assert parse_kinds("kill, skew,rotate,latency,pause,partition") == [
        "kill",
        "skew",
        "rotate",
        "latency",
        "pause",
        "partition",
    ]
    with pytest.raises(ConfigError):
        parse_kinds("kill,meteor")


def test_random_skews_fall_within_and_beyond_the_allowed_one_and_rotations_get_time() -> None:
    nodes = ["shanghai", "jiangsu", "zhejiang", "anhui"]
    drawn = [
        f
        for seed in range(40)
        for f in random_schedule(["skew", "rotate"], nodes, 40, seed, max_skew_ms=30_000)
    ]
    offsets = {f.offset_ms for f in drawn if f.kind == "skew"}
    assert offsets == {-45_000, -15_000, 15_000, 45_000}
    assert all(f.duration_s >= MIN_ROTATE_S and f.node for f in drawn if f.kind == "rotate")


def test_a_schedule_file_takes_skew_and_rotate(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(
        '[[faults]]\nkind = "skew"\nat = 1\nduration = 4\nnode = "jiangsu"\noffset_ms = -50000\n'
        '[[faults]]\nkind = "rotate"\nat = 2\nduration = 3\nnode = "anhui"\n'
    )
    with pytest.raises(ConfigError) as e:
        schedule_from_file(path, ["jiangsu", "anhui"])
    assert e.value.field == "faults[1].duration"
    path.write_text(path.read_text().replace("duration = 3", "duration = 9").replace("-50000", "0"))
    with pytest.raises(ConfigError) as e:
        schedule_from_file(path, ["jiangsu", "anhui"])
    assert e.value.field == "faults[0].offset_ms"
    path.write_text(path.read_text().replace("offset_ms = 0", "offset_ms = -50000"))
    skew, rotate = schedule_from_file(path, ["jiangsu", "anhui"])
    assert (skew.label, skew.offset_ms) == ("skew jiangsu -50 s", -50_000)
    assert (rotate.label, rotate.duration_s) == ("rotate anhui", 9.0)


def test_a_random_schedule_is_reproducible_and_keeps_faults_apart() -> None:
    nodes = ["shanghai", "jiangsu", "zhejiang", "anhui"]
    one = random_schedule(["kill", "pause", "partition", "latency"], nodes, 60, 7)
    assert [f.as_dict() for f in one] == [
        f.as_dict() for f in random_schedule(["kill", "pause", "partition", "latency"], nodes, 60, 7)
    ]
    for f in one:
        assert f.start_s >= 6 and f.start_s + f.duration_s <= 42 + 0.01


async def test_the_proxy_knows_the_source_process_and_cuts_its_link(tmp_path: Path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[1]
    faults = LinkFaults()
    proxy = Proxy("dest", 0, target, faults, lambda: {os.getpid(): "me"})
    proxy._server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)  # any free port
    proxy.listen_port = proxy._server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"hello")
        assert await reader.read(100) == b"hello"
        writer.close()
        assert proxy.bytes.get("me", 0) > 0  # counted against the right source
        faults.slow[("me", "dest")] = (0.01, 1.0)  # certain loss: TCP gives up, the link resets
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"hello")
        assert await reader.read(100) == b""
        writer.close()
        faults.slow[("me", "dest")] = (0.01, 0.0)  # delay only: bytes still arrive
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"hello")
        assert await reader.read(100) == b"hello"
        writer.close()
        faults.cut.add(("me", "dest"))
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"hello")
        assert await reader.read(100) == b""  # refused: the link is cut
        writer.close()
    finally:
        await proxy.stop()
        server.close()
