"""Automations: what the school has Switchboard do by itself when something happens — the
built-in recipes (payment receipt, failed-payment notice, lesson reminder, overdue reminder)
first, then the school's own — each with its trigger, what it does, whether it is switched on,
its last run and how many runs wait or need a person. Below, the run log of the one selected
(each run's steps, a link to the send it made, Retry now and Dismiss for a run that needs a
person) and the follow-up tasks automations made. The work is the `AutomationService`'s, asked
through the bridge; the runs themselves happen in the engine's worker."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import SwitchboardError
from app.services.automation_actions import SEND_TEMPLATE, TOPIC_TASKS
from app.services.automations import (
    MAX_ATTEMPTS,
    OPERATORS,
    RECIPES,
    TOPIC,
    Automation,
    AutomationDraft,
    AutomationService,
    AutomationSummary,
    Condition,
    Run,
    RunStatus,
    Task,
)
from app.services.domain_events import TRIGGERS
from app.ui import labels, tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import confirm, run_dialog, tell
from app.ui.formatting import day, when
from app.ui.page import Page
from app.ui.table import Column, RecordModel, RecordTable
from app.ui.theme import DEGRADED, DOWN, HEALTHY, PAUSED
from app.ui.who import office_user
from app.views.automation_editor import AutomationDialog, value_text

RUN_LIMIT = 200
RUN_STATES: dict[str, tuple[str, str]] = {
    RunStatus.PENDING: ("waiting to run", PAUSED),
    RunStatus.RUNNING: ("running", HEALTHY),
    RunStatus.RETRYING: ("will try again", DEGRADED),
    RunStatus.SUCCEEDED: ("done", HEALTHY),
    RunStatus.FAILED: ("needs a person", DOWN),
    RunStatus.DISMISSED: ("set aside", PAUSED),
}
RUN_FILTERS: tuple[tuple[str, str | None], ...] = (
    ("Every run", None),
    ("Needs a person", RunStatus.FAILED),
    ("Will try again", RunStatus.RETRYING),
    ("Done", RunStatus.SUCCEEDED),
    ("Set aside", RunStatus.DISMISSED),
)
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.RETRYING, RunStatus.DISMISSED})
DISMISSABLE = frozenset({RunStatus.FAILED, RunStatus.RETRYING, RunStatus.PENDING})
# The built-in recipes in the order the service declares them (the order of a family's year:
# paying, failing to pay, coming to lessons, owing), then the school's own by name.
RECIPE_ORDER = {recipe.key: number for number, recipe in enumerate(RECIPES)}


# --- words for what the service hands out ---------------------------------------------------------


def listed(summaries: list[AutomationSummary]) -> list[AutomationSummary]:
    """The built-in recipes first, in their own order; then the others as the service lists
    them (by name)."""
    return sorted(
        summaries,
        key=lambda s: RECIPE_ORDER.get(s.automation.recipe or "", len(RECIPE_ORDER)),
    )


def run_state(run: Run) -> tuple[str, str]:
    return RUN_STATES.get(run.status, (run.status, PAUSED))


def condition_text(condition: Condition, trigger: str) -> str:
    """A condition in a few words: "Why it failed is one of hard_decline or soft_decline".
    (`Condition.describe` says the same at length: the field's whole label and the value as
    Python writes it.)"""
    found = TRIGGERS[trigger].field(condition.field) if trigger in TRIGGERS else None
    name = found.label.split(" (")[0] if found else condition.field
    words = OPERATORS.get(condition.op, condition.op)
    value = condition.value
    if isinstance(value, list):
        shown = " or ".join(value_text(item) for item in value)
    else:
        shown = value_text(value) or "empty"
    return f"{name} {words} {shown}"


def does(automation: Automation) -> str:
    """What an automation does, in one line: its conditions, then its actions."""
    actions = "; then ".join(action.describe() for action in automation.actions) or "nothing yet"
    if not automation.conditions:
        return actions
    conditions = " and ".join(condition_text(c, automation.trigger) for c in automation.conditions)
    return f"If {conditions}: {actions}"


def does_at_length(automation: Automation) -> str:
    """The tooltip: each condition and action on its own line, as the service says them."""
    lines = [f"When {_lower(automation.trigger_label)}"]
    lines += [f"and {c.describe(automation.trigger)}" for c in automation.conditions]
    lines += [f"• {action.describe()}" for action in automation.actions]
    return "\n".join(lines)


def last_run_text(summary: AutomationSummary, zone: ZoneInfo) -> str:
    run = summary.last_run
    if run is None:
        return "never run"
    return f"{when(run.created_at, zone)} · {run_state(run)[0]}"


def on_text(automation: Automation) -> str:
    return "On" if automation.enabled else "Off"


def about(summary: AutomationSummary, zone: ZoneInfo) -> str:
    """The selected automation in a sentence or two, under the list."""
    automation = summary.automation
    parts = [automation.description] if automation.description else []
    if automation.enabled:
        parts.append(f"Switched on: it acts whenever {_lower(automation.trigger_label)}.")
    else:
        parts.append("Switched off: it does nothing until it is switched on.")
    last = summary.last_run
    if last is not None:
        said = last.outcome or last.error
        parts.append(
            f"Last run {when(last.created_at, zone)}, {run_state(last)[0]}"
            + (f": {said}" if said else ".")
        )
    return " ".join(parts)


def _lower(label: str) -> str:
    return label[:1].lower() + label[1:]


def next_try_text(run: Run, zone: ZoneInfo) -> str:
    if run.status not in (RunStatus.RETRYING, RunStatus.PENDING) or run.next_attempt_at is None:
        return "—"
    return when(run.next_attempt_at, zone)


def sends_of(run: Run) -> list[int]:
    """The sends (message batches) a run's steps made, in order."""
    return [
        int(step.made["batch_id"])
        for step in run.steps
        if step.action.kind == SEND_TEMPLATE and isinstance(step.made.get("batch_id"), int)
    ]


def describe_run(run: Run, zone: ZoneInfo) -> str:
    """The selected run in full: what it was about, where it stands, each step."""
    status = run_state(run)[0]
    if run.attempts:
        status += f" after {run.attempts} tr{'y' if run.attempts == 1 else 'ies'}"
        if run.status == RunStatus.RETRYING:
            status += f" of at most {MAX_ATTEMPTS}"
    lines = [
        f"Run {run.id} of “{run.automation_name}”",
        f"About:     {run.subject}",
        f"Event:     {TRIGGERS[run.event_type].label if run.event_type in TRIGGERS else ''}"
        f" ({run.event_type}, event {run.event_id})",
        f"Status:    {status}",
    ]
    times = [f"made {when(run.created_at, zone)}"]
    if run.started_at is not None:
        times.append(f"started {when(run.started_at, zone)}")
    if run.finished_at is not None:
        times.append(f"finished {when(run.finished_at, zone)}")
    lines.append(f"When:      {', '.join(times)}")
    if run.status in (RunStatus.RETRYING, RunStatus.PENDING) and run.next_attempt_at:
        lines.append(f"Next try:  {when(run.next_attempt_at, zone)}")
    if run.error:
        lines.append(f"Error:     {run.error}")
    if run.outcome:
        lines.append(f"Outcome:   {run.outcome}")
    if run.needs_person:
        lines += [
            "",
            "It needs a person: fix what the error says (a template, a guardian's address, a "
            "connection), then Retry now; what it did already is not done again. Or Dismiss it.",
        ]
    lines += ["", "Steps"]
    for number, step in enumerate(run.steps, start=1):
        mark = "done" if step.done else "not done yet"
        lines.append(f"  {number}. {step.action.describe()} — {mark}")
        if step.note:
            lines.append(f"     {step.note}")
        made = step.made
        if isinstance(made.get("batch_id"), int):
            lines.append(f"     Send {made['batch_id']} on the Messages page")
        if made.get("message_id"):
            lines.append(f"     Webhook {made['message_id']}")
        if isinstance(made.get("task_id"), int):
            lines.append(f"     Task {made['task_id']} on the Tasks tab")
    if not run.steps:
        lines.append("  None.")
    return "\n".join(lines)


def _stacked(table: QWidget, empty: QLabel) -> QStackedWidget:
    empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
    empty.setMargin(24)
    stack = QStackedWidget()
    stack.addWidget(table)
    stack.addWidget(empty)
    return stack


# --- the page -----------------------------------------------------------------------------------


class AutomationsPage(Page):
    key = "automations"
    title = "Automations"
    icon_name = "jobs"  # no icon of its own yet
    topics = (TOPIC, TOPIC_TASKS)
    refresh_every = 1.0  # runs may finish many times a second
    shortcut_hint = "Ctrl+N makes a new automation"

    def __init__(self, bridge: EngineBridge, parent: QWidget | None = None) -> None:
        super().__init__(bridge, parent)
        self.zone = ZoneInfo("UTC")
        self.locale = "en"
        self._runs_of: int | None = None  # the automation whose runs are listed
        self._wanted: int | None = None  # open_with's choice, until the list has it
        self._names: dict[int, str] = {}  # automation names, for the tasks they made
        # What the run that made a task was about (None: looked for, not among the runs read).
        self._subjects: dict[int, str | None] = {}
        self._loading = False  # load() chooses the automation and reads its runs itself

        self.new_button = QPushButton("New automation…")
        self.new_button.setToolTip("Have Switchboard do something when something happens (Ctrl+N)")
        self.new_button.clicked.connect(lambda: tasks.start(self.new_automation(), owner=self))
        self.actions.addWidget(self.new_button)
        QShortcut(QKeySequence.StandardKey.New, self, activated=self.new_button.click)

        intro = labels.muted(
            "When something happens at the school and the event meets the conditions, "
            "Switchboard does the actions by itself: send a message, post a webhook, or add a "
            "follow-up task. An action that fails is tried again for about three hours, then "
            "waits in the run log for a person."
        )

        # The automations, with what can be done to the one selected.
        self.model: RecordModel[AutomationSummary] = RecordModel(
            self._columns(), key=lambda summary: summary.automation.id
        )
        self.table = RecordTable(self.model)
        self.table.setSortingEnabled(False)  # recipes first, as the service lists them
        self.table.proxy.sort(-1)
        self.table.selection_changed.connect(self._automation_chosen)
        self.table.opened.connect(
            lambda summary: tasks.start(self.edit_automation(summary), owner=self)
        )
        self.table.delete_requested.connect(
            lambda summary: tasks.start(self.delete_automation(summary), owner=self)
        )
        self.summary = labels.muted()
        self.switch_button = QPushButton("Switch on")
        self.switch_button.clicked.connect(lambda: tasks.start(self.toggle_enabled(), owner=self))
        self.edit_button = QPushButton("Edit…")
        self.edit_button.setToolTip("Change its name, trigger, conditions or actions")
        self.edit_button.clicked.connect(
            lambda: tasks.start(self.edit_automation(self.selected()), owner=self)
        )
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Delete it and its run log (the tasks it made stay)")
        self.delete_button.clicked.connect(
            lambda: tasks.start(self.delete_automation(self.selected()), owner=self)
        )
        row = QHBoxLayout()
        row.addWidget(self.summary, 1)
        for button in (self.switch_button, self.edit_button, self.delete_button):
            row.addWidget(button, 0, Qt.AlignmentFlag.AlignTop)
        upper = QWidget()
        upper_layout = QVBoxLayout(upper)
        upper_layout.setContentsMargins(0, 0, 0, 0)
        upper_layout.addWidget(self.table, 1)
        upper_layout.addLayout(row)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._run_log(), "Run log")
        self.tabs.addTab(self._tasks_tab(), "Tasks")

        halves = QSplitter(Qt.Orientation.Vertical)
        halves.addWidget(upper)
        halves.addWidget(self.tabs)
        halves.setSizes([235, 485])
        halves.setChildrenCollapsible(False)
        self.notice = QLabel()  # what the last action did
        self.notice.setWordWrap(True)
        layout = QVBoxLayout(self.body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(intro)
        layout.addWidget(halves, 1)
        layout.addWidget(self.notice)
        self._show_automation_buttons(None)
        self._show_run(None)
        self._show_task_buttons(None)

    def _run_log(self) -> QWidget:
        self.runs_heading = labels.heading("Runs")
        self.run_filter = QComboBox()
        for label, status in RUN_FILTERS:
            self.run_filter.addItem(label, status)
        self.run_filter.setToolTip("Show only the runs with this status")
        self.run_filter.currentIndexChanged.connect(lambda _index: self.schedule_refresh())
        heading = QHBoxLayout()
        heading.addWidget(self.runs_heading, 1)
        heading.addWidget(QLabel("Show"))
        heading.addWidget(self.run_filter)

        self.run_model: RecordModel[Run] = RecordModel(self._run_columns())
        self.runs = RecordTable(self.run_model)
        self.runs.setSortingEnabled(False)  # newest first, as they are read
        self.runs.proxy.sort(-1)
        self.runs.selection_changed.connect(self._show_run)
        self.no_runs = labels.muted()
        self.run_stack = _stacked(self.runs, self.no_runs)
        self.run_detail = QPlainTextEdit()
        self.run_detail.setReadOnly(True)
        self.run_detail.setFont(QFont("monospace"))
        self.run_detail.setPlaceholderText(
            "Choose a run to see what it was about and each of its steps."
        )
        # The details under the runs, not beside them: a run's error and outcome are
        # sentences, and the table needs the page's width to show them.
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.run_stack)
        split.addWidget(self.run_detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([170, 220])
        split.setChildrenCollapsible(False)

        self.open_send_button = QPushButton("Open the send")
        self.open_send_button.setToolTip("See the messages this run sent, on the Messages page")
        self.open_send_button.clicked.connect(self.open_send)
        self.retry_button = QPushButton("Retry now")
        self.retry_button.setToolTip(
            "Try the run again now, from the action it stopped at; what it did is not done again"
        )
        self.retry_button.clicked.connect(lambda: tasks.start(self.retry(), owner=self))
        self.dismiss_button = QPushButton("Dismiss")
        self.dismiss_button.setToolTip("Set the run aside: it is not tried again (Retry still can)")
        self.dismiss_button.clicked.connect(lambda: tasks.start(self.dismiss(), owner=self))
        self.runs_footer = labels.muted()
        bottom = QHBoxLayout()
        bottom.addWidget(self.runs_footer, 1)
        for button in (self.open_send_button, self.retry_button, self.dismiss_button):
            bottom.addWidget(button)
        tab = QWidget()
        column = QVBoxLayout(tab)
        column.setContentsMargins(8, 8, 8, 8)
        column.addLayout(heading)
        column.addWidget(split, 1)
        column.addLayout(bottom)
        return tab

    def _tasks_tab(self) -> QWidget:
        self.show_done = QCheckBox("Show done ones too")
        self.show_done.toggled.connect(lambda _on: self.schedule_refresh())
        heading = QHBoxLayout()
        heading.addWidget(
            labels.heading("Follow-up tasks that automations made, the soonest due first"), 1
        )
        heading.addWidget(self.show_done)
        self.task_model: RecordModel[Task] = RecordModel(
            self._task_columns(), search=lambda t: t.notes
        )
        self.task_table = RecordTable(self.task_model)
        self.task_table.setSortingEnabled(False)  # the soonest due first, as they are read
        self.task_table.proxy.sort(-1)
        self.task_table.selection_changed.connect(self._show_task_buttons)
        self.task_table.opened.connect(lambda _task: tasks.start(self.mark_done(), owner=self))
        self.no_tasks = labels.muted()
        self.task_stack = _stacked(self.task_table, self.no_tasks)
        self.task_notes = labels.muted()
        self.task_notes.setTextFormat(Qt.TextFormat.PlainText)
        self.done_button = QPushButton("Mark done")
        self.done_button.clicked.connect(lambda: tasks.start(self.mark_done(), owner=self))
        bottom = QHBoxLayout()
        bottom.addWidget(self.task_notes, 1)
        bottom.addWidget(self.done_button, 0, Qt.AlignmentFlag.AlignTop)
        tab = QWidget()
        column = QVBoxLayout(tab)
        column.setContentsMargins(8, 8, 8, 8)
        column.addLayout(heading)
        column.addWidget(self.task_stack, 1)
        column.addLayout(bottom)
        return tab

    # --- columns --------------------------------------------------------------------------------

    def _columns(self) -> list[Column[AutomationSummary]]:
        def last_colour(summary: AutomationSummary) -> str | None:
            return run_state(summary.last_run)[1] if summary.last_run else None

        return [
            Column(
                "Automation",
                lambda s: s.automation.name,
                width=160,
                tooltip=lambda s: s.automation.description or s.automation.name,
            ),
            Column("When", lambda s: s.automation.trigger_label, width=200),
            Column(
                "What it does",
                lambda s: does(s.automation),
                stretch=True,
                tooltip=lambda s: does_at_length(s.automation),
            ),
            Column(
                "On",
                lambda s: on_text(s.automation),
                color=lambda s: HEALTHY if s.automation.enabled else PAUSED,
                width=42,
            ),
            Column(
                "Last run",
                lambda s: last_run_text(s, self.zone),
                color=last_colour,
                tooltip=lambda s: (s.last_run.outcome or s.last_run.error) if s.last_run else "",
                width=175,
            ),
            Column(
                "Waiting",
                lambda s: str(s.retrying) if s.retrying else "",
                right=True,
                tooltip=lambda _s: "Runs that failed and will be tried again",
                width=58,
            ),
            Column(
                "Failed",
                lambda s: str(s.failed) if s.failed else "",
                right=True,
                color=lambda s: DOWN if s.failed else None,
                tooltip=lambda _s: "Runs that gave up and need a person",
                width=52,
            ),
        ]

    def _run_columns(self) -> list[Column[Run]]:
        return [
            Column("Time", lambda r: when(r.created_at, self.zone), width=100),
            Column("About", lambda r: r.subject, width=220, tooltip=lambda r: r.subject),
            Column(
                "Status",
                lambda r: run_state(r)[0],
                color=lambda r: run_state(r)[1],
                width=105,
            ),
            Column("Tries", lambda r: str(r.attempts), right=True, width=42),
            Column("Next try", lambda r: next_try_text(r, self.zone), width=75),
            Column("Error", lambda r: r.error, width=210, tooltip=lambda r: r.error),
            Column("Outcome", lambda r: r.outcome, stretch=True, tooltip=lambda r: r.outcome),
        ]

    def _task_columns(self) -> list[Column[Task]]:
        def due(task: Task) -> str:
            return day(task.due_on, self.locale) if task.due_on else "—"

        def due_colour(task: Task) -> str | None:
            if task.done or task.due_on is None:
                return PAUSED if task.done else None
            today = datetime.now(UTC).astimezone(self.zone).date()
            return DOWN if task.due_on < today else (DEGRADED if task.due_on == today else None)

        def done(task: Task) -> str:
            if not task.done:
                return "open"
            by = f" by {task.done_by}" if task.done_by else ""
            return f"done {when(task.done_at, self.zone)}{by}"

        return [
            Column("Task", lambda t: t.title, stretch=True, tooltip=lambda t: t.notes or t.title),
            Column("Due", due, color=due_colour, sort=lambda t: t.due_on or date.max, width=110),
            Column("About", self.related, width=200, tooltip=self.related),
            Column("From", self.source, width=180),
            Column("Status", done, color=lambda t: HEALTHY if t.done else None, width=170),
        ]

    def related(self, task: Task) -> str:
        """The record a task is about, in words where the run that made it says them."""
        subject = self._subjects.get(task.run_id) if task.run_id is not None else None
        if subject:
            return subject
        if task.related_kind:
            kind = task.related_kind.replace("_", " ").capitalize()
            return f"{kind} {task.related_id}" if task.related_id is not None else kind
        return "—"

    def source(self, task: Task) -> str:
        if task.automation_id is None:
            return "added by hand"
        return self._names.get(task.automation_id, "an automation since deleted")

    # --- loading --------------------------------------------------------------------------------

    @property
    def automations(self) -> AutomationService:
        return self.bridge.services.automations

    def selected(self) -> AutomationSummary | None:
        summary: AutomationSummary | None = self.table.current_record()
        return summary

    def open_with(self, argument: str) -> None:
        """ "automations:<id>" shows that automation and its runs; ":tasks" the tasks."""
        if argument == "tasks":
            self.tabs.setCurrentIndex(1)
        elif argument.isdigit():
            self._wanted = int(argument)
            if self.table.select_key(self._wanted):
                self._wanted = None
            self.tabs.setCurrentIndex(0)
            self.schedule_refresh()

    async def load(self) -> None:
        settings = self.bridge.services.settings
        self.zone = ZoneInfo(str(settings.get("school.timezone") or "UTC"))
        self.locale = str(settings.get("school.locale") or "en")
        summaries = listed(await self.bridge.call(self.automations.automations))
        self._names = {s.automation.id: s.automation.name for s in summaries}
        self.model.set_records(summaries)
        if not summaries:
            self._runs_of = None
            self.run_model.set_records([])
            self.states.show_empty(
                "No automations yet",
                "Have Switchboard act by itself when something happens at the school: thank a "
                "family when a payment goes through, remind them of a lesson, add a follow-up "
                "task when a student joins. Make one with “New automation…”.",
                [("New automation…", self.new_button.click)],
            )
            return
        self.states.show_content()
        self._loading = True
        try:
            if self._wanted is not None and self.table.select_key(self._wanted):
                self._wanted = None
            if self.selected() is None:
                self.table.selectRow(0)
        finally:
            self._loading = False
        summary = self.selected()
        self._show_automation_buttons(summary)
        if summary is not None:
            await self.load_runs(summary)
        await self.load_tasks()

    async def load_runs(self, summary: AutomationSummary) -> None:
        automation = summary.automation
        self._runs_of = automation.id
        status = self.run_filter.currentData()
        runs: list[Run] = await self.bridge.call(
            self.automations.runs, automation.id, status=status, limit=RUN_LIMIT
        )
        if self._runs_of != automation.id:
            return  # another automation was chosen meanwhile
        self.runs_heading.setText(f"Runs of “{automation.name}”, newest first")
        self.run_model.set_records(runs)
        self.run_detail.setVisible(bool(runs))  # no empty box under the empty log
        if runs:
            self.run_stack.setCurrentWidget(self.runs)
            more = " (the newest)" if len(runs) >= RUN_LIMIT else ""
            self.runs_footer.setText(f"{len(runs)} run{'s' if len(runs) != 1 else ''}{more}")
            if self.runs.current_record() is None:
                self.runs.selectRow(0)
        else:
            self.run_stack.setCurrentWidget(self.no_runs)
            self.no_runs.setText(self._no_runs_text(summary, status is not None))
            self.runs_footer.setText("")
        self._show_run(self.runs.current_record())

    @staticmethod
    def _no_runs_text(summary: AutomationSummary, filtered: bool) -> str:
        automation = summary.automation
        if filtered:
            return "No runs of this automation have this status. Choose “Every run” above."
        trigger = _lower(automation.trigger_label)
        if not automation.enabled:
            return (
                f"“{automation.name}” has not run: it is switched off. Switch it on and it "
                f"acts the next time {trigger}; each run, and what it did, shows here."
            )
        return (
            f"“{automation.name}” has not run yet. It acts the next time {trigger}"
            + (" and its conditions hold" if automation.conditions else "")
            + "; each run, and what it did, shows here."
        )

    async def load_tasks(self) -> None:
        open_only = not self.show_done.isChecked()
        found: list[Task] = await self.bridge.call(self.automations.tasks, open_only=open_only)
        made_by_runs = {task.run_id for task in found if task.run_id is not None}
        if made_by_runs - set(self._subjects):
            # The service names no task's record; the runs that made them do.
            runs: list[Run] = await self.bridge.call(self.automations.runs, limit=1000)
            self._subjects.update({run.id: run.subject for run in runs})
            for run_id in made_by_runs - set(self._subjects):
                self._subjects[run_id] = None  # older, or deleted with its automation
        self.task_model.set_records(found)
        still_open = sum(1 for task in found if not task.done)
        if open_only:
            self.tabs.setTabText(1, f"Tasks ({still_open} open)" if still_open else "Tasks")
        if found:
            self.task_stack.setCurrentWidget(self.task_table)
            if self.task_table.current_record() is None:
                self.task_table.selectRow(0)
        else:
            self.task_stack.setCurrentWidget(self.no_tasks)
            self.no_tasks.setText(
                "No follow-up tasks yet. An automation with the action “Create a follow-up "
                "task” adds one here each time it runs — for example a welcome call when a "
                "student is added. Make one with “New automation…”."
                if not self.show_done.isChecked()
                else "No tasks at all yet: automations that create follow-up tasks add them here."
            )
        self._show_task_buttons(self.task_table.current_record())

    # --- selection ------------------------------------------------------------------------------

    def _automation_chosen(self, summary: AutomationSummary | None) -> None:
        self._show_automation_buttons(summary)
        if self._loading:
            return  # load() reads the runs of the one it chose
        if summary is not None and summary.automation.id != self._runs_of:
            self.run_model.set_records([])
            self._show_run(None)
            tasks.start(self.load_runs(summary), owner=self)

    def _show_automation_buttons(self, summary: AutomationSummary | None) -> None:
        chosen = summary is not None
        for button in (self.switch_button, self.edit_button, self.delete_button):
            button.setEnabled(chosen)
        enabled = summary is not None and summary.automation.enabled
        builtin = summary is not None and summary.automation.builtin
        self.delete_button.setToolTip(
            "A built-in recipe is switched off, not deleted"
            if builtin
            else "Delete it and its run log (the tasks it made stay)"
        )
        self.switch_button.setText("Switch off" if enabled else "Switch on")
        self.switch_button.setToolTip(
            "Stop it acting on events; runs still waiting are set aside"
            if enabled
            else "Have it act on events from now on"
        )
        self.summary.setText(about(summary, self.zone) if summary else "")

    def selected_run(self) -> Run | None:
        run: Run | None = self.runs.current_record()
        return run

    def _show_run(self, run: Run | None) -> None:
        if run is None:
            self.run_detail.clear()
        else:
            self.run_detail.setPlainText(describe_run(run, self.zone))
        self.open_send_button.setEnabled(run is not None and bool(sends_of(run)))
        self.retry_button.setEnabled(run is not None and run.status in RETRYABLE)
        self.dismiss_button.setEnabled(run is not None and run.status in DISMISSABLE)

    def _show_task_buttons(self, task: Task | None) -> None:
        self.done_button.setEnabled(task is not None)
        self.done_button.setText("Mark not done" if task is not None and task.done else "Mark done")
        self.task_notes.setText(task.notes if task is not None else "")

    # --- automation actions ---------------------------------------------------------------------

    async def _dialog(self, automation: Automation | None) -> Automation | None:
        services = self.bridge.services
        templates = await self.bridge.call(services.templates.templates)
        service = self.automations
        automation_id = automation.id if automation else None
        version = automation.version if automation else None

        async def save(draft: AutomationDraft) -> Automation:
            saved: Automation = await self.bridge.call(
                service.save, draft, automation_id=automation_id, version=version
            )
            return saved

        dialog = AutomationDialog(
            save,
            service.triggers(),
            sorted((template.name for template in templates), key=str.casefold),
            automation,
            self,
        )
        if not await run_dialog(dialog):
            dialog.deleteLater()
            return None
        saved: Automation = dialog.saved
        dialog.deleteLater()
        self._wanted = saved.id
        self.schedule_refresh()
        return saved

    async def new_automation(self) -> Automation | None:
        saved = await self._dialog(None)
        if saved is not None:
            state = "switched on" if saved.enabled else "switched off: switch it on to use it"
            self.notice.setText(f"Made “{saved.name}”, {state}.")
        return saved

    async def edit_automation(self, summary: AutomationSummary | None) -> Automation | None:
        if summary is None:
            return None
        try:  # as it is now, with the version that guards against overwriting a change
            current: Automation = await self.bridge.call(
                self.automations.automation, summary.automation.id
            )
        except SwitchboardError as exc:
            tell(self, "Cannot be changed", str(exc))
            self.schedule_refresh()
            return None
        saved = await self._dialog(current)
        if saved is not None:
            self.notice.setText(
                f"Saved “{saved.name}”; runs already made do the actions as they were."
            )
        return saved

    async def toggle_enabled(self) -> Automation | None:
        summary = self.selected()
        if summary is None:
            return None
        automation = summary.automation
        self.switch_button.setEnabled(False)
        try:
            changed: Automation = await self.bridge.call(
                self.automations.set_enabled, automation.id, not automation.enabled
            )
        except SwitchboardError as exc:
            tell(self, "Not switched", str(exc))
            return None
        finally:
            self.switch_button.setEnabled(True)
        self.notice.setText(
            f"“{changed.name}” is switched on: it acts the next time "
            f"{_lower(changed.trigger_label)}."
            if changed.enabled
            else f"“{changed.name}” is switched off; runs still waiting are set aside."
        )
        self.schedule_refresh()
        return changed

    async def delete_automation(self, summary: AutomationSummary | None) -> bool:
        if summary is None:
            return False
        automation = summary.automation
        asked = await confirm(
            self,
            "Delete automation",
            f"Delete “{automation.name}” and its run log? The tasks it made stay. This cannot "
            "be undone; to stop it for a while, switch it off instead.",
            "Delete",
        )
        if not asked:
            return False
        try:
            await self.bridge.call(self.automations.delete, automation.id)
        except SwitchboardError as exc:
            tell(self, "Not deleted", str(exc))
            return False
        self.notice.setText(f"Deleted “{automation.name}”.")
        self.schedule_refresh()
        return True

    # --- run actions ----------------------------------------------------------------------------

    def open_send(self) -> None:
        run = self.selected_run()
        sends = sends_of(run) if run is not None else []
        if sends:
            self.navigate.emit(f"messages:{sends[0]}")

    async def retry(self) -> Run | None:
        run = self.selected_run()
        if run is None or run.status not in RETRYABLE:
            return None
        self.retry_button.setEnabled(False)
        try:
            again: Run = await self.bridge.call(self.automations.retry, run.id)
        except SwitchboardError as exc:
            tell(self, "Not retried", str(exc))
            self._show_run(self.selected_run())
            return None
        self.notice.setText(f"Run {run.id} is being tried again now, from where it stopped.")
        self.schedule_refresh()
        return again

    async def dismiss(self) -> Run | None:
        run = self.selected_run()
        if run is None or run.status not in DISMISSABLE:
            return None
        self.dismiss_button.setEnabled(False)
        try:
            dismissed: Run = await self.bridge.call(self.automations.dismiss, run.id)
        except SwitchboardError as exc:
            tell(self, "Not dismissed", str(exc))
            self._show_run(self.selected_run())
            return None
        self.notice.setText(f"Run {run.id} is set aside; Retry now still tries it again.")
        self.schedule_refresh()
        return dismissed

    # --- task actions ---------------------------------------------------------------------------

    async def mark_done(self) -> Task | None:
        task: Task | None = self.task_table.current_record()
        if task is None:
            return None
        self.done_button.setEnabled(False)
        try:
            changed: Task = await self.bridge.call(
                self.automations.complete_task, task.id, by=office_user(), done=not task.done
            )
        except SwitchboardError as exc:
            tell(self, "Not changed", str(exc))
            return None
        finally:
            self.done_button.setEnabled(True)
        self.notice.setText(
            f"“{changed.title}” is done." if changed.done else f"“{changed.title}” is open again."
        )
        self.schedule_refresh()
        return changed
