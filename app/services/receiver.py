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
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.domain.errors import SwitchboardError
from app.services.webhook_intake import (
    GONE,
    MALFORMED,
    NOT_ALLOWED,
    TOO_LARGE,
    UNAVAILABLE,
    UNKNOWN,
    Answer,
    WebhookIntake,
)

log = logging.getLogger("switchboard.receiver")

HealthProbe = Callable[[], Awaitable[dict[str, Any]]]
MAX_BODY = 1024 * 1024
HOOKS = "/hooks/"


class PortUnavailable(SwitchboardError):
    """The receiver's address or port cannot be used."""


class TlsUnusable(SwitchboardError):
    """The receiver's TLS certificate or key cannot be used."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int
    secure: bool = False  # TLS

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.secure else 'http'}://{host}:{self.port}"


API_PATHS = ("/zapier/", "/unsubscribe/")


def build_app(
    probe: HealthProbe,
    intake: WebhookIntake | None = None,
    max_body: int = MAX_BODY,
    api: ASGIApp | None = None,
) -> ASGIApp:
    """`api`: what the receiver serves besides callbacks: the school's API for other apps
    (Zapier, under /zapier) and the unsubscribe links of e-mails (/unsubscribe)."""

    async def health(_request: Request) -> JSONResponse:
        report = await probe()
        healthy = report.get("status") == "ok"
        return JSONResponse({"version": __version__, **report}, status_code=200 if healthy else 503)

    site = Starlette(routes=[Route("/health", health, methods=["GET"])])
    if intake is None:
        return site

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Callbacks skip the framework's routing and middleware: at thousands a second they
        # cost more than the verification and the disk together (bench webhooks).
        if scope["type"] == "http" and scope["path"].startswith(HOOKS):
            await _hooks(scope, receive, send, intake, max_body)
        elif api is not None and scope["type"] == "http" and scope["path"].startswith(API_PATHS):
            await api(scope, receive, send)
        else:
            await site(scope, receive, send)

    return app


async def _hooks(
    scope: Scope, receive: Receive, send: Send, intake: WebhookIntake, max_body: int
) -> None:
    # Nothing a sender can put in a request makes this answer 500: every path ends in one of
    # the intake's answers, and anything unforeseen in a 503 the sender will retry.
    try:
        answer = await _hook(scope, receive, intake, max_body)
    except Exception:
        log.exception("webhook handling failed")
        answer = UNAVAILABLE
    text = answer.reason.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(text)),
    ]
    if answer is NOT_ALLOWED:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


async def _hook(scope: Scope, receive: Receive, intake: WebhookIntake, max_body: int) -> Answer:
    client = scope.get("client")
    sender = str(client[0]) if client else ""
    parts = scope["path"][len(HOOKS) :].split("/")
    if len(parts) != 2 or not parts[1]:
        return intake.refuse(UNKNOWN, 0, sender)
    raw_id, token = parts
    if not raw_id.isdigit() or len(raw_id) > 18:
        return intake.refuse(UNKNOWN, 0, sender)
    connection_id = int(raw_id)
    if scope["method"] == "GET" and b"hub.mode=" in scope.get("query_string", b""):
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        return await intake.challenge(connection_id, token, query, sender)
    if scope["method"] != "POST":
        return NOT_ALLOWED
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }
    # Everything that needs no body first: a refused request is never read.
    admitted = await intake.admit(connection_id, token, headers, sender)
    if isinstance(admitted, Answer):
        return admitted
    declared = headers.get("content-length")
    if declared is not None and not declared.isdigit():
        return intake.refuse(MALFORMED, connection_id, sender)
    if declared is not None and int(declared) > max_body:
        return intake.refuse(TOO_LARGE, connection_id, sender)
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return intake.refuse(GONE, connection_id, sender)  # nobody is left to answer
        body += message.get("body", b"")
        if len(body) > max_body:
            # Sent without its length: stop reading at the limit.
            return intake.refuse(TOO_LARGE, connection_id, sender)
        if not message.get("more_body", False):
            break
    return await intake.accept(admitted, _url(scope, headers), headers, bytes(body), sender)


def _url(scope: Scope, headers: dict[str, str]) -> str:
    """The address the sender called, as it signed it (Twilio signs the whole URL)."""
    server = scope.get("server")
    host = headers.get("host") or (f"{server[0]}:{server[1]}" if server else "")
    url = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}"
    query = scope.get("query_string", b"")
    return f"{url}?{query.decode('latin-1')}" if query else url


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off only on sockets that say
    # they are TCP, and with it on every answer waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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


def check_tls(certificate: str, key: str) -> None:
    """Load the pair once up front, so a wrong path or a key that does not match is a clear
    error at start rather than a receiver that silently never listens."""
    try:
        # An empty passphrase for an encrypted key: refused, rather than OpenSSL asking for one
        # on a terminal nobody watches.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            certificate, key, password=b""
        )
    except FileNotFoundError as exc:
        raise TlsUnusable(
            f"The receiver's TLS certificate or key is missing ({exc.filename}); check the paths "
            "in Settings → Receiver."
        ) from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsUnusable(
            "The receiver's TLS certificate and key cannot be used together "
            f"({getattr(exc, 'reason', None) or exc}); give a PEM certificate and its own private "
            "key, unencrypted."
        ) from exc


class Receiver:
    """uvicorn serving the Starlette app on a socket bound up front."""

    def __init__(
        self,
        probe: HealthProbe,
        host: str,
        port: int,
        intake: WebhookIntake | None = None,
        max_body: int = MAX_BODY,
        tls: tuple[str, str] | None = None,
        api: ASGIApp | None = None,
    ) -> None:
        """`tls`: the paths of a certificate (chain) and its private key, to serve https.
        `api`: the school's API for other apps (`app.services.zapier`)."""
        if tls is not None:
            check_tls(*tls)
        self._socket = bind(host, port)
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.address = Address(bound_host, bound_port, secure=tls is not None)
        config = uvicorn.Config(
            build_app(probe, intake, max_body, api),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
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
