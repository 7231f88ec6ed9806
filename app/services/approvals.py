"""Four eyes on risky actions: a refund above an amount, switching a payment gateway off.

When a setting asks for it, the service doing the action calls `ApprovalService.gate` first.
If approval is needed, the request is stored (who asked, what exactly) and `ApprovalNeeded`
tells the person it waits. A second person whose role may approve it (never the one who
asked, and never the service user: an approval is a person's decision) approves it; the
action then runs as that approver, inside `granted(...)` so the gate lets exactly that
action through, and the approval keeps what happened. Requests not decided within
`EXPIRES_AFTER` lapse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import Permission, Principal, roles_allowed
from app.domain.errors import NotFound, SwitchboardError
from app.domain.money import Money
from app.services import access, audit
from app.services.events import EventHub
from app.services.settings import SettingsService
from app.store.database import Database
from app.store.users import ApprovalRow

if TYPE_CHECKING:
    from app.services.connections import ConnectionService
    from app.services.payments import PaymentService

TOPIC = "approvals"
EXPIRES_AFTER = timedelta(days=7)

REFUND = "refund"
GATEWAY_PAUSE = "gateway.pause"
GATEWAY_REMOVE = "gateway.remove"

# Who may approve each kind of action.
APPROVER: dict[str, Permission] = {
    REFUND: Permission.APPROVE_REFUNDS,
    GATEWAY_PAUSE: Permission.APPROVE_GATEWAY_CHANGES,
    GATEWAY_REMOVE: Permission.APPROVE_GATEWAY_CHANGES,
}

Executor = Callable[[dict[str, Any]], Awaitable[str]]  # runs the action, says what happened

_granted: ContextVar[tuple[str, str] | None] = ContextVar("switchboard_granted", default=None)


class Status(StrEnum):
    WAITING = "waiting"
    APPROVED = "approved"  # approved, being carried out
    DONE = "done"  # approved and carried out
    FAILED = "failed"  # approved, but the action itself failed (outcome says why)
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Approval:
    id: int
    action: str
    record_kind: str
    record_id: str
    params: dict[str, Any]
    summary: str
    requested_by: str
    requested_at: datetime
    status: Status
    decided_by: str | None
    decided_at: datetime | None
    outcome: str | None

    @property
    def approvers(self) -> str:
        return " or ".join(role.label for role in roles_allowed(APPROVER[self.action]))


class ApprovalNeeded(SwitchboardError):
    """The action was not done: it waits for a second person's approval."""

    def __init__(self, approval: Approval) -> None:
        self.approval = approval
        super().__init__(
            f"{approval.summary} needs a second person's approval: it waits as approval "
            f"{approval.id} until someone with the {approval.approvers} role approves it "
            "(Approvals page)."
        )


def _approval(row: ApprovalRow) -> Approval:
    return Approval(
        id=row.id,
        action=row.action,
        record_kind=row.record_kind,
        record_id=row.record_id,
        params=dict(row.params),
        summary=row.summary,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        status=Status(row.status),
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        outcome=row.outcome,
    )


@contextmanager
def granted(action: str, record_id: str) -> Iterator[None]:
    token = _granted.set((action, record_id))
    try:
        yield
    finally:
        _granted.reset(token)


class ApprovalService:
    def __init__(
        self,
        db: Database,
        events: EventHub,
        settings: SettingsService,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._events = events
        self._settings = settings
        self._clock = clock
        self._executors: dict[str, Executor] = {}

    def register(self, action: str, executor: Executor) -> None:
        self._executors[action] = executor

    # --- the rules ------------------------------------------------------------------------------

    def refund_needs_approval(self, major_units: Any) -> bool:
        limit = int(self._settings.get("approvals.refund_above"))
        return bool(limit) and major_units > limit

    def gateway_off_needs_approval(self) -> bool:
        return bool(self._settings.get("approvals.gateway_off"))

    async def gate(
        self,
        needed: bool,
        action: str,
        record_kind: str,
        record_id: int | str,
        params: dict[str, Any],
        summary: str,
    ) -> None:
        """Let the action through when no approval is needed, or when it runs as the approved
        request for this record; otherwise store the request and raise ApprovalNeeded."""
        if not needed or _granted.get() == (action, str(record_id)):
            return
        raise ApprovalNeeded(await self._request(action, record_kind, record_id, params, summary))

    async def _request(
        self,
        action: str,
        record_kind: str,
        record_id: int | str,
        params: dict[str, Any],
        summary: str,
    ) -> Approval:
        who = access.actor()
        now = self._clock()

        def write(session: Session) -> Approval:
            row = ApprovalRow(
                action=action,
                record_kind=record_kind,
                record_id=str(record_id),
                params=params,
                summary=summary[:500],
                requested_by=who,
                requested_at=now,
                status=Status.WAITING.value,
            )
            session.add(row)
            session.flush()
            audit.record(
                session, who, "approval.requested", record_kind, record_id, None,
                {"approval": row.id, "action": action, **params},
            )  # fmt: skip
            return _approval(row)

        approval = await self._db.write(write)
        self._events.publish(TOPIC, {"id": approval.id})
        return approval

    # --- reading --------------------------------------------------------------------------------

    async def approvals(self, status: Status | None = None, limit: int = 500) -> list[Approval]:
        await self._expire()

        def read(session: Session) -> list[Approval]:
            query = select(ApprovalRow).order_by(ApprovalRow.id.desc()).limit(limit)
            if status is not None:
                query = query.where(ApprovalRow.status == status.value)
            return [_approval(row) for row in session.scalars(query)]

        return await self._db.read(read)

    async def approval(self, approval_id: int) -> Approval:
        def read(session: Session) -> Approval:
            row = session.get(ApprovalRow, approval_id)
            if row is None:
                raise NotFound(f"There is no approval {approval_id}.")
            return _approval(row)

        return await self._db.read(read)

    # --- deciding -------------------------------------------------------------------------------

    async def approve(self, approval_id: int) -> Approval:
        """Approve as the acting person and carry the action out; the approval keeps the
        outcome (done, or failed with the reason)."""
        await self._expire()
        approval = await self.approval(approval_id)
        me = self._decider(approval)
        executor = self._executors.get(approval.action)
        if executor is None:
            raise SwitchboardError(f"Approval {approval_id} is for an action this version lacks.")
        # Claim it first, so two approvers at once cannot both run it.
        await self._decide(approval, Status.APPROVED, me.name, "being carried out", claim=True)
        try:
            with granted(approval.action, approval.record_id):
                outcome = await executor(approval.params)
        except SwitchboardError as exc:
            return await self._finish(approval, Status.FAILED, me.name, str(exc))
        except Exception as exc:
            await self._finish(approval, Status.FAILED, me.name, "it failed unexpectedly")
            raise exc
        return await self._finish(approval, Status.DONE, me.name, outcome)

    async def reject(self, approval_id: int, reason: str = "") -> Approval:
        await self._expire()
        approval = await self.approval(approval_id)
        me = self._decider(approval)
        return await self._decide(
            approval, Status.REJECTED, me.name, reason.strip()[:500] or "rejected", claim=True
        )

    def _decider(self, approval: Approval) -> Principal:
        me = access.require(APPROVER[approval.action])
        if me.service:
            raise SwitchboardError(
                "An approval is a person's decision: sign in to Switchboard to approve it."
            )
        if me.name.casefold() == approval.requested_by.casefold():
            raise SwitchboardError(
                f"{me.name} asked for this, so someone else with the {approval.approvers} "
                "role must approve it."
            )
        if approval.status is not Status.WAITING:
            raise SwitchboardError(
                f"Approval {approval.id} was {approval.status.value} already; refresh the list."
            )
        return me

    async def _decide(
        self, approval: Approval, status: Status, by: str, outcome: str, *, claim: bool
    ) -> Approval:
        now = self._clock()

        def write(session: Session) -> Approval:
            row = session.get(ApprovalRow, approval.id)
            if row is None:
                raise NotFound(f"There is no approval {approval.id}.")
            if claim and row.status != Status.WAITING.value:
                raise SwitchboardError(
                    f"Approval {approval.id} was {row.status} already; refresh the list."
                )
            row.status, row.decided_by, row.decided_at = status.value, by, now
            row.outcome = outcome[:500]
            if status is Status.REJECTED:
                audit.record(
                    session, by, "approval.rejected", row.record_kind, row.record_id, None,
                    {"approval": row.id, "requested_by": row.requested_by, "reason": outcome},
                )  # fmt: skip
            return _approval(row)

        decided = await self._db.write(write)
        self._events.publish(TOPIC, {"id": approval.id})
        return decided

    async def _finish(self, approval: Approval, status: Status, by: str, outcome: str) -> Approval:
        def write(session: Session) -> Approval:
            row = session.get(ApprovalRow, approval.id)
            assert row is not None
            row.status, row.outcome = status.value, outcome[:500]
            audit.record(
                session, by, "approval.approved", row.record_kind, row.record_id, None,
                {"approval": row.id, "requested_by": row.requested_by, "action": row.action,
                 "outcome": status.value, "what_happened": row.outcome},
            )  # fmt: skip
            return _approval(row)

        finished = await self._db.write(write)
        self._events.publish(TOPIC, {"id": approval.id})
        return finished

    async def _expire(self) -> None:
        cutoff = self._clock() - EXPIRES_AFTER

        def write(session: Session) -> int:
            rows = list(
                session.scalars(
                    select(ApprovalRow).where(
                        ApprovalRow.status == Status.WAITING.value,
                        ApprovalRow.requested_at < cutoff,
                    )
                )
            )
            for row in rows:
                row.status = Status.EXPIRED.value
                row.outcome = "Nobody decided within 7 days; ask again if it is still needed."
            return len(rows)

        if await self._db.write(write):
            self._events.publish(TOPIC, {})


def register_approved_actions(
    service: ApprovalService, payments: PaymentService, connections: ConnectionService
) -> None:
    """What approving each kind of request does: the very call that asked for approval, now
    run as the approver and let through by `granted`."""

    async def refund(params: dict[str, Any]) -> str:
        amount = Money(int(params["minor"]), str(params["currency"]))
        done = await payments.refund(int(params["payment_id"]), amount, str(params["reason"]))
        return f"Refund {done.id} of {amount}: {done.status}."

    async def pause(params: dict[str, Any]) -> str:
        record = await connections.set_paused(int(params["connection_id"]), True)
        return f"{record.name} is paused."

    async def remove(params: dict[str, Any]) -> str:
        await connections.remove(int(params["connection_id"]))
        return f"{params.get('name', 'The connection')} was removed."

    service.register(REFUND, refund)
    service.register(GATEWAY_PAUSE, pause)
    service.register(GATEWAY_REMOVE, remove)
