"""The running desktop app: it owns the engine, the bridge, the theme, the main window and the
tray, and moves between the school's database and the demo school's.

Like Vorta's application object, this is the one place that wires app-wide signals; pages only
subscribe to the bridge.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtWidgets import QApplication

from app.config import Config, demo_config
from app.domain.access import Principal, Role
from app.domain.errors import SwitchboardError
from app.engine import Engine, EngineError, EngineState
from app.logs import set_level
from app.services.access import acting_as
from app.services.backup import RestoreReport, restore
from app.services.calendar_schedule import JOB_PREFIX
from app.services.calendar_sync import TOPIC as TOPIC_CALENDAR_SYNC
from app.services.health import TOPIC_ALERTS
from app.services.settings import TOPIC_PREFIX
from app.ui import tasks
from app.ui.bridge import EngineBridge
from app.ui.dialogs import run_dialog, tell
from app.ui.icons import app_icon
from app.ui.idle import IdleWatch
from app.ui.main_window import MainWindow
from app.ui.theme import ThemeController
from app.ui.tray import Tray
from app.ui.tray import tooltip as tray_tooltip
from app.ui.welcome import WelcomeChoice, WelcomeDialog
from app.views import build_pages
from app.views.backups import BackupsPage

log = logging.getLogger("switchboard.ui")

# Who the window acts as while nobody is signed in (locked, signed out): pages can still read,
# and any change is refused by the services.
NOBODY = Principal("nobody signed in", Role.VIEWER)
# The demo school is invented data: whoever explores it may try everything.
DEMO_VISITOR = Principal("demo visitor", Role.ADMINISTRATOR)


def settle_heap() -> None:
    """Leave what is alive now (modules, the window, the engine's services) out of future
    garbage collections. A full collection stops every thread while it scans the heap: measured
    at 125-160 ms with the dashboard busy, enough to freeze the window (bench ui-stall)."""
    gc.collect()
    gc.freeze()


class Shell(QObject):
    def __init__(
        self,
        app: QApplication,
        home: Config,
        *,
        demo: bool = False,
        use_tray: bool = True,
        interactive: bool = True,
        sign_in: bool = True,
    ) -> None:
        super().__init__(app)
        self.app = app
        self.home = home
        self.config = demo_config(home) if demo else home
        self.interactive = interactive
        self.sign_in = sign_in  # False: the window acts as the service user (screenshots, tests)
        self.principal: Principal | None = None  # who signed in to the school's own database
        self.idle: IdleWatch | None = None
        self.theme = ThemeController(app)
        self.tray = Tray(app_icon(), self) if use_tray and Tray.available() else None
        if self.tray is not None:
            self.tray.open_requested.connect(self.bring_forward)
            self.tray.pause_toggled.connect(self.set_paused)
            self.tray.quit_requested.connect(self.quit)
        self.engine: Engine | None = None
        self.bridge: EngineBridge | None = None
        self.tray_text = "Switchboard"
        self.window: MainWindow | None = None
        self.gui_state = QSettings(
            str(home.paths.config_dir / "window.ini"), QSettings.Format.IniFormat
        )

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> MainWindow:
        """Start the engine on the current database and open the main window (raises
        EngineError if the engine cannot start). Used once, before the window exists."""
        engine = Engine(self.config)
        engine.start()
        return self._open(engine)

    def _open(self, engine: Engine) -> MainWindow:
        self.engine = engine
        bridge = self.bridge = EngineBridge(engine)
        settings = bridge.services.settings
        self.theme.set_mode(settings.get("appearance.theme"))
        set_level(settings.get("diagnostics.log_level"))
        bridge.event.connect(self._on_event)
        bridge.engine_state.connect(self._on_engine_state)
        pages = build_pages(bridge)
        window = self.window = MainWindow(bridge, self.theme, pages, demo=self.config.demo)
        window.close_requested.connect(self._on_close_requested)
        window.lock_requested.connect(lambda: self.lock_window("Locked. Sign in to go on."))
        window.sign_out_requested.connect(self.sign_out)
        window.sign_in_panel.signed_in.connect(self._signed_in)
        window.leave_demo_requested.connect(lambda: tasks.start(self.switch_to(demo=False), self))
        for page in window.pages:
            page.demo_requested.connect(lambda: tasks.start(self.switch_to(demo=True), self))
            if isinstance(page, BackupsPage):
                page.restore_requested.connect(
                    lambda path: tasks.start(self.restore_from(Path(path)), self)
                )
        self._update_title()
        geometry = self.gui_state.value("geometry")
        if geometry is not None:
            window.restoreGeometry(geometry)
        if self.tray is not None:
            self.tray.show()
            self.tray.set_paused(engine.state is EngineState.PAUSED)
        settle_heap()
        window.show()
        self._tray_timer = QTimer(window)
        self._tray_timer.setInterval(60_000)  # the next sync's time moves on by itself
        self._tray_timer.timeout.connect(self._refresh_tray_text)
        self._tray_timer.start()
        self._refresh_tray_text()
        if self.config.demo:
            bridge.principal = DEMO_VISITOR
            self._ready()
        elif not self.sign_in:
            self._ready()
        elif self.principal is not None:  # back from the demo school: still signed in
            self._signed_in(self.principal)
        else:
            bridge.principal = NOBODY
            window.lock()
            tasks.start(self.ask_to_sign_in(), owner=window)
        return window

    def _ready(self) -> None:
        """The window is usable: offer what a first start offers."""
        if self.interactive and self.window is not None:
            tasks.start(self.after_start(), owner=self.window)

    # --- signing in -----------------------------------------------------------------------------

    async def ask_to_sign_in(self) -> None:
        """Show the first run's form while nobody exists, else the sign-in form."""
        if self.bridge is None or self.window is None:
            return
        first_run = await self.bridge.call(self.bridge.services.users.needs_administrator)
        if self.window is not None and self.principal is None:
            self.window.lock(first_run=first_run)

    def _signed_in(self, principal: Principal) -> None:
        first = self.principal is None or self.window is None or not self.window.locked
        self.principal = principal
        if self.bridge is None or self.window is None:
            return
        self.bridge.principal = principal
        self.window.unlock(principal)
        self._watch_idle()
        log.info("signed in", extra={"user": principal.name, "role": principal.role.value})
        if first:
            self._ready()

    def lock_window(self, reason: str) -> None:
        """Hide the pages until someone signs in again (the same person or another)."""
        if self.window is None or self.bridge is None or self.principal is None:
            return
        if self.window.locked or self.config.demo:
            return
        self.bridge.principal = NOBODY
        self.window.lock(reason=reason, name=self.principal.name)

    def sign_out(self) -> None:
        if self.window is None or self.bridge is None:
            return
        self.principal = None
        self.bridge.principal = NOBODY
        self.window.show_signed_in(None)
        self.window.lock(reason="Signed out. Sign in to go on.")

    def _watch_idle(self) -> None:
        if self.bridge is None:
            return
        minutes = int(self.bridge.services.settings.get("security.idle_lock_minutes"))
        if self.idle is None:
            self.idle = IdleWatch(self.app, minutes)
            self.idle.idle.connect(self._idle)
            self.idle.screen_locked.connect(
                lambda: self.lock_window("Locked because the screen was locked. Sign in to go on.")
            )
        else:
            self.idle.set_minutes(minutes)

    def _idle(self) -> None:
        minutes = (
            0
            if self.bridge is None
            else self.bridge.services.settings.get("security.idle_lock_minutes")
        )
        unit = "minute" if minutes == 1 else "minutes"
        self.lock_window(f"Locked after {minutes} {unit} without use. Sign in to go on.")

    def _close_window(self) -> Engine | None:
        """Save and close the window and the bridge; hand back the engine, still running."""
        if self.window is not None:
            self.gui_state.setValue("geometry", self.window.saveGeometry())
            self.window.hide()
            self.window.deleteLater()
            self.window = None
        if self.bridge is not None:
            self.bridge.close()
            self.bridge.deleteLater()
            self.bridge = None
        engine, self.engine = self.engine, None
        return engine

    def stop(self) -> None:
        """Close the window and stop the engine (the app itself keeps running)."""
        engine = self._close_window()
        if engine is not None:
            engine.stop()

    def quit(self) -> None:
        """Leave: the window goes at once; the engine gets its time to stop; the app ends even
        if stopping fails."""
        try:
            self.stop()
        except Exception:
            log.exception("the engine did not stop cleanly")
        finally:
            if self.tray is not None:
                self.tray.hide()
            self.app.quit()

    async def switch_to(self, *, demo: bool) -> None:
        """Leave for the demo school's database or come back to the school's own. Engines stop
        and start off the GUI thread; if the new database cannot be opened, the previous one is
        opened again and the reason shown."""
        target = demo_config(self.home) if demo else self.home
        if target == self.config:
            return
        previous = self.config
        engine = self._close_window()
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        problem = ""
        for config in (target, previous):
            self.config = config
            candidate = Engine(config)
            try:
                await asyncio.to_thread(candidate.start)
            except EngineError as exc:
                problem = problem or str(exc)
                continue
            window = self._open(candidate)
            if problem:
                tell(window, "That database could not be opened", problem)
            return
        tell(None, "Switchboard cannot open a database", f"{problem}\n\nSwitchboard will close.")
        self.quit()

    async def restore_from(self, backup: Path) -> RestoreReport | None:
        """Replace the database with a backup: stop the engine (nothing may have the database
        open while it is replaced), restore as the person signed in, and start again on the
        result. If the restore is refused the database is as it was and opens again."""
        principal = self.bridge.principal if self.bridge is not None else None
        engine = self._close_window()
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        report: RestoreReport | None = None
        problem = ""
        try:
            if principal is None:
                report = await restore(self.config, backup)
            else:
                with acting_as(principal):
                    report = await restore(self.config, backup)
        except SwitchboardError as exc:
            problem = str(exc)
        if report is not None:
            self.principal = None  # the restored database has its own users: sign in to it
        candidate = Engine(self.config)
        try:
            await asyncio.to_thread(candidate.start)
        except EngineError as exc:
            tell(
                None,
                "Switchboard cannot open the database",
                f"{problem or exc}\n\nSwitchboard will close.",
            )
            self.quit()
            return None
        window = self._open(candidate)
        if report is None:
            tell(window, "The database was not restored", problem)
        else:
            tell(window, "The database was restored", report.sentence, problem=False)
        return report

    # --- after start ----------------------------------------------------------------------------

    async def after_start(self) -> None:
        if self.bridge is None or self.window is None:
            return
        bridge = self.bridge
        services = bridge.services
        overview = await bridge.call(services.school.overview, datetime.now(UTC))
        if self.config.demo:
            if overview.is_empty:
                await self.seed_demo()
            return
        if services.settings.state("welcomed"):
            return
        await bridge.call(services.settings.set_state, "welcomed", True)
        if not overview.is_empty:
            return
        choice = await run_dialog(WelcomeDialog(self.window))
        if choice == WelcomeChoice.DEMO:
            # Its own task: this one belongs to the window that the switch closes.
            tasks.start(self.switch_to(demo=True), owner=self)

    async def seed_demo(self) -> None:
        from app.services.demo import seed_demo

        assert self.bridge is not None
        assert self.window is not None
        overview = self.window.page("overview")
        overview.states.show_busy("Preparing the demo school…")
        try:
            await self.bridge.call(seed_demo, self.bridge.services)
        except SwitchboardError as exc:
            overview.states.show_error(f"The demo school could not be prepared: {exc}")

    # --- reacting -------------------------------------------------------------------------------

    def bring_forward(self) -> None:
        if self.window is not None:
            self.window.bring_forward()

    def set_paused(self, paused: bool) -> None:
        if self.engine is not None:
            if paused:
                self.engine.pause()
            else:
                self.engine.resume()

    def _on_engine_state(self, state: str) -> None:
        if self.tray is not None:
            self.tray.set_paused(state == EngineState.PAUSED.value)
        self._refresh_tray_text()

    def _refresh_tray_text(self) -> None:
        if self.bridge is not None and self.window is not None:
            tasks.start(self.update_tray_text(), owner=self.window)

    async def update_tray_text(self) -> str:
        """The tray's tooltip: when the calendars were last synced and sync next."""
        bridge = self.bridge
        if bridge is None:
            return self.tray_text
        services = bridge.services
        try:
            links = await bridge.call(services.calendar_sync.calendars)
            runs = await bridge.call(services.jobs.next_runs)
        except SwitchboardError:
            return self.tray_text
        finished = [link.finished_at for link in links if link.finished_at is not None]
        upcoming = [run.at for run in runs if run.job_id.startswith(JOB_PREFIX) and run.at]
        paused = bridge.engine.state is EngineState.PAUSED
        zone = ZoneInfo(str(services.settings.get("school.timezone")) or "UTC")
        self.tray_text = tray_tooltip(
            max(finished, default=None), min(upcoming, default=None), zone, paused
        )
        if self.tray is not None:
            self.tray.set_tooltip(self.tray_text)
        return self.tray_text

    def _on_event(self, topic: str, payload: dict[str, Any]) -> None:
        if topic == TOPIC_CALENDAR_SYNC and payload.get("state") not in (None, "running"):
            self._refresh_tray_text()
            return
        if topic == TOPIC_ALERTS and payload.get("message") and self.tray is not None:
            self.tray.notify("Switchboard", str(payload["message"]))
            return
        if not topic.startswith(TOPIC_PREFIX):
            return
        if payload.get("key") == "appearance.theme":
            self.theme.set_mode(str(payload.get("value")))
        elif payload.get("key") == "school.name":
            self._update_title()
        elif payload.get("key") == "diagnostics.log_level":
            set_level(str(payload.get("value")))
        elif payload.get("key") == "security.idle_lock_minutes" and self.idle is not None:
            self.idle.set_minutes(int(payload.get("value") or 0))

    def _update_title(self) -> None:
        if self.window is None or self.bridge is None:
            return
        name = self.bridge.services.settings.get("school.name")
        suffix = " (demo)" if self.config.demo else ""
        self.window.setWindowTitle(f"{name}{suffix} — Switchboard")

    def _on_close_requested(self) -> None:
        keep = self.bridge is not None and self.bridge.services.settings.get("window.close_to_tray")
        if self.tray is None or not keep:
            self.quit()
            return
        assert self.window is not None
        self.window.hide()
        if not self.gui_state.value("tray_notice_shown", False, type=bool):
            self.tray.notify(
                "Switchboard is still running",
                "Background work goes on. Open Switchboard or quit it from this icon.",
            )
            self.gui_state.setValue("tray_notice_shown", True)

    @property
    def log_path(self) -> Path:
        return self.config.paths.log_dir / "switchboard.log"
