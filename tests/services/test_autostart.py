"""Starting at sign-in is the operating system's own registration for this user: an XDG
autostart entry on Linux, a LaunchAgent on macOS, the Run key's value on Windows. Every path
here is under tmp_path and the Windows registry is a fake one, so nothing of this computer's is
touched."""

from __future__ import annotations

import configparser
import plistlib
from pathlib import Path

import pytest

from app.services.autostart import (
    RUN_VALUE,
    Autostart,
    AutostartError,
    desktop_exec,
    launch_command,
)

FROZEN = ["/opt/switchboard/switchboard", "gui"]


def _entry(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text("utf-8"))
    return parser["Desktop Entry"]


class FakeRunKey:
    """HKCU\\...\\Run as a dict; `refuse` makes every change fail as a locked-down policy does."""

    def __init__(self, values: dict[str, str] | None = None, *, refuse: bool = False) -> None:
        self.values = dict(values or {})
        self.refuse = refuse

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, command: str) -> None:
        if self.refuse:
            raise PermissionError(13, "Access is denied")
        self.values[name] = command

    def delete(self, name: str) -> None:
        if self.refuse:
            raise PermissionError(13, "Access is denied")
        self.values.pop(name, None)


# --- the command registered --------------------------------------------------------------------


def test_a_frozen_program_registers_itself_with_the_gui_command() -> None:
    assert launch_command(frozen=True, executable="/opt/sb/switchboard") == [
        "/opt/sb/switchboard",
        "gui",
    ]


def test_run_from_source_it_registers_python_dash_m_app_gui() -> None:
    assert launch_command(frozen=False, executable="/venv/bin/python") == [
        "/venv/bin/python",
        "-m",
        "app",
        "gui",
    ]


def test_exec_values_quote_spaces_and_escape_what_the_desktop_spec_reserves() -> None:
    assert desktop_exec(["/opt/switchboard/switchboard", "gui"]) == (
        "/opt/switchboard/switchboard gui"
    )
    assert desktop_exec(["/home/ann/My Apps/switchboard", "gui"]) == (
        '"/home/ann/My Apps/switchboard" gui'
    )
    # Inside quotes $ is escaped with a backslash, and that backslash is escaped again for the
    # string value; % is doubled (field codes).
    assert desktop_exec(["/srv/$x/100%/sb"]) == '"/srv/\\\\$x/100%%/sb"'


# --- Linux: XDG autostart ----------------------------------------------------------------------


def test_linux_enable_writes_an_autostart_entry_in_xdg_config_home(tmp_path: Path) -> None:
    config_home = tmp_path / "config"
    autostart = Autostart(
        platform="linux",
        home=tmp_path / "home",
        environ={"XDG_CONFIG_HOME": str(config_home)},
        command=FROZEN,
    )
    assert not autostart.is_enabled()
    autostart.enable()
    path = config_home / "autostart" / "switchboard.desktop"
    assert autostart.path == path
    entry = _entry(path)
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Switchboard"
    assert entry["Exec"] == "/opt/switchboard/switchboard gui"
    assert entry["X-GNOME-Autostart-enabled"] == "true"
    assert autostart.is_enabled()
    assert not (tmp_path / "home").exists()


def test_linux_without_an_absolute_xdg_config_home_uses_dot_config(tmp_path: Path) -> None:
    for environ in ({}, {"XDG_CONFIG_HOME": ""}, {"XDG_CONFIG_HOME": "relative/config"}):
        autostart = Autostart(platform="linux", home=tmp_path, environ=environ, command=FROZEN)
        assert autostart.path == tmp_path / ".config" / "autostart" / "switchboard.desktop"
    autostart.enable()
    assert (tmp_path / ".config" / "autostart" / "switchboard.desktop").is_file()


def test_linux_disable_removes_the_entry_and_is_harmless_when_there_is_none(
    tmp_path: Path,
) -> None:
    autostart = Autostart(platform="linux", home=tmp_path, environ={}, command=FROZEN)
    autostart.disable()
    autostart.enable()
    autostart.disable()
    assert not autostart.path.exists()
    assert not autostart.is_enabled()


@pytest.mark.parametrize("switch", ["Hidden=true", "X-GNOME-Autostart-enabled=false"])
def test_linux_an_entry_the_desktop_switched_off_counts_as_off(tmp_path: Path, switch: str) -> None:
    autostart = Autostart(platform="linux", home=tmp_path, environ={}, command=FROZEN)
    autostart.enable()
    text = autostart.path.read_text("utf-8").replace("X-GNOME-Autostart-enabled=true\n", "")
    autostart.path.write_text(text + switch + "\n", "utf-8")
    assert not autostart.is_enabled()
    autostart.enable()
    assert autostart.is_enabled()


def test_linux_a_folder_that_cannot_be_written_gives_a_plain_error(tmp_path: Path) -> None:
    blocker = tmp_path / "config"
    blocker.write_text("a file where the config folder should be")
    autostart = Autostart(
        platform="linux", home=tmp_path, environ={"XDG_CONFIG_HOME": str(blocker)}, command=FROZEN
    )
    with pytest.raises(AutostartError) as caught:
        autostart.enable()
    message = str(caught.value)
    assert message.startswith("Could not set Switchboard to start when you sign in (")
    assert str(blocker / "autostart" / "switchboard.desktop") in message
    assert "\n" not in message


# --- macOS: LaunchAgent ------------------------------------------------------------------------


def test_macos_enable_writes_a_launch_agent_that_runs_at_load(tmp_path: Path) -> None:
    command = ["/Applications/Switchboard.app/Contents/MacOS/switchboard", "gui"]
    autostart = Autostart(platform="darwin", home=tmp_path, command=command)
    assert not autostart.is_enabled()
    autostart.enable()
    path = tmp_path / "Library" / "LaunchAgents" / "org.switchboard.app.plist"
    agent = plistlib.loads(path.read_bytes())
    assert agent["Label"] == "org.switchboard.app"
    assert agent["ProgramArguments"] == command
    assert agent["RunAtLoad"] is True
    assert agent["LimitLoadToSessionType"] == "Aqua"
    assert autostart.is_enabled()


def test_macos_disable_removes_the_launch_agent(tmp_path: Path) -> None:
    autostart = Autostart(platform="darwin", home=tmp_path, command=FROZEN)
    autostart.enable()
    autostart.disable()
    assert not autostart.path.exists()
    assert not autostart.is_enabled()


def test_macos_a_launch_agent_marked_disabled_counts_as_off(tmp_path: Path) -> None:
    autostart = Autostart(platform="darwin", home=tmp_path, command=FROZEN)
    autostart.enable()
    agent = plistlib.loads(autostart.path.read_bytes())
    autostart.path.write_bytes(plistlib.dumps({**agent, "Disabled": True}))
    assert not autostart.is_enabled()


# --- Windows: the Run key ----------------------------------------------------------------------


def test_windows_enable_sets_the_run_value_to_the_quoted_command() -> None:
    registry = FakeRunKey({"OneDrive": '"C:\\OneDrive.exe" /background'})
    program = "C:\\Users\\Ann Lee\\AppData\\Local\\Programs\\Switchboard\\switchboard.exe"
    autostart = Autostart(platform="win32", registry=registry, command=[program, "gui"])
    assert not autostart.is_enabled()
    autostart.enable()
    assert registry.values[RUN_VALUE] == (
        '"C:\\Users\\Ann Lee\\AppData\\Local\\Programs\\Switchboard\\switchboard.exe" gui'
    )
    assert autostart.is_enabled()
    assert RUN_VALUE == "Switchboard"  # the name packaging/windows/switchboard.iss uses too
    assert registry.values["OneDrive"] == '"C:\\OneDrive.exe" /background'


def test_windows_disable_deletes_only_switchboards_value() -> None:
    registry = FakeRunKey({"Switchboard": "x gui", "OneDrive": "y"})
    autostart = Autostart(platform="win32", registry=registry, command=FROZEN)
    assert autostart.is_enabled()
    autostart.disable()
    assert registry.values == {"OneDrive": "y"}
    assert not autostart.is_enabled()
    autostart.disable()


def test_windows_a_refused_change_gives_a_plain_error_naming_the_key() -> None:
    autostart = Autostart(platform="win32", registry=FakeRunKey(refuse=True), command=FROZEN)
    with pytest.raises(AutostartError) as caught:
        autostart.enable()
    assert str(caught.value) == (
        "Could not set Switchboard to start when you sign in (Access is denied): check that you "
        "may change HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run, value "
        "Switchboard, or use your system's own startup settings."
    )
