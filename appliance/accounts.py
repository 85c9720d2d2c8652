"""Accounts of the local config page: who may sign in, their passwords, the sign-in delays, the audit log.

Two roles: the hall director (content, roster, leave, complaint transcription) and county IT
(all of that, and the device settings). There is no default password: the first one comes
from provisioning (``hall-appliance passwd``), or in the simulator is printed at start.

Hardware-free and Flask-free, so the page, the CLI and the tests share it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from werkzeug.security import check_password_hash, generate_password_hash

from .clock import Clock, SystemClock
from .errors import ApplianceError
from .store import Store

DIRECTOR = "director"
COUNTY_IT = "county_it"
ROLES = (DIRECTOR, COUNTY_IT)

USERNAME_MAX = 32
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}\Z")
USERNAME_FIX = "use 1 to 32 lower-case letters, digits, dots, dashes and underscores, e.g. 'director'"
PASSWORD_MIN = 10
# A cap keeps a megabyte "password" from costing a hash's worth of CPU per byte.
PASSWORD_MAX = 128

# scrypt through werkzeug (hashlib, i.e. OpenSSL): memory-hard like argon2id and on OWASP's
# list of password hashes, with no extra compiled package to build for a Pi's armv7 image.
# n=2^15, r=8 costs 32 MiB and about 0.1 s a hash: unnoticed at sign-in, slow for a guesser.
HASH_METHOD = "scrypt:32768:8:1"

# Generated passwords: 16 letters and digits without look-alikes (0/o, 1/l/i), in groups of
# four so they can be read off a screen or a provisioning sheet; about 79 bits.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


class AccountError(ApplianceError, ValueError):
    """An account request was refused (bad user name, role or password)."""


@dataclass(frozen=True)
class Account:
    """A person who may sign in; ``stamp`` changes whenever the password does."""

    username: str
    role: str
    must_change: bool
    language: str | None
    stamp: str

    @property
    def is_county_it(self) -> bool:
        return self.role == COUNTY_IT


@dataclass(frozen=True)
class AuditEntry:
    """One change made on the page or through the CLI: who, when, what."""

    id: int
    at: str
    username: str
    action: str
    detail: dict


def generate_password() -> str:
    """A fresh random password for a first sign-in or a reset."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(4))


def username_problem(username: str) -> str | None:
    """Why ``username`` cannot be an account's name, or None."""
    if not USERNAME_PATTERN.match(username):
        return f"user name {username!r} is not valid: {USERNAME_FIX}"
    return None


def password_problem(password: str, username: str = "") -> str | None:
    """Why ``password`` is not acceptable, or None."""
    if len(password) < PASSWORD_MIN:
        return f"the password has {len(password)} characters; use at least {PASSWORD_MIN}"
    if len(password) > PASSWORD_MAX:
        return f"the password has {len(password)} characters; use at most {PASSWORD_MAX}"
    if username and password.lower() == username.lower():
        return "the password must not be the user name"
    return None


def _stamp(password_hash: str) -> str:
    # A digest of the hash, not a piece of it: the stamp travels in the (signed, readable) cookie.
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class Accounts:
    """The ``users`` and ``audit`` tables of the store."""

    def __init__(self, store: Store, clock: Clock | None = None, *, hash_method: str = HASH_METHOD) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        # Tests pass a cheaper scrypt; a stored hash names its own parameters, so any
        # password set with HASH_METHOD still verifies.
        self.hash_method = hash_method
        self._dummy_hash: str | None = None

    # -- reading ------------------------------------------------------------------------

    def get(self, username: str) -> Account | None:
        """The account called ``username``, or None."""
        rows = self.store.rows("SELECT username, role, must_change, language, password_hash FROM users WHERE username = ?", (username,))
        return self._account(rows[0]) if rows else None

    def all(self) -> list[Account]:
        """Every account, by name."""
        rows = self.store.rows("SELECT username, role, must_change, language, password_hash FROM users ORDER BY username")
        return [self._account(r) for r in rows]

    @staticmethod
    def _account(row: tuple) -> Account:
        username, role, must_change, language, password_hash = row
        return Account(username, role, bool(must_change), language, _stamp(password_hash))

    def verify(self, username: str, password: str) -> Account | None:
        """The account if ``password`` is its password, else None (never says which part was wrong)."""
        rows = self.store.rows("SELECT username, role, must_change, language, password_hash FROM users WHERE username = ?", (username,))
        if not rows or len(password) > PASSWORD_MAX:
            # Hash anyway, so an unknown name takes as long as a wrong password.
            if self._dummy_hash is None:
                self._dummy_hash = generate_password_hash(generate_password(), method=self.hash_method)
            check_password_hash(self._dummy_hash, password[:PASSWORD_MAX])
            return None
        return self._account(rows[0]) if check_password_hash(rows[0][4], password) else None

    # -- changing -------------------------------------------------------------------------

    def set_password(self, username: str, password: str, *, by: str, role: str | None = None, must_change: bool = False) -> Account:
        """Set (or reset) a password, creating the account when ``role`` is given; audited."""
        problem = username_problem(username) or password_problem(password, username)
        if problem:
            raise AccountError(problem)
        if role is not None and role not in ROLES:
            raise AccountError(f"role {role!r} is not a role; use {' or '.join(ROLES)}")
        password_hash = generate_password_hash(password, method=self.hash_method)
        now = self._now()
        with self.store.transaction() as conn:
            row = conn.execute("SELECT role FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                if role is None:
                    raise AccountError(f"there is no account {username!r}: give its role ({' or '.join(ROLES)}) to create it")
                conn.execute(
                    "INSERT INTO users (username, role, password_hash, must_change, language, created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?)",
                    (username, role, password_hash, int(must_change), now, now),
                )
                self.audit(by, "account.created", {"account": username, "role": role}, conn=conn)
            else:
                conn.execute(
                    "UPDATE users SET password_hash = ?, must_change = ?, role = COALESCE(?, role), updated_at = ? WHERE username = ?",
                    (password_hash, int(must_change), role, now, username),
                )
                detail: dict[str, Any] = {"account": username}
                if role is not None and role != row[0]:
                    detail["role"] = f"{row[0]} → {role}"
                self.audit(by, "password.changed" if by == username else "password.reset", detail, conn=conn)
            written = conn.execute("SELECT username, role, must_change, language, password_hash FROM users WHERE username = ?", (username,)).fetchone()
        return self._account(written)

    def create_if_missing(self, username: str, role: str, *, by: str) -> str | None:
        """Create the account with a random password; returns it, or None if the account exists."""
        if self.get(username) is not None:
            return None
        password = generate_password()
        self.set_password(username, password, by=by, role=role)
        return password

    def set_language(self, username: str, language: str, *, by: str) -> None:
        """Remember the account's page language; audited."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE users SET language = ?, updated_at = ? WHERE username = ?", (language, self._now(), username))
            self.audit(by, "language.changed", {"account": username, "language": language}, conn=conn)

    # -- the audit log --------------------------------------------------------------------

    def audit(self, username: str, action: str, detail: dict, *, conn: Any = None) -> None:
        """Write one audit row; inside ``conn``'s transaction when given, so it commits with the change."""
        row = (self._now(), username, action, json.dumps(detail, ensure_ascii=False, sort_keys=True))
        if conn is not None:
            conn.execute("INSERT INTO audit (at, username, action, detail) VALUES (?, ?, ?, ?)", row)
            return
        with self.store.transaction() as own:
            own.execute("INSERT INTO audit (at, username, action, detail) VALUES (?, ?, ?, ?)", row)

    def audit_log(self, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """The latest audit rows, newest first."""
        if action:
            rows = self.store.rows("SELECT id, at, username, action, detail FROM audit WHERE action = ? ORDER BY id DESC LIMIT ?", (action, limit))
        else:
            rows = self.store.rows("SELECT id, at, username, action, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditEntry(i, at, who, what, json.loads(detail)) for i, at, who, what, detail in rows]

    def _now(self) -> str:
        return self.clock.now().isoformat(timespec="seconds")


@dataclass
class _Tally:
    failures: int
    last: float
    until: float


class SignInDelays:
    """Growing delays after failed sign-ins, per account and per source address; never a lockout.

    The first ``free_failures`` failures of a key cost nothing; each one after that makes the
    key wait ``first_delay_s``, doubling up to ``max_delay_s``. A key is forgotten after
    ``forget_after_s`` without failures, and a success clears the keys it used. A browser that
    has signed in to an account before carries a device cookie, and its attempts count under
    that device alone: someone on the hall network who keeps failing as 'director' delays
    only themselves and new browsers, never the director's own (OWASP's "device cookies").
    The counters live in the web process's memory: a restart forgets them, which only helps
    the person locked out.
    """

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        free_failures: int = 3,
        first_delay_s: float = 2.0,
        max_delay_s: float = 60.0,
        forget_after_s: float = 900.0,
        max_tracked: int = 10_000,
    ) -> None:
        self.monotonic = monotonic
        self.free_failures = free_failures
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.forget_after_s = forget_after_s
        self.max_tracked = max_tracked
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._lock = threading.Lock()

    @staticmethod
    def keys(username: str, source: str, device: str | None = None) -> list[tuple[str, str]]:
        """The counters one attempt is charged to."""
        if device:
            return [("device", device)]
        return [("account", username.lower()), ("source", source)]

    def wait(self, keys: Iterable[tuple[str, str]]) -> float:
        """Seconds before an attempt under these keys is heard; 0 if it may go ahead now."""
        now = self.monotonic()
        with self._lock:
            self._forget(now)
            return max([0.0] + [t.until - now for k in keys if (t := self._tallies.get(k))])

    def failed(self, keys: Iterable[tuple[str, str]]) -> float:
        """Count a failure under every key; returns the wait it brings on."""
        now = self.monotonic()
        keys = list(keys)
        with self._lock:
            for key in keys:
                tally = self._tallies.get(key) or _Tally(0, now, now)
                tally.failures += 1
                tally.last = now
                extra = tally.failures - self.free_failures
                if extra > 0:
                    tally.until = now + min(self.max_delay_s, self.first_delay_s * 2 ** (extra - 1))
                self._tallies[key] = tally
            if len(self._tallies) > self.max_tracked:
                # Someone is spraying addresses: keep memory bounded, drop the stalest.
                for key in sorted(self._tallies, key=lambda k: self._tallies[k].last)[: len(self._tallies) - self.max_tracked]:
                    del self._tallies[key]
        return self.wait(keys)

    def succeeded(self, keys: Iterable[tuple[str, str]]) -> None:
        """A correct password: clear the counters the attempt used."""
        with self._lock:
            for key in keys:
                self._tallies.pop(key, None)

    def _forget(self, now: float) -> None:
        stale = [k for k, t in self._tallies.items() if now - t.last > self.forget_after_s and now >= t.until]
        for key in stale:
            del self._tallies[key]
