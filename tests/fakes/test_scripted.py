"""The scripted HTTP server is a real peer: these tests talk to it with httpx over loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

from tests.fakes.scripted import Reply, ScriptedServer, scripted_server
from tests.support.polling import until

__all__ = ["scripted_server"]  # the fixture, imported so that pytest finds it


def test_replies_come_in_order_and_then_the_last_one_repeats(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.script("GET", "/things", Reply(503), Reply(429), Reply(200, json={"n": 1}))
    with httpx.Client(base_url=scripted_server.url) as client:
        statuses = [client.get("/things").status_code for _ in range(5)]
    assert statuses == [503, 429, 200, 200, 200]


def test_then_follows_once_the_scripted_replies_run_out(scripted_server: ScriptedServer) -> None:
    scripted_server.script("POST", "/charges", Reply(500), then=Reply(201, json={"id": "ch_1"}))
    with httpx.Client(base_url=scripted_server.url) as client:
        responses = [client.post("/charges") for _ in range(3)]
    assert [r.status_code for r in responses] == [500, 201, 201]
    assert responses[2].json() == {"id": "ch_1"}


def test_scripting_nothing_at_all_is_refused(scripted_server: ScriptedServer) -> None:
    with pytest.raises(ValueError, match="at least one reply"):
        scripted_server.script("GET", "/nothing")


def test_json_and_raw_bodies_arrive_with_their_content_types(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.script("GET", "/json", Reply(json={"amount": "12.50", "items": [1, 2]}))
    scripted_server.script(
        "GET", "/raw", Reply(body=b"<ok/>", headers={"Content-Type": "application/xml"})
    )
    scripted_server.script("GET", "/empty", Reply(204))
    with httpx.Client(base_url=scripted_server.url) as client:
        as_json = client.get("/json")
        raw = client.get("/raw")
        empty = client.get("/empty")
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json() == {"amount": "12.50", "items": [1, 2]}
    assert raw.headers["content-type"] == "application/xml"
    assert raw.content == b"<ok/>"
    assert empty.status_code == 204
    assert empty.content == b""


def test_scripted_headers_reach_the_client(scripted_server: ScriptedServer) -> None:
    scripted_server.script("GET", "/limited", Reply(429, headers={"Retry-After": "2"}))
    with httpx.Client(base_url=scripted_server.url) as client:
        response = client.get("/limited")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"


def test_a_delay_makes_the_client_wait(scripted_server: ScriptedServer) -> None:
    scripted_server.script("GET", "/slow", Reply(json={"ok": True}, delay=0.3))
    with httpx.Client(base_url=scripted_server.url) as client:
        started = time.monotonic()
        response = client.get("/slow")
        elapsed = time.monotonic() - started
    assert response.json() == {"ok": True}
    assert elapsed >= 0.3


def test_a_dropped_request_closes_the_connection_without_an_answer(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.script("GET", "/flaky", Reply(drop=True), Reply(200))
    with httpx.Client(base_url=scripted_server.url) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.get("/flaky")
        assert client.get("/flaky").status_code == 200
    assert len(scripted_server.received("GET", "/flaky")) == 2
    assert scripted_server.connections() == 2


def test_a_hanging_request_times_the_client_out_and_ends_when_the_client_leaves(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.script("GET", "/black-hole", Reply(hang=True))
    with (
        httpx.Client(base_url=scripted_server.url, timeout=0.2) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/black-hole")
    assert len(scripted_server.received("GET", "/black-hole")) == 1
    asyncio.run(until(lambda: scripted_server.in_flight() == 0, limit=2))


def test_stopping_the_server_ends_a_hanging_request_at_once() -> None:
    errors: list[Exception] = []

    def call(url: str) -> None:
        try:
            httpx.get(url + "/black-hole", timeout=10)
        except httpx.HTTPError as error:
            errors.append(error)

    with ScriptedServer() as server:
        server.script("GET", "/black-hole", Reply(hang=True))
        caller = threading.Thread(target=call, args=(server.url,))
        caller.start()
        asyncio.run(until(lambda: server.in_flight() == 1, limit=2))
        started = time.monotonic()
    caller.join(timeout=2)
    assert not caller.is_alive()
    assert time.monotonic() - started < 1
    assert len(errors) == 1
    assert isinstance(errors[0], (httpx.RemoteProtocolError, httpx.ReadError))


def test_requests_on_one_client_share_a_kept_alive_connection(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.script("GET", "/ping", Reply(json="pong"))
    with httpx.Client(base_url=scripted_server.url) as client:
        for _ in range(3):
            assert client.get("/ping").json() == "pong"
    assert scripted_server.connections() == 1
    assert {r.connection for r in scripted_server.received()} == {1}


def test_connection_close_from_the_client_is_honoured(scripted_server: ScriptedServer) -> None:
    scripted_server.script("GET", "/ping", Reply())
    with httpx.Client(base_url=scripted_server.url, headers={"Connection": "close"}) as client:
        first = client.get("/ping")
        client.get("/ping")
    assert first.headers["connection"] == "close"
    assert scripted_server.connections() == 2
    assert len({r.connection for r in scripted_server.received()}) == 2


def test_connection_close_in_a_scripted_reply_closes_after_answering(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.script("GET", "/ping", Reply(headers={"Connection": "close"}), Reply())
    with httpx.Client(base_url=scripted_server.url) as client:
        for _ in range(3):
            assert client.get("/ping").status_code == 200
    assert scripted_server.connections() == 2


def test_request_bodies_and_headers_are_recorded_with_lower_cased_names(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.script("POST", "/v1/charges", Reply(201))
    with httpx.Client(base_url=scripted_server.url) as client:
        client.post(
            "/v1/charges",
            params={"expand": "customer"},
            json={"amount": 1250},
            headers={"Idempotency-Key": "k-1", "Authorization": "Bearer t"},
        )
        client.get("/elsewhere")
    (charge,) = scripted_server.received("POST", "/v1/charges")
    assert charge.method == "POST"
    assert charge.path == "/v1/charges"
    assert charge.query == "expand=customer"
    assert charge.body == b'{"amount":1250}'
    assert charge.headers["idempotency-key"] == "k-1"
    assert charge.headers["authorization"] == "Bearer t"
    assert charge.headers["content-type"] == "application/json"
    assert [r.path for r in scripted_server.received()] == ["/v1/charges", "/elsewhere"]
    assert scripted_server.received("GET") == scripted_server.received(path="/elsewhere")


def test_a_chunked_request_body_is_recorded_whole(scripted_server: ScriptedServer) -> None:
    scripted_server.script("PUT", "/upload", Reply(204))
    with httpx.Client(base_url=scripted_server.url) as client:
        response = client.put("/upload", content=iter([b"first,", b"second"]))
    assert response.status_code == 204
    (upload,) = scripted_server.received()
    assert upload.headers["transfer-encoding"] == "chunked"
    assert upload.body == b"first,second"


def test_an_unscripted_route_gets_404(scripted_server: ScriptedServer) -> None:
    scripted_server.script("GET", "/known", Reply())
    with httpx.Client(base_url=scripted_server.url) as client:
        unknown = client.get("/unknown")
        wrong_method = client.delete("/known")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not scripted"}
    assert wrong_method.status_code == 404


def test_a_malformed_request_gets_400(scripted_server: ScriptedServer) -> None:
    with socket.create_connection(("127.0.0.1", scripted_server.port), timeout=2) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert scripted_server.received() == []


def test_reset_forgets_scripts_requests_and_connections(scripted_server: ScriptedServer) -> None:
    scripted_server.script("GET", "/ping", Reply())
    with httpx.Client(base_url=scripted_server.url) as client:
        client.get("/ping")
    scripted_server.reset()
    assert scripted_server.received() == []
    assert scripted_server.connections() == 0
    with httpx.Client(base_url=scripted_server.url) as client:
        assert client.get("/ping").status_code == 404
    assert scripted_server.connections() == 1


def test_the_server_stops_cleanly_and_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    with ScriptedServer() as server:
        url = server.url
        server.script("GET", "/ping", Reply())
        idle = httpx.Client(base_url=url)  # a kept-alive connection the server must close
        assert idle.get("/ping").status_code == 200
        assert len(set(threading.enumerate()) - before) == 1
    assert set(threading.enumerate()) == before
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/ping", timeout=1)
    idle.close()


async def test_concurrent_delayed_requests_are_answered_side_by_side(
    scripted_server: ScriptedServer,
) -> None:
    scripted_server.script("GET", "/slow", Reply(json={"ok": True}, delay=0.2))
    async with httpx.AsyncClient(base_url=scripted_server.url) as client:
        started = time.monotonic()
        watcher = asyncio.create_task(until(lambda: scripted_server.in_flight() == 20, limit=2))
        responses = await asyncio.gather(*(client.get("/slow") for _ in range(20)))
        elapsed = time.monotonic() - started
        await watcher
    assert all(r.json() == {"ok": True} for r in responses)
    assert elapsed < 1.0  # one after the other would take 4 s
    assert scripted_server.connections() == 20
    assert scripted_server.in_flight() == 0
