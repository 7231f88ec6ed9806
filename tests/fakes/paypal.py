"""A fake PayPal REST API, faithful in what Switchboard relies on, served over loopback.

- `POST /v1/oauth2/token`: the client-credentials grant with HTTP Basic client ID and secret;
  401 `invalid_client` for wrong ones; bearer tokens with `expires_in`.
- `GET /v1/notifications/webhooks`: the app's webhooks (bearer token required).
- `POST /v1/notifications/verify-webhook-signature`: 400 `VALIDATION_ERROR` for missing
  fields; otherwise `verification_status` SUCCESS or FAILURE, decided the way PayPal documents
  it: an RSA-SHA256 signature ("SHA256withRSA"), by a key only PayPal holds, of
  "<transmission id>|<transmission time>|<webhook id>|<CRC32 of the event, decimal>", checked
  against the certificate at a cert URL that must be PayPal's own.

The fake sends notifications too (`notification`): the headers and body PayPal would post.
Every request is recorded, so tests can count what reached "PayPal". `failing` makes every
answer a 503 for as long as it is set.

Relied on: PayPal's REST API docs (authentication; Webhooks API v1, verify webhook signature,
and "Webhook event names" for event shapes), and the offline check in PayPal's own SDKs
(paypal/PayPal-Python-SDK, paypalrestsdk/notifications.py: the signed string and CRC32).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CERT_PATH = "/v1/notifications/certs/CERT-360caa42-fca2a594-fake"
REQUIRED = ("auth_algo", "cert_url", "transmission_id", "transmission_sig", "transmission_time")


@dataclass
class Seen:
    method: str
    path: str
    body: bytes


@dataclass
class FakePayPal:
    client_id: str = "AeFakeClientId"
    client_secret: str = "EFakeSecret"
    token_lifetime: int = 32_400  # what PayPal gives: nine hours
    failing: bool = False
    base_url: str = ""  # set by the test once served, for the cert URL in notifications
    seen: list[Seen] = field(default_factory=list)
    webhooks: dict[str, str] = field(default_factory=dict)  # id -> url
    _tokens: dict[str, float] = field(default_factory=dict)
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/oauth2/token", self._token, methods=["POST"]),
                Route("/v1/notifications/webhooks", self._list_webhooks, methods=["GET"]),
                Route(
                    "/v1/notifications/verify-webhook-signature",
                    self._verify,
                    methods=["POST"],
                ),
            ]
        )

    def add_webhook(self, url: str) -> str:
        webhook_id = secrets.token_hex(8).upper()
        self.webhooks[webhook_id] = url
        return webhook_id

    def notification(
        self, webhook_id: str, event: dict[str, Any], *, at: datetime | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body of PayPal's POST of `event` to the webhook."""
        body = json.dumps(event).encode()
        transmission_id = str(uuid.uuid1())
        sent_at = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        signature = self._key.sign(
            _signed(transmission_id, sent_at, webhook_id, body),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        headers = {
            "Content-Type": "application/json",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": sent_at,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-CERT-URL": self.base_url + CERT_PATH,
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        }
        return headers, body

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def count(self, path: str) -> int:
        return sum(seen.path == path for seen in self.seen)

    # --- the API --------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        body = await self._record(request)
        if self.failing:
            return _unavailable()
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded).decode()
        except ValueError:
            given = ""
        if scheme != "Basic" or given != f"{self.client_id}:{self.client_secret}":
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Client Authentication failed"},
                status_code=401,
            )
        if body != b"grant_type=client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"},
                status_code=400,
            )
        token = "A21AA" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        return JSONResponse(
            {
                "scope": "https://uri.paypal.com/services/applications/webhooks",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": self.token_lifetime,
                "nonce": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}{secrets.token_hex(8)}",
            }
        )

    async def _list_webhooks(self, request: Request) -> Response:
        await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {
                "webhooks": [
                    {"id": webhook_id, "url": url, "event_types": [{"name": "*"}]}
                    for webhook_id, url in self.webhooks.items()
                ]
            }
        )

    async def _verify(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            asked = json.loads(body)
        except ValueError:
            return _invalid([{"issue": "MALFORMED_REQUEST_JSON"}])
        missing = [
            name
            for name in (*REQUIRED, "webhook_id", "webhook_event")
            if not isinstance(asked, dict) or not asked.get(name)
        ]
        if missing:
            return _invalid(
                [{"field": name, "issue": "MISSING_REQUIRED_PARAMETER"} for name in missing]
            )
        status = "SUCCESS" if self._genuine(asked) else "FAILURE"
        return JSONResponse({"verification_status": status})

    def _genuine(self, asked: dict[str, Any]) -> bool:
        if asked["auth_algo"] != "SHA256withRSA" or asked["cert_url"] != self.base_url + CERT_PATH:
            return False
        # The event as PayPal sent it: what the receiver passed back must be the same event.
        event = json.dumps(asked["webhook_event"]).encode()
        try:
            self._key.public_key().verify(
                base64.b64decode(asked["transmission_sig"]),
                _signed(
                    asked["transmission_id"],
                    asked["transmission_time"],
                    asked["webhook_id"],
                    event,
                ),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        self.seen.append(Seen(request.method, request.url.path, body))
        return body

    def _refused(self, request: Request) -> Response | None:
        if self.failing:
            return _unavailable()
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token, 0.0)
        if scheme != "Bearer" or expires < time.monotonic():
            return JSONResponse(
                {
                    "error": "invalid_token",
                    "error_description": "Token signature verification failed",
                },
                status_code=401,
            )
        return None


def _signed(transmission_id: str, sent_at: str, webhook_id: str, body: bytes) -> bytes:
    return f"{transmission_id}|{sent_at}|{webhook_id}|{zlib.crc32(body)}".encode()


def _invalid(details: list[dict[str, str]]) -> Response:
    return JSONResponse(
        {
            "name": "VALIDATION_ERROR",
            "message": "Invalid request - see details",
            "debug_id": secrets.token_hex(6),
            "details": details,
        },
        status_code=400,
    )


def _unavailable() -> Response:
    return JSONResponse(
        {"name": "SERVICE_UNAVAILABLE", "message": "Service Unavailable."}, status_code=503
    )
