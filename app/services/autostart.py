"""Start Switchboard when the user signs in to this computer.

Whether the app starts at sign-in is a fact about this computer and this user, not about the
school's (possibly shared) database, so it is no row in the settings table: it is read from and
written to the operating system's own registration, the one the system's "startup apps" list
shows and the Windows installer's task writes too.

- Linux and other XDG desktops: `$XDG_CONFIG_HOME/autostart/switchboard.desktop` (XDG Autostart
  specification; `~/.config` when the variable is unset or not an absolute path).
- macOS: the LaunchAgent `~/Library/LaunchAgents/org.switchboard.app.plist`, run at load.
- Windows: the value "Switchboard" under HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run
  (packaging/windows/switchboard.iss writes and removes the same value).

The command registered is this program: the frozen executable with `gui`, or, run from source,
`python -m app gui`.
"""

from __future__ import annotations

import configparser
import os
import plistlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from app.domain.errors import SwitchboardError

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "Switchboard"
LAUNCH_AGENT_LABEL = "org.switchboard.app"
DESKTOP_FILE = "switchboard.desktop"

# Characters the Desktop Entry specification reserves in an Exec argument: such an argument is
# written in double quotes, inside which these four are escaped with a backslash.
_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")
_EXEC_ESCAPED = set('"`$\\')


class AutostartError(SwitchboardError):
    """Starting at sign-in could not be read or changed in the operating system."""


class RunKey(Protocol):
    """The current user's Run key in the Windows registry (a fake one in tests)."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, command: str) -> None: ...

    def delete(self, name: str) -> None: ...


def launch_command(*, frozen: bool | None = None, executable: str | None = None) -> list[str]:
    """The command that opens the desktop app as this program is installed."""
    if frozen is None:
        frozen = bool(getattr(sys, "frozen", False))
    program = executable or sys.executable
    # The CLI has no option to start minimised to the tray; `gui` is what the menu entry runs.
    return [program, "gui"] if frozen else [program, "-m", "app", "gui"]


def desktop_exec(command: Sequence[str]) -> str:
    """`command` as the value of a desktop entry's Exec key: reserved characters quoted as the
    Desktop Entry specification says, then backslashes escaped again for the string value."""
    words = []
    for word in command:
        if word and not _EXEC_RESERVED.intersection(word):
            quoted = word
        else:
            quoted = '"' + "".join("\\" + c if c in _EXEC_ESCAPED else c for c in word) + '"'
        words.append(quoted.replace("\\", "\\\\").replace("%", "%%"))
    return " ".join(words)


class Autostart:
    """This user's registration to start Switchboard at sign-in, on this computer.

    `platform`, `home`, `environ`, `registry` and `command` default to this computer's; tests
    give their own.
    """

    def __init__(
        self,
        *,
        platform: str | None = None,
        home: Path | None = None,
        environ: Mapping[str, str] | None = None,
        registry: RunKey | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.platform = platform or sys.platform
        self.home = home if home is not None else Path.home()
        self.environ = environ if environ is not None else os.environ
        self._registry = registry
        self.command = list(command) if command is not None else launch_command()

    @property
    def where(self) -> str:
        """Where the registration lives, in words a person can look up."""
        if self.platform == "win32":
            return f"HKEY_CURRENT_USER\\{RUN_KEY}, value {RUN_VALUE}"
        return str(self.path)

    @property
    def path(self) -> Path:
        """The file that registers Switchboard (not on Windows, where it is a registry value)."""
        if self.platform == "darwin":
            return self.home / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"
        config = self.environ.get("XDG_CONFIG_HOME", "")
        base = Path(config) if config and Path(config).is_absolute() else self.home / ".config"
        return base / "autostart" / DESKTOP_FILE

    def is_enabled(self) -> bool:
        try:
            if self.platform == "win32":
                return self.registry().get(RUN_VALUE) is not None
            if self.platform == "darwin":
                return self._launch_agent_enabled()
            return self._desktop_entry_enabled()
        except OSError as exc:
            raise self._error("find out whether Switchboard starts", exc) from exc

    def enable(self) -> None:
        try:
            if self.platform == "win32":
                self.registry().set(RUN_VALUE, subprocess.list2cmdline(self.command))
            elif self.platform == "darwin":
                self._write(plistlib.dumps(self._launch_agent()))
            else:
                self._write(self._desktop_entry().encode("utf-8"))
        except OSError as exc:
            raise self._error("set Switchboard to start", exc) from exc

    def disable(self) -> None:
        try:
            if self.platform == "win32":
                self.registry().delete(RUN_VALUE)
            else:
                self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error("stop Switchboard from starting", exc) from exc

    def registry(self) -> RunKey:
        if self._registry is None:
            self._registry = _windows_run_key()
        return self._registry

    def _error(self, what: str, exc: OSError) -> AutostartError:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return AutostartError(
            f"Could not {what} when you sign in ({reason}): check that you may change "
            f"{self.where}, or use your system's own startup settings."
        )

    def _write(self, content: bytes) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.new")
        partial.write_bytes(content)
        partial.replace(path)

    def _desktop_entry(self) -> str:
        return (
            "[Desktop Entry]\n"
            "Type=Application\n"
            "Name=Switchboard\n"
            "Comment=Started when you sign in (Switchboard's Settings page turns this off)\n"
            f"Exec={desktop_exec(self.command)}\n"
            "Icon=switchboard\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n"
        )

    def _desktop_entry_enabled(self) -> bool:
        path = self.path
        if not path.exists():
            return False
        # A desktop's own startup-apps settings may switch the entry off in place.
        entry = configparser.ConfigParser(interpolation=None, strict=False)
        entry.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        try:
            entry.read_string(path.read_text("utf-8"), str(path))
        except (configparser.Error, UnicodeDecodeError):
            return True  # a file the desktop cannot read either; it is there, so say so
        section = entry["Desktop Entry"] if entry.has_section("Desktop Entry") else {}
        hidden = section.get("Hidden", "false").strip().lower() == "true"
        switched_off = section.get("X-GNOME-Autostart-enabled", "true").strip().lower() == "false"
        return not (hidden or switched_off)

    def _launch_agent(self) -> dict[str, object]:
        return {
            "Label": LAUNCH_AGENT_LABEL,
            "ProgramArguments": list(self.command),
            "RunAtLoad": True,
            # Only in a signed-in desktop session, not at an SSH login.
            "LimitLoadToSessionType": "Aqua",
            "ProcessType": "Interactive",
        }

    def _launch_agent_enabled(self) -> bool:
        path = self.path
        if not path.exists():
            return False
        try:
            agent = plistlib.loads(path.read_bytes())
        except plistlib.InvalidFileException:
            return True  # launchd cannot read it either; it is there, so say so
        return bool(agent.get("RunAtLoad")) and not agent.get("Disabled", False)


if sys.platform == "win32":
    import winreg

    class _WindowsRunKey:
        """HKEY_CURRENT_USER\\...\\Run through winreg."""

        def get(self, name: str) -> str | None:
            try:
                with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
                    value, _kind = winreg.QueryValueEx(key, name)
            except FileNotFoundError:
                return None
            return str(value)

        def set(self, name: str, command: str) -> None:
            with winreg.CreateKeyEx(
                winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE
            ) as key:
                winreg.SetValueEx(key, name, 0, winreg.REG_SZ, command)

        def delete(self, name: str) -> None:
            try:
                with winreg.OpenKey(
                    winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE
                ) as key:
                    winreg.DeleteValue(key, name)
            except FileNotFoundError:
                pass

    def _windows_run_key() -> RunKey:
        return _WindowsRunKey()

else:

    def _windows_run_key() -> RunKey:
        raise AutostartError(
            "This is not Windows, so there is no Run key to use: start Switchboard at sign-in "
            "with this system's own startup settings."
        )
