"""The demo's data directory: fixed ports, passwords kept across runs, accounts that match them."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest

from core.clock import FakeClock
from core.errors import ConfigError
from node.app import create_node_database, open_node_database
from node.config import NodeConfig
from node.counter.users import UserStore
from simulations.demo.layout import (
    CREDENTIALS_FILE,
    check_ports_free,
    demo_ports,
    ensure_accounts,
    load_or_create_credentials,
    owner_department,
    write_json_private,
)
from simulations.local_federation import SAMPLES


def test_ports_are_fixed_offsets_of_the_base() -> None:
    assert demo_ports(7100, 4) == ([7100, 7101, 7102, 7103], [7200, 7201, 7202, 7203])


@pytest.mark.parametrize("base", [80, 65500])
def test_a_base_without_room_for_every_port_is_refused(base: int) -> None:
    with pytest.raises(ConfigError) as e:
        demo_ports(base, 4)
    assert e.value.field == "--base-port"


def test_a_port_in_use_is_refused_before_anything_starts() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError) as e:
            check_ports_free([s.getsockname()[1]])
    assert e.value.code == "port_in_use"


DEPARTMENTS = {"jiangsu": "苏州市人力资源和社会保障局", "zhejiang": "浙江省市场监督管理局", "anhui": "合肥"}


def test_passwords_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path, ["jiangsu", "zhejiang"], DEPARTMENTS)
    again = load_or_create_credentials(tmp_path, ["jiangsu", "zhejiang"], DEPARTMENTS)
    assert again == first
    assert first["jiangsu"].clerk.username == "clerk-jiangsu"
    assert first["zhejiang"].operator.username == "operator-zhejiang"
    assert first["zhejiang"].supervisor.username == "supervisor-zhejiang"
    assert first["zhejiang"].owner_clerk.username == "owner-clerk-zhejiang"
    assert first["zhejiang"].department == "浙江省市场监督管理局"
    assert first["jiangsu"].clerk.password != first["zhejiang"].clerk.password
    assert stat.S_IMODE((tmp_path / CREDENTIALS_FILE).stat().st_mode) == 0o600


def test_a_node_added_later_gets_passwords_and_the_others_keep_theirs(tmp_path: Path) -> None:
    first = load_or_create_credentials(tmp_path, ["jiangsu"], DEPARTMENTS)
    more = load_or_create_credentials(tmp_path, ["jiangsu", "anhui"], DEPARTMENTS)
    assert more["jiangsu"] == first["jiangsu"]
    assert more["anhui"].clerk.username == "clerk-anhui"


async def test_accounts_are_created_once_and_checked_against_the_kept_passwords(tmp_path: Path) -> None:
    config = NodeConfig(node_id="jiangsu", jurisdiction="320000", data_dir=tmp_path / "jiangsu")
    config.data_dir.mkdir()
    create_node_database(config).close()
    accounts = load_or_create_credentials(tmp_path, ["jiangsu"], DEPARTMENTS)["jiangsu"]
    await ensure_accounts(config, accounts, FakeClock())
    await ensure_accounts(config, accounts, FakeClock())  # a restarted demo: nothing to do
    db = open_node_database(config)
    try:
        listed = {(a.username, a.role, a.department) for a in await UserStore(db, FakeClock()).list_users()}
    finally:
        db.close()
    assert listed == {
        ("clerk-jiangsu", "clerk", ""),
        ("owner-clerk-jiangsu", "owner_clerk", DEPARTMENTS["jiangsu"]),
        ("supervisor-jiangsu", "supervisor", ""),
        ("operator-jiangsu", "operator", ""),
    }

    (tmp_path / CREDENTIALS_FILE).unlink()
    regenerated = load_or_create_credentials(tmp_path, ["jiangsu"], DEPARTMENTS)["jiangsu"]
    with pytest.raises(ConfigError) as e:
        await ensure_accounts(config, regenerated, FakeClock())
    assert e.value.code == "stale_credentials"


def test_a_credentials_file_from_an_older_demo_gains_the_new_roles(tmp_path: Path) -> None:
    old = {"jiangsu": {r: {"username": f"{r}-jiangsu", "password": f"pw-{r}"} for r in ("clerk", "operator")}}
    write_json_private(tmp_path / CREDENTIALS_FILE, old)
    accounts = load_or_create_credentials(tmp_path, ["jiangsu"], DEPARTMENTS)["jiangsu"]
    assert accounts.clerk.password == "pw-clerk" and accounts.operator.password == "pw-operator"
    assert accounts.supervisor.username == "supervisor-jiangsu" and accounts.owner_clerk.password


def test_the_owner_clerk_belongs_to_the_first_work_queue_department() -> None:
    assert owner_department(SAMPLES / "zhejiang.toml") == "浙江省市场监督管理局"
