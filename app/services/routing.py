"""Routing a payer's payment: the payer's saved methods say which gateways can take it at all;
the router (app/domain/routing.py) orders them and explains why; every attempt's outcome
teaches it.

The router learns in memory; at start it is taught the recent attempts from the database, so
a restart does not forget which gateway has been doing badly.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.access import Permission
from app.domain.errors import FieldError, NotFound, SwitchboardError, ValidationFailed
from app.domain.money import Money
from app.domain.payments import ChargeResult, ChargeStatus, FailureKind
from app.domain.routing import Decision, Gateway, PaymentAsk, Router
from app.domain.routing_rules import RoutingRule, RuleDraft
from app.providers.breaker import BreakerState
from app.providers.gateway import PAYMENTS, PaymentGateway
from app.services import access, audit
from app.services.connections import ConnectionService
from app.services.events import EventHub
from app.services.payments import Candidate, ChargeOrder, Payment, PaymentService
from app.store.database import Database
from app.store.payments import (
    PaymentAttemptRow,
    PaymentMethodRow,
    PaymentRow,
    RoutingRuleRow,
)
from app.store.school import Guardian

WARM_UP_ATTEMPTS = 5000
TOPIC_RULES = "routing.rules"


@dataclass(frozen=True)
class SavedMethod:
    id: int
    guardian_id: int
    connection_id: int
    method: str
    token: str
    customer: str
    label: str
    country: str


class RoutingService:
    def __init__(
        self, db: Database, connections: ConnectionService, events: EventHub | None = None
    ) -> None:
        self._db = db
        self._connections = connections
        self._events = events
        self._down: dict[str, str] = {}
        self.router = Router([], down=self._down.get)
        self._stale = True
        self._taught = False
        self._refreshing = asyncio.Lock()
        connections.on_changed(self._changed)

    def _changed(self, _connection_id: int) -> None:
        self._stale = True

    # --- saved methods --------------------------------------------------------------------------

    async def save_method(
        self,
        guardian_id: int,
        connection_id: int,
        method: str,
        token: str,
        *,
        customer: str = "",
        label: str = "",
        country: str = "",
    ) -> SavedMethod:
        """Remember a payer's method saved at a gateway (the same token again updates it): a
        part of taking their payments, so it needs the right to take payments."""
        access.require(Permission.TAKE_PAYMENTS)
        who = access.actor()
        record = await self._connections.connection(connection_id)
        if PAYMENTS not in record.spec.capabilities:
            raise SwitchboardError(f"{record.name} does not take payments.")

        def write(session: Session) -> int:
            if session.get(Guardian, guardian_id) is None:
                raise NotFound(f"There is no guardian number {guardian_id}.")
            row = session.scalar(
                select(PaymentMethodRow)
                .where(PaymentMethodRow.connection_id == connection_id)
                .where(PaymentMethodRow.token == token)
            )
            was = _audited_method(row) if row is not None else None
            if row is None:
                row = PaymentMethodRow(connection_id=connection_id, token=token)
                session.add(row)
            row.guardian_id = guardian_id
            row.method, row.customer = method, customer
            row.label, row.country = label[:100], country.upper()[:2]
            session.flush()
            before, after = (
                (None, _audited_method(row))
                if was is None
                else audit.changes(was, _audited_method(row))
            )
            if was is None or after:
                # The gateway's token and customer stay out: they are what charges the card.
                audit.record(
                    session,
                    who,
                    "payment_method.saved",
                    "payment_method",
                    row.id,
                    before,
                    after,
                )
            return row.id

        method_id = await self._db.write(write)
        return next(saved for saved in await self.methods(guardian_id) if saved.id == method_id)

    async def methods(self, guardian_id: int) -> list[SavedMethod]:
        def query(session: Session) -> list[SavedMethod]:
            rows = session.scalars(
                select(PaymentMethodRow)
                .where(PaymentMethodRow.guardian_id == guardian_id)
                .order_by(PaymentMethodRow.id)
            )
            return [
                SavedMethod(
                    row.id,
                    row.guardian_id,
                    row.connection_id,
                    row.method,
                    row.token,
                    row.customer,
                    row.label,
                    row.country,
                )
                for row in rows
            ]

        return await self._db.read(query)

    # --- the administrator's rules ---------------------------------------------------------------

    async def rules(self) -> list[RoutingRule]:
        """Every rule, in the order they are checked."""
        return await self._db.read(_rules)

    async def save_rule(self, draft: RuleDraft, rule_id: int | None = None) -> RoutingRule:
        """Add a rule (checked last) or change one; ValidationFailed says what is wrong."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        errors = draft.problems()
        if not errors:
            errors = await self._gateway_problems(draft.gateways)
        if errors:
            raise ValidationFailed(errors)
        low, high = draft.band()

        def write(session: Session) -> int:
            if rule_id is None:
                last = session.scalar(
                    select(RoutingRuleRow.position).order_by(RoutingRuleRow.position.desc())
                )
                row = RoutingRuleRow(position=(last + 1) if last is not None else 0)
                session.add(row)
            else:
                found = session.get(RoutingRuleRow, rule_id)
                if found is None:
                    raise NotFound(f"There is no routing rule number {rule_id}.")
                row = found
            was = _audited_rule(row) if rule_id is not None else None
            row.currency, row.method, row.country = draft.currency, draft.method, draft.country
            row.min_minor, row.max_minor = low, high
            row.gateways = [str(gateway) for gateway in draft.gateways]
            row.note = draft.note.strip()
            session.flush()
            if was is None:
                audit.record(
                    session, who, "routing_rule.added", "routing_rule", row.id, None,
                    _audited_rule(row),
                )  # fmt: skip
            else:
                before, after = audit.changes(was, _audited_rule(row))
                if after:
                    audit.record(
                        session, who, "routing_rule.changed", "routing_rule", row.id, before,
                        after,
                    )  # fmt: skip
            return row.id

        saved_id = await self._db.write(write)
        self._rules_changed()
        return next(rule for rule in await self.rules() if rule.id == saved_id)

    async def remove_rule(self, rule_id: int) -> None:
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()

        def write(session: Session) -> None:
            row = session.get(RoutingRuleRow, rule_id)
            if row is None:
                raise NotFound(f"There is no routing rule number {rule_id}.")
            audit.record(
                session, who, "routing_rule.removed", "routing_rule", rule_id,
                _audited_rule(row), None,
            )  # fmt: skip
            session.delete(row)

        await self._db.write(write)
        self._rules_changed()

    async def move_rule(self, rule_id: int, position: int) -> list[RoutingRule]:
        """Put a rule at `position` (0: checked first), the others keeping their order."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()

        def write(session: Session) -> None:
            rows = list(session.scalars(select(RoutingRuleRow).order_by(RoutingRuleRow.position)))
            moving = next((row for row in rows if row.id == rule_id), None)
            if moving is None:
                raise NotFound(f"There is no routing rule number {rule_id}.")
            was = [row.id for row in rows]
            rows.remove(moving)
            rows.insert(max(0, min(position, len(rows))), moving)
            for place, row in enumerate(rows):
                row.position = place
            order = [row.id for row in rows]
            if order != was:
                audit.record(
                    session, who, "routing_rule.moved", "routing_rule", rule_id,
                    {"position": was.index(rule_id), "order": was},
                    {"position": order.index(rule_id), "order": order},
                )  # fmt: skip

        await self._db.write(write)
        self._rules_changed()
        return await self.rules()

    async def _gateway_problems(self, gateways: tuple[int, ...]) -> list[FieldError]:
        takes_payments = {
            record.id
            for record in await self._connections.connections()
            if PAYMENTS in record.spec.capabilities
        }
        unknown = [str(gateway) for gateway in gateways if gateway not in takes_payments]
        if not unknown:
            return []
        return [
            FieldError(
                "gateways",
                f"Connection {', '.join(unknown)} is not a connected payment gateway.",
            )
        ]

    def _rules_changed(self) -> None:
        if self._events is not None:
            self._events.publish(TOPIC_RULES)

    # --- deciding -------------------------------------------------------------------------------

    async def candidates(
        self, guardian_id: int, ask: PaymentAsk
    ) -> tuple[list[Candidate], Decision]:
        """The gateways to try for this payer's payment, best first, and the decision."""
        saved = {
            str(method.connection_id): method
            for method in await self.methods(guardian_id)
            if method.method == ask.method
        }
        if not saved:
            raise SwitchboardError(
                f"This payer has no {ask.method} saved at any gateway; send them a payment "
                "link, or save their method first."
            )
        await self._refresh()
        # Read at every payment: another office PC (or the command line) may have changed them.
        self.router.rules = tuple(rule.as_rule() for rule in await self.rules())
        decision = self.router.decide(ask, time.time(), only=set(saved))
        if not decision.order:
            raise SwitchboardError(decision.explanation)
        why = decision.as_dict()
        return [
            Candidate(int(key), saved[key].token, saved[key].customer, why)
            for key in decision.order
        ], decision

    async def charge(
        self,
        payments: PaymentService,
        *,
        guardian_id: int,
        amount: Money,
        method: str,
        idempotency_key: str,
        invoice_id: int | None = None,
        description: str = "",
        home_country: str = "",
    ) -> Payment:
        """Charge a payer's saved method at the gateways the router chooses, in its order."""
        access.require(Permission.TAKE_PAYMENTS)  # before choosing: a refusal says so first
        countries = {saved.country for saved in await self.methods(guardian_id) if saved.country}
        ask = PaymentAsk(
            amount,
            method,
            country=next(iter(countries)) if len(countries) == 1 else home_country,
            home_country=home_country,
        )
        candidates, _ = await self.candidates(guardian_id, ask)
        return await payments.charge(
            ChargeOrder(
                idempotency_key=idempotency_key,
                amount=amount,
                method=method,
                candidates=candidates,
                invoice_id=invoice_id,
                guardian_id=guardian_id,
                description=description,
            )
        )

    def learn(
        self,
        connection_id: int,
        method: str,
        currency: str,
        result: ChargeResult,
        latency_ms: float | None,
    ) -> None:
        failure = result.failure
        technical = ""
        if failure is not None and failure.kind in (FailureKind.TECHNICAL, FailureKind.UNKNOWN):
            technical = "timeout" if failure.kind is FailureKind.UNKNOWN else failure.code
        if result.status is ChargeStatus.NOT_FOUND:
            return
        self.router.record(
            str(connection_id),
            method,
            currency,
            success=result.status in (ChargeStatus.SUCCEEDED, ChargeStatus.PROCESSING),
            technical=technical,
            latency_ms=latency_ms,
            now=time.time(),
        )

    async def _refresh(self) -> None:
        # One refresh at a time: a decision must never see a half-loaded set of gateways.
        async with self._refreshing:
            await self._load()
        self._down.clear()
        for key in self.router.gateways:
            provider = await self._connections.provider(int(key))
            if provider.client.paused:
                self._down[key] = "paused"
            elif provider.client.breaker.state is BreakerState.FORCED_OPEN:
                self._down[key] = "held open for maintenance"
            elif provider.client.breaker.state is BreakerState.OPEN:
                self._down[key] = "its circuit breaker is open"

    async def _load(self) -> None:
        if self._stale:
            self._stale = False  # a change while loading marks it stale again
            gateways = []
            for record in await self._connections.connections():
                if PAYMENTS not in record.spec.capabilities:
                    continue
                provider = await self._connections.provider(record.id)
                if not isinstance(provider, PaymentGateway):
                    continue
                gateways.append(
                    Gateway(
                        key=str(record.id),
                        name=record.name,
                        fees=provider.fees,
                        methods=provider.methods,
                        currencies=provider.currencies,
                        countries=provider.countries,
                    )
                )
            self.router.set_gateways(gateways)
        if not self._taught:
            await self._teach()
            self._taught = True

    async def _teach(self) -> None:
        """The recent attempts, oldest first, as if they had just been recorded."""

        def query(session: Session) -> list[tuple[PaymentAttemptRow, str, str]]:
            rows = session.execute(
                select(PaymentAttemptRow, PaymentRow.method, PaymentRow.currency)
                .join(PaymentRow, PaymentRow.id == PaymentAttemptRow.payment_id)
                .where(PaymentAttemptRow.finished_at.is_not(None))
                .order_by(PaymentAttemptRow.id.desc())
                .limit(WARM_UP_ATTEMPTS)
            ).all()
            return [(row[0], row[1], row[2]) for row in reversed(rows)]

        for attempt, method, currency in await self._db.read(query):
            kind = attempt.failure_kind
            technical = ""
            if kind in (FailureKind.TECHNICAL.value, FailureKind.UNKNOWN.value):
                technical = "timeout" if kind == FailureKind.UNKNOWN.value else "technical"
            self.router.record(
                str(attempt.connection_id),
                method,
                currency,
                success=attempt.status in ("succeeded", "processing"),
                technical=technical,
                now=attempt.started_at.timestamp(),
            )


def _audited_rule(row: RoutingRuleRow) -> dict[str, object]:
    return {
        "position": row.position,
        "gateways": list(row.gateways),
        "currency": row.currency,
        "method": row.method,
        "country": row.country,
        "min_minor": row.min_minor,
        "max_minor": row.max_minor,
        "note": row.note,
    }


def _audited_method(row: PaymentMethodRow) -> dict[str, object]:
    """A saved method as the audit trail keeps it: whose, where, what kind; not its token."""
    return {
        "payer": row.guardian_id,
        "gateway": row.connection_id,
        "method": row.method,
        "label": row.label,
        "country": row.country,
    }


def _rules(session: Session) -> list[RoutingRule]:
    return [
        RoutingRule(
            id=row.id,
            position=row.position,
            gateways=tuple(int(gateway) for gateway in row.gateways),
            currency=row.currency,
            method=row.method,
            country=row.country,
            min_minor=row.min_minor,
            max_minor=row.max_minor,
            note=row.note,
        )
        for row in session.scalars(
            select(RoutingRuleRow).order_by(RoutingRuleRow.position, RoutingRuleRow.id)
        )
    ]
