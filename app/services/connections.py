"""Provider connections: adding, testing, pausing and removing them, and the one resilient
client each connection calls its provider through.

The database keeps a connection's kind, name and non-secret settings; its secrets live in the
credential store under `connection/<id>/<field>`, and removing the connection removes them.
A headless engine without a credential store may be given references instead (`env:NAME`,
`file:PATH`, see app.services.secrets), kept in `secret_refs` and read when needed.

A webhook signing secret can be rotated (`rotate_webhook_secret`): the new one verifies at once
and the old one still does for the rotation overlap (`security.rotation_overlap_hours`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets as random_tokens
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.domain import inbox
from app.domain.access import Permission
from app.domain.errors import FieldError, NotFound, SwitchboardError, ValidationFailed
from app.logs import REDACTOR
from app.providers import KINDS, kind
from app.providers.base import HealthResult, Provider
from app.providers.breaker import BreakerSnapshot, snapshot_from_json, snapshot_to_json
from app.providers.http import RequestRecord, ResilientClient
from app.providers.spec import Category, ProviderSpec
from app.services import access, approvals, audit, rotation
from app.services.events import EventHub
from app.services.request_log import RequestLogWriter
from app.services.secrets import SecretStore, check_reference, resolve_reference
from app.store.base import utcnow
from app.store.database import Database
from app.store.integration import CircuitStateRow, ProviderConnection, WebhookInboxEntry

log = logging.getLogger("switchboard.connections")

TOPIC = "connections"
CHECK_EVERY_MIN, CHECK_EVERY_MAX = 10, 86_400
BreakerListener = Callable[[int, str, BreakerSnapshot], None]
NAME_MAX = 100


@dataclass(frozen=True)
class ConnectionRecord:
    id: int
    kind: str
    name: str
    config: Mapping[str, Any]
    secret_fields: tuple[str, ...]
    enabled: bool
    webhook_token: str | None
    created_at: datetime
    breakers: Mapping[str, BreakerSnapshot]
    health_interval: int | None = None
    # Secret fields read from where the operator named (field -> env:NAME / file:PATH); they
    # are in `secret_fields` too.
    secret_refs: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def spec(self) -> ProviderSpec:
        return kind(self.kind)

    @property
    def paused(self) -> bool:
        return not self.enabled


def secret_name(connection_id: int, field: str) -> str:
    return f"connection/{connection_id}/{field}"


def _record(row: ProviderConnection, states: Mapping[str, Any]) -> ConnectionRecord:
    return ConnectionRecord(
        id=row.id,
        kind=row.kind,
        name=row.name,
        config=dict(row.config),
        secret_fields=(
            *(name.rsplit("/", 1)[-1] for name in row.secret_names),
            *(
                field
                for field in row.secret_refs or {}
                if secret_name(row.id, field) not in row.secret_names
            ),
        ),
        enabled=row.enabled,
        webhook_token=row.webhook_token,
        created_at=row.created_at,
        breakers=_snapshots(states),
        health_interval=row.health_interval,
        secret_refs=dict(row.secret_refs or {}),
    )


@dataclass(frozen=True)
class SigningSecrets:
    """A connection's webhook signing secrets: the current ones and, while a rotation's overlap
    lasts (until `old_until`), the ones they replaced."""

    current: tuple[str, ...]
    old: tuple[str, ...] = ()
    old_until: datetime | None = None

    def at(self, moment: datetime) -> tuple[str, ...]:
        """The secrets that verify a request arriving at `moment`."""
        if self.old_until is not None and moment < self.old_until:
            return (*self.current, *self.old)
        return self.current


class ConnectionService:
    """Publishes `connections` ({"id": ...}) when a connection is added, changed, paused,
    removed, or one of its breakers changes state."""

    def __init__(
        self,
        db: Database,
        events: EventHub,
        secrets: SecretStore,
        requests: RequestLogWriter,
        on_request: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        self._db = db
        # Where every call attempt is told: the request log, and whoever else listens.
        self._on_request = on_request or requests.add
        self._events = events
        self._secrets = secrets
        self._requests = requests
        self._providers: dict[int, Provider] = {}
        # Four eyes on switching a payment gateway off (set by Services.open).
        self.approvals: approvals.ApprovalService | None = None
        self._saving: set[asyncio.Task[None]] = set()
        # A breaker may change state on whichever thread looks at it: its saves are always
        # scheduled on the loop that owns the services.
        self._loop = asyncio.get_running_loop()
        self._breaker_listeners: list[BreakerListener] = []
        self._changed_listeners: list[Callable[[int], None]] = []

    # --- reading --------------------------------------------------------------------------------

    @staticmethod
    def kinds() -> list[ProviderSpec]:
        return sorted(KINDS.values(), key=lambda spec: (spec.category.value, spec.name))

    async def connections(self) -> list[ConnectionRecord]:
        def query(session: Session) -> list[ConnectionRecord]:
            states = _all_states(session)
            rows = session.scalars(select(ProviderConnection).order_by(ProviderConnection.name))
            return [_record(row, states.get(row.id, {})) for row in rows]

        return await self._db.read(query)

    async def connection(self, connection_id: int) -> ConnectionRecord:
        def query(session: Session) -> ConnectionRecord:
            row = session.get(ProviderConnection, connection_id)
            if row is None:
                raise NotFound(f"There is no connection number {connection_id}.")
            return _record(row, _all_states(session).get(connection_id, {}))

        return await self._db.read(query)

    # --- changing -------------------------------------------------------------------------------

    async def add(
        self,
        kind_key: str,
        name: str,
        values: Mapping[str, Any],
        secrets: Mapping[str, str],
        health_interval: int | None = None,
        *,
        references: Mapping[str, str] | None = None,
    ) -> ConnectionRecord:
        """Check the settings against the kind's spec, save the connection, and put its secrets
        in the credential store; if the store refuses, nothing is saved. `health_interval` is
        seconds between health checks (None: the kind's default). `references`: secret fields
        the engine reads when it needs them (field -> env:NAME or file:PATH), for a server
        with no credential store; only the reference is kept."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        spec = kind(kind_key)
        refs = dict(references or {})
        config, kept, errors = spec.check(values, secrets, stored=list(refs))
        errors.extend(_reference_problems(spec, refs, secrets))
        errors.extend(_interval_problems(health_interval))
        clean_name = " ".join(name.split())
        if not clean_name:
            errors.insert(0, FieldError("name", "Give the connection a name."))
        elif len(clean_name) > NAME_MAX:
            errors.insert(0, FieldError("name", f"A name has at most {NAME_MAX} characters."))
        if errors:
            raise ValidationFailed(errors)
        if kept:
            # Fail before saving anything when there is nowhere safe to keep the secrets.
            status = self._secrets.status()
            if not status.available:
                raise SwitchboardError(status.problem)

        def insert(session: Session) -> int:
            taken = session.scalar(
                select(func.count())
                .select_from(ProviderConnection)
                .where(func.lower(ProviderConnection.name) == clean_name.lower())
            )
            if taken:
                raise ValidationFailed(
                    [FieldError("name", f"There is already a connection called {clean_name}.")]
                )
            row = ProviderConnection(
                kind=spec.key,
                name=clean_name,
                config=config,
                secret_names=[],
                webhook_token=random_tokens.token_urlsafe(24),
                health_interval=health_interval,
            )
            session.add(row)
            session.flush()
            row.secret_names = [secret_name(row.id, field) for field in kept]
            row.secret_refs = refs
            audit.record(
                session,
                who,
                "connection.added",
                "connection",
                row.id,
                None,
                {
                    **_audited(row),
                    "in_credential_store": sorted(kept),
                    **({"read_from_environment_or_file": sorted(refs)} if refs else {}),
                },
                secret_values=kept.values(),
            )
            return row.id

        connection_id = await self._db.write(insert)
        try:
            for field, value in kept.items():
                await self._secrets.aset(secret_name(connection_id, field), value)
        except Exception:
            await self._forget_secrets(connection_id, list(kept))
            await self._db.write(
                _remove_row, connection_id, who, "connection.add_undone", kept.values()
            )
            raise
        log.info("connection added", extra={"connection": connection_id, "kind": spec.key})
        self._changed(connection_id)  # it may have been asked for before it existed
        self._events.publish(TOPIC, {"id": connection_id})
        return await self.connection(connection_id)

    async def update(
        self,
        connection_id: int,
        name: str,
        values: Mapping[str, Any],
        secrets: Mapping[str, str],
        health_interval: int | None = None,
    ) -> ConnectionRecord:
        """Change a connection's name and settings. A secret left empty keeps the stored one;
        a secret given replaces it. The provider's client is rebuilt with the new settings."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        record = await self.connection(connection_id)
        spec = record.spec
        given = {field: value for field, value in secrets.items() if value}
        kept_names = [field for field in record.secret_fields if field not in given]
        # Stored secrets satisfy "required" without being read back out of the store.
        config, new_secrets, errors = spec.check(values, given, stored=kept_names)
        errors.extend(_interval_problems(health_interval))
        clean_name = " ".join(name.split())
        if not clean_name:
            errors.insert(0, FieldError("name", "Give the connection a name."))
        if errors:
            raise ValidationFailed(errors)

        def write(session: Session) -> None:
            row = session.get(ProviderConnection, connection_id)
            if row is None:
                raise NotFound(f"There is no connection number {connection_id}.")
            taken = session.scalar(
                select(func.count())
                .select_from(ProviderConnection)
                .where(func.lower(ProviderConnection.name) == clean_name.lower())
                .where(ProviderConnection.id != connection_id)
            )
            if taken:
                raise ValidationFailed(
                    [FieldError("name", f"There is already a connection called {clean_name}.")]
                )
            was = _audited(row)
            row.name = clean_name
            row.config = config
            row.health_interval = health_interval
            refs = {f: r for f, r in (row.secret_refs or {}).items() if f not in new_secrets}
            row.secret_refs = refs
            row.secret_names = [
                secret_name(connection_id, field)
                for field in [*kept_names, *new_secrets]
                if field not in refs
            ]
            if row.secret_rotation and row.secret_rotation.get("field") in new_secrets:
                row.secret_rotation = None  # replaced by hand: what it kept no longer applies
            before, after = audit.changes(was, _audited(row))
            if new_secrets:
                after["replaced_in_credential_store"] = sorted(new_secrets)
            audit.record(
                session,
                who,
                "connection.changed",
                "connection",
                connection_id,
                {"kind": row.kind, **before},
                {"kind": row.kind, **after},
                secret_values=new_secrets.values(),
            )

        for field, value in new_secrets.items():
            await self._secrets.aset(secret_name(connection_id, field), value)
        await self._db.write(write)
        await self._close(connection_id)
        self._events.publish(TOPIC, {"id": connection_id})
        return await self.connection(connection_id)

    async def forget_secret(self, connection_id: int, field: str) -> ConnectionRecord:
        """Remove one stored secret (the permission a sign-in gave, say) from the credential
        store and the connection; its client is rebuilt without it."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        record = await self.connection(connection_id)
        if field not in record.secret_fields:
            return record
        if field not in record.secret_refs:
            await self._secrets.adelete(secret_name(connection_id, field))
        gone = secret_name(connection_id, field)

        def write(session: Session) -> None:
            row = session.get(ProviderConnection, connection_id)
            if row is not None:
                row.secret_names = [name for name in row.secret_names if name != gone]
                row.secret_refs = {f: r for f, r in (row.secret_refs or {}).items() if f != field}
                audit.record(
                    session,
                    who,
                    "connection.secret_forgotten",
                    "connection",
                    connection_id,
                    {"kind": row.kind, "name": row.name, "in_credential_store": [field]},
                    {"kind": row.kind, "name": row.name, "removed_from_credential_store": [field]},
                )

        await self._db.write(write)
        await self._close(connection_id)
        self._events.publish(TOPIC, {"id": connection_id})
        return await self.connection(connection_id)

    async def renew_secret(self, connection_id: int, field: str, value: str) -> None:
        """Keep a secret the engine renews on its own (a calendar's notification-channel
        token): work the engine does for a connection already set up, not an office's change,
        so no permission is asked; the audit trail records it all the same."""
        if not value:
            raise SwitchboardError("A renewed secret cannot be empty.")
        who = access.actor()
        name = secret_name(connection_id, field)

        def write(session: Session) -> None:
            row = session.get(ProviderConnection, connection_id)
            if row is None:
                raise NotFound(f"There is no connection number {connection_id}.")
            if name not in row.secret_names:
                row.secret_names = [*row.secret_names, name]
            audit.record(
                session,
                who,
                "connection.secret_renewed",
                "connection",
                connection_id,
                None,
                {"kind": row.kind, "name": row.name, "replaced_in_credential_store": [field]},
                secret_values=[value],
            )

        await self._secrets.aset(name, value)
        await self._db.write(write)
        await self._close(connection_id)
        self._events.publish(TOPIC, {"id": connection_id})

    async def remove(self, connection_id: int) -> None:
        """Remove the connection and its secrets (secrets first: if the credential store cannot
        be reached, the connection stays so its secrets are not orphaned)."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        record = await self.connection(connection_id)
        await self._gate_gateway_off(record, approvals.GATEWAY_REMOVE, "Removing")
        await self._db.read(_refuse_with_waiting_events, connection_id, record.name)
        names = [
            secret_name(connection_id, field)
            for field in record.secret_fields
            if field not in record.secret_refs
        ]
        kept = {name: await self._secrets.aget(name) for name in names}
        for name in names:
            await self._secrets.adelete(name)
        await self._close(connection_id)
        # Its last calls are still waiting to be logged: write them while the row exists.
        await self._requests.flush()
        try:
            await self._db.write(_remove_row, connection_id, who, "connection.removed")
        except Exception:
            # Refused after all (an event arrived meanwhile): the connection stays, whole.
            for name, value in kept.items():
                if value is not None:
                    await self._secrets.aset(name, value)
            raise
        self._changed(connection_id)  # and now that it is gone from the database too
        log.info("connection removed", extra={"connection": connection_id})
        self._events.publish(TOPIC, {"id": connection_id, "removed": True})

    async def _gate_gateway_off(self, record: ConnectionRecord, action: str, doing: str) -> None:
        """Pausing or removing a payment gateway may need a second person's approval."""
        if self.approvals is None or record.spec.category is not Category.PAYMENTS:
            return
        await self.approvals.gate(
            self.approvals.gateway_off_needs_approval(),
            action,
            "connection",
            record.id,
            {"connection_id": record.id, "name": record.name},
            f"{doing} the payment gateway {record.name}",
        )

    async def set_paused(self, connection_id: int, paused: bool) -> ConnectionRecord:
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        if paused:
            record = await self.connection(connection_id)
            if record.enabled:
                await self._gate_gateway_off(record, approvals.GATEWAY_PAUSE, "Pausing")

        def write(session: Session) -> None:
            row = session.get(ProviderConnection, connection_id)
            if row is None:
                raise NotFound(f"There is no connection number {connection_id}.")
            if row.enabled != paused:
                return  # already so: nothing changes, nothing to record
            row.enabled = not paused
            audit.record(
                session,
                who,
                "connection.paused" if paused else "connection.resumed",
                "connection",
                connection_id,
                {"kind": row.kind, "name": row.name, "paused": not paused},
                {"kind": row.kind, "name": row.name, "paused": paused},
            )

        await self._db.write(write)
        if connection_id in self._providers:
            self._providers[connection_id].client.paused = paused
        self._events.publish(TOPIC, {"id": connection_id})
        return await self.connection(connection_id)

    async def hold_open(
        self, connection_id: int, reason: str = "held open for maintenance"
    ) -> None:
        """Stop all calls to this provider until reset ("maintenance")."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        provider = await self.provider(connection_id)
        await self._db.write(
            _record_breakers, connection_id, who, "connection.held_open", {"reason": reason}
        )
        provider.client.breaker.force_open(reason)

    async def reset_breakers(self, connection_id: int) -> None:
        """Close every breaker of the connection: its calls go through again at once."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        provider = await self.provider(connection_id)
        states = {
            endpoint: breaker.state.value
            for endpoint, breaker in provider.client.breakers().items()
        }
        await self._db.write(
            _record_breakers, connection_id, who, "connection.breakers_reset", {"was": states}
        )
        for breaker in provider.client.breakers().values():
            breaker.reset()

    # --- secrets ----------------------------------------------------------------------------

    async def secret(self, connection_id: int, field: str) -> str | None:
        """One secret of a connection, from where it is kept: the operator's reference (read
        now) or the credential store. None when the connection has no such secret."""
        return await self._secret(await self.connection(connection_id), field)

    async def _secret(self, record: ConnectionRecord, field: str) -> str | None:
        if field not in record.secret_fields:
            return None
        reference = record.secret_refs.get(field)
        if reference is not None:
            what = f"{field} of {record.name}"
            return await asyncio.to_thread(resolve_reference, reference, what)
        return await self._secrets.aget(secret_name(record.id, field))

    async def signing_secrets(self, connection_id: int, field: str) -> SigningSecrets:
        """The secrets a callback's signature is checked against (several, separated by
        spaces, may be stored). Once a rotation's overlap has passed, the old ones are removed
        from the credential store here, the first time anyone asks."""
        record = await self.connection(connection_id)
        stored = tuple((await self._secret(record, field) or "").split())
        state = await self._db.read(_rotation_state, connection_id)
        if state is None or state.get("field") != field:
            return SigningSecrets(stored)
        current = max(1, int(state.get("current", len(stored))))
        try:
            until = datetime.fromisoformat(str(state["until"]))
        except (KeyError, ValueError):
            until = datetime.now(UTC)  # a damaged record: the old secrets count no longer
        if datetime.now(UTC) < until:
            return SigningSecrets(stored[:current], stored[current:], until)
        await self._retire_old_signing_secrets(record, field, stored[:current])
        return SigningSecrets(stored[:current])

    async def rotate_webhook_secret(self, connection_id: int, new_secret: str) -> SigningSecrets:
        """Put the provider's new webhook signing secret in place. Callbacks signed with the
        old one are still accepted for the rotation overlap (the provider may retry old
        deliveries, or sign with the old one until you switch it there), then refused."""
        access.require(Permission.MANAGE_CONNECTIONS)
        who = access.actor()
        record = await self.connection(connection_id)
        hook = record.spec.webhook
        if hook is None or hook.remote or not hook.secret_field:
            raise SwitchboardError(
                f"{record.name} does not sign its callbacks with a secret kept here, so there "
                "is nothing to rotate."
            )
        field = hook.secret_field
        if field in record.secret_refs:
            raise SwitchboardError(
                f"The webhook secret of {record.name} is read from "
                f"{record.secret_refs[field].split(':', 1)[0]} ({record.secret_refs[field]}); "
                "rotate it there: give the new and the old secret separated by a space, and "
                "remove the old one when the provider has switched."
            )
        new = tuple(new_secret.split())
        if not new:
            raise ValidationFailed([FieldError(field, "Give the new signing secret.")])
        _config, _kept, errors = record.spec.check({}, {field: " ".join(new)}, stored=())
        errors = [error for error in errors if error.field == field]
        if errors:
            raise ValidationFailed(errors)
        before = await self.signing_secrets(connection_id, field)
        old = tuple(value for value in before.current if value not in new)
        name = secret_name(connection_id, field)
        previous_value = " ".join((*before.current, *before.old)) or None

        def write(session: Session) -> datetime | None:
            row = session.get(ProviderConnection, connection_id)
            if row is None:
                raise NotFound(f"There is no connection number {connection_id}.")
            until = datetime.now(UTC) + rotation.overlap(session)
            keep_old = bool(old) and until > datetime.now(UTC)
            row.secret_rotation = (
                {"field": field, "current": len(new), "until": until.isoformat()}
                if keep_old
                else None
            )
            if name not in row.secret_names:
                row.secret_names = [*row.secret_names, name]
            audit.record(
                session,
                who,
                "connection.webhook_secret_rotated",
                "connection",
                connection_id,
                {"kind": row.kind, "name": row.name},
                {
                    "kind": row.kind,
                    "name": row.name,
                    "replaced_in_credential_store": [field],
                    "old_accepted_until": until if keep_old else None,
                },
                secret_values=[*new, *old],
            )
            return until if keep_old else None

        # The store first, holding both; the database then says until when the old ones count.
        await self._secrets.aset(name, " ".join((*new, *old)))
        try:
            until = await self._db.write(write)
        except Exception:
            if previous_value is not None:
                await self._secrets.aset(name, previous_value)
            raise
        if until is None:
            await self._secrets.aset(name, " ".join(new))
        await self._close(connection_id)
        self._events.publish(TOPIC, {"id": connection_id})
        log.info("webhook secret rotated", extra={"connection": connection_id})
        return SigningSecrets(new, old if until else (), until)

    async def _retire_old_signing_secrets(
        self, record: ConnectionRecord, field: str, current: tuple[str, ...]
    ) -> None:
        await self._secrets.aset(secret_name(record.id, field), " ".join(current))

        def write(session: Session) -> None:
            row = session.get(ProviderConnection, record.id)
            if row is not None and row.secret_rotation:
                row.secret_rotation = None

        await self._db.write(write)
        log.info("old webhook secret retired", extra={"connection": record.id})

    # --- calling --------------------------------------------------------------------------------

    async def provider(self, connection_id: int) -> Provider:
        """The connection's provider with its resilient client, made once and kept."""
        existing = self._providers.get(connection_id)
        if existing is not None:
            return existing
        record = await self.connection(connection_id)
        secrets = {field: await self._secret(record, field) or "" for field in record.secret_fields}
        provider = self._build(
            record.spec, connection_id, record.name, record.config, secrets, record.breakers
        )
        provider.client.paused = record.paused
        quota = record.spec.policy.rate
        if quota.quota is not None:
            since = datetime.now(UTC) - timedelta(seconds=quota.quota_seconds)
            provider.client.use_quota(await self._requests.count_since(connection_id, since))
        # Another caller may have built it while we awaited: keep the first one.
        kept = self._providers.setdefault(connection_id, provider)
        if kept is not provider:
            await provider.client.aclose()
        return kept

    def _build(
        self,
        spec: ProviderSpec,
        connection_id: int,
        name: str,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
        breakers: Mapping[str, BreakerSnapshot],
    ) -> Provider:
        def breaker_changed(endpoint: str, snapshot: BreakerSnapshot) -> None:
            if connection_id:
                self._save_breaker(connection_id, endpoint, snapshot)

        client = ResilientClient(
            connection_id=connection_id,
            name=name,
            base_url=spec.base_url(config),
            policy=spec.policy_for(config),
            headers=spec.headers(config, secrets) if spec.headers else None,
            transport=spec.transport(connection_id, config, secrets) if spec.transport else None,
            restore=breakers,
            on_request=self._on_request if connection_id else None,
            on_breaker_change=breaker_changed,
            idempotency_header=spec.idempotency_header,
            secrets=list(secrets.values()),
        )
        return spec.factory(spec, client, config, secrets)

    async def test(self, connection_id: int) -> HealthResult:
        provider = await self.provider(connection_id)
        return await provider.check_health()

    async def test_draft(
        self,
        kind_key: str,
        values: Mapping[str, Any],
        secrets: Mapping[str, str],
        keep_from: int | None = None,
    ) -> HealthResult:
        """Try settings before saving them, with the call a health check makes; nothing is
        stored. With `keep_from`, secrets left empty are that connection's stored ones
        (testing a change before saving it)."""
        spec = kind(kind_key)
        secrets = {name: value for name, value in secrets.items() if value}
        if keep_from is not None:
            kept_record = await self.connection(keep_from)
            for field in kept_record.secret_fields:
                if field not in secrets:
                    secrets[field] = await self._secret(kept_record, field) or ""
        config, kept, errors = spec.check(values, secrets)
        if errors:
            raise ValidationFailed(errors)
        for value in kept.values():  # typed in, not yet stored: masked like stored ones
            REDACTOR.add(value)
        provider = self._build(spec, 0, "The new connection", config, kept, {})
        try:
            return await provider.check_health()
        finally:
            await provider.client.aclose()

    # --- breakers and shutdown ------------------------------------------------------------------

    def on_breaker_change(self, listener: BreakerListener) -> None:
        """Be told (on the services' loop) when any connection's breaker changes state."""
        self._breaker_listeners.append(listener)

    def _save_breaker(self, connection_id: int, endpoint: str, snapshot: BreakerSnapshot) -> None:
        state = snapshot_to_json(snapshot)

        def write(session: Session) -> None:
            if session.get(ProviderConnection, connection_id) is None:
                return  # removed meanwhile
            row = session.get(CircuitStateRow, (connection_id, endpoint))
            if row is None:
                session.add(
                    CircuitStateRow(connection_id=connection_id, endpoint=endpoint, state=state)
                )
            else:
                row.state = state
                row.updated_at = utcnow()

        async def save() -> None:
            try:
                await self._db.write(write)
            except Exception:
                log.exception("breaker state not saved", extra={"connection": connection_id})
            self._events.publish(TOPIC, {"id": connection_id, "breaker": snapshot.state.value})

        def schedule() -> None:
            for listener in self._breaker_listeners:
                try:
                    listener(connection_id, endpoint, snapshot)
                except Exception:
                    log.exception("breaker listener failed", extra={"connection": connection_id})
            task = self._loop.create_task(save())
            self._saving.add(task)
            task.add_done_callback(self._saving.discard)

        self._loop.call_soon_threadsafe(schedule)

    def on_changed(self, listener: Callable[[int], None]) -> None:
        """Be told when a connection is added, changed or removed (forget what was kept of
        it)."""
        self._changed_listeners.append(listener)

    def _changed(self, connection_id: int) -> None:
        for listener in self._changed_listeners:
            listener(connection_id)

    async def _close(self, connection_id: int) -> None:
        self._changed(connection_id)
        provider = self._providers.pop(connection_id, None)
        if provider is not None:
            await provider.client.aclose()

    async def _forget_secrets(self, connection_id: int, fields: list[str]) -> None:
        for field in fields:
            try:
                await self._secrets.adelete(secret_name(connection_id, field))
            except Exception:
                log.exception("secret not removed", extra={"connection": connection_id})

    async def close(self) -> None:
        """Close every client and wait for breaker states being saved."""
        for connection_id in list(self._providers):
            await self._close(connection_id)
        if self._saving:
            await asyncio.gather(*self._saving, return_exceptions=True)


def _reference_problems(
    spec: ProviderSpec, refs: Mapping[str, str], secrets: Mapping[str, str]
) -> list[FieldError]:
    """Each reference must name a secret field of the kind, not one given as a value too, and
    be written as env:NAME or file:PATH."""
    secret_fields = {spec_field.name for spec_field in spec.fields if spec_field.secret}
    problems: list[FieldError] = []
    for field, reference in refs.items():
        problem = check_reference(reference)
        if field not in secret_fields:
            problems.append(FieldError(field, f"{spec.name} has no secret called {field!r}."))
        elif field in secrets:
            problems.append(
                FieldError(field, "Give this secret either as a value or by reference, not both.")
            )
        elif problem:
            problems.append(FieldError(field, problem))
    return problems


def _rotation_state(session: Session, connection_id: int) -> dict[str, Any] | None:
    row = session.get(ProviderConnection, connection_id)
    return dict(row.secret_rotation) if row is not None and row.secret_rotation else None


def _interval_problems(seconds: int | None) -> list[FieldError]:
    if seconds is None or CHECK_EVERY_MIN <= seconds <= CHECK_EVERY_MAX:
        return []
    return [
        FieldError(
            "health_interval",
            f"Checks can be from every {CHECK_EVERY_MIN} seconds to once a day "
            f"({CHECK_EVERY_MAX} seconds), not every {seconds}.",
        )
    ]


def _all_states(session: Session) -> dict[int, dict[str, Any]]:
    states: dict[int, dict[str, Any]] = {}
    for row in session.scalars(select(CircuitStateRow)):
        states.setdefault(row.connection_id, {})[row.endpoint] = row.state
    return states


def _snapshots(states: Mapping[str, Any]) -> dict[str, BreakerSnapshot]:
    """Saved breaker states; a damaged one is left out (that breaker starts closed)."""
    snapshots: dict[str, BreakerSnapshot] = {}
    for endpoint, state in states.items():
        try:
            snapshots[endpoint] = snapshot_from_json(state)
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a damaged breaker state", extra={"endpoint": endpoint})
    return snapshots


def _refuse_with_waiting_events(session: Session, connection_id: int, name: str) -> None:
    """An event we acknowledged is never thrown away unprocessed."""
    waiting = session.scalar(
        select(func.count())
        .select_from(WebhookInboxEntry)
        .where(
            WebhookInboxEntry.connection_id == connection_id,
            WebhookInboxEntry.status.in_((inbox.RECEIVED, inbox.FAILED)),
        )
    )
    if waiting:
        raise SwitchboardError(
            f"{name} has {waiting} event(s) it sent that are not processed yet; remove it once "
            "they are (see Events)."
        )


def _audited(row: ProviderConnection) -> dict[str, Any]:
    """What the audit trail keeps of a connection: never its secrets (they are not in the row;
    `audit.record` also leaves out settings named like secrets)."""
    return {
        "kind": row.kind,
        "name": row.name,
        "settings": dict(row.config),
        "health_interval": row.health_interval,
    }


def _record_breakers(
    session: Session, connection_id: int, who: str, action: str, detail: dict[str, Any]
) -> None:
    row = session.get(ProviderConnection, connection_id)
    if row is None:
        raise NotFound(f"There is no connection number {connection_id}.")
    audit.record(
        session,
        who,
        action,
        "connection",
        connection_id,
        None,
        {"kind": row.kind, "name": row.name, **detail},
    )


def _remove_row(
    session: Session,
    connection_id: int,
    actor: str,
    action: str,
    secret_values: Iterable[str] = (),
) -> None:
    row = session.get(ProviderConnection, connection_id)
    if row is not None:
        audit.record(
            session,
            actor,
            action,
            "connection",
            connection_id,
            _audited(row),
            None,
            secret_values=secret_values,
        )
    _delete_row(session, connection_id)


def _delete_row(session: Session, connection_id: int) -> None:
    _refuse_with_waiting_events(session, connection_id, f"Connection {connection_id}")
    # Its processed events go with it: what they did is recorded where it happened.
    session.execute(
        delete(WebhookInboxEntry).where(WebhookInboxEntry.connection_id == connection_id)
    )
    session.execute(delete(ProviderConnection).where(ProviderConnection.id == connection_id))
