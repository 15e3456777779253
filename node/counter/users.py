"""Counter accounts and their bearer sessions.

Passwords are stored only as argon2id hashes, and session tokens only as their SHA-256:
whoever reads the database can neither log in as a clerk nor replay a live session.
Hashing is deliberately slow, so it runs on its own bounded pool (node/counter/throttle.py),
never on the event loop, and logins are throttled per account and per address before it.

Roles decide what a person may do at the node (enforced in node/counter/backend.py):
``clerk`` at a counter submits and follows what they submitted; ``owner_clerk`` decides
what is routed to their department; ``supervisor`` releases four-eyes holds and may do
everything at the node; ``operator`` runs the node and sees no personal data.
"""

from __future__ import annotations

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
from node import metrics
from node.cases.requests import Principal
from node.counter.throttle import (
    HashPool,
    LoginThrottle,
    Shared,
    clear_failures,
    read_failures,
    record_failure,
)

log = logging.getLogger(__name__)

CLERK, OWNER_CLERK, SUPERVISOR, OPERATOR = "clerk", "owner_clerk", "supervisor", "operator"
ROLES = (CLERK, OWNER_CLERK, SUPERVISOR, OPERATOR)
MAX_DEPARTMENT_CHARS = 128
SESSION_TTL_MS = 12 * 3600 * 1000
# How long a session resolved from the database is trusted from memory before it is read
# again, and how many are kept (UserStore._sessions).
SESSION_RECHECK_MS = 5_000
SESSION_CACHE_MAX = 10_000
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
    department: str = ""


class UserAccount(SQLModel, table=True):
    __tablename__ = "user_account"

    username: str = Field(primary_key=True)
    role: str
    password_hash: str
    created_at_ms: int = Field(sa_type=BigInteger)
    # Added after the first release: the server default lets Database.create_all add it to old files.
    department: str = Field(default="", sa_column_kwargs={"server_default": ""})


class SessionToken(SQLModel, table=True):
    __tablename__ = "session_token"

    token_hash: str = Field(primary_key=True)
    username: str = Field(index=True)
    expires_at_ms: int = Field(index=True, sa_type=BigInteger)


def token_hash(token: str) -> str:
    """A header's bytes that are not UTF-8 reach us as lone surrogates (aiohttp decodes with
    surrogateescape); they hash like any other text and match no session, never raise."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_username(username: str) -> None:
    if not _USERNAME.fullmatch(username):
        raise InvalidInput("username must be 2-64 of a-z 0-9 . _ -", code="bad_username", field="username")


def check_role(role: str, department: str) -> None:
    """An owner clerk belongs to exactly one department; no other role has one."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", code="bad_role", field="role")
    if role == OWNER_CLERK and not department.strip():
        raise InvalidInput("an owner_clerk needs a department", code="missing_department", field="department")
    if role != OWNER_CLERK and department:
        raise InvalidInput(
            f"only an owner_clerk has a department, not a {role}",
            code="unexpected_department",
            field="department",
        )
    if len(department) > MAX_DEPARTMENT_CHARS or not department.isprintable():
        raise InvalidInput(
            f"department must be at most {MAX_DEPARTMENT_CHARS} printable characters",
            code="bad_department",
            field="department",
        )


class UserStore:
    """Accounts and sessions on the node's database.

    ``hasher`` is injectable so tests can use cheap argon2 parameters; production keeps
    argon2-cffi's defaults (argon2id, 64 MiB, 3 passes). ``throttle`` and ``pool`` are
    injectable so tests can count and order attempts with a fake clock.
    """

    def __init__(
        self,
        db: Database,
        clock: Clock,
        hasher: PasswordHasher | None = None,
        *,
        throttle: LoginThrottle | None = None,
        pool: HashPool | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        self.throttle = throttle or LoginThrottle(clock)
        self._pool = pool or HashPool()
        self._dummy_hash: str | None = None
        # Sessions resolved lately: token hash -> (principal, session expiry, recheck at). A
        # counter request then costs no database round trip for its bearer token (one per
        # request was ~2 % of a loaded node). Logout here drops the entry at once; the short
        # recheck bounds how long a logout at another replica sharing the database, or an
        # account changed by the CLI, goes unseen.
        self._sessions: dict[str, tuple[Principal, int, int]] = {}

    async def add_user(self, username: str, password: str, role: str, department: str = "") -> Account:
        check_username(username)
        check_role(role, department)
        if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
            raise InvalidInput(
                f"password must be {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters",
                code="weak_password",
                field="password",
            )
        password_hash = await self._pool.run(self._hasher.hash, password)
        account = Account(username, role, self._clock.now_ms(), department)

        def insert(s: Session) -> None:
            s.add(
                UserAccount(
                    username=username,
                    role=role,
                    password_hash=password_hash,
                    created_at_ms=account.created_at_ms,
                    department=department,
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
            return [Account(r.username, r.role, r.created_at_ms, r.department) for r in rows]

        return await self._db.run(query)

    async def login(self, username: str, password: str, address: str = "") -> tuple[str, int]:
        """A new bearer token and its expiry (epoch ms), for a caller at ``address``.

        Unknown users are verified against a dummy hash, and every failure raises the
        same error, so neither the answer nor its timing tells whether an account exists.
        Unknown names are throttled like real ones for the same reason.
        """
        keys = self.throttle.keys(username if _USERNAME.fullmatch(username) else None, address)
        with self.throttle.attempt(keys):
            ok = await self._check_password(username, password, keys)
            if not ok:
                now, config = self._clock.now_ms(), self.throttle.config
                counts = await self._db.run(lambda s: record_failure(s, keys, now, config))
                self.throttle.shared(keys, counts, refuse=False)
                metrics.LOGIN_FAILURES.inc()
                raise Unauthenticated("wrong username or password", code="bad_credentials")
        return await self._open_session(username, clear=keys[0])

    async def _check_password(self, username: str, password: str, keys: list[str]) -> bool:
        """Refuses with RateLimited, before any hashing, a key another replica has locked."""
        now, config = self._clock.now_ms(), self.throttle.config

        def lookup(s: Session) -> tuple[str | None, Shared]:
            counts = read_failures(s, keys, now, config)
            if not _USERNAME.fullmatch(username):
                return None, counts
            account = s.get(UserAccount, username)
            return (account.password_hash if account else None), counts

        stored, counts = await self._db.run(lookup)
        self.throttle.shared(keys, counts)
        candidate = stored if stored is not None else await self._dummy()
        # An over-long password cannot be an account's; it is not worth argon2's time.
        ok = len(password) <= MAX_PASSWORD_CHARS and await self._pool.run(self._verify, candidate, password)
        return ok and stored is not None

    async def _open_session(self, username: str, *, clear: str = "") -> tuple[str, int]:
        """``clear``: the account key whose failures a right password ends; never the
        address's, so one valid login does not wipe an address guessing at other accounts."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now_ms()
        expires_at_ms = now + SESSION_TTL_MS

        def open_session(s: Session) -> None:
            if clear:
                clear_failures(s, clear)
            s.exec(delete(SessionToken).where(col(SessionToken.expires_at_ms) <= now))
            s.add(SessionToken(token_hash=token_hash(token), username=username, expires_at_ms=expires_at_ms))

        await self._db.run(open_session)
        return token, expires_at_ms

    async def authenticate(self, token: str) -> Principal:
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise Unauthenticated("invalid bearer token", code="invalid_token")
        digest = token_hash(token)
        now = self._clock.now_ms()
        cached = self._sessions.get(digest)
        if cached is not None:
            principal, expires_at_ms, recheck_at_ms = cached
            if now < expires_at_ms and now < recheck_at_ms:
                return principal
            del self._sessions[digest]

        def resolve(s: Session) -> tuple[Principal, int] | str:
            row = s.get(SessionToken, digest)
            if row is None:
                return "invalid_token"
            if row.expires_at_ms <= now:
                s.delete(row)
                return "token_expired"
            account = s.get(UserAccount, row.username)
            if account is None:
                return "invalid_token"
            return Principal(account.username, account.role, account.department), row.expires_at_ms

        outcome = await self._db.run(resolve)
        if isinstance(outcome, str):
            raise Unauthenticated(
                "session expired" if outcome == "token_expired" else "invalid bearer token", code=outcome
            )
        principal, expires_at_ms = outcome
        if len(self._sessions) >= SESSION_CACHE_MAX:
            self._sessions.clear()  # many live sessions: start over rather than grow without bound
        self._sessions[digest] = (principal, expires_at_ms, now + SESSION_RECHECK_MS)
        return principal

    async def logout(self, token: str) -> None:
        digest = token_hash(token)
        self._sessions.pop(digest, None)

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
            self._dummy_hash = await self._pool.run(self._hasher.hash, secrets.token_urlsafe(16))
        return self._dummy_hash

    def close(self) -> None:
        self._pool.close()
