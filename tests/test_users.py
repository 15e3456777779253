from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from argon2 import PasswordHasher
from sqlmodel import delete, select

from core.clock import FakeClock
from core.db import Database
from core.errors import Conflict, InvalidInput, Unauthenticated
from node.app import create_node_database
from node.cli.main import main
from node.config import load_config
from node.counter.users import (
    MAX_PASSWORD_CHARS,
    SESSION_RECHECK_MS,
    SESSION_TTL_MS,
    Principal,
    SessionToken,
    UserAccount,
    UserStore,
    token_hash,
)

PASSWORD = "correct horse battery"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'users.db'}")
    database.create_all()
    yield database
    database.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db: Database, clock: FakeClock) -> UserStore:
    # Cheap argon2 parameters: the hashing code path is the same, the test stays fast.
    return UserStore(db, clock, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


async def test_login_yields_a_token_that_authenticates_until_it_expires(
    store: UserStore, clock: FakeClock
) -> None:
    await store.add_user("li.clerk", PASSWORD, "clerk")
    token, expires_at_ms = await store.login("li.clerk", PASSWORD)
    assert expires_at_ms == clock.now_ms() + SESSION_TTL_MS
    assert await store.authenticate(token) == Principal("li.clerk", "clerk")

    clock.advance(SESSION_TTL_MS / 1000 - 1)
    assert (await store.authenticate(token)).role == "clerk"
    clock.advance(1)
    with pytest.raises(Unauthenticated) as info:
        await store.authenticate(token)
    assert info.value.code == "token_expired"
    with pytest.raises(Unauthenticated) as info:
        await store.authenticate(token)
    assert info.value.code == "invalid_token"


async def test_database_holds_neither_passwords_nor_tokens(store: UserStore, db: Database) -> None:
    await store.add_user("ops", PASSWORD, "operator")
    token, _ = await store.login("ops", PASSWORD)
    account = await db.run(lambda s: s.exec(select(UserAccount)).one())
    sessions = await db.run(lambda s: s.exec(select(SessionToken)).all())
    assert account.password_hash.startswith("$argon2id$")
    assert PASSWORD not in account.password_hash
    assert [row.token_hash for row in sessions] == [token_hash(token)]
    assert token_hash(token) != token


async def test_unknown_user_and_wrong_password_fail_alike(store: UserStore) -> None:
    await store.add_user("li.clerk", PASSWORD, "clerk")
    errors = []
    for username, password in (
        ("li.clerk", "wrong password!"),
        ("nobody", PASSWORD),
        ("NOT VALID", PASSWORD),
        ("li.clerk", PASSWORD + "x" * MAX_PASSWORD_CHARS),
    ):
        with pytest.raises(Unauthenticated) as info:
            await store.login(username, password)
        errors.append((info.value.code, info.value.reason))
    assert errors == [("bad_credentials", "wrong username or password")] * 4


async def test_logout_ends_the_session(store: UserStore) -> None:
    await store.add_user("li.clerk", PASSWORD, "clerk")
    token, _ = await store.login("li.clerk", PASSWORD)
    other, _ = await store.login("li.clerk", PASSWORD)
    await store.logout(token)
    with pytest.raises(Unauthenticated):
        await store.authenticate(token)
    assert (await store.authenticate(other)).username == "li.clerk"


@pytest.mark.parametrize("token", ["", "x" * 300, "not-a-token", "\udc80abc", "a\ud800"])
async def test_garbage_tokens_are_invalid(store: UserStore, token: str) -> None:
    """Lone surrogates are what a header's non-UTF-8 bytes become: a 401, not a 500."""
    with pytest.raises(Unauthenticated) as info:
        await store.authenticate(token)
    assert info.value.code == "invalid_token"
    await store.logout(token)  # nothing to end, and nothing raised


async def test_expired_sessions_are_swept_on_login(store: UserStore, db: Database, clock: FakeClock) -> None:
    await store.add_user("li.clerk", PASSWORD, "clerk")
    await store.login("li.clerk", PASSWORD)
    clock.advance(SESSION_TTL_MS / 1000)
    await store.login("li.clerk", PASSWORD)
    sessions = await db.run(lambda s: s.exec(select(SessionToken)).all())
    assert [row.expires_at_ms for row in sessions] == [clock.now_ms() + SESSION_TTL_MS]


async def test_duplicate_user_is_a_conflict(store: UserStore) -> None:
    await store.add_user("li.clerk", PASSWORD, "clerk")
    with pytest.raises(Conflict) as info:
        await store.add_user("li.clerk", PASSWORD + "x", "operator")
    assert info.value.field == "username"


@pytest.mark.parametrize(
    ("username", "password", "role", "field"),
    [
        ("Li", PASSWORD, "clerk", "username"),
        ("l", PASSWORD, "clerk", "username"),
        ("li clerk", PASSWORD, "clerk", "username"),
        ("li", "short", "clerk", "password"),
        ("li", PASSWORD, "admin", "role"),
    ],
)
async def test_bad_account_values_name_the_field(
    store: UserStore, username: str, password: str, role: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        await store.add_user(username, password, role)
    assert info.value.field == field


async def test_list_users_is_sorted_and_omits_secrets(store: UserStore) -> None:
    await store.add_user("zhang", PASSWORD, "operator")
    await store.add_user("an", PASSWORD, "clerk")
    assert [(a.username, a.role) for a in await store.list_users()] == [
        ("an", "clerk"),
        ("zhang", "operator"),
    ]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(tomli_w.dumps({"node_id": "jiangsu", "jurisdiction": "320000"}))
    create_node_database(load_config(path)).close()  # as `yrd node init` does
    return path


def test_cli_adds_with_generated_password_and_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert main(["users", "add", "--config", str(config), "--username", "wang", "--role", "operator"]) == 0
    out = capsys.readouterr().out
    password = next(line for line in out.splitlines() if line.startswith("password: ")).split(": ", 1)[1]
    assert len(password) >= 20

    assert main(["users", "list", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "wang" in listing and "operator" in listing and password not in listing

    async def login() -> tuple[str, int]:
        db = Database(f"sqlite:///{tmp_path / 'node.db'}")
        try:
            return await UserStore(db, FakeClock()).login("wang", password)
        finally:
            db.close()

    token, _ = asyncio.run(login())
    assert token


def test_cli_reads_password_from_stdin_and_refuses_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    argv = [
        "users",
        "add",
        "--config",
        str(config),
        "--username",
        "li",
        "--role",
        "clerk",
        "--password-stdin",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "password:" not in out and PASSWORD not in out

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(argv) == 2
    assert "user_exists" in capsys.readouterr().err


async def test_a_resolved_session_is_served_from_memory_until_its_recheck_or_its_expiry(
    store: UserStore, db: Database, clock: FakeClock
) -> None:
    await store.add_user("li.clerk", PASSWORD, "clerk")
    token, _ = await store.login("li.clerk", PASSWORD)
    other, _ = await store.login("li.clerk", PASSWORD)
    assert (await store.authenticate(token)).role == "clerk"
    assert (await store.authenticate(other)).role == "clerk"
    # Another replica sharing the database logs the sessions out: unseen here until the recheck.
    await db.run(lambda s: s.exec(delete(SessionToken)))
    clock.advance(SESSION_RECHECK_MS / 1000 - 1)
    assert (await store.authenticate(token)).role == "clerk"
    clock.advance(1)
    with pytest.raises(Unauthenticated) as info:
        await store.authenticate(token)
    assert info.value.code == "invalid_token"
    # A logout at this node takes effect at once, cached or not.
    third, _ = await store.login("li.clerk", PASSWORD)
    assert (await store.authenticate(third)).role == "clerk"
    await store.logout(third)
    with pytest.raises(Unauthenticated):
        await store.authenticate(third)


async def test_a_cached_session_still_ends_at_its_expiry(store: UserStore, clock: FakeClock) -> None:
    await store.add_user("li.clerk", PASSWORD, "clerk")
    token, expires_at_ms = await store.login("li.clerk", PASSWORD)
    clock.advance((expires_at_ms - clock.now_ms() - 1) / 1000)
    assert (await store.authenticate(token)).role == "clerk"  # read from the database, cached
    clock.advance(0.001)
    with pytest.raises(Unauthenticated) as info:
        await store.authenticate(token)
    assert info.value.code == "token_expired"
