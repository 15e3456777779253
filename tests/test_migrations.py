"""Versioned schema migrations: ``yrd db upgrade`` brings a database made by an older release
to the head keeping every stored row, the migrations build exactly the tables the code
declares, and a node refuses a schema older or newer than its code."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel, select

import node.app  # noqa: F401  every table class, for the metadata comparison
from core.db import Database
from core.errors import ConfigError
from node import migrations
from node.app import open_node_database
from node.cli.main import main
from node.cli.node import init_node
from node.config import NodeConfig, load_config
from node.counter.users import UserAccount
from node.models import Application, OutboxEntry, SubmissionDigest
from simulations.demo.layout import upgrade_demo_database

OLD_SCHEMA = Path(__file__).with_name("old_schema_d5ad50f.sql")


def old_node(tmp_path: Path) -> NodeConfig:
    """A node whose database was made by the release before migrations, with applications in it."""
    config, _key = init_node(tmp_path / "js", jurisdiction="320000", name="Jiangsu")
    path = Database(config.database_url).sqlite_path
    assert path is not None
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA.read_text())
        for i in range(3):
            conn.execute(
                "INSERT INTO application VALUES (?, 'zj.filing', 'zhejiang', 'submitted', 0, 1, 2, "
                "'clerk', ?, 'p', '')",
                (f"app-{i}", f"key-{i}"),
            )
            conn.execute(
                "INSERT INTO outbox_entry (next_hop, destination, method, item_id, body, created_at_ms, "
                "next_attempt_ms, attempts, state, last_error, claimed_until_ms) "
                "VALUES ('zhejiang', 'zhejiang', 'deliver', ?, x'00', 1, 1, 0, 'pending', '', 0)",
                (f"app-{i}",),
            )
        conn.execute("INSERT INTO user_account VALUES ('li.clerk', 'clerk', 'x', 1)")
    return load_config(config.data_dir / "node.toml")


def test_yrd_db_upgrade_keeps_every_application_of_an_old_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = old_node(tmp_path)
    toml = str(config.data_dir / "node.toml")
    with pytest.raises(ConfigError, match="yrd db upgrade"):
        open_node_database(config).close()
    assert main(["db", "upgrade", "--config", toml]) == 0
    assert f"from none to {migrations.head()}" in capsys.readouterr().out
    db = open_node_database(config)  # at the head now
    try:
        apps = db.transact(lambda s: s.exec(select(Application).order_by(Application.id)).all())
        outbox = db.transact(lambda s: s.exec(select(OutboxEntry)).all())
        user = db.transact(lambda s: s.exec(select(UserAccount)).one())
        digests = db.transact(lambda s: s.exec(select(SubmissionDigest)).all())
    finally:
        db.close()
    assert [a.id for a in apps] == ["app-0", "app-1", "app-2"]
    assert [(e.item_id, e.state, e.dead_reason, e.dead_at_ms) for e in outbox] == [
        (f"app-{i}", "pending", "", 0) for i in range(3)
    ]
    assert (user.username, user.department) == ("li.clerk", "")
    assert digests == []
    assert main(["db", "upgrade", "--config", toml]) == 0  # twice is harmless
    assert "nothing to do" in capsys.readouterr().out


def test_yrd_db_upgrade_refuses_a_missing_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = old_node(tmp_path)
    path = Database(config.database_url).sqlite_path
    assert path is not None
    path.unlink()
    assert main(["db", "upgrade", "--config", str(config.data_dir / "node.toml")]) == 2
    assert "database_missing" in capsys.readouterr().err
    assert not path.exists()  # not silently created empty


def test_the_head_read_from_the_script_names_is_the_one_alembic_reads_from_the_scripts() -> None:
    # A node checks its database against the names (it starts without alembic): a script
    # numbered out of its chain would make the two disagree.
    scripts = ScriptDirectory(str(Path(migrations.__file__).parent))
    assert scripts.get_heads() == [migrations.head()]


def test_a_node_refuses_a_schema_newer_than_its_code(tmp_path: Path) -> None:
    config, _key = init_node(tmp_path / "js", jurisdiction="320000", name="Jiangsu")
    db = Database(config.database_url)
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    db.close()
    with pytest.raises(ConfigError) as e:
        open_node_database(config)
    assert e.value.code == "schema_unknown"
    with pytest.raises(ConfigError):  # nor does the upgrade touch it
        migrations.upgrade(Database(config.database_url).engine)


def _drift(url: str) -> list[object]:
    db = Database(url)
    try:
        migrations.upgrade(db.engine)
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, SQLModel.metadata)
    finally:
        db.close()
    return [
        d
        for d in diffs
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
    ]


def test_no_index_repeats_the_leading_column_of_a_unique_key() -> None:
    """Such an index answers nothing the key's own index does not, and costs every insert a
    second B-tree (status events: six per routed application)."""
    repeated = []
    for table in SQLModel.metadata.sorted_tables:
        leading = {
            next(iter(c.columns)).name
            for c in table.constraints
            if isinstance(c, sa.UniqueConstraint | sa.PrimaryKeyConstraint) and c.columns
        }
        repeated += [
            ix.name for ix in table.indexes if len(ix.columns) == 1 and next(iter(ix.columns)).name in leading
        ]
    assert repeated == []


def test_the_migrations_build_exactly_the_declared_tables_on_sqlite(tmp_path: Path) -> None:
    assert _drift(f"sqlite:///{tmp_path / 'n.db'}") == []


def test_the_migrations_build_exactly_the_declared_tables_on_postgres(
    new_pg_schema: Callable[[], str],
) -> None:
    url = new_pg_schema()
    assert _drift(url) == []
    db = Database(url)
    try:
        db.open_existing(migrations.check_at_head)  # what a node does at start
    finally:
        db.close()


def test_a_node_refuses_an_empty_postgres_database(new_pg_schema: Callable[[], str], tmp_path: Path) -> None:
    config = NodeConfig(node_id="js", jurisdiction="320000", data_dir=tmp_path, database_url=new_pg_schema())
    with pytest.raises(ConfigError) as e:
        open_node_database(config)
    assert e.value.code == "schema_missing"


def test_yrd_db_status_names_the_revision_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = old_node(tmp_path)
    toml = str(config.data_dir / "node.toml")
    assert main(["db", "status", "--config", toml]) == 0
    assert (
        f"database: none; code head: {migrations.head()} (older: run 'yrd db upgrade')"
        in capsys.readouterr().out
    )
    assert main(["db", "upgrade", "--config", toml]) == 0
    capsys.readouterr()
    assert main(["db", "status", "--config", toml]) == 0
    assert "(at head)" in capsys.readouterr().out


def test_the_demo_upgrades_its_own_kept_database(tmp_path: Path) -> None:
    """``make demo`` on a data directory from an older release keeps working (and keeps its
    applications): the demo upgrades its own databases; an operator's node never does."""
    config = old_node(tmp_path)
    with pytest.raises(ConfigError):
        open_node_database(config).close()
    upgrade_demo_database(config)
    db = open_node_database(config)
    try:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM application").scalar() == 3
    finally:
        db.close()
