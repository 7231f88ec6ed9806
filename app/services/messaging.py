"""Sending messages: prepare, confirm, send at the provider's pace, resume after a crash, and
never send anyone the same message twice.

A send is a batch. `prepare` resolves the audience, picks each person's channel and language,
normalizes their address, leaves out whoever opted out, renders every message, and stores
them all as `prepared` in one transaction: nothing has gone yet, and the office sees who gets
what and what it costs. `send` then hands them to the providers:

- A worker claims a few messages at a time: they are written `sending`, with the connection
  that will carry them, and committed *before* any provider is called. Results are written
  in group commits as they come back.
- A message found `sending` later (the process was killed, or the provider's answer was
  lost) may or may not have gone. It is looked up at its provider (`MessageChannel.find`):
  found, it is recorded as sent; not there, it goes back to `prepared`; where the provider
  cannot tell, it is `unknown` for a person to check. It is never sent again blindly.
- The unique (batch, channel, address) constraint means a batch holds one message per person
  and channel however it is prepared or resumed.
- A provider refusing one message (an invalid number, a person who unsubscribed) fails that
  message only. A provider that cannot be reached hands the channel to the next connection
  that carries it (the fallback order: the order connections were added); with none left the
  batch pauses, saying why, and `send` resumes it.
- The pace is the connection's rate limit (the resilient layer's limiter), so a send runs as
  fast as the provider allows and no faster.

Several office computers may share one database. A send goes on one computer at a time: the
batch names the engine sending it and until when (a lease it renews while it sends). Another
computer neither sends it meanwhile nor takes it for abandoned; once that engine is gone (its
lease ran out, or it was a process of this computer that no longer runs) the batch shows as
paused and may be resumed anywhere. A send can be cancelled from any computer: the one sending
it stops at its next renewal.

Delivery reports arrive later through the receiver (`app.services.message_events`).

Preparing, sending, stopping and cancelling a send, and the office's own opt-outs and opt-ins,
need the SEND_MESSAGES permission. The audit trail notes each send confirmed or resumed (how
many messages, the template and channel; never what they say), each cancelled, and each
opt-out or opt-in made by the office (families' replies and unsubscribe links are not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import SETTINGS_BY_KEY
from app.domain.access import Permission
from app.domain.errors import NotFound, SwitchboardError
from app.domain.messages import (
    AddressError,
    Channel,
    MessageStatus,
    address_for,
    new_unsubscribe_token,
    region_of_locale,
    sms_length,
    unsubscribe_link,
)
from app.domain.templating import TemplateProblem, pick_variant, render
from app.providers.http import CredentialsRefused, ProviderError, may_have_reached
from app.providers.messaging import (
    CannotTell,
    MessageChannel,
    MessageRefused,
    OutgoingMessage,
    Sent,
)
from app.providers.spec import Category
from app.services import access, audit, claims
from app.services.audiences import Audience, Recipient, resolve
from app.services.connections import ConnectionRecord, ConnectionService
from app.services.events import EventHub
from app.services.message_templates import Template, load_template
from app.services.settings import SettingsService
from app.services.webhook_intake import webhook_url
from app.store.base import utcnow
from app.store.database import Database
from app.store.messaging import MessageBatchRow, MessageRow, OptOutRow, TemplateRow

log = logging.getLogger("switchboard.messaging")

TOPIC = "messages"
CLAIM = 25  # messages claimed (and so in doubt after a crash) at a time, per worker pool
FLUSH_SECONDS = 0.1
FLUSH_AT = 50
LOOKUP_SLACK = timedelta(minutes=5)
# A send's claim: renewed this often while it goes, lapsed this long after the last renewal.
SEND_LEASE = timedelta(minutes=2)
RENEW_SECONDS = 20.0
INTERRUPTED = (
    "Stopped when Switchboard closed unexpectedly. Resume it: messages that may have gone are "
    "looked up with the provider first, so nobody gets one twice."
)
TAKEN_OVER = (
    "Another computer took this send over after this one lost touch with the database; it "
    "goes on there."
)


class BatchState:
    PREPARED = "prepared"
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


@dataclass(frozen=True)
class BatchSummary:
    id: int
    title: str
    status: str
    audience: str
    created_at: datetime
    confirmed_at: datetime | None
    finished_at: datetime | None
    counts: Mapping[str, int]
    channels: Mapping[str, int]
    segments: int
    cost: Mapping[str, int]  # currency -> minor units, as the providers reported or priced
    message: str = ""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def count(self, *statuses: MessageStatus) -> int:
        return sum(self.counts.get(status.value, 0) for status in statuses)

    @property
    def waiting(self) -> int:
        return self.count(MessageStatus.PREPARED)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "audience": self.audience,
            "counts": dict(self.counts),
            "channels": dict(self.channels),
            "segments": self.segments,
            "cost_minor": dict(self.cost),
            "message": self.message,
        }


@dataclass(frozen=True)
class MessageView:
    id: int
    batch_id: int
    channel: Channel
    address: str
    recipient: str
    status: MessageStatus
    subject: str
    text: str
    error: str
    provider_id: str
    cost_minor: int | None
    currency: str
    segments: int
    created_at: datetime
    status_at: datetime | None


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    counts: Mapping[str, int]


@dataclass(frozen=True)
class _Claimed:
    id: int
    connection_id: int
    outgoing: OutgoingMessage


@dataclass
class _Result:
    id: int
    status: MessageStatus
    sent: Sent | None = None
    error: str = ""
    opted_out: bool = False
    channel: str = ""
    address: str = ""


@dataclass
class _Run:
    """One `send` of a batch: who carries each channel, and why it stopped, if it did."""

    routes: dict[Channel, list[ConnectionRecord]]
    cancel: asyncio.Event
    stop: str = ""  # why the batch paused ("" while it goes on)
    failovers: int = 0
    results: list[_Result] = field(default_factory=list)


def fallback_order(names: str) -> Callable[[ConnectionRecord], tuple[int, int]]:
    """A sort key putting connections in the order `names` gives them (commas between, case
    and spaces aside), then the others in the order they were added."""
    wanted = [" ".join(name.split()).casefold() for name in names.split(",") if name.strip()]

    def key(record: ConnectionRecord) -> tuple[int, int]:
        name = " ".join(record.name.split()).casefold()
        return (wanted.index(name) if name in wanted else len(wanted), record.id)

    return key


def message_key(batch_id: int, message_id: int) -> str:
    """Our id for a message, given to providers that keep one."""
    return f"sb-{batch_id}-{message_id}"


class MessagingService:
    def __init__(
        self,
        db: Database,
        events: EventHub,
        connections: ConnectionService,
        settings: SettingsService,
        *,
        workers: int = 16,
    ) -> None:
        self._db = db
        self._events = events
        self._connections = connections
        self._settings = settings
        self._workers = workers
        self._sending: dict[int, asyncio.Event] = {}
        self._holder = claims.holder()  # how this service's sends are named to other engines
        self._stopped_by: dict[int, str] = {}  # who stopped a send that was going

    # --- preparing ------------------------------------------------------------------------------

    async def prepare(
        self,
        template: int | str,
        audience: Audience | None = None,
        *,
        recipients: Sequence[Recipient] = (),
        channel: Channel | None = None,
        title: str = "",
        created_by: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> BatchSummary:
        """A batch of rendered messages, nothing sent yet. `channel` None: each person's
        preferred channel (or the one they have an address for). `data`: more for the
        template (a payment, a lesson) besides the person and the school."""
        access.require(Permission.SEND_MESSAGES)
        routes = await self._routes()
        context = {**(data or {}), "school": self._school(), "unsubscribe_url": ""}
        public = str(self._settings.get("receiver.public_url") or "")
        region = region_of_locale(str(self._settings.get("school.locale") or ""))

        def write(session: Session) -> int:
            found = load_template(session, template)
            people = list(recipients) + (resolve(session, audience) if audience else [])
            if not people:
                raise SwitchboardError("Nobody is in this audience; choose other filters.")
            batch = MessageBatchRow(
                template_id=found.id,
                title=title or found.name,
                channel=channel.value if channel else "",
                audience=(audience.as_dict() if audience else {"who": "chosen"})
                | {"described": audience.describe() if audience else _named(people)},
                created_by=created_by,
            )
            session.add(batch)
            session.flush()
            opted = _opted_out(session)
            seen: set[tuple[str, str]] = set()
            for person in people:
                row = _message_for(found, person, channel, routes, region, context, opted, public)
                if (row.channel, row.address) in seen and row.address:
                    continue  # two students, one guardian: one message
                seen.add((row.channel, row.address))
                row.batch_id = batch.id
                if not row.address:
                    row.address = f"(none: {person.kind} {person.id})"
                session.add(row)
            try:
                session.flush()
            except IntegrityError as exc:
                raise SwitchboardError(
                    "Two people in this send share an address; nothing was prepared."
                ) from exc
            return batch.id

        batch_id = await self._db.write(write)
        self._events.publish(TOPIC, {"batch": batch_id})
        return await self.batch(batch_id)

    # --- sending --------------------------------------------------------------------------------

    async def send(
        self,
        batch_id: int,
        *,
        progress: Callable[[Progress], None] | None = None,
        cancel: asyncio.Event | None = None,
    ) -> BatchSummary:
        """Confirm and send a prepared batch, or resume one that paused or was interrupted.
        Returns when every message is sent or settled, the send is cancelled, or it pauses."""
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()
        cancel = cancel or asyncio.Event()
        if batch_id in self._sending:
            raise SwitchboardError("This send is already going.")
        self._sending[batch_id] = cancel
        keeper: asyncio.Task[None] | None = None
        try:
            await self._db.write(_start, batch_id, who, self._holder)
            self._events.publish(TOPIC, {"batch": batch_id})
            run = _Run(await self._routes(), cancel)
            keeper = asyncio.get_running_loop().create_task(self._keep_claim(batch_id, run))
            await self._settle_in_doubt(batch_id, run)
            waiting = await self._db.read(_count, batch_id)
            while waiting and not run.stop and not cancel.is_set():
                failovers = run.failovers
                await self._pump(batch_id, run, progress)
                await self._settle_in_doubt(batch_id, run)
                # Messages a failed connection gave back go again, on the next connection.
                left = await self._db.read(_count, batch_id)
                if left >= waiting and run.failovers == failovers:
                    break
                waiting = left
            # Stopped from the send's own window (its `cancel`) or by `cancel()`: by whom.
            stopped_by = self._stopped_by.get(batch_id, who)
            await self._db.write(
                _finish, batch_id, cancel.is_set(), run.stop, stopped_by, self._holder
            )
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            self._sending.pop(batch_id, None)
            self._stopped_by.pop(batch_id, None)
            self._events.publish(TOPIC, {"batch": batch_id})
        summary = await self.batch(batch_id)
        log.info(
            "send finished",
            extra={"batch": batch_id, "status": summary.status, "counts": dict(summary.counts)},
        )
        return summary

    async def recover(self) -> int:
        """Sends that were going when their engine ended (a crash, a power cut) wait to be
        resumed by a person: marked paused, saying so. How many there were. A send another
        engine is still sending (its claim holds) is left to it."""

        def write(session: Session) -> int:
            now = utcnow()
            rows = session.scalars(
                select(MessageBatchRow)
                .where(MessageBatchRow.status == BatchState.SENDING)
                .with_for_update(skip_locked=True)
            ).all()
            stopped = [row for row in rows if row.id not in self._sending and _abandoned(row, now)]
            for row in stopped:
                row.status, row.message = BatchState.PAUSED, INTERRUPTED
                row.sending_by, row.lease_until = None, None
            return len(stopped)

        stopped = await self._db.write(write)
        if stopped:
            self._events.publish(TOPIC, {"recovered": stopped})
        return stopped

    def cancel(self, batch_id: int) -> bool:
        """Stop a send that is going: messages not handed over yet are not sent."""
        access.require(Permission.SEND_MESSAGES)
        event = self._sending.get(batch_id)
        if event is None:
            return False
        self._stopped_by.setdefault(batch_id, access.actor())
        event.set()
        return True

    async def cancel_prepared(self, batch_id: int) -> BatchSummary:
        """Drop a batch that was prepared (or paused) and will not be sent."""
        access.require(Permission.SEND_MESSAGES)
        if batch_id in self._sending:
            self.cancel(batch_id)
        else:
            # Perhaps going on another computer: it sees the cancel at its next renewal.
            await self._db.write(_finish, batch_id, True, "", access.actor(), self._holder)
        self._events.publish(TOPIC, {"batch": batch_id})
        return await self.batch(batch_id)

    async def _keep_claim(self, batch_id: int, run: _Run) -> None:
        """Renew this engine's claim on the send while it goes; stop it if it was cancelled
        on another computer, or taken over by one."""
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                state = await self._db.write(_renew, batch_id, self._holder)
            except Exception:
                log.exception("could not renew the claim on a send", extra={"batch": batch_id})
                continue
            if state == BatchState.CANCELLED:
                run.cancel.set()
            elif state != BatchState.SENDING:
                run.stop = TAKEN_OVER
                run.cancel.set()

    async def _pump(
        self, batch_id: int, run: _Run, progress: Callable[[Progress], None] | None
    ) -> None:
        queue: asyncio.Queue[_Claimed | None] = asyncio.Queue(maxsize=CLAIM * 2)
        total = await self._db.read(_count, batch_id)
        done = 0

        async def claimer() -> None:
            try:
                while not run.cancel.is_set() and not run.stop:
                    route = {ch: conns[0].id for ch, conns in run.routes.items() if conns}
                    claimed = await self._db.write(
                        _claim, batch_id, CLAIM, route, self._callbacks(run)
                    )
                    if not claimed:
                        break
                    for item in claimed:
                        await queue.put(item)
            finally:
                for _ in range(self._workers):
                    await queue.put(None)

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                if run.cancel.is_set() or run.stop:
                    run.results.append(_Result(item.id, MessageStatus.PREPARED))
                    continue
                result = await self._send_one(item, run)
                # Appended after the send: the recorder swaps the list while sends wait.
                run.results.append(result)

        async def recorder() -> None:
            nonlocal done
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                done += await self._flush(run)
                if progress is not None:
                    progress(Progress(done, total, await self._db.read(_counts, batch_id)))

        record = asyncio.create_task(recorder())
        try:
            await asyncio.gather(claimer(), *(worker() for _ in range(self._workers)))
        finally:
            record.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await record
            done += await self._flush(run)
        if progress is not None:
            progress(Progress(done, total, await self._db.read(_counts, batch_id)))

    async def _send_one(self, item: _Claimed, run: _Run) -> _Result:
        channel = item.outgoing.channel
        try:
            provider = await self._channel_provider(item.connection_id)
        except NotFound as exc:  # the connection was removed while the send went on
            self._fail_over(run, channel, item.connection_id, ProviderError(str(exc)))
            return _Result(item.id, MessageStatus.PREPARED)
        try:
            sent = await provider.send(item.outgoing)
        except MessageRefused as exc:
            return _Result(
                item.id,
                MessageStatus.OPTED_OUT if exc.opted_out else MessageStatus.FAILED,
                error=str(exc),
                opted_out=exc.opted_out,
                channel=channel.value,
                address=item.outgoing.to,
            )
        except ProviderError as exc:
            if may_have_reached(exc):
                # Perhaps sent: left `sending`, and looked up before anything else happens.
                return _Result(item.id, MessageStatus.SENDING, error=str(exc))
            self._fail_over(run, channel, item.connection_id, exc)
            return _Result(item.id, MessageStatus.PREPARED, error=str(exc))
        return _Result(item.id, sent.status, sent=sent)

    def _fail_over(
        self, run: _Run, channel: Channel, connection_id: int, exc: ProviderError
    ) -> None:
        """The connection could not take the message: the next one carries the channel."""
        routes = run.routes.get(channel, [])
        if routes and routes[0].id == connection_id:
            gone = routes.pop(0)
            run.failovers += 1
            log.warning(
                "message connection failed over",
                extra={"connection": gone.id, "channel": channel.value, "error": exc.error_class},
            )
        if not routes:
            hint = (
                " Check the connection's credentials."
                if isinstance(exc, CredentialsRefused)
                else " Resume the send when it is back."
            )
            run.stop = f"No connection could send {channel.label}: {exc}{hint}"

    async def _flush(self, run: _Run) -> int:
        results, run.results = run.results, []
        if not results:
            return 0
        await self._db.write(_record, results)
        return sum(1 for result in results if result.status is not MessageStatus.PREPARED)

    async def _settle_in_doubt(self, batch_id: int, run: _Run) -> None:
        """Ask the providers about every message that may or may not have gone."""
        doubtful = await self._db.read(_in_doubt, batch_id)
        results: list[_Result] = []
        for item, since in doubtful:
            try:
                provider = await self._channel_provider(item.connection_id)
                found = await provider.find(item.outgoing, since - LOOKUP_SLACK)
            except (CannotTell, NotFound) as exc:
                # The provider keeps no list to ask, or the connection was removed since.
                results.append(
                    _Result(
                        item.id,
                        MessageStatus.UNKNOWN,
                        error=f"It may or may not have been sent: {exc} Check with the provider.",
                    )
                )
                continue
            except ProviderError as exc:
                run.stop = (
                    f"Some messages may have gone before the send stopped, and the provider "
                    f"cannot be asked now ({exc}); resume the send later."
                )
                break
            if found is None:
                results.append(_Result(item.id, MessageStatus.PREPARED))
            else:
                results.append(_Result(item.id, found.status, sent=found))
        if results:
            await self._db.write(_record, results)
            log.info("settled messages in doubt", extra={"batch": batch_id, "count": len(results)})

    async def _channel_provider(self, connection_id: int) -> MessageChannel:
        provider = await self._connections.provider(connection_id)
        if not isinstance(provider, MessageChannel):
            raise NotFound(f"Connection {connection_id} does not send messages.")
        return provider

    async def _routes(self) -> dict[Channel, list[ConnectionRecord]]:
        """The connections that carry each channel, in fallback order (the order they were
        added), leaving out paused ones."""
        routes: dict[Channel, list[ConnectionRecord]] = {}
        for record in sorted(await self._connections.connections(), key=lambda r: r.id):
            if record.spec.category is not Category.MESSAGING or record.paused:
                continue
            provider = await self._connections.provider(record.id)
            if not isinstance(provider, MessageChannel):
                continue
            for channel in provider.channels:
                routes.setdefault(channel, []).append(record)
        for channel, records in routes.items():
            records.sort(key=fallback_order(self._order(channel)))
        return routes

    def _order(self, channel: Channel) -> str:
        key = f"messaging.order.{channel.value}"
        # Push has no order to set: one provider carries it.
        return str(self._settings.get(key) or "") if key in SETTINGS_BY_KEY else ""

    def _callbacks(self, run: _Run) -> dict[int, str]:
        """Where each connection's provider reports delivery: the receiver's public address,
        or for the sandbox (which runs here) its local one; none otherwise."""
        public = str(self._settings.get("receiver.public_url") or "")
        local = (
            f"http://{self._settings.get('receiver.host')}:{self._settings.get('receiver.port')}"
        )
        addresses: dict[int, str] = {}
        for records in run.routes.values():
            for record in records:
                if record.spec.webhook is None or not record.webhook_token:
                    continue
                base = public or (local if record.spec.sandbox else "")
                if base:
                    addresses[record.id] = webhook_url(record.id, record.webhook_token, base)
        return addresses

    def _school(self) -> dict[str, str]:
        return {"name": str(self._settings.get("school.name") or "")}

    # --- reading --------------------------------------------------------------------------------

    async def batch(self, batch_id: int) -> BatchSummary:
        return await self._db.read(_summary, batch_id)

    async def batches(self, limit: int = 200) -> list[BatchSummary]:
        def query(session: Session) -> list[BatchSummary]:
            ids = session.scalars(
                select(MessageBatchRow.id).order_by(MessageBatchRow.id.desc()).limit(limit)
            )
            return [_summary(session, batch_id) for batch_id in list(ids)]

        return await self._db.read(query)

    async def messages(
        self, batch_id: int | None = None, status: MessageStatus | None = None, limit: int = 5000
    ) -> list[MessageView]:
        def query(session: Session) -> list[MessageView]:
            rows = select(MessageRow).order_by(MessageRow.id.desc()).limit(limit)
            if batch_id is not None:
                rows = rows.where(MessageRow.batch_id == batch_id)
            if status is not None:
                rows = rows.where(MessageRow.status == status.value)
            return [_view(row) for row in session.scalars(rows)]

        return await self._db.read(query)

    async def opt_out(
        self, channel: Channel, address: str, source: str = "office", note: str = ""
    ) -> None:
        """The office stops `channel` messages to `address` (a family asked by phone, say)."""
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()
        region = region_of_locale(str(self._settings.get("school.locale") or ""))
        normalized = address_for(channel, address, region)

        def write(session: Session) -> None:
            row = add_opt_out(session, channel.value, normalized, source, note)
            if row is not None:
                audit.record(
                    session, who, "opt_out.added", "opt_out", row.id, None, _opt_out_trail(row)
                )

        await self._db.write(write)
        self._events.publish(TOPIC, {"opt_out": channel.value})

    async def opt_in(self, channel: Channel, address: str) -> bool:
        """`address` gets `channel` messages again; whether it had opted out."""
        access.require(Permission.SEND_MESSAGES)
        who = access.actor()
        region = region_of_locale(str(self._settings.get("school.locale") or ""))
        normalized = address_for(channel, address, region)

        def write(session: Session) -> bool:
            row = _opt_out_row(session, channel.value, normalized)
            if row is None:
                return False
            audit.record(
                session, who, "opt_out.removed", "opt_out", row.id, _opt_out_trail(row), None
            )
            session.delete(row)
            return True

        removed = await self._db.write(write)
        self._events.publish(TOPIC, {"opt_out": channel.value})
        return removed

    async def opt_outs(self) -> list[tuple[str, str, str, datetime]]:
        def query(session: Session) -> list[tuple[str, str, str, datetime]]:
            rows = session.scalars(select(OptOutRow).order_by(OptOutRow.created_at.desc()))
            return [(row.channel, row.address, row.source, row.created_at) for row in rows]

        return await self._db.read(query)


# --- preparing, in the database -------------------------------------------------------------------


def _named(people: Sequence[Recipient]) -> str:
    return people[0].name if len(people) == 1 else f"{len(people)} people"


def _opted_out(session: Session) -> set[tuple[str, str]]:
    return {(row.channel, row.address) for row in session.scalars(select(OptOutRow))}


def _message_for(
    template: Template,
    person: Recipient,
    channel: Channel | None,
    routes: Mapping[Channel, Sequence[ConnectionRecord]],
    region: str,
    context: Mapping[str, Any],
    opted: set[tuple[str, str]],
    public: str = "",
) -> MessageRow:
    """One person's message. `public`: the receiver's public address, for an e-mail's own
    unsubscribe link (none without one: nobody could open it)."""
    chosen = channel or _preferred(template, person, routes)
    row = MessageRow(
        channel=chosen.value,
        address="",
        recipient_kind=person.kind,
        recipient_id=person.id or None,
        recipient_name=person.name,
        language=person.language,
        status=MessageStatus.PREPARED.value,
    )
    raw = person.email if chosen is Channel.EMAIL else person.phone
    try:
        row.address = address_for(chosen, raw, region)
    except AddressError as exc:
        row.status, row.error = MessageStatus.SKIPPED.value, str(exc)
        return row
    if (chosen.value, row.address) in opted:
        row.status = MessageStatus.OPTED_OUT.value
        row.error = f"{person.name or row.address} asked not to get {chosen.label} messages."
        return row
    variant = pick_variant(template.variants, chosen, person.language)
    if variant is None:
        row.status = MessageStatus.SKIPPED.value
        row.error = f"The template {template.name!r} has no {chosen.label} text."
        return row
    if chosen is Channel.EMAIL and public:
        row.unsubscribe_token = new_unsubscribe_token()
        row.unsubscribe_url = unsubscribe_link(public, row.unsubscribe_token)
        context = {**context, "unsubscribe_url": row.unsubscribe_url}
    try:
        rendered = render(variant, {**context, **person.data})
    except TemplateProblem as exc:
        row.status, row.error = MessageStatus.SKIPPED.value, str(exc)
        return row
    row.language = rendered.language
    row.subject, row.text, row.html = rendered.subject, rendered.text, rendered.html
    row.template_name, row.parameters = rendered.template_name, list(rendered.parameters)
    if chosen is Channel.SMS:
        row.segments = sms_length(rendered.text).segments
    if chosen not in routes:
        row.error = f"No connection sends {chosen.label} yet; connect one before sending."
    return row


def _preferred(
    template: Template, person: Recipient, routes: Mapping[Channel, Sequence[ConnectionRecord]]
) -> Channel:
    """The person's preferred channel where the school can use it, else one it can."""
    order = [person.preferred_channel, Channel.EMAIL.value, Channel.SMS.value]
    has = {Channel.EMAIL: bool(person.email), Channel.SMS: bool(person.phone)}
    has[Channel.WHATSAPP] = has[Channel.SMS]
    for name in order:
        try:
            channel = Channel(name)
        except ValueError:
            continue
        usable = has.get(channel, False) and channel in routes
        if usable and pick_variant(template.variants, channel, person.language) is not None:
            return channel
    try:
        return Channel(person.preferred_channel)
    except ValueError:
        return Channel.EMAIL


# --- sending, in the database ---------------------------------------------------------------------


def _batch_row(session: Session, batch_id: int) -> MessageBatchRow:
    row = session.get(MessageBatchRow, batch_id)
    if row is None:
        raise NotFound(f"There is no send {batch_id}.")
    return row


def _batch_locked(session: Session, batch_id: int) -> MessageBatchRow:
    row = session.get(MessageBatchRow, batch_id, with_for_update=True)
    if row is None:
        raise NotFound(f"There is no send {batch_id}.")
    return row


def _abandoned(row: MessageBatchRow, now: datetime) -> bool:
    """Whether a batch marked sending has nobody sending it any more."""
    lapsed = row.lease_until is None or row.lease_until <= now
    return lapsed or claims.gone(row.sending_by)


def _start(session: Session, batch_id: int, who: str, holder: str) -> None:
    row = _batch_locked(session, batch_id)
    now = utcnow()
    if row.status == BatchState.CANCELLED:
        raise SwitchboardError("This send was cancelled; prepare it again to send it.")
    if row.status == BatchState.SENDING and row.sending_by != holder and not _abandoned(row, now):
        raise SwitchboardError(
            f"This send is going on another computer ({row.sending_by}); follow it there, or "
            "wait for it to finish before resuming it here."
        )
    waiting = _count_status(session, batch_id, MessageStatus.PREPARED, MessageStatus.SENDING)
    if row.status == BatchState.DONE and not waiting:
        raise SwitchboardError("This send is finished; every message has gone.")
    first = row.confirmed_at is None
    row.status = BatchState.SENDING
    row.sending_by, row.lease_until = holder, now + SEND_LEASE
    row.message = ""
    row.confirmed_at = row.confirmed_at or utcnow()
    audit.record(
        session,
        who,
        "send.confirmed" if first else "send.resumed",
        "message_batch",
        batch_id,
        None,
        {**_batch_trail(session, row), "to_send": waiting},
    )


def _batch_trail(session: Session, row: MessageBatchRow) -> dict[str, Any]:
    """A send as the audit trail keeps it: what and to how many, never what the messages say."""
    template = session.get(TemplateRow, row.template_id) if row.template_id else None
    return {
        "title": row.title,
        "template": template.name if template is not None else None,
        "channel": row.channel or "each person's preferred",
        "audience": row.audience.get("described"),
        "messages": _count_status(session, row.id, *MessageStatus),
    }


def _renew(session: Session, batch_id: int, holder: str) -> str:
    """Extend `holder`'s claim on a send; the batch's status ("sending" while the claim is
    still its own, "cancelled" if someone cancelled it meanwhile, any other: lost)."""
    row = _batch_locked(session, batch_id)
    if row.status == BatchState.SENDING and row.sending_by != holder:
        return BatchState.PAUSED  # another engine took it up after this one's lease lapsed
    if row.status == BatchState.SENDING:
        row.lease_until = utcnow() + SEND_LEASE
    return row.status


def _finish(
    session: Session, batch_id: int, cancelled: bool, stop: str, who: str, holder: str
) -> None:
    """The send is over for now: cancelled (by `who`, here or on another computer), paused, or
    done. A send another engine took over is left to it."""
    row = _batch_locked(session, batch_id)
    now = utcnow()
    if row.status == BatchState.SENDING and row.sending_by not in (holder, None) and not cancelled:
        return
    if row.sending_by == holder:
        row.sending_by, row.lease_until = None, None
    if cancelled or row.status == BatchState.CANCELLED:
        if row.status != BatchState.CANCELLED:
            left = _count_status(session, batch_id, MessageStatus.PREPARED)
            audit.record(
                session,
                who,
                "send.cancelled",
                "message_batch",
                batch_id,
                {"status": row.status},
                {**_batch_trail(session, row), "status": BatchState.CANCELLED, "not_sent": left},
            )
        session.execute(
            update(MessageRow)
            .where(
                MessageRow.batch_id == batch_id,
                MessageRow.status == MessageStatus.PREPARED.value,
            )
            .values(status=MessageStatus.CANCELLED.value, status_at=now)
        )
        row.status, row.finished_at = BatchState.CANCELLED, now
        row.message = "Cancelled; messages already handed over still go."
        return
    waiting = _count_status(session, batch_id, MessageStatus.PREPARED, MessageStatus.SENDING)
    if waiting:
        row.status = BatchState.PAUSED
        channels = sorted(
            Channel(channel).label
            for channel in session.scalars(
                select(MessageRow.channel)
                .where(
                    MessageRow.batch_id == batch_id,
                    MessageRow.status == MessageStatus.PREPARED.value,
                )
                .distinct()
            )
        )
        row.message = stop or (
            f"{waiting} messages wait for a connection that sends {' or '.join(channels)}; "
            "connect one (or resume a paused one), then resume the send."
        )
    else:
        row.status, row.finished_at, row.message = BatchState.DONE, now, stop


def _count_status(session: Session, batch_id: int, *statuses: MessageStatus) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(MessageRow)
            .where(
                MessageRow.batch_id == batch_id,
                MessageRow.status.in_([status.value for status in statuses]),
            )
        )
        or 0
    )


def _count(session: Session, batch_id: int) -> int:
    return _count_status(session, batch_id, MessageStatus.PREPARED)


def _outgoing(row: MessageRow, callback: str) -> OutgoingMessage:
    return OutgoingMessage(
        key=message_key(row.batch_id, row.id),
        channel=Channel(row.channel),
        to=row.address,
        subject=row.subject,
        text=row.text,
        html=row.html,
        template_name=row.template_name,
        template_language=row.language,
        parameters=tuple(row.parameters or ()),
        status_callback=callback,
        unsubscribe_url=row.unsubscribe_url,
    )


def _claim(
    session: Session,
    batch_id: int,
    limit: int,
    route: Mapping[Channel, int],
    callbacks: Mapping[int, str],
) -> list[_Claimed]:
    """Mark up to `limit` prepared messages `sending` on their channel's connection (committed
    when this returns, before any is sent)."""
    channels = [channel.value for channel in route]
    if not channels:
        return []
    rows = list(
        session.scalars(
            select(MessageRow)
            .where(
                MessageRow.batch_id == batch_id,
                MessageRow.status == MessageStatus.PREPARED.value,
                MessageRow.channel.in_(channels),
            )
            .order_by(MessageRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    now = utcnow()
    claimed: list[_Claimed] = []
    for row in rows:
        connection_id = route[Channel(row.channel)]
        row.status, row.connection_id, row.sending_at, row.error = (
            MessageStatus.SENDING.value,
            connection_id,
            now,
            "",
        )
        claimed.append(
            _Claimed(row.id, connection_id, _outgoing(row, callbacks.get(connection_id, "")))
        )
    return claimed


def _record(session: Session, results: Sequence[_Result]) -> None:
    now = utcnow()
    for result in results:
        row = session.get(MessageRow, result.id)
        if row is None:
            continue
        row.status, row.status_at = result.status.value, now
        if result.status is MessageStatus.PREPARED:
            row.connection_id, row.sending_at = None, None
        if result.error:
            row.error = result.error[:2000]
        sent = result.sent
        if sent is not None:
            row.provider_id = sent.provider_id
            if sent.cost_minor is not None:
                row.cost_minor, row.currency = sent.cost_minor, sent.currency
            if sent.segments:
                row.segments = sent.segments
        if result.opted_out and result.address:
            add_opt_out(session, result.channel, result.address, "provider", result.error)


def _in_doubt(session: Session, batch_id: int) -> list[tuple[_Claimed, datetime]]:
    rows = session.scalars(
        select(MessageRow).where(
            MessageRow.batch_id == batch_id, MessageRow.status == MessageStatus.SENDING.value
        )
    )
    return [
        (_Claimed(row.id, row.connection_id or 0, _outgoing(row, "")), row.sending_at or utcnow())
        for row in rows
    ]


def _counts(session: Session, batch_id: int) -> dict[str, int]:
    rows = session.execute(
        select(MessageRow.status, func.count())
        .where(MessageRow.batch_id == batch_id)
        .group_by(MessageRow.status)
    )
    return {status: int(n) for status, n in rows}


def _summary(session: Session, batch_id: int) -> BatchSummary:
    row = _batch_row(session, batch_id)
    channels = dict(
        session.execute(
            select(MessageRow.channel, func.count())
            .where(MessageRow.batch_id == batch_id)
            .group_by(MessageRow.channel)
        ).all()
    )
    segments = session.scalar(
        select(func.coalesce(func.sum(MessageRow.segments), 0)).where(
            MessageRow.batch_id == batch_id,
            MessageRow.status.notin_(
                [
                    MessageStatus.SKIPPED.value,
                    MessageStatus.OPTED_OUT.value,
                    MessageStatus.CANCELLED.value,
                ]
            ),
        )
    )
    cost = dict(
        session.execute(
            select(MessageRow.currency, func.sum(MessageRow.cost_minor))
            .where(MessageRow.batch_id == batch_id, MessageRow.cost_minor.is_not(None))
            .group_by(MessageRow.currency)
        ).all()
    )
    status, message = row.status, row.message
    if status == BatchState.SENDING and _abandoned(row, utcnow()):
        # Its engine ended before it could say so (recover() writes this at the next start).
        status, message = BatchState.PAUSED, INTERRUPTED
    return BatchSummary(
        id=row.id,
        title=row.title,
        status=status,
        audience=str(row.audience.get("described") or ""),
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        finished_at=row.finished_at,
        counts=_counts(session, batch_id),
        channels={str(k): int(v) for k, v in channels.items()},
        segments=int(segments or 0),
        cost={str(k): int(v or 0) for k, v in cost.items()},
        message=message,
    )


def _view(row: MessageRow) -> MessageView:
    return MessageView(
        id=row.id,
        batch_id=row.batch_id,
        channel=Channel(row.channel),
        address=row.address,
        recipient=row.recipient_name,
        status=MessageStatus(row.status),
        subject=row.subject,
        text=row.text,
        error=row.error,
        provider_id=row.provider_id,
        cost_minor=row.cost_minor,
        currency=row.currency,
        segments=row.segments,
        created_at=row.created_at,
        status_at=row.status_at,
    )


def _opt_out_row(session: Session, channel: str, address: str) -> OptOutRow | None:
    return session.scalars(
        select(OptOutRow).where(OptOutRow.channel == channel, OptOutRow.address == address)
    ).first()


def _opt_out_trail(row: OptOutRow) -> dict[str, Any]:
    return {"channel": row.channel, "address": row.address, "source": row.source, "note": row.note}


def add_opt_out(
    session: Session, channel: str, address: str, source: str, note: str = ""
) -> OptOutRow | None:
    """Record that `address` wants no `channel` messages; the new row (None: it already had)."""
    if _opt_out_row(session, channel, address) is not None:
        return None
    row = OptOutRow(channel=channel, address=address, source=source, note=note[:500])
    session.add(row)
    session.flush()
    return row


def remove_opt_out(session: Session, channel: str, address: str) -> bool:
    row = _opt_out_row(session, channel, address)
    if row is None:
        return False
    session.delete(row)
    return True
