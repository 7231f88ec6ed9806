"""Qt-free asyncio services, one per business capability; the CLI and the views both call them.

`Services` is every service of one open database, wired together: the engine thread, the
command line and the tests all open the same set.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.applications import Starlette

from app.config import Config
from app.providers import sandbox_ledger
from app.providers.http import RequestRecord
from app.services import (
    calendar_events,
    database_password,
    dwolla_events,
    message_events,
    payment_events,
    paynow_events,
    paypal_events,
    paysafe_events,
)
from app.services.api_keys import ApiKeys
from app.services.approvals import ApprovalService, register_approved_actions
from app.services.audit import AuditService
from app.services.automations import AutomationService
from app.services.backup import BackupService
from app.services.billing import BillingService
from app.services.calendar_sync import CalendarSyncService
from app.services.connections import ConnectionService
from app.services.csv_transfer import CsvTransfer
from app.services.events import EventHub
from app.services.health import HealthService
from app.services.inbox import Inbox
from app.services.inbox_worker import InboxWorker
from app.services.jobs import JobHistory
from app.services.live import LiveMetrics
from app.services.message_templates import TemplateService
from app.services.messaging import MessagingService
from app.services.outbound_webhooks import OutboundWebhooks
from app.services.payments import PaymentService
from app.services.rates import RatesService
from app.services.reconciliation.service import ReconciliationService
from app.services.request_log import RequestLogWriter
from app.services.routing import RoutingService
from app.services.school import SchoolService
from app.services.secrets import SecretStore
from app.services.settings import SettingsService
from app.services.unsubscribe import UnsubscribeLinks
from app.services.users import UserService
from app.services.webhook_intake import SourceLimiter, WebhookIntake
from app.services.zapier import ZapierApi
from app.store.database import Database


@dataclass
class Services:
    config: Config
    db: Database
    events: EventHub
    settings: SettingsService
    secrets: SecretStore
    school: SchoolService
    csv: CsvTransfer
    jobs: JobHistory
    requests: RequestLogWriter
    connections: ConnectionService
    health: HealthService
    live: LiveMetrics
    inbox: Inbox
    intake: WebhookIntake
    inbox_worker: InboxWorker
    payments: PaymentService
    routing: RoutingService
    billing: BillingService
    rates: RatesService
    reconciliation: ReconciliationService
    calendar_sync: CalendarSyncService
    templates: TemplateService
    messaging: MessagingService
    outbound: OutboundWebhooks
    automations: AutomationService
    api_keys: ApiKeys
    zapier: ZapierApi
    unsubscribe: UnsubscribeLinks
    audit: AuditService
    backups: BackupService
    users: UserService
    approvals: ApprovalService

    @classmethod
    async def open(cls, config: Config, events: EventHub | None = None) -> Services:
        """Open (and migrate) the database and start every service on the running loop."""
        config.paths.create()
        sandbox_ledger.keep_books_in(config.paths.data_dir)
        # A shared database's password is kept in the credential store, never in the address.
        db = Database(await asyncio.to_thread(database_password.with_password, config.db_url))
        try:
            await asyncio.to_thread(db.migrate)
            hub = events or EventHub()
            hub.bind(asyncio.get_running_loop())
            settings = SettingsService(db, hub)
            await settings.load()
            users = UserService(db, hub)
            await users.load_service_user()
            approvals = ApprovalService(db, hub, settings)
            secrets = SecretStore(await settings.install_id())
            requests = RequestLogWriter(db, hub)
            live = LiveMetrics(hub)

            def record(entry: RequestRecord) -> None:
                requests.add(entry)
                live.add(entry)

            connections = ConnectionService(db, hub, secrets, requests, on_request=record)
            health = HealthService(db, hub, connections)
            await health.restore()
            inbox = Inbox(db, hub)
            inbox_worker = InboxWorker(db, hub)
            inbox.on_stored(inbox_worker.wake)
            payment_events.register(inbox_worker)
            paypal_events.register(inbox_worker)
            paysafe_events.register(inbox_worker)
            dwolla_events.register(inbox_worker)
            paynow_events.register(inbox_worker)
            routing = RoutingService(db, connections, hub)
            payments = PaymentService(db, hub, connections, routing.learn)
            payments.approvals = connections.approvals = approvals
            register_approved_actions(approvals, payments, connections)
            rate = settings.get("receiver.sender_rate")
            intake = WebhookIntake(connections, secrets, inbox, SourceLimiter(rate, 2 * rate))
            school = SchoolService(db, hub, settings)
            calendar_sync = CalendarSyncService(db, hub, connections, school, settings)
            calendar_events.register(inbox_worker, calendar_sync)
            message_events.register(inbox_worker)
            templates = TemplateService(db, hub)
            await templates.ensure_builtin()
            outbound = OutboundWebhooks(db, hub, secrets)
            messaging = MessagingService(db, hub, connections, settings)
            automations = AutomationService(db, hub, settings, messaging, outbound, payments)
            await automations.ensure_recipes()
            api_keys = ApiKeys(db)
            jobs = JobHistory(db, hub)
        except BaseException:
            await asyncio.to_thread(db.close)
            raise
        return cls(
            config=config,
            db=db,
            events=hub,
            settings=settings,
            secrets=secrets,
            school=school,
            csv=CsvTransfer(db, hub, settings),
            jobs=jobs,
            requests=requests,
            connections=connections,
            health=health,
            live=live,
            inbox=inbox,
            intake=intake,
            inbox_worker=inbox_worker,
            payments=payments,
            routing=routing,
            billing=BillingService(db, hub, payments, routing),
            rates=RatesService(db, connections),
            reconciliation=ReconciliationService(db, hub, connections, settings),
            calendar_sync=calendar_sync,
            templates=templates,
            messaging=messaging,
            outbound=outbound,
            automations=automations,
            api_keys=api_keys,
            zapier=ZapierApi(api_keys, outbound, school, settings),
            unsubscribe=UnsubscribeLinks(db, hub, settings),
            audit=AuditService(db, hub),
            backups=BackupService(config, db, hub, settings, connections, jobs),
            users=users,
            approvals=approvals,
        )

    def web(self) -> Starlette:
        """What the receiver serves besides callbacks: the API for other apps (Zapier) and
        e-mails' unsubscribe links."""
        return Starlette(routes=[*self.zapier.app.routes, *self.unsubscribe.app.routes])

    async def close(self) -> None:
        """Close provider clients, write the last request-log rows, then close the database."""
        try:
            await self.inbox.drain()
            await self.automations.stop()
            await self.outbound.close()
            await self.connections.close()
            await self.requests.flush()
        finally:
            await asyncio.to_thread(self.db.close)
