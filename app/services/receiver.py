"""The embedded HTTP server that providers call back (uvicorn + Starlette, in the engine loop).

It binds its socket before it is announced, so "listening on" is only printed once calls can
arrive, and a busy port is a clear error rather than a log line in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app import __version__
from app.domain.errors import SwitchboardError

log = logging.getLogger("switchboard.receiver")

HealthProbe = Callable[[], Awaitable[dict[str, Any]]]


class PortUnavailable(SwitchboardError):
    """The receiver's address or port cannot be used."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def build_app(probe: HealthProbe) -> Starlette:
    async def health(_request: Request) -> JSONResponse:
        report = await probe()
        healthy = report.get("status") == "ok"
        return JSONResponse({"version": __version__, **report}, status_code=200 if healthy else 503)

    return Starlette(routes=[Route("/health", health, methods=["GET"])])


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(_why_not(host, port, exc)) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _why_not(host: str, port: int, error: OSError) -> str:
    where = f"Cannot listen on {host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"{where}: another program may be using that port. Choose another port with "
            "--port or in Settings."
        )
    if error.errno == errno.EACCES:
        return f"{where}: ports below 1024 need administrator rights; choose a higher port."
    return (
        f"{where} ({error.strerror or error}): {host} is not an address of this computer. "
        "Use 127.0.0.1 (this computer only) or 0.0.0.0 (every network)."
    )


class Receiver:
    """uvicorn serving the Starlette app on a socket bound up front."""

    def __init__(self, probe: HealthProbe, host: str, port: int) -> None:
        self._socket = bind(host, port)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.address = Address(bound_host, bound_port)
        config = uvicorn.Config(
            build_app(probe),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name="receiver"
        )
        log.info("receiver listening", extra={"url": self.address.url})

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._socket.close()
