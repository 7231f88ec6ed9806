"""A fake HTTP SMS gateway in the two shapes local gateways come in, served over loopback.

- `style="json"`: Africa's Talking's answer (`POST /version1/messaging`, 201 with
  `{"SMSMessageData": {"Message", "Recipients": [{"statusCode", "number", "status", "cost",
  "messageId"}]}}`; a number it cannot deliver to is still 201, with `status`
  "InvalidPhoneNumber", `statusCode` 403 and `messageId` "None").
- `style="pipe"`: BulkSMS's legacy HTTP API answer, plain text `status|description|batch id`
  ("0|IN_PROGRESS|4021334", "24|Data validation failed: invalid msisdn|").

The send address takes the fields from the query, a form or a JSON body (whichever the request
carries; all merged), under the field names the test gives; authentication is none, HTTP Basic,
a bearer token, an API key in a named header, or an API key in a named field (401 with
`{"error": "Invalid credentials"}` otherwise). `GET HEALTH_PATH` answers a balance with the
same credentials; `OPTIONS` of the send address is 405, as at most APIs. Every request is kept
in `seen`, every SMS the gateway took in `accepted`.

Faults: `per_second` takes at most that many SMS in any second and answers 429 with
`Retry-After: retry_after` beyond; `fail_next` answers its statuses to the next sends;
`hang_next` takes that many SMS and never answers them, until the client goes away;
`echo_credentials` makes refusals repeat the key they were sent (as careless gateways do).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

SEND_PATH = "/version1/messaging"
HEALTH_PATH = "/version1/user"


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Sms:
    to: str
    text: str
    sender: str
    reference: str
    id: str
    fields: dict[str, str]


@dataclass
class FakeSmsGateway:
    style: str = "json"  # json (Africa's Talking) | pipe (BulkSMS legacy)
    auth: str = "none"  # none | basic | bearer | api-key-header | api-key-field
    username: str = "riverside"
    secret: str = "atsk_3f9c1e7a5b2d48c6"
    key_name: str = "apiKey"
    to_field: str = "to"
    text_field: str = "message"
    sender_field: str = "from"
    reference_field: str = ""
    invalid_numbers: set[str] = field(default_factory=set)
    per_second: int = 0  # 0: no limit
    retry_after: int = 1
    fail_next: list[int] = field(default_factory=list)
    hang_next: int = 0
    echo_credentials: bool = False
    seen: list[Seen] = field(default_factory=list)
    accepted: list[Sms] = field(default_factory=list)
    refused_for_rate: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()
        self._next_id = 4021334

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(SEND_PATH, self._send, methods=["GET", "POST"]),
                Route(SEND_PATH, self._options, methods=["OPTIONS"]),
                Route(HEALTH_PATH, self._health, methods=["GET"]),
            ]
        )

    def sends(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == SEND_PATH and seen.method != "OPTIONS"]

    # --- the routes -------------------------------------------------------------------------------

    async def _send(self, request: Request) -> Response:
        body = await request.body()
        self._see(request, body)
        fields = self._fields(request, body)
        refused = self._refuse_credentials(request, fields)
        if refused is not None:
            return refused
        with self._lock:
            if self.fail_next:
                status = self.fail_next.pop(0)
                return PlainTextResponse(f"Error {status}", status_code=status)
            now = time.monotonic()
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if self.per_second and len(self._recent) >= self.per_second:
                self.refused_for_rate += 1
                return PlainTextResponse(
                    "Too many requests",
                    status_code=429,
                    headers={"Retry-After": str(self.retry_after)},
                )
        to, text = fields.get(self.to_field, ""), fields.get(self.text_field, "")
        if not to or not text:
            return JSONResponse(
                {"error": f"{self.to_field} and {self.text_field} are required"}, status_code=400
            )
        if to in self.invalid_numbers:
            return self._invalid(to, fields)
        with self._lock:
            self._recent.append(time.monotonic())
            self._next_id += 1
            sms = Sms(
                to=to,
                text=text,
                sender=fields.get(self.sender_field, ""),
                reference=fields.get(self.reference_field, "") if self.reference_field else "",
                id=f"ATXid_{self._next_id}" if self.style == "json" else str(self._next_id),
                fields=fields,
            )
            self.accepted.append(sms)
            hang = self.hang_next > 0
            if hang:
                self.hang_next -= 1
        if hang:
            # The SMS is taken; the next thing to happen is the client giving up.
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(status_code=201)
        return self._taken(sms)

    async def _options(self, request: Request) -> Response:
        # Like most APIs that do not serve browsers: the method is not theirs.
        self._see(request, b"")
        return PlainTextResponse(
            "Method Not Allowed", status_code=405, headers={"Allow": "GET, POST"}
        )

    async def _health(self, request: Request) -> Response:
        self._see(request, b"")
        refused = self._refuse_credentials(request, dict(request.query_params))
        if refused is not None:
            return refused
        return JSONResponse({"UserData": {"balance": "USD 12.5000"}})

    # --- helpers ----------------------------------------------------------------------------------

    def _see(self, request: Request, body: bytes) -> None:
        with self._lock:
            self.seen.append(
                Seen(
                    request.method,
                    request.url.path,
                    request.url.query,
                    {name.lower(): value for name, value in request.headers.items()},
                    body,
                )
            )

    @staticmethod
    def _fields(request: Request, body: bytes) -> dict[str, str]:
        fields = dict(request.query_params)
        kind = request.headers.get("content-type", "")
        if kind.startswith("application/json") and body:
            data: Any = json.loads(body)
            fields.update({str(name): str(value) for name, value in data.items()})
        elif kind.startswith("application/x-www-form-urlencoded") and body:
            fields.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        return fields

    def _refuse_credentials(self, request: Request, fields: dict[str, str]) -> Response | None:
        headers = request.headers
        if self.auth == "none":
            return None
        if self.auth == "basic":
            pair = base64.b64encode(f"{self.username}:{self.secret}".encode()).decode()
            good = headers.get("authorization") == f"Basic {pair}"
        elif self.auth == "bearer":
            good = headers.get("authorization") == f"Bearer {self.secret}"
        elif self.auth == "api-key-header":
            good = headers.get(self.key_name) == self.secret
        else:
            good = fields.get(self.key_name) == self.secret
        if good:
            return None
        return JSONResponse({"error": "Invalid credentials"}, status_code=401)

    def _invalid(self, to: str, fields: dict[str, str]) -> Response:
        echo = f" (key {fields.get(self.key_name, '')})" if self.echo_credentials else ""
        if self.style == "pipe":
            return PlainTextResponse(f"24|Data validation failed: invalid msisdn {to}{echo}|")
        return JSONResponse(
            {
                "SMSMessageData": {
                    "Message": f"Sent to 0/1 Total Cost: 0{echo}",
                    "Recipients": [
                        {
                            "statusCode": 403,
                            "number": to,
                            "status": "InvalidPhoneNumber",
                            "cost": "0",
                            "messageId": "None",
                        }
                    ],
                }
            },
            status_code=201,
        )

    def _taken(self, sms: Sms) -> Response:
        if self.style == "pipe":
            return PlainTextResponse(f"0|IN_PROGRESS|{sms.id}")
        return JSONResponse(
            {
                "SMSMessageData": {
                    "Message": "Sent to 1/1 Total Cost: USD 0.0200",
                    "Recipients": [
                        {
                            "statusCode": 101,
                            "number": sms.to,
                            "status": "Success",
                            "cost": "USD 0.0200",
                            "messageId": sms.id,
                        }
                    ],
                }
            },
            status_code=201,
        )
