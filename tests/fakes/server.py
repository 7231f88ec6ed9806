"""Serve an ASGI app (a fake provider) on 127.0.0.1 in a thread of its own, for tests that talk
to it over real TCP as the app talks to the real provider.

    with served(fake.app) as url:
        ...  # the client under test calls url
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send


@contextlib.contextmanager
def served(app: ASGIApp) -> Iterator[str]:
    """The app's base URL while the block runs; the server stops when it ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, interface="asgi3")
    )
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="fake-server", daemon=True
    )
    thread.start()
    try:
        deadline = 100
        while not server.started and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        if not server.started:
            raise RuntimeError("the fake server did not start within 5 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class Switch:
    """An ASGI app passing every request to the current test's app: one server per module
    serves each test's fresh fake (starting a server costs more than a test)."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no fake is switched in"
        await self.target(scope, receive, send)
