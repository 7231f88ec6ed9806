"""People who sign in, and the service user the engine and the command line act as.

- Passwords are hashed with Argon2id (argon2-cffi's RFC 9106 low-memory profile); a name that
  does not exist costs the same time as a wrong password, so timing does not tell names apart.
- Two-step sign-in is TOTP (RFC 6238, pyotp): 30-second codes from an authenticator app,
  enrolled with a QR code of the `otpauth://` URI, one step of clock drift either way, and
  each code accepted once. Ten one-time backup codes stand in for a lost phone. The TOTP
  secret is sealed with AES-GCM under a key derived from the password (Argon2id raw), so the
  database alone never yields it; the key exists only while the password is being checked.
- Repeated failures lock the account: after `LOCK_AFTER` failures in a row, for 30 s, then
  twice as long for each further failure, up to 15 minutes. A successful sign-in resets it.
- The first run creates the administrator: `create_administrator` works only while no
  person exists, and an administrator can neither demote nor disable the last administrator.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.domain.access import Permission, Principal, Role
from app.domain.errors import NotFound, SwitchboardError
from app.services import access, audit
from app.services.events import EventHub
from app.store.database import Database
from app.store.users import BackupCodeRow, UserRow

log = logging.getLogger("switchboard.users")

TOPIC = "users"
ISSUER = "Switchboard"
MIN_PASSWORD = 10
LOCK_AFTER = 5  # failures in a row before the first lock
FIRST_LOCK = timedelta(seconds=30)
LONGEST_LOCK = timedelta(minutes=15)
BACKUP_CODES = 10
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread

_passwords = PasswordHasher()  # Argon2id, t=3, m=64 MiB, p=4 (RFC 9106 low-memory)
# Backup codes are random (50 bits), so a light hash is enough and ten checks stay quick.
_codes = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """What a name nobody has is checked against, so it takes as long as a wrong password
    (made on first use: hashing costs a fifth of a second, not to be paid at every start)."""
    return _passwords.hash("not anyone's password")


class SignInFailed(SwitchboardError):
    """A name, password or code that does not let anyone in (the sentence never says which)."""


class CodeNeeded(SwitchboardError):
    """The password was right and the account has two-step sign-in: ask for the code."""


class AccountLocked(SwitchboardError):
    def __init__(self, until: datetime, now: datetime) -> None:
        self.until = until
        wait = max(1, round((until - now).total_seconds()))
        when = f"{wait} seconds" if wait < 90 else f"{round(wait / 60)} minutes"
        super().__init__(f"Too many wrong attempts: this account is locked; try again in {when}.")


class AdministratorExists(SwitchboardError):
    """The first run's form was filled in, but someone created the administrator meanwhile
    (on another office PC sharing the database)."""


class BadPassword(SwitchboardError):
    """A new password that is not acceptable."""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: Role
    service: bool
    disabled: bool
    two_step: bool
    backup_codes_left: int
    locked_until: datetime | None
    last_sign_in_at: datetime | None
    created_at: datetime

    @property
    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.id, service=self.service)


@dataclass(frozen=True)
class Enrolment:
    """A TOTP secret about to be enrolled: show `uri` as a QR code (or `secret` to type in)."""

    secret: str
    uri: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_password(password: str, name: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadPassword(f"A password needs at least {MIN_PASSWORD} characters.")
    if password.strip().casefold() == name.strip().casefold():
        raise BadPassword("A password must not be the user's name.")


def _name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise SwitchboardError("Give the user a name.")
    if len(cleaned) > 100:
        raise SwitchboardError("A user's name can have at most 100 characters.")
    return cleaned


# The key that seals a TOTP secret: Argon2id raw, at the passwords' cost.
KEY_COST = {"time_cost": 3, "memory_cost": 64 * 1024, "parallelism": 4}


def _key(password: str, salt: bytes) -> bytes:
    return hash_secret_raw(password.encode(), salt, hash_len=32, type=Type.ID, **KEY_COST)


def seal(secret: str, password: str, login: str) -> tuple[str, str]:
    """The TOTP secret encrypted under a key from the password: (sealed, salt), base64."""
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(_key(password, salt)).encrypt(nonce, secret.encode(), login.encode())
    return base64.b64encode(nonce + sealed).decode(), base64.b64encode(salt).decode()


def unseal(sealed: str, salt: str, password: str, login: str) -> str | None:
    raw = base64.b64decode(sealed)
    try:
        plain = AESGCM(_key(password, base64.b64decode(salt))).decrypt(
            raw[:12], raw[12:], login.encode()
        )
    except InvalidTag:
        return None
    return plain.decode()


def _verify(hasher: PasswordHasher, hashed: str | None, value: str) -> bool:
    try:
        return hasher.verify(hashed or _dummy_hash(), value) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _new_backup_code() -> str:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def _normal_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").casefold()


def _lock_for(failures: int) -> timedelta:
    if failures < LOCK_AFTER:
        return timedelta(0)
    doublings = min(failures - LOCK_AFTER, 10)  # 30 s << 10 is past the longest lock
    return min(FIRST_LOCK * (1 << doublings), LONGEST_LOCK)


def _user(session: Session, row: UserRow) -> User:
    left = session.scalar(
        select(func.count())
        .select_from(BackupCodeRow)
        .where(BackupCodeRow.user_id == row.id, BackupCodeRow.used_at.is_(None))
    )
    return User(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        service=row.service,
        disabled=row.disabled,
        two_step=row.totp_sealed is not None,
        backup_codes_left=int(left or 0),
        locked_until=row.locked_until,
        last_sign_in_at=row.last_sign_in_at,
        created_at=row.created_at,
    )


def _audited(row: UserRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "role": row.role,
        "disabled": row.disabled,
        "two_step": row.totp_sealed is not None,
    }


def _by_login(session: Session, name: str) -> UserRow | None:
    return session.scalar(select(UserRow).where(UserRow.login == _name(name).casefold()))


def _person(session: Session, user_id: int) -> UserRow:
    row = session.get(UserRow, user_id)
    if row is None or row.service:
        raise NotFound("That user no longer exists; refresh the list.")
    return row


def _administrators(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(UserRow)
            .where(
                UserRow.role == Role.ADMINISTRATOR.value,
                UserRow.service.is_(False),
                UserRow.disabled.is_(False),
            )
        )
        or 0
    )


class UserService:
    """Users, sign-in and two-step codes. Every method that changes someone else requires
    MANAGE_USERS; a person changes their own password and second step themselves."""

    def __init__(
        self, db: Database, events: EventHub, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock

    # --- the service user -----------------------------------------------------------------------

    async def load_service_user(self) -> Principal:
        """Read (creating it the first time) the service user and make it the process's."""

        def write(session: Session) -> Principal:
            row = session.scalar(select(UserRow).where(UserRow.service.is_(True)))
            if row is None:
                row = UserRow(
                    name=access.SERVICE_NAME,
                    login=access.SERVICE_NAME,
                    role=Role.ADMINISTRATOR.value,
                    service=True,
                )
                session.add(row)
                session.flush()
            return Principal(row.name, Role(row.role), row.id, service=True)

        principal = await self._db.write(write)
        access.set_service_user(principal)
        return principal

    # --- reading --------------------------------------------------------------------------------

    async def needs_administrator(self) -> bool:
        """True on the first run: nobody but the service user exists yet."""

        def read(session: Session) -> bool:
            people = session.scalar(
                select(func.count()).select_from(UserRow).where(UserRow.service.is_(False))
            )
            return not people

        return await self._db.read(read)

    async def users(self) -> list[User]:
        def read(session: Session) -> list[User]:
            rows = session.scalars(select(UserRow).order_by(UserRow.service, UserRow.login))
            return [_user(session, row) for row in rows]

        return await self._db.read(read)

    async def user(self, user_id: int) -> User:
        def read(session: Session) -> User:
            row = session.get(UserRow, user_id)
            if row is None:
                raise NotFound("That user no longer exists; refresh the list.")
            return _user(session, row)

        return await self._db.read(read)

    # --- creating and changing users ------------------------------------------------------------

    async def create_administrator(self, name: str, password: str) -> User:
        """The first run's administrator; refused once any person exists."""
        name = _name(name)
        check_password(password, name)
        hashed = await _hash(password)

        def write(session: Session) -> User:
            people = session.scalar(
                select(func.count()).select_from(UserRow).where(UserRow.service.is_(False))
            )
            if people:
                raise AdministratorExists(
                    "An administrator exists already; sign in, or ask them to add you as a user."
                )
            row = UserRow(
                name=name, login=name.casefold(), role=Role.ADMINISTRATOR.value,
                password_hash=hashed,
            )  # fmt: skip
            session.add(row)
            session.flush()
            audit.record(session, name, "user.created", "user", row.id, None, _audited(row))
            return _user(session, row)

        user = await self._db.write(write)
        self._changed()
        return user

    async def add(self, name: str, role: Role, password: str) -> User:
        access.require(Permission.MANAGE_USERS)
        name = _name(name)
        check_password(password, name)
        hashed = await _hash(password)
        who = access.actor()

        def write(session: Session) -> User:
            if _by_login(session, name) is not None:
                raise SwitchboardError(f"A user called {name} exists already; choose another name.")
            row = UserRow(name=name, login=name.casefold(), role=role.value, password_hash=hashed)
            session.add(row)
            session.flush()
            audit.record(session, who, "user.created", "user", row.id, None, _audited(row))
            return _user(session, row)

        user = await self._db.write(write)
        self._changed()
        return user

    async def set_role(self, user_id: int, role: Role) -> User:
        """Change a person's role, or the service user's (what the engine and CLI may do)."""
        access.require(Permission.MANAGE_USERS)
        who = access.actor()

        def write(session: Session) -> User:
            row = session.get(UserRow, user_id)
            if row is None:
                raise NotFound("That user no longer exists; refresh the list.")
            was = _audited(row)
            demoting = row.role == Role.ADMINISTRATOR.value and role is not Role.ADMINISTRATOR
            if demoting and not row.service and not row.disabled and _administrators(session) < 2:
                raise SwitchboardError(
                    f"{row.name} is the only administrator; make someone else an administrator "
                    "first."
                )
            row.role = role.value
            before, after = audit.changes(was, _audited(row))
            audit.record(session, who, "user.role_changed", "user", row.id, before, after)
            return _user(session, row)

        user = await self._db.write(write)
        if user.service:
            access.set_service_user(user.principal)
        self._changed()
        return user

    async def set_disabled(self, user_id: int, disabled: bool) -> User:
        access.require(Permission.MANAGE_USERS)
        who = access.actor()

        def write(session: Session) -> User:
            row = _person(session, user_id)
            if (
                disabled
                and not row.disabled
                and row.role == Role.ADMINISTRATOR.value
                and _administrators(session) < 2
            ):
                raise SwitchboardError(
                    f"{row.name} is the only administrator and cannot be switched off."
                )
            was = _audited(row)
            row.disabled = disabled
            action = "user.disabled" if disabled else "user.enabled"
            before, after = audit.changes(was, _audited(row))
            audit.record(session, who, action, "user", row.id, before, after)
            return _user(session, row)

        user = await self._db.write(write)
        self._changed()
        return user

    async def reset_password(self, user_id: int, password: str) -> User:
        """An administrator sets a new password for someone who forgot theirs. Their second
        step was sealed under the old password, so it goes too: they set it up again."""
        access.require(Permission.MANAGE_USERS)
        who = access.actor()

        def name_of(session: Session) -> str:
            return _person(session, user_id).name

        check_password(password, await self._db.read(name_of))
        hashed = await _hash(password)

        def write(session: Session) -> User:
            row = _person(session, user_id)
            was = _audited(row)
            row.password_hash = hashed
            _drop_second_step(session, row)
            row.failed_attempts = 0
            row.locked_until = None
            before, after = audit.changes(was, _audited(row))
            audit.record(session, who, "user.password_reset", "user", row.id, before, after)
            return _user(session, row)

        user = await self._db.write(write)
        self._changed()
        return user

    async def change_password(self, name: str, old: str, new: str) -> None:
        """A person changes their own password (their second step is sealed again)."""
        row = await self._check(name, old, code=None, count_failure=True, need_code=False)
        check_password(new, row.name)
        secret = (
            unseal(row.totp_sealed, row.totp_salt, old, row.login)
            if row.totp_sealed and row.totp_salt
            else None
        )
        hashed = await _hash(new)
        sealed = seal(secret, new, row.login) if secret else None

        def write(session: Session) -> None:
            user = session.get(UserRow, row.id)
            assert user is not None
            user.password_hash = hashed
            if sealed is not None:
                user.totp_sealed, user.totp_salt = sealed
            audit.record(session, user.name, "user.password_changed", "user", user.id, None, None)

        await self._db.write(write)

    # --- signing in -----------------------------------------------------------------------------

    async def sign_in(self, name: str, password: str, code: str | None = None) -> Principal:
        """The person named, if the password (and, with two-step sign-in, the code: a TOTP
        code or an unused backup code) are right. Raises CodeNeeded when only the code is
        missing, AccountLocked while locked, SignInFailed otherwise."""
        row = await self._check(name, password, code, count_failure=True, need_code=True)

        def write(session: Session) -> None:
            user = session.get(UserRow, row.id)
            assert user is not None
            user.last_sign_in_at = self._clock()

        await self._db.write(write)
        log.info("signed in", extra={"user": row.name})
        return Principal(row.name, Role(row.role), row.id)

    async def _check(
        self, name: str, password: str, code: str | None, *, count_failure: bool, need_code: bool
    ) -> UserRow:
        now = self._clock()

        def read(session: Session) -> UserRow | None:
            row = _by_login(session, name) if name.strip() else None
            if row is not None:
                session.expunge(row)
            return row

        row = await self._db.read(read)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            raise AccountLocked(row.locked_until, now)
        usable = row is not None and not row.service and not row.disabled
        good = await _averify(_passwords, row.password_hash if row else None, password)
        if not (usable and good):
            if row is not None and count_failure:
                await self._failed(row.id)
            raise SignInFailed("That name and password do not match; check them and try again.")
        assert row is not None
        if need_code and row.totp_sealed and row.totp_salt:
            if not code or not code.strip():
                raise CodeNeeded("Enter the 6-digit code from your authenticator app.")
            secret = unseal(row.totp_sealed, row.totp_salt, password, row.login)
            if secret is None or not await self._second_step(row, secret, code, now):
                await self._failed(row.id)
                raise SignInFailed(
                    "That code is not right (or was used already); enter the newest code "
                    "from your authenticator app, or a backup code."
                )
        await self._succeeded(row.id)
        return row

    async def _second_step(self, row: UserRow, secret: str, code: str, now: datetime) -> bool:
        digits = _normal_code(code)
        if digits.isdigit() and len(digits) == 6:
            step = _matching_step(secret, digits, now)
            if step is None or (row.totp_last_step is not None and step <= row.totp_last_step):
                return False

            def spend_step(session: Session) -> bool:
                user = session.get(UserRow, row.id)
                assert user is not None
                if user.totp_last_step is not None and step <= user.totp_last_step:
                    return False
                user.totp_last_step = step
                return True

            return await self._db.write(spend_step)

        def unused(session: Session) -> list[tuple[int, str]]:
            codes = session.scalars(
                select(BackupCodeRow).where(
                    BackupCodeRow.user_id == row.id, BackupCodeRow.used_at.is_(None)
                )
            )
            return [(c.id, c.code_hash) for c in codes]

        for code_id, hashed in await self._db.read(unused):
            if await _averify(_codes, hashed, digits):

                def spend(session: Session, code_id: int = code_id) -> bool:
                    backup = session.get(BackupCodeRow, code_id)
                    if backup is None or backup.used_at is not None:
                        return False  # spent meanwhile on another PC
                    backup.used_at = now
                    audit.record(
                        session, row.name, "user.backup_code_used", "user", row.id, None, None
                    )
                    return True

                return await self._db.write(spend)
        return False

    async def _failed(self, user_id: int) -> None:
        now = self._clock()

        def write(session: Session) -> None:
            row = session.get(UserRow, user_id)
            if row is None:
                return
            row.failed_attempts += 1
            lock = _lock_for(row.failed_attempts)
            if lock:
                row.locked_until = now + lock
                log.warning(
                    "account locked", extra={"user": row.name, "seconds": lock.total_seconds()}
                )

        await self._db.write(write)

    async def _succeeded(self, user_id: int) -> None:
        def write(session: Session) -> None:
            row = session.get(UserRow, user_id)
            if row is not None and (row.failed_attempts or row.locked_until):
                row.failed_attempts = 0
                row.locked_until = None

        await self._db.write(write)

    # --- two-step sign-in -----------------------------------------------------------------------

    def new_enrolment(self, name: str) -> Enrolment:
        """A fresh TOTP secret and its otpauth:// URI for the QR code (nothing is stored yet)."""
        secret = pyotp.random_base32()
        uri = pyotp.TOTP(secret).provisioning_uri(name=_name(name), issuer_name=ISSUER)
        return Enrolment(secret, uri)

    async def enrol(
        self,
        name: str,
        password: str,
        enrolment: Enrolment,
        code: str,
        current_code: str | None = None,
    ) -> list[str]:
        """Turn on two-step sign-in once the person shows a code from the app they set up;
        answers their new backup codes (shown once: only hashes are kept). Moving it to a new
        phone takes a code from the old one (`current_code`, or a backup code)."""
        row = await self._check(name, password, current_code, count_failure=True, need_code=True)
        self._acting_for(row)
        now = self._clock()
        step = _matching_step(enrolment.secret, _normal_code(code), now)
        if step is None:
            raise SwitchboardError(
                "That code does not match; check the phone's clock and enter the newest code."
            )
        sealed, salt = seal(enrolment.secret, password, row.login)
        codes = [_new_backup_code() for _ in range(BACKUP_CODES)]
        hashes = [await _ahash(_codes, _normal_code(c)) for c in codes]

        def write(session: Session) -> None:
            user = session.get(UserRow, row.id)
            assert user is not None
            was = _audited(user)
            user.totp_sealed, user.totp_salt, user.totp_last_step = sealed, salt, step
            _replace_codes(session, user, hashes)
            before, after = audit.changes(was, _audited(user))
            audit.record(session, user.name, "user.two_step_on", "user", user.id, before, after)

        await self._db.write(write)
        self._changed()
        return codes

    async def new_backup_codes(self, name: str, password: str) -> list[str]:
        """Ten fresh backup codes; the old ones stop working."""
        row = await self._check(name, password, None, count_failure=True, need_code=False)
        self._acting_for(row)
        if row.totp_sealed is None:
            raise SwitchboardError("Set up two-step sign-in first; backup codes go with it.")
        codes = [_new_backup_code() for _ in range(BACKUP_CODES)]
        hashes = [await _ahash(_codes, _normal_code(c)) for c in codes]

        def write(session: Session) -> None:
            user = session.get(UserRow, row.id)
            assert user is not None
            _replace_codes(session, user, hashes)
            audit.record(session, user.name, "user.backup_codes_new", "user", user.id, None, None)

        await self._db.write(write)
        self._changed()
        return codes

    async def turn_off_two_step(self, user_id: int) -> User:
        """An administrator removes someone's second step (a lost phone and no backup code)."""
        access.require(Permission.MANAGE_USERS)
        who = access.actor()

        def write(session: Session) -> User:
            row = _person(session, user_id)
            was = _audited(row)
            _drop_second_step(session, row)
            before, after = audit.changes(was, _audited(row))
            audit.record(session, who, "user.two_step_off", "user", row.id, before, after)
            return _user(session, row)

        user = await self._db.write(write)
        self._changed()
        return user

    def _acting_for(self, row: UserRow) -> None:
        """Only the person themself (who just gave their password) sets up their second step;
        an administrator acting for them would see their codes."""
        me = access.current()
        if not me.service and me.user_id is not None and me.user_id != row.id:
            raise SwitchboardError(
                f"Only {row.name} can set up their own two-step sign-in; ask them to sign in."
            )

    def _changed(self) -> None:
        self._events.publish(TOPIC, {})


def _matching_step(secret: str, digits: str, now: datetime) -> int | None:
    """The time step whose code is `digits`, allowing one step of drift either way."""
    totp = pyotp.TOTP(secret)
    for drift in (0, -1, 1):
        at = now + timedelta(seconds=drift * totp.interval)
        if secrets.compare_digest(totp.at(at), digits):
            return totp.timecode(at)
    return None


def _replace_codes(session: Session, row: UserRow, hashes: list[str]) -> None:
    for old in session.scalars(select(BackupCodeRow).where(BackupCodeRow.user_id == row.id)):
        session.delete(old)
    session.add_all(BackupCodeRow(user_id=row.id, code_hash=h) for h in hashes)


def _drop_second_step(session: Session, row: UserRow) -> None:
    row.totp_sealed = row.totp_salt = None
    row.totp_last_step = None
    _replace_codes(session, row, [])


async def _hash(password: str) -> str:
    return await _ahash(_passwords, password)


async def _ahash(hasher: PasswordHasher, value: str) -> str:
    return await asyncio.to_thread(hasher.hash, value)


async def _averify(hasher: PasswordHasher, hashed: str | None, value: str) -> bool:
    return await asyncio.to_thread(_verify, hasher, hashed, value)
