"""A scriptable HTTP/1.1 server on loopback, for testing the resilient HTTP client over real TCP.

The server runs `asyncio.start_server` in a thread of its own with its own event loop, so tests
(sync or async) talk to it as to any remote peer. Each (method, path) gets a script of replies —
status, JSON or raw body, headers, a delay, a dropped connection or a request that never gets an
answer — and every request is recorded with the TCP connection it came on, to prove keep-alive.

    with ScriptedServer() as server:
        server.script("GET", "/v1/payments", Reply(503), Reply(200, json={"data": []}))
        ...  # the client under test talks to server.url
        assert len(server.received("GET", "/v1/payments")) == 2
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any

import pytest

__all__ = ["Received", "Reply", "ScriptedServer", "scripted_server"]

_HOST = "127.0.0.1"
_LINE_LIMIT = 1 << 20  # longest request or header line accepted
_POLL = 0.01  # how often a waiting reply looks whether its client has gone


@dataclass(frozen=True)
class Reply:
    """One scripted answer. The body is `json` encoded (with Content-Type: application/json)
    unless `body` is given. `headers` override the defaults, Content-Length included."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering; other connections are served meanwhile
    drop: bool = False  # close the connection without answering (after `delay`)
    hang: bool = False  # never answer, until the server stops or the client goes away

    def __post_init__(self) -> None:
        if self.drop and self.hang:
            raise ValueError("a reply cannot both drop and hang")
        if self.delay < 0:
            raise ValueError("delay must not be negative")


@dataclass(frozen=True)
class Received:
    """One request as the server read it. Header names are lower-cased; repeated headers are
    joined with ", ". `connection` numbers TCP connections; `at` is `time.monotonic()` when the
    request had been read in full."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    connection: int
    at: float


NOT_SCRIPTED = Reply(404, json={"error": "not scripted"})


@dataclass
class _Script:
    replies: deque[Reply]
    then: Reply | None


class _BadRequest(Exception):
    pass


class ScriptedServer:
    """A real HTTP/1.1 server on 127.0.0.1 and a free port, started and stopped by `with`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[tuple[str, str], _Script] = {}
        self._received: list[Received] = []
        self._accepted = 0  # since start or the last reset()
        self._last_connection = 0  # never reset: connection numbers stay unique
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._port: int | None = None

    # -- the test's side -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the scripted server is not running")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.port}"

    def script(self, method: str, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """The next requests to (method, path) get `replies` in order, then `then` for ever
        (by default the last reply repeats). Replaces any earlier script for that route."""
        if not replies and then is None:
            raise ValueError("script at least one reply or a `then`")
        with self._lock:
            self._scripts[(method.upper(), path)] = _Script(deque(replies), then)

    def received(self, method: str | None = None, path: str | None = None) -> list[Received]:
        """The requests read so far, oldest first, optionally only those to a method and path."""
        with self._lock:
            requests = list(self._received)
        if method is not None:
            requests = [r for r in requests if r.method == method.upper()]
        if path is not None:
            requests = [r for r in requests if r.path == path]
        return requests

    def connections(self) -> int:
        """TCP connections accepted since the start (or the last `reset()`)."""
        with self._lock:
            return self._accepted

    def in_flight(self) -> int:
        """Requests read but not yet answered, dropped or abandoned by their client."""
        with self._lock:
            return self._in_flight

    def reset(self) -> None:
        """Forget the scripts, the recorded requests and the count of connections."""
        with self._lock:
            self._scripts.clear()
            self._received.clear()
            self._accepted = 0

    def __enter__(self) -> ScriptedServer:
        if self._thread is not None:
            raise RuntimeError("the scripted server is already running")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(),), name="scripted-http-server", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("the scripted server did not start") from self._startup_error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the listening socket and every connection, and wait for the thread to end."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("the scripted server's thread did not stop")
        self._thread = self._loop = self._stopping = None
        self._port = None

    # -- the server's side (its own thread and loop) ---------------------------------------

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            server = await asyncio.start_server(self._handle, _HOST, 0, limit=_LINE_LIMIT)
        except BaseException as error:
            self._startup_error = error
            self._ready.set()
            return
        self._loop = asyncio.get_running_loop()
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            await asyncio.sleep(0)  # let connections accepted just now start their handlers
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            for writer in list(self._writers):
                writer.transport.abort()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        with self._lock:
            self._accepted += 1
            self._last_connection += 1
            connection = self._last_connection
        try:
            while await self._exchange(reader, writer, connection):
                pass
        except _BadRequest:
            with contextlib.suppress(ConnectionError):
                writer.write(_encode(Reply(400, body=b"bad request"), "GET", keep_alive=False))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            # The server is stopping. The task ends normally rather than cancelled: Python 3.11's
            # StreamReaderProtocol calls task.exception() on it, which would log the cancellation.
            pass
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> bool:
        """Read one request and answer it; whether the connection stays open for another."""
        read = await _read_request(reader, writer, connection)
        if read is None:
            return False
        request, client_keeps_alive = read
        with self._lock:
            self._received.append(request)
            reply = self._next_reply(request.method, request.path)
            self._in_flight += 1
        try:
            if reply.hang:
                await _wait(reader, None)
                return False
            if reply.delay and not await _wait(reader, reply.delay):
                return False  # the client gave up while we were waiting
            if reply.drop:
                return False
            keep_alive = client_keeps_alive and _keeps_alive(reply)
            writer.write(_encode(reply, request.method, keep_alive=keep_alive))
            await writer.drain()
            return keep_alive
        finally:
            with self._lock:
                self._in_flight -= 1

    def _next_reply(self, method: str, path: str) -> Reply:
        script = self._scripts.get((method, path))
        if script is None:
            return NOT_SCRIPTED
        if script.replies:
            reply = script.replies.popleft()
            if not script.replies and script.then is None:
                script.then = reply
            return reply
        assert script.then is not None
        return script.then


async def _wait(reader: asyncio.StreamReader, seconds: float | None) -> bool:
    """Sleep `seconds` (None: for ever); False as soon as the client closes its end."""
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    while not reader.at_eof():
        if deadline is None:
            await asyncio.sleep(_POLL)
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(_POLL, remaining))
    return False


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as error:
        raise _BadRequest("line too long") from error
    return line.rstrip(b"\r\n")


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
) -> tuple[Received, bool] | None:
    """The next request on the connection and whether its client would keep the connection
    open, or None when the client has closed it."""
    line = b""
    while not line:  # RFC 9112 §2.2: ignore empty lines before a request line
        read = await _read_line(reader)
        if read is None:
            return None
        line = read
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest("bad request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    while True:
        read = await _read_line(reader)
        if read is None:
            raise ConnectionResetError("the client closed inside the headers")
        if not read:
            break
        name, colon, value = read.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest("bad header line")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(f"{version} 100 Continue\r\n\r\n".encode("latin-1"))
        await writer.drain()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError as error:
            raise _BadRequest("bad Content-Length") from error
        if length < 0:
            raise _BadRequest("bad Content-Length")
        body = await reader.readexactly(length)
    else:
        body = b""
    path, _, query = target.partition("?")
    received = Received(method.upper(), path, query, headers, body, connection, time.monotonic())
    connection_tokens = _tokens(headers.get("connection", ""))
    if version == "HTTP/1.0":  # HTTP/1.0 closes unless told otherwise
        return received, "keep-alive" in connection_tokens
    return received, "close" not in connection_tokens


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = await _read_line(reader)
        if line is None:
            raise ConnectionResetError("the client closed inside a chunked body")
        try:
            size = int(line.split(b";", 1)[0], 16)
        except ValueError as error:
            raise _BadRequest("bad chunk size") from error
        if size == 0:
            break
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)  # the CRLF after the chunk
    while await _read_line(reader):  # trailers, up to the empty line
        pass
    return b"".join(chunks)


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def _keeps_alive(reply: Reply) -> bool:
    """False when the scripted reply itself says Connection: close."""
    reply_connection = next((v for k, v in reply.headers.items() if k.lower() == "connection"), "")
    return "close" not in _tokens(reply_connection)


def _encode(reply: Reply, method: str, *, keep_alive: bool) -> bytes:
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Unknown"
    body = reply.body
    headers: dict[str, tuple[str, str]] = {}  # lower-cased name -> (name, value)

    def default(name: str, value: str) -> None:
        headers.setdefault(name.lower(), (name, value))

    for name, value in reply.headers.items():
        headers[name.lower()] = (name, value)
    if not body and reply.json is not None:
        body = json.dumps(reply.json).encode()
        default("Content-Type", "application/json")
    bodiless = reply.status < 200 or reply.status in (204, 304)
    if bodiless:
        body = b""
    else:
        default("Content-Length", str(len(body)))
    if not keep_alive:
        headers["connection"] = ("Connection", "close")
    default("Server", "switchboard-scripted")
    head = f"HTTP/1.1 {reply.status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.values()
    )
    if method == "HEAD":
        body = b""
    return (head + "\r\n").encode("latin-1") + body


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    """A running ScriptedServer, stopped (and its thread joined) after the test."""
    with ScriptedServer() as server:
        yield server
