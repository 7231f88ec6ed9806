"""One module per page of the app. Only pages that work are listed."""

from __future__ import annotations

from app.ui.bridge import EngineBridge
from app.ui.page import Page


def build_pages(bridge: EngineBridge) -> list[Page]:
    from app.views.approvals import ApprovalsPage
    from app.views.audit import AuditPage
    from app.views.automations import AutomationsPage
    from app.views.backups import BackupsPage
    from app.views.billing import BillingPage
    from app.views.calendar_sync import CalendarSyncPage
    from app.views.dashboard import DashboardPage
    from app.views.events import EventsPage
    from app.views.gateway_analytics import GatewayAnalyticsPage
    from app.views.guardians import GuardiansPage
    from app.views.invoices import InvoicesPage
    from app.views.jobs import JobsPage
    from app.views.lessons import LessonsPage
    from app.views.messages import MessagesPage
    from app.views.outbound_webhooks import OutboundWebhooksPage
    from app.views.overview import OverviewPage
    from app.views.payments import PaymentsPage
    from app.views.reconciliation import ReconciliationPage
    from app.views.reconciliation_exceptions import ReconciliationExceptionsPage
    from app.views.request_log import RequestLogPage
    from app.views.routing_rules import RoutingRulesPage
    from app.views.settings import SettingsPage
    from app.views.students import StudentsPage
    from app.views.sync_conflicts import ConflictsPage
    from app.views.teachers import TeachersPage
    from app.views.templates import TemplatesPage
    from app.views.users import UsersPage

    return [
        OverviewPage(bridge),
        DashboardPage(bridge),
        RequestLogPage(bridge),
        EventsPage(bridge),
        StudentsPage(bridge),
        GuardiansPage(bridge),
        TeachersPage(bridge),
        LessonsPage(bridge),
        CalendarSyncPage(bridge),
        ConflictsPage(bridge),
        MessagesPage(bridge),
        TemplatesPage(bridge),
        AutomationsPage(bridge),
        InvoicesPage(bridge),
        PaymentsPage(bridge),
        BillingPage(bridge),
        RoutingRulesPage(bridge),
        GatewayAnalyticsPage(bridge),
        ReconciliationPage(bridge),
        ReconciliationExceptionsPage(bridge),
        JobsPage(bridge),
        AuditPage(bridge),
        OutboundWebhooksPage(bridge),
        BackupsPage(bridge),
        ApprovalsPage(bridge),
        UsersPage(bridge),
        SettingsPage(bridge),
    ]
