"""Provider connections: adding, testing, pausing and removing them, and the one resilient
client each connection calls its provider through.

The database keeps a connection's kind, name and non-secret settings; its secrets live in the
credential store under `connection/<id>/<field>`, and removing the connection removes them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as random_tokens
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.domain import inbox
from app.domain.errors import FieldError, NotFound, SwitchboardError, ValidationFailed
from app.providers import KINDS, kind
from app.providers.base import HealthResult, Provider
from app.providers.breaker import BreakerSnapshot, snapshot_from_json, snapshot_to_json
from app.providers.http import RequestRecord, ResilientClient
from app.providers.spec import ProviderSpec
from app.services import audit
from app.services.events import EventHub
from app.services.request_log import RequestLogWriter
from app.services.secrets import SecretStore
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
        secret_fields=tuple(name.rsplit("/", 1)[-1] for name in row.secret_names),
        enabled=row.enabled,
        webhook_token=row.webhook_token,
        created_at=row.created_at,
        breakers=_snapshots(states),
        health_interval=row.health_interval,
    )


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
        actor: str = audit.OFFICE,
    ) -> ConnectionRecord:
        """Check the settings against the kind's spec, save the connection, and put its secrets
        in the credential store; if the store refuses, nothing is saved. `health_interval` is
        seconds between health checks (None: the kind's default). `actor`: who, for the audit
        trail."""
        spec = kind(kind_key)
        config, kept, errors = spec.check(values, secrets)
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
            audit.record(
                session,
                actor,
                "connection.added",
                "connection",
                row.id,
                None,
                {**_audited(row), "in_credential_store": sorted(kept)},
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
                _remove_row, connection_id, actor, "connection.add_undone", kept.values()
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
        actor: str = audit.OFFICE,
    ) -> ConnectionRecord:
        """Change a connection's name and settings. A secret left empty keeps the stored one;
        a secret given replaces it. The provider's client is rebuilt with the new settings."""
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
            row.secret_names = [
                secret_name(connection_id, field) for field in [*kept_names, *new_secrets]
            ]
            before, after = audit.changes(was, _audited(row))
            if new_secrets:
                after["replaced_in_credential_store"] = sorted(new_secrets)
            audit.record(
                session,
                actor,
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
        record = await self.connection(connection_id)
        if field not in record.secret_fields:
            return record
        await self._secrets.adelete(secret_name(connection_id, field))
        gone = secret_name(connection_id, field)

        def write(session: Session) -> None:
            row = session.get(ProviderConnection, connection_id)
            if row is not None:
                row.secret_names = [name for name in row.secret_names if name != gone]

        await self._db.write(write)
        await self._close(connection_id)
        self._events.publish(TOPIC, {"id": connection_id})
        return await self.connection(connection_id)

    async def remove(self, connection_id: int, actor: str = audit.OFFICE) -> None:
        """Remove the connection and its secrets (secrets first: if the credential store cannot
        be reached, the connection stays so its secrets are not orphaned)."""
        record = await self.connection(connection_id)
        await self._db.read(_refuse_with_waiting_events, connection_id, record.name)
        names = [secret_name(connection_id, field) for field in record.secret_fields]
        kept = {name: await self._secrets.aget(name) for name in names}
        for name in names:
            await self._secrets.adelete(name)
        await self._close(connection_id)
        # Its last calls are still waiting to be logged: write them while the row exists.
        await self._requests.flush()
        try:
            await self._db.write(_remove_row, connection_id, actor, "connection.removed")
        except Exception:
            # Refused after all (an event arrived meanwhile): the connection stays, whole.
            for name, value in kept.items():
                if value is not None:
                    await self._secrets.aset(name, value)
            raise
        self._changed(connection_id)  # and now that it is gone from the database too
        log.info("connection removed", extra={"connection": connection_id})
        self._events.publish(TOPIC, {"id": connection_id, "removed": True})

    async def set_paused(
        self, connection_id: int, paused: bool, actor: str = audit.OFFICE
    ) -> ConnectionRecord:
        def write(session: Session) -> None:
            row = session.get(ProviderConnection, connection_id)
            if row is None:
                raise NotFound(f"There is no connection number {connection_id}.")
            if row.enabled != paused:
                return  # already so: nothing changes, nothing to record
            row.enabled = not paused
            audit.record(
                session,
                actor,
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
        provider = await self.provider(connection_id)
        provider.client.breaker.force_open(reason)

    async def reset_breakers(self, connection_id: int) -> None:
        provider = await self.provider(connection_id)
        for breaker in provider.client.breakers().values():
            breaker.reset()

    # --- calling --------------------------------------------------------------------------------

    async def provider(self, connection_id: int) -> Provider:
        """The connection's provider with its resilient client, made once and kept."""
        existing = self._providers.get(connection_id)
        if existing is not None:
            return existing
        record = await self.connection(connection_id)
        secrets = {
            field: await self._secrets.aget(secret_name(connection_id, field)) or ""
            for field in record.secret_fields
        }
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
            for field in (await self.connection(keep_from)).secret_fields:
                if field not in secrets:
                    secrets[field] = await self._secrets.aget(secret_name(keep_from, field)) or ""
        config, kept, errors = spec.check(values, secrets)
        if errors:
            raise ValidationFailed(errors)
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
