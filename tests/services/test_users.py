"""Users, roles and sign-in: Argon2id passwords, TOTP two-step codes on a fixed clock, one-time
backup codes, lock-out with back-off, and the service user the engine and the CLI act as."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select

from app.domain.access import NotAllowed, Principal, Role
from app.domain.errors import SwitchboardError
from app.services import Services, access
from app.services.users import (
    AccountLocked,
    BadPassword,
    CodeNeeded,
    SignInFailed,
    UserService,
    seal,
    unseal,
)
from app.store.audit import AuditRow
from app.store.users import UserRow

pytestmark = pytest.mark.both_databases  # SQLite, then PostgreSQL

PASSWORD = "correct horse battery"
START = datetime(2026, 12, 7, 9, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def users(services: Services, clock: Clock) -> UserService:
    return UserService(services.db, services.events, clock=clock)


async def _stored(services: Services, name: str) -> UserRow:
    def read(session):  # type: ignore[no-untyped-def]
        row = session.scalar(select(UserRow).where(UserRow.login == name.casefold()))
        session.expunge(row)
        return row

    return await services.db.read(read)


async def _actions(services: Services) -> list[tuple[str, str]]:
    def read(session):  # type: ignore[no-untyped-def]
        return [
            (r.actor, r.action) for r in session.scalars(select(AuditRow).order_by(AuditRow.seq))
        ]

    return await services.db.read(read)


async def test_the_first_run_creates_the_administrator_once(users: UserService) -> None:
    assert await users.needs_administrator()
    admin = await users.create_administrator("Ada Admin", PASSWORD)
    assert admin.role is Role.ADMINISTRATOR
    assert not await users.needs_administrator()
    with pytest.raises(SwitchboardError, match="exists already"):
        await users.create_administrator("Eve", PASSWORD)


@pytest.mark.real_password_cost
async def test_passwords_are_kept_as_argon2id_hashes_only(
    services: Services, users: UserService
) -> None:
    await users.create_administrator("Ada", PASSWORD)
    row = await _stored(services, "ada")
    assert row.password_hash is not None
    # RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    assert row.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert PASSWORD not in row.password_hash
    principal = await users.sign_in("ADA", PASSWORD)  # names are not case-sensitive
    assert principal == Principal("Ada", Role.ADMINISTRATOR, row.id)


async def test_a_wrong_password_or_unknown_name_gets_the_same_sentence(users: UserService) -> None:
    await users.create_administrator("Ada", PASSWORD)
    with pytest.raises(SignInFailed) as wrong:
        await users.sign_in("Ada", "not the password")
    with pytest.raises(SignInFailed) as unknown:
        await users.sign_in("Nobody", PASSWORD)
    assert str(wrong.value) == str(unknown.value)


async def test_weak_passwords_are_refused_with_the_reason(users: UserService) -> None:
    with pytest.raises(BadPassword, match="at least 10"):
        await users.create_administrator("Ada", "short")
    with pytest.raises(BadPassword, match="name"):
        await users.create_administrator("Ada Lovelace", "ada lovelace")


async def test_repeated_failures_lock_the_account_with_growing_waits(
    users: UserService, clock: Clock
) -> None:
    await users.create_administrator("Ada", PASSWORD)
    for _ in range(5):
        with pytest.raises(SignInFailed):
            await users.sign_in("Ada", "wrong password!")
    # Locked: even the right password is refused until the wait is over.
    with pytest.raises(AccountLocked, match="30 seconds"):
        await users.sign_in("Ada", PASSWORD)
    clock.advance(31)
    with pytest.raises(SignInFailed):
        await users.sign_in("Ada", "wrong again!!")  # the sixth failure: twice as long
    with pytest.raises(AccountLocked, match="60 seconds"):
        await users.sign_in("Ada", PASSWORD)
    clock.advance(61)
    await users.sign_in("Ada", PASSWORD)  # a success resets the count
    with pytest.raises(SignInFailed):
        await users.sign_in("Ada", "wrong once more")
    await users.sign_in("Ada", PASSWORD)


async def test_the_lock_never_grows_past_fifteen_minutes(users: UserService, clock: Clock) -> None:
    await users.create_administrator("Ada", PASSWORD)
    for _ in range(12):  # 30 s doubled 7 times would be 64 minutes
        clock.advance(16 * 60)
        with pytest.raises(SignInFailed):
            await users.sign_in("Ada", "wrong password!")
    with pytest.raises(AccountLocked, match="15 minutes"):
        await users.sign_in("Ada", PASSWORD)


async def _enrolled(users: UserService, clock: Clock) -> tuple[str, list[str]]:
    await users.create_administrator("Ada", PASSWORD)
    enrolment = users.new_enrolment("Ada")
    assert enrolment.uri.startswith("otpauth://totp/Switchboard:Ada?secret=")
    codes = await users.enrol(
        "Ada", PASSWORD, enrolment, pyotp.TOTP(enrolment.secret).at(clock.now)
    )
    return enrolment.secret, codes


async def test_totp_enrolment_then_sign_in_with_a_code(
    services: Services, users: UserService, clock: Clock
) -> None:
    secret, codes = await _enrolled(users, clock)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    with pytest.raises(CodeNeeded):
        await users.sign_in("Ada", PASSWORD)
    clock.advance(30)
    totp = pyotp.TOTP(secret)
    principal = await users.sign_in("Ada", PASSWORD, totp.at(clock.now))
    assert principal.name == "Ada"
    # The same code a second time is refused: a code works once.
    with pytest.raises(SignInFailed, match="used already"):
        await users.sign_in("Ada", PASSWORD, totp.at(clock.now))
    # One step of drift is allowed; the code from two minutes ago is not.
    clock.advance(30)
    await users.sign_in("Ada", PASSWORD, totp.at(clock.now + timedelta(seconds=30)))
    clock.advance(120)
    with pytest.raises(SignInFailed):
        await users.sign_in("Ada", PASSWORD, totp.at(clock.now - timedelta(seconds=120)))
    # The TOTP secret is not in the database in the clear.
    row = await _stored(services, "Ada")
    assert row.totp_sealed is not None
    assert secret not in row.totp_sealed


async def test_enrolment_needs_a_matching_code(users: UserService, clock: Clock) -> None:
    await users.create_administrator("Ada", PASSWORD)
    enrolment = users.new_enrolment("Ada")
    with pytest.raises(SwitchboardError, match="does not match"):
        await users.enrol("Ada", PASSWORD, enrolment, "000000")
    await users.sign_in("Ada", PASSWORD)  # still one step


async def test_each_backup_code_works_once(users: UserService, clock: Clock) -> None:
    _, codes = await _enrolled(users, clock)
    await users.sign_in("Ada", PASSWORD, codes[0].upper())  # typed in capitals: still fine
    with pytest.raises(SignInFailed):
        await users.sign_in("Ada", PASSWORD, codes[0])
    await users.sign_in("Ada", PASSWORD, codes[1].replace("-", " "))
    assert (await users.users())[0].backup_codes_left == 8
    fresh = await users.new_backup_codes("Ada", PASSWORD)
    with pytest.raises(SignInFailed):
        await users.sign_in("Ada", PASSWORD, codes[2])  # the old set stopped working
    await users.sign_in("Ada", PASSWORD, fresh[0])


async def test_wrong_codes_count_towards_the_lock(users: UserService, clock: Clock) -> None:
    await _enrolled(users, clock)
    for _ in range(5):
        with pytest.raises(SignInFailed):
            await users.sign_in("Ada", PASSWORD, "123456")
    with pytest.raises(AccountLocked):
        await users.sign_in("Ada", PASSWORD, "654321")


async def test_changing_the_password_keeps_the_second_step(
    users: UserService, clock: Clock
) -> None:
    secret, _ = await _enrolled(users, clock)
    await users.change_password("Ada", PASSWORD, "a brand new passphrase")
    with pytest.raises(SignInFailed):
        await users.sign_in("Ada", PASSWORD, pyotp.TOTP(secret).at(clock.now))
    clock.advance(30)
    await users.sign_in("Ada", "a brand new passphrase", pyotp.TOTP(secret).at(clock.now))


async def test_a_password_reset_by_an_administrator_removes_the_second_step(
    services: Services, users: UserService, clock: Clock
) -> None:
    await users.create_administrator("Ada", PASSWORD)
    bob = await users.add("Bob", Role.FINANCE, "bob's first password")
    enrolment = users.new_enrolment("Bob")
    with access.acting_as(bob.principal):
        await users.enrol(
            "Bob", "bob's first password", enrolment, pyotp.TOTP(enrolment.secret).at(clock.now)
        )
    reset = await users.reset_password(bob.id, "bob's second password")
    assert not reset.two_step
    assert reset.backup_codes_left == 0
    principal = await users.sign_in("Bob", "bob's second password")
    assert principal.role is Role.FINANCE


async def test_someone_else_cannot_set_up_a_persons_second_step(
    users: UserService, clock: Clock
) -> None:
    admin = await users.create_administrator("Ada", PASSWORD)
    await users.add("Bob", Role.STAFF, "bob's first password")
    enrolment = users.new_enrolment("Bob")
    with access.acting_as(admin.principal), pytest.raises(SwitchboardError, match="Only Bob"):
        await users.enrol(
            "Bob", "bob's first password", enrolment, pyotp.TOTP(enrolment.secret).at(clock.now)
        )


async def test_moving_the_second_step_to_a_new_phone_needs_a_code_from_the_old(
    users: UserService, clock: Clock
) -> None:
    secret, codes = await _enrolled(users, clock)
    clock.advance(30)
    new = users.new_enrolment("Ada")
    with pytest.raises(CodeNeeded):
        await users.enrol("Ada", PASSWORD, new, pyotp.TOTP(new.secret).at(clock.now))
    await users.enrol(
        "Ada", PASSWORD, new, pyotp.TOTP(new.secret).at(clock.now), current_code=codes[0]
    )
    clock.advance(30)
    with pytest.raises(SignInFailed):
        await users.sign_in("Ada", PASSWORD, pyotp.TOTP(secret).at(clock.now))
    await users.sign_in("Ada", PASSWORD, pyotp.TOTP(new.secret).at(clock.now))


async def test_managing_users_needs_the_administrator_role(users: UserService) -> None:
    admin = await users.create_administrator("Ada", PASSWORD)
    bob = await users.add("Bob", Role.FINANCE, "bob's first password")
    for role in (Role.FINANCE, Role.STAFF, Role.VIEWER):
        with access.acting_as(Principal("Someone", role)):
            with pytest.raises(NotAllowed, match="may not manage users"):
                await users.add("Carol", Role.VIEWER, "carol's password")
            with pytest.raises(NotAllowed):
                await users.set_role(bob.id, Role.ADMINISTRATOR)
            with pytest.raises(NotAllowed):
                await users.set_disabled(bob.id, True)
            with pytest.raises(NotAllowed):
                await users.reset_password(bob.id, "another password")
            with pytest.raises(NotAllowed):
                await users.turn_off_two_step(bob.id)
    with access.acting_as(admin.principal):
        await users.set_role(bob.id, Role.STAFF)
        await users.set_disabled(bob.id, True)
    with pytest.raises(SignInFailed):
        await users.sign_in("Bob", "bob's first password")  # switched off


async def test_the_last_administrator_stays(users: UserService) -> None:
    admin = await users.create_administrator("Ada", PASSWORD)
    with pytest.raises(SwitchboardError, match="only administrator"):
        await users.set_role(admin.id, Role.VIEWER)
    with pytest.raises(SwitchboardError, match="only administrator"):
        await users.set_disabled(admin.id, True)
    second = await users.add("Bea", Role.ADMINISTRATOR, "bea's long password")
    await users.set_role(admin.id, Role.VIEWER)
    with pytest.raises(SwitchboardError, match="only administrator"):
        await users.set_disabled(second.id, True)


async def test_the_service_users_role_is_what_the_engine_and_cli_may_do(
    services: Services, users: UserService
) -> None:
    assert access.current().service
    assert access.current().role is Role.ADMINISTRATOR
    service = next(u for u in await users.users() if u.service)
    await users.set_role(service.id, Role.VIEWER)
    try:
        assert access.current() == Principal("service", Role.VIEWER, service.id, service=True)
        with pytest.raises(NotAllowed, match="The service user \\(Viewer\\) may not manage"):
            await users.add("Carol", Role.VIEWER, "carol's password")
        with pytest.raises(SignInFailed):
            await users.sign_in("service", "")  # nobody signs in as the service user
    finally:
        access.set_service_user(Principal("service", Role.ADMINISTRATOR, service.id, True))


async def test_user_changes_are_in_the_audit_trail_by_whom(
    services: Services, users: UserService, clock: Clock
) -> None:
    admin = await users.create_administrator("Ada", PASSWORD)
    with access.acting_as(admin.principal):
        bob = await users.add("Bob", Role.STAFF, "bob's first password")
        await users.set_role(bob.id, Role.FINANCE)
    actions = await _actions(services)
    assert ("Ada", "user.created") in actions
    assert actions[-1] == ("Ada", "user.role_changed")
    assert (await services.audit.verify()).ok


def test_a_sealed_secret_opens_only_with_the_password_and_the_same_login() -> None:
    sealed, salt = seal("JBSWY3DPEHPK3PXP", PASSWORD, "ada")
    assert unseal(sealed, salt, PASSWORD, "ada") == "JBSWY3DPEHPK3PXP"
    assert unseal(sealed, salt, "another password", "ada") is None
    assert unseal(sealed, salt, PASSWORD, "eve") is None
