"""Who may do what: roles, the permissions each grants, and who is acting.

Four roles, as an office shares one PC: an Administrator may do everything; Finance takes
payments, refunds them, runs billing and reconciles; Staff keep the school's records, send
messages and keep calendars in step; a Viewer reads. Reading is open to every role; what is
guarded is every call that changes something, and the audit trail itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.domain.errors import SwitchboardError


class Role(StrEnum):
    ADMINISTRATOR = "administrator"
    FINANCE = "finance"
    STAFF = "staff"
    VIEWER = "viewer"

    @property
    def label(self) -> str:
        return self.value.capitalize()


class Permission(StrEnum):
    """Each value reads after "may not ...", in the sentence that refuses it."""

    EDIT_SCHOOL = "change the school's records"
    SEND_MESSAGES = "send messages or change message templates"
    SYNC_CALENDARS = "sync calendars or settle their conflicts"
    TAKE_PAYMENTS = "take payments"
    REFUND = "refund payments"
    RUN_BILLING = "run billing"
    RECONCILE = "reconcile payments"
    MANAGE_CONNECTIONS = "change connections, routing rules, webhooks or automations"
    MANAGE_SETTINGS = "change the settings"
    REPLAY_EVENTS = "replay webhook events"
    MANAGE_USERS = "manage users"
    VIEW_AUDIT = "read the audit trail"
    MANAGE_BACKUPS = "back up or restore the database"
    MOVE_DATABASE = "move the database to a shared server"
    APPROVE_REFUNDS = "approve refunds"
    APPROVE_GATEWAY_CHANGES = "approve switching a payment gateway off"


_FINANCE = frozenset(
    {
        Permission.TAKE_PAYMENTS,
        Permission.REFUND,
        Permission.RUN_BILLING,
        Permission.RECONCILE,
        Permission.VIEW_AUDIT,
        Permission.APPROVE_REFUNDS,
    }
)
_STAFF = frozenset({Permission.EDIT_SCHOOL, Permission.SEND_MESSAGES, Permission.SYNC_CALENDARS})

GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMINISTRATOR: frozenset(Permission),
    Role.FINANCE: _FINANCE,
    Role.STAFF: _STAFF,
    Role.VIEWER: frozenset(),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in GRANTS[role]


def roles_allowed(permission: Permission) -> list[Role]:
    return [role for role in Role if allows(role, permission)]


@dataclass(frozen=True)
class Principal:
    """Someone acting: a signed-in person, or the service user the engine and the command line
    act as. `user_id` is None only before the users table was first read."""

    name: str
    role: Role
    user_id: int | None = None
    service: bool = False

    def may(self, permission: Permission) -> bool:
        return allows(self.role, permission)


class NotAllowed(SwitchboardError):
    """The acting user's role does not grant what was asked."""

    def __init__(self, principal: Principal, permission: Permission) -> None:
        self.principal = principal
        self.permission = permission
        who = "The service user" if principal.service else principal.name
        allowed = " or ".join(role.label for role in roles_allowed(permission))
        super().__init__(
            f"{who} ({principal.role.label}) may not {permission.value}; "
            f"ask someone with the {allowed} role."
        )
