"""Counter accounts and their bearer sessions.

Passwords are stored only as argon2id hashes, and session tokens only as their SHA-256:
whoever reads the database can neither log in as a clerk nor replay a live session.
Hashing is deliberately slow, so it runs in a worker thread and never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import BigInteger
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, delete, select

from core.clock import Clock
from core.db import Database
from core.errors import Conflict, InvalidInput, Unauthenticated
from node.cases.requests import Principal

log = logging.getLogger(__name__)

ROLES = ("clerk", "operator")
SESSION_TTL_MS = 12 * 3600 * 1000
MIN_PASSWORD_CHARS = 10
# Long enough for any passphrase, short enough that one login cannot make argon2 chew megabytes.
MAX_PASSWORD_CHARS = 1024
_USERNAME = re.compile(r"[a-z0-9._-]{2,64}")
# Tokens are token_urlsafe(32) (43 chars); anything far longer is not ours and is not hashed.
_MAX_TOKEN_CHARS = 256


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    created_at_ms: int


class UserAccount(SQLModel, table=True):
    __tablename__ = "user_account"

    username: str = Field(primary_key=True)
    role: str
    password_hash: str
    created_at_ms: int = Field(sa_type=BigInteger)


class SessionToken(SQLModel, table=True):
    __tablename__ = "session_token"

    token_hash: str = Field(primary_key=True)
    username: str = Field(index=True)
    expires_at_ms: int = Field(index=True, sa_type=BigInteger)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_username(username: str) -> None:
    if not _USERNAME.fullmatch(username):
        raise InvalidInput("username must be 2-64 of a-z 0-9 . _ -", code="bad_username", field="username")


class UserStore:
    """Accounts and sessions on the node's database.

    ``hasher`` is injectable so tests can use cheap argon2 parameters; production keeps
    argon2-cffi's defaults (argon2id, 64 MiB, 3 passes).
    """

    def __init__(self, db: Database, clock: Clock, hasher: PasswordHasher | None = None) -> None:
        self._db = db
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    async def add_user(self, username: str, password: str, role: str) -> Account:
        check_username(username)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}", code="bad_role", field="role")
        if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
            raise InvalidInput(
                f"password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters",
                code="weak_password",
                field="password",
            )
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        account = Account(username, role, self._clock.now_ms())

        def insert(s: Session) -> None:
            s.add(
                UserAccount(
                    username=username,
                    role=role,
                    password_hash=password_hash,
                    created_at_ms=account.created_at_ms,
                )
            )

        try:
            await self._db.run(insert)
        except IntegrityError as e:
            raise Conflict(f"user {username!r} already exists", code="user_exists", field="username") from e
        log.info("added %s account %s", role, username)
        return account

    async def list_users(self) -> list[Account]:
        def query(s: Session) -> list[Account]:
            rows = s.exec(select(UserAccount).order_by(col(UserAccount.username))).all()
            return [Account(r.username, r.role, r.created_at_ms) for r in rows]

        return await self._db.run(query)

    async def login(self, username: str, password: str) -> tuple[str, int]:
        """A new bearer token and its expiry (epoch ms).

        Unknown users are verified against a dummy hash, and every failure raises the
        same error, so neither the answer nor its timing tells whether an account exists.
        """

        def lookup(s: Session) -> str | None:
            if not _USERNAME.fullmatch(username):
                return None
            account = s.get(UserAccount, username)
            return account.password_hash if account else None

        stored = await self._db.run(lookup)
        candidate = stored if stored is not None else await self._dummy()
        # An over-long password cannot be an account's; it is not worth argon2's time.
        ok = len(password) <= MAX_PASSWORD_CHARS and await asyncio.to_thread(
            self._verify, candidate, password
        )
        if not ok or stored is None:
            raise Unauthenticated("wrong username or password", code="bad_credentials")
        token = secrets.token_urlsafe(32)
        now = self._clock.now_ms()
        expires_at_ms = now + SESSION_TTL_MS

        def open_session(s: Session) -> None:
            s.exec(delete(SessionToken).where(col(SessionToken.expires_at_ms) <= now))
            s.add(SessionToken(token_hash=token_hash(token), username=username, expires_at_ms=expires_at_ms))

        await self._db.run(open_session)
        return token, expires_at_ms

    async def authenticate(self, token: str) -> Principal:
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise Unauthenticated("invalid bearer token", code="invalid_token")
        digest = token_hash(token)
        now = self._clock.now_ms()

        def resolve(s: Session) -> Principal | str:
            row = s.get(SessionToken, digest)
            if row is None:
                return "invalid_token"
            if row.expires_at_ms <= now:
                s.delete(row)
                return "token_expired"
            account = s.get(UserAccount, row.username)
            if account is None:
                return "invalid_token"
            return Principal(account.username, account.role)

        outcome = await self._db.run(resolve)
        if isinstance(outcome, str):
            raise Unauthenticated(
                "session expired" if outcome == "token_expired" else "invalid bearer token", code=outcome
            )
        return outcome

    async def logout(self, token: str) -> None:
        digest = token_hash(token)

        def drop(s: Session) -> None:
            s.exec(delete(SessionToken).where(col(SessionToken.token_hash) == digest))

        await self._db.run(drop)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, secrets.token_urlsafe(16))
        return self._dummy_hash
