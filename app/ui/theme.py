"""Light and dark themes that follow the operating system unless the user picks one, and the
colours that carry meaning everywhere: green healthy, amber degraded, red down, grey paused.

Signals (ThemeController):
    changed(bool): the theme was applied again; True when it is dark.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

HEALTHY = "#2da44e"
DEGRADED = "#bf8700"
DOWN = "#cf222e"
PAUSED = "#8c959f"


@dataclass(frozen=True)
class Colors:
    window: str
    base: str
    alternate: str
    text: str
    muted: str
    button: str
    highlight: str
    highlighted_text: str
    border: str
    sidebar: str
    card: str
    link: str


LIGHT = Colors(
    window="#f6f8fa",
    base="#ffffff",
    alternate="#f6f8fa",
    text="#1f2328",
    muted="#59636e",
    button="#f3f4f6",
    highlight="#0969da",
    highlighted_text="#ffffff",
    border="#d1d9e0",
    sidebar="#eef1f4",
    card="#ffffff",
    link="#0969da",
)
DARK = Colors(
    window="#0d1117",
    base="#151b23",
    alternate="#1a212b",
    text="#e6edf3",
    muted="#9198a1",
    button="#212830",
    highlight="#1f6feb",
    highlighted_text="#ffffff",
    border="#3d444d",
    sidebar="#10151c",
    card="#151b23",
    link="#4493f8",
)


def _palette(colors: Colors) -> QPalette:
    palette = QPalette()
    role = QPalette.ColorRole
    for name, value in (
        (role.Window, colors.window),
        (role.Base, colors.base),
        (role.AlternateBase, colors.alternate),
        (role.Text, colors.text),
        (role.WindowText, colors.text),
        (role.ButtonText, colors.text),
        (role.Button, colors.button),
        (role.Highlight, colors.highlight),
        (role.HighlightedText, colors.highlighted_text),
        (role.ToolTipBase, colors.card),
        (role.ToolTipText, colors.text),
        (role.PlaceholderText, colors.muted),
        (role.Link, colors.link),
        (role.Mid, colors.border),
    ):
        palette.setColor(name, QColor(value))
    disabled = QPalette.ColorGroup.Disabled
    for name in (role.Text, role.WindowText, role.ButtonText):
        palette.setColor(disabled, name, QColor(colors.muted))
    return palette


def _stylesheet(colors: Colors) -> str:
    return f"""
    #Sidebar {{ background: {colors.sidebar}; border: none; border-right: 1px solid {colors.border};
                outline: 0; padding-top: 8px; }}
    #Sidebar::item {{ padding: 9px 12px; border-radius: 6px; margin: 2px 8px; border: none; }}
    #Sidebar::item:selected {{ background: {colors.highlight}; color: {colors.highlighted_text}; }}
    #Sidebar::item:hover:!selected {{ background: {colors.border}; }}
    #PageTitle {{ font-size: 20px; font-weight: 600; }}
    #Muted {{ color: {colors.muted}; }}
    #Card {{ background: {colors.card}; border: 1px solid {colors.border}; border-radius: 8px; }}
    #Card[chosen="true"] {{ border: 2px solid {colors.highlight}; }}
    #Card QPushButton {{ padding: 3px 6px; }}
    #CardValue {{ font-size: 24px; font-weight: 600; }}
    #CardLabel {{ color: {colors.muted}; }}
    #Banner {{ background: {colors.alternate}; border: 1px solid {colors.border};
               border-radius: 6px; padding: 6px 10px; }}
    #DemoBanner {{ background: #fff8c5; color: #3b2300; border: 1px solid #d4a72c;
                   border-radius: 6px; padding: 6px 10px; }}
    #FieldError {{ color: {DOWN}; }}
    #EmptyTitle {{ font-size: 16px; font-weight: 600; }}
    QTableView {{ gridline-color: {colors.border}; }}
    """


def is_dark(app: QApplication, mode: str) -> bool:
    if mode == "dark":
        return True
    if mode == "light":
        return False
    return app.styleHints().colorScheme() == Qt.ColorScheme.Dark


class ThemeController(QObject):
    changed = Signal(bool)

    def __init__(self, app: QApplication, mode: str = "system") -> None:
        super().__init__(app)
        self._app = app
        self._mode = mode
        self.dark = False
        app.setStyle("Fusion")
        app.styleHints().colorSchemeChanged.connect(self._on_system_change)
        self.apply()

    @property
    def colors(self) -> Colors:
        return DARK if self.dark else LIGHT

    def set_mode(self, mode: str) -> None:
        if mode != self._mode:
            self._mode = mode
            self.apply()

    def apply(self) -> None:
        self.dark = is_dark(self._app, self._mode)
        self._app.setPalette(_palette(self.colors))
        self._app.setStyleSheet(_stylesheet(self.colors))
        self.changed.emit(self.dark)

    def _on_system_change(self, _scheme: Qt.ColorScheme) -> None:
        if self._mode == "system":
            self.apply()
