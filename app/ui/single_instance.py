"""One Switchboard per data folder: a second launch hands over to the first and exits.

The first instance listens on a local socket named after the user and the data folder; a
later launch connects, asks it to come forward, and ends. A socket left behind by a crash is
removed when nobody answers on it.

Signals (SingleInstance):
    activated(): another launch asked this instance to bring its window forward.
"""

from __future__ import annotations

import getpass
import hashlib
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

MESSAGE = b"activate\n"
TIMEOUT_MS = 1000


def instance_key(data_dir: Path) -> str:
    digest = hashlib.sha256(f"{getpass.getuser()}|{data_dir.resolve()}".encode()).hexdigest()
    return f"switchboard-{digest[:16]}"


class SingleInstance(QObject):
    activated = Signal()

    def __init__(self, key: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.key = key
        self._server: QLocalServer | None = None

    def claim(self) -> bool:
        """True if this is the first instance (and now listens); False if another one answered
        and was asked to come forward."""
        socket = QLocalSocket(self)
        try:
            socket.connectToServer(self.key)
            if socket.waitForConnected(TIMEOUT_MS):
                socket.write(MESSAGE)
                socket.waitForBytesWritten(TIMEOUT_MS)
                socket.disconnectFromServer()
                return False
        finally:
            # Qt may still hold events for the socket: let it go through the event loop.
            socket.deleteLater()
        QLocalServer.removeServer(self.key)
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.key):
            # Another launch won the race between our connect and listen: defer to it.
            return False
        server.newConnection.connect(self._on_connection)
        self._server = server
        return True

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server.deleteLater()
            self._server = None

    def _on_connection(self) -> None:
        assert self._server is not None
        while (socket := self._server.nextPendingConnection()) is not None:
            socket.readyRead.connect(lambda socket=socket: self._on_message(socket))
            socket.disconnected.connect(socket.deleteLater)

    def _on_message(self, socket: QLocalSocket) -> None:
        if bytes(socket.readAll().data()).startswith(MESSAGE.strip()):
            self.activated.emit()
