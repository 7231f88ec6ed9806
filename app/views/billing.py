"""Billing: charge every invoice due by a date, in four steps on one page. Choose the date and
prepare (nothing is charged); review what will be charged and what is skipped, and why; charge,
watching the progress, with pause and cancel; read the results and retry the failed ones.

A run interrupted anywhere (the app closed, the PC restarted) is found again here and finished
by charging the rest: each invoice's charge carries its own key, so nobody is charged twice
(see app/services/billing.py)."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from PySide6.QtCore import QDate
from PySide6.QtWidgets import (
    QDateEdit,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.billing import (
    CANCELED,
    CHARGING,
    FINISHED,
    PAUSED,
    PREPARED,
    RUNNING,
    SKIPPED,
    TOPIC,
    WAITING,
    BillingItem,
    BillingRun,
)
from app.services.payments import FAILED, PROCESSING, SUCCEEDED, UNKNOWN
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import confirm
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, HEALTHY
from app.ui.theme import PAUSED as PAUSED_COLOUR

STEPS = ("1 Choose", "2 Review", "3 Charge", "4 Results")
ITEM_LABELS = {
    WAITING: "to charge",
    CHARGING: "charging…",
    SKIPPED: "skipped",
    SUCCEEDED: "paid",
    PROCESSING: "on its way",
    FAILED: "failed",
    UNKNOWN: "not known yet",
}
ITEM_COLOURS = {
    SUCCEEDED: HEALTHY,
    PROCESSING: PAUSED_COLOUR,
    FAILED: DOWN,
    UNKNOWN: DEGRADED,
    SKIPPED: PAUSED_COLOUR,
}


def _qdate(value: date) -> QDate:
    return QDate(value.year, value.month, value.day)


class BillingPage(Page):
    key = "billing"
    title = "Billing run"
    icon_name = "billing"
    topics = (TOPIC,)
    refresh_every = 0.5

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.run: BillingRun | None = None
        self.charging: asyncio.Task[Any] | None = None  # the run being charged from here

        self.steps = QLabel()
        self.steps.setObjectName("Muted")
        self.due = QDateEdit(_qdate(date.today()))
        self.due.setCalendarPopup(True)
        self.due.setDisplayFormat("d MMM yyyy")
        self.prepare_button = QPushButton("Prepare")
        self.prepare_button.setToolTip("See what would be charged; nothing is charged yet")
        self.prepare_button.clicked.connect(lambda: tasks.start(self.prepare(), owner=self))
        choose = QHBoxLayout()
        choose.addWidget(QLabel("Charge the open invoices due by"))
        choose.addWidget(self.due)
        choose.addWidget(self.prepare_button)
        choose.addStretch(1)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m invoices done")
        self.model: RecordModel[BillingItem] = RecordModel(self.columns())
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)
        self.table.proxy.sort(-1)

        self.charge_button = QPushButton("Charge")
        self.charge_button.clicked.connect(lambda: tasks.start(self.charge(), owner=self))
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Stop after the charges under way; charge the rest later")
        self.pause_button.clicked.connect(lambda: tasks.start(self.pause(), owner=self))
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.clicked.connect(lambda: tasks.start(self.cancel(), owner=self))
        self.retry_button = QPushButton("Retry failed")
        self.retry_button.setToolTip("Charge the invoices that failed again, as new payments")
        self.retry_button.clicked.connect(lambda: tasks.start(self.retry(), owner=self))
        self.new_button = QPushButton("New run")
        self.new_button.clicked.connect(self.start_over)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for button in (
            self.retry_button,
            self.new_button,
            self.cancel_button,
            self.pause_button,
            self.charge_button,
        ):
            buttons.addWidget(button)

        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.steps)
        layout.addLayout(choose)
        layout.addWidget(self.summary)
        layout.addWidget(self.progress)
        layout.addWidget(self.table, 1)
        self.filler = QWidget()  # keeps the first step at the top while there is no table
        layout.addWidget(self.filler, 1)
        layout.addLayout(buttons)
        self._show(None)

    @property
    def locale(self) -> str:
        return str(self.bridge.services.settings.get("school.locale"))

    def columns(self) -> list[Column[BillingItem]]:
        return [
            Column("Invoice", lambda item: item.invoice_number),
            Column("Payer", lambda item: item.payer or "—", stretch=True),
            Column("Amount", lambda item: item.amount.format(self.locale), right=True),
            Column(
                "Status",
                lambda item: ITEM_LABELS.get(item.status, item.status),
                color=lambda item: ITEM_COLOURS.get(item.status),
            ),
            Column("Why", lambda item: item.message, stretch=True, tooltip=lambda i: i.message),
        ]

    # --- loading ---------------------------------------------------------------------------------

    async def load(self) -> None:
        billing = self.bridge.services.billing
        if self.run is not None:  # the run on show, whatever became of it
            run: BillingRun | None = await self.bridge.call(billing.run_of, self.run.id)
        else:  # one left unfinished (here or on another PC), else the first step
            run = await self.bridge.call(billing.unfinished)
        if run is None and not await self.bridge.call(self.bridge.services.payments.link_gateways):
            records = await self.bridge.call(self.bridge.services.connections.connections)
            if not any("payments" in record.spec.capabilities for record in records):
                self.states.show_empty(
                    "No payment gateway connected",
                    "A billing run charges the cards families saved at your payment gateways. "
                    "Connect a gateway on the Dashboard first (or explore the demo school).",
                    [("Open the dashboard", lambda: self.navigate.emit("dashboard"))],
                )
                return
        items = await self.bridge.call(billing.items, run.id) if run is not None else []
        self.model.set_records(items)
        self._show(run)
        self.states.show_content()

    def _show(self, run: BillingRun | None) -> None:
        """Lay the page out for the step the run is at."""
        self.run = run
        here = self.charging is not None and not self.charging.done()
        status = run.status if run is not None else ""
        step = {
            "": 0,
            PREPARED: 1,
            RUNNING: 2,
            PAUSED: 2,
            FINISHED: 3,
            CANCELED: 3,
        }.get(status, 0)
        self.steps.setText(
            " &nbsp;›&nbsp; ".join(f"<b>{s}</b>" if n == step else s for n, s in enumerate(STEPS))
        )
        self.due.setEnabled(run is None)
        self.prepare_button.setVisible(run is None)
        self.progress.setVisible(status in (RUNNING, PAUSED, FINISHED, CANCELED))
        self.table.setVisible(run is not None)
        self.filler.setVisible(run is None)
        if run is not None:
            charged = run.total_items - run.counts.get(SKIPPED, 0)
            done = run.done - run.counts.get(SKIPPED, 0)
            self.progress.setMaximum(max(charged, 1))
            self.progress.setValue(done)
        to_charge = run.counts.get(WAITING, 0) + run.counts.get(CHARGING, 0) if run else 0
        failed = run.counts.get(FAILED, 0) if run else 0
        self.charge_button.setVisible(
            status in (PREPARED, PAUSED) or (status == RUNNING and not here)
        )
        self.charge_button.setEnabled(to_charge > 0)
        self.charge_button.setText(
            f"Charge {to_charge} invoice{'s' if to_charge != 1 else ''}"
            if status == PREPARED
            else "Charge the rest"
        )
        self.pause_button.setVisible(status == RUNNING and here)
        self.cancel_button.setVisible(status in (PREPARED, PAUSED, RUNNING))
        self.retry_button.setVisible(status == FINISHED and failed > 0)
        self.retry_button.setText(f"Retry {failed} failed")
        self.new_button.setVisible(status in (FINISHED, CANCELED))
        self.summary.setText(self._summary(run, here))

    def _summary(self, run: BillingRun | None, here: bool) -> str:
        if run is None:
            return (
                "Choose a date and prepare: Switchboard lists the open invoices due by then, "
                "what each family will be charged on the card they saved, and which invoices "
                "cannot be charged and why. Nothing is charged until you say so."
            )
        totals = ", ".join(money.format(self.locale) for money in run.totals.values())
        counts = run.counts
        skipped = counts.get(SKIPPED, 0)
        due = f"{run.due_before:%d %b %Y}"
        if run.status == PREPARED:
            return f"Invoices due by {due}: {totals or 'nothing'} to charge" + (
                f"; {skipped} skipped (see why below)." if skipped else "."
            )
        done = ", ".join(
            f"{counts[status]} {ITEM_LABELS[status]}"
            for status in (SUCCEEDED, PROCESSING, FAILED, UNKNOWN)
            if counts.get(status)
        )
        if run.status == RUNNING and here:
            return f"Charging the invoices due by {due}… {done}"
        if run.status in (RUNNING, PAUSED):
            return (
                f"This run was {'paused' if run.status == PAUSED else 'interrupted'}"
                f"{': ' + done if done else ''}. Charge the rest to finish it: an invoice that "
                "was being charged is asked about first, never charged twice."
            )
        if run.status == CANCELED:
            return f"Canceled{': ' + done if done else ''}. The invoices not charged stay open."
        return f"Done: {done or 'nothing charged'}" + (f"; {skipped} skipped." if skipped else ".")

    # --- steps -----------------------------------------------------------------------------------

    async def prepare(self) -> BillingRun | None:
        picked = self.due.date()
        due = date(picked.year(), picked.month(), picked.day())
        try:
            run: BillingRun = await self.bridge.call(self.bridge.services.billing.prepare, due)
        except SwitchboardError as exc:
            self.summary.setText(str(exc))
            return None
        self.run = run
        await self.refresh()
        return run

    async def charge(self) -> BillingRun | None:
        """Charge the run's invoices (the rest, for a paused or interrupted run)."""
        run = self.run
        if run is None:
            return None
        if run.status == PREPARED:
            left = run.counts.get(WAITING, 0)
            totals = ", ".join(money.format(self.locale) for money in run.totals.values())
            asked = await confirm(
                self,
                "Charge invoices",
                f"Charge {left} invoice{'s' if left != 1 else ''} ({totals}) to the cards the "
                "families saved?",
                "Charge",
            )
            if not asked:
                return None
        billing = self.bridge.services.billing
        self.charging = asyncio.ensure_future(self.bridge.call(billing.run, run.id))
        await self.refresh()
        try:
            finished: BillingRun = await self.charging
        except SwitchboardError as exc:
            self.summary.setText(str(exc))
            return None
        finally:
            self.charging = None
        self.run = finished
        await self.refresh()
        return finished

    async def pause(self) -> None:
        if self.run is not None:
            await self.bridge.call(_stop, self.bridge.services.billing, self.run.id)

    async def cancel(self) -> None:
        run = self.run
        if run is None:
            return
        asked = await confirm(
            self,
            "Cancel billing run",
            "Cancel this run? Invoices already charged stay charged; the others stay open.",
            "Cancel run",
        )
        if asked:
            self.run = await self.bridge.call(self.bridge.services.billing.cancel, run.id)
            await self.refresh()

    async def retry(self) -> BillingRun | None:
        run = self.run
        if run is None:
            return None
        self.run = await self.bridge.call(self.bridge.services.billing.retry_failed, run.id)
        return await self.charge()

    def start_over(self) -> None:
        self.run = None
        self.model.set_records([])
        self._show(None)


async def _stop(billing: Any, run_id: int) -> None:
    billing.stop(run_id)
