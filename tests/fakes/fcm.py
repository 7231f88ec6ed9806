"""A fake Firebase Cloud Messaging HTTP v1 API and Google's OAuth 2.0 token endpoint for service
accounts, faithful in what Switchboard relies on, served over loopback (one server for both:
the service account's `token_uri` points at it).

- `POST /token`: the JWT bearer grant (RFC 7523): form-encoded `grant_type=urn:ietf:params:
  oauth:grant-type:jwt-bearer` and `assertion`, a JWT signed RS256 with the service account's
  private key, `iss` its client_email, `aud` this token_uri, the firebase.messaging scope, and
  `iat`/`exp` at most an hour apart around now; answers `{"access_token", "expires_in",
  "token_type": "Bearer"}` or Google's OAuth errors (400 `invalid_grant`: "Invalid JWT
  Signature.", an account Google no longer knows, an `iat`/`exp` out of "a reasonable
  timeframe" as when the sender's clock is wrong; `unsupported_grant_type`).
- `POST /v1/projects/{project}/messages:send`: needs a live bearer token (401 UNAUTHENTICATED
  otherwise, as when it expired: `expire_tokens`), a project the account may send in (403
  PERMISSION_DENIED), one target, string `data` values and no reserved data keys; answers
  `{"name": "projects/{project}/messages/0:…"}`, or with `validate_only: true` checks all that
  and delivers nothing. Device tokens: `devices` are registered; `unregistered` answer 404
  UNREGISTERED, `other_project` 403 SENDER_ID_MISMATCH, `apns_broken` (iOS devices whose APNs
  key in Firebase is wrong) 401 THIRD_PARTY_AUTH_ERROR, and anything else 400 INVALID_ARGUMENT
  "The registration token is not a valid FCM registration token" — each a google.rpc.Status
  with a `google.firebase.fcm.v1.FcmError` detail. Every message accepted is recorded
  (`accepted`).

Faults: `rate_limit` answers 429 RESOURCE_EXHAUSTED / QUOTA_EXCEEDED beyond that many sends in
any `rate_window` (a second); `failing` answers 503 UNAVAILABLE; `hang_after_accept` makes that
many sends be accepted and then never answered.

Relied on: the same documents as app/providers/fcm.py (FCM HTTP v1 send and ErrorCode, the
error body's details, Google's "Using OAuth 2.0 for Server to Server Applications").
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
RESERVED_DATA_KEYS = ("from", "gcm", "message_type")
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
STATUS_NAMES |= {404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """One 2048-bit key per name for the whole run: making one costs tens of milliseconds."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Accepted:
    name: str
    message: dict[str, Any]


@dataclass
class FakeFirebase:
    project_id: str = "riverside-school-app"
    client_email: str = "fcm-sender@riverside-school-app.iam.gserviceaccount.com"
    private_key_id: str = field(default_factory=lambda: secrets.token_hex(20))
    key_name: str = "service-account"  # which of `rsa_key`'s keys the account has
    base_url: str = ""  # set by the test once served: the token_uri is on it
    token_lifetime: int = 3599
    clock_skew: int = 0  # how far Google's clock is from ours, in seconds
    account_deleted: bool = False
    may_send: bool = True  # the account holds the FCM sending permission in the project
    devices: set[str] = field(default_factory=set)
    unregistered: set[str] = field(default_factory=set)
    other_project: set[str] = field(default_factory=set)
    apns_broken: set[str] = field(default_factory=set)
    rate_limit: int = 0  # sends a second before 429; 0: no limit
    rate_window: float = 1.0  # seconds the limit counts over (longer: no flakiness)
    failing: bool = False
    hang_after_accept: int = 0
    seen: list[Seen] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)
    _tokens: dict[str, float] = field(default_factory=dict)
    _recent: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what tests use -------------------------------------------------------------------------

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
            ]
        )

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def service_account_json(self, **changes: Any) -> str:
        """The key file Firebase console's "Generate new private key" downloads."""
        key = {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pem(rsa_key(self.key_name)),
            "client_email": self.client_email,
            "client_id": "104650532456342373211",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
            + self.client_email.replace("@", "%40"),
            "universe_domain": "googleapis.com",
            **changes,
        }
        return json.dumps(key, indent=2)

    def device(self) -> str:
        """A registration token the app got on a phone."""
        token = secrets.token_urlsafe(32) + ":APA91b" + secrets.token_urlsafe(100)
        self.devices.add(token)
        return token

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def sent(self, method: str, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if (s.method, s.path) == (method, path)]

    def count(self, method: str, path: str) -> int:
        return len(self.sent(method, path))

    @property
    def message_count(self) -> int:
        with self._lock:
            return len(self.accepted)

    # --- Google's token endpoint ----------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        raw = await self._record(request)
        form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        if form.get("grant_type") != JWT_BEARER:
            return _oauth_error(
                "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}"
            )
        assertion = str(form.get("assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                rsa_key(self.key_name).public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "aud", "iat", "exp"], "verify_exp": False},
            )
        except jwt.InvalidAudienceError:
            return _oauth_error("invalid_grant", "Invalid JWT: Failed audience check.")
        except jwt.PyJWTError:
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        now = time.time() + self.clock_skew
        iat, exp = float(claims["iat"]), float(claims["exp"])
        if exp - iat > 3600 or abs(iat - now) > 300 or exp < now:
            return _oauth_error(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        if self.account_deleted or claims["iss"] != self.client_email:
            return _oauth_error("invalid_grant", "Invalid grant: account not found")
        if header.get("kid") not in (None, self.private_key_id):
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
        if SCOPE not in str(claims.get("scope", "")).split():
            return _oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience.")
        token = "ya29.c." + secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        return JSONResponse(
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    # --- FCM ------------------------------------------------------------------------------------

    async def _send(self, request: Request) -> Response:
        raw = await self._record(request)
        if self.failing:
            return _status(503, "The service is currently unavailable.", "UNAVAILABLE")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token) if scheme == "Bearer" else None
        if expires is None or expires < time.monotonic():
            return _status(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential. See https://developers."
                "google.com/identity/sign-in/web/devconsole-project.",
            )
        project = request.path_params["project"]
        if project != self.project_id or not self.may_send:
            return _status(
                403,
                "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresource"
                f"manager.googleapis.com/projects/{project}' (or it may not exist).",
            )
        if self._too_fast():
            return _status(
                429,
                "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per "
                "minute'.",
                "QUOTA_EXCEEDED",
            )
        try:
            body = json.loads(raw)
        except ValueError:
            return _status(400, "Invalid JSON payload received.")
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            return _status(400, "Request contains an invalid argument.", "INVALID_ARGUMENT")
        problem = self._problem(message)
        if problem is not None:
            return problem
        name = f"projects/{project}/messages/0:{time.time_ns()}%{secrets.token_hex(8)}"
        if body.get("validate_only") is True:
            return JSONResponse({"name": f"projects/{project}/messages/fake_message_id"})
        with self._lock:
            self.accepted.append(Accepted(name, message))
            hang = self.hang_after_accept > 0
            if hang:
                self.hang_after_accept -= 1
        if hang:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(status_code=200)
        return JSONResponse({"name": name})

    def _problem(self, message: dict[str, Any]) -> Response | None:
        targets = [name for name in ("token", "topic", "condition") if name in message]
        if len(targets) != 1:
            return _status(400, "Exactly one of token, topic or condition must be specified.")
        data = message.get("data") or {}
        if not isinstance(data, dict):
            return _status(400, "Invalid value at 'message.data' (type.googleapis.com/...).")
        for index, (key, value) in enumerate(data.items()):
            if not isinstance(value, str):
                return _bad_request(
                    f"message.data[{index}].value",
                    f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value}",
                )
            if key in RESERVED_DATA_KEYS or key.startswith("google"):
                return _status(400, f"Invalid data payload key: {key}", "INVALID_ARGUMENT")
        token = message.get("token")
        if token is None:
            return None
        if token in self.unregistered:
            return _status(404, "Requested entity was not found.", "UNREGISTERED")
        if token in self.other_project:
            return _status(403, "SenderId mismatch", "SENDER_ID_MISMATCH")
        if token in self.apns_broken:
            return _status(
                401, "Auth error from APNS or Web Push Service", "THIRD_PARTY_AUTH_ERROR"
            )
        if token not in self.devices:
            return _status(
                400,
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )
        return None

    # --- pieces ---------------------------------------------------------------------------------

    async def _record(self, request: Request) -> bytes:
        body = await request.body()
        with self._lock:
            self.seen.append(
                Seen(
                    request.method,
                    request.url.path,
                    {name.lower(): value for name, value in request.headers.items()},
                    body,
                )
            )
        return body

    def _too_fast(self) -> bool:
        if not self.rate_limit:
            return False
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0] >= self.rate_window:
                self._recent.popleft()
            if len(self._recent) >= self.rate_limit:
                return True
            self._recent.append(now)
        return False


def _status(status: int, message: str, fcm_code: str = "") -> JSONResponse:
    """A google.rpc.Status error, with FCM's own error code when it has one."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if fcm_code:
        error["details"] = [{"@type": FCM_ERROR, "errorCode": fcm_code}]
    return JSONResponse({"error": error}, status_code=status)


def _bad_request(field_name: str, description: str) -> JSONResponse:
    error = {
        "code": 400,
        "message": description,
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field_name, "description": description}],
            }
        ],
    }
    return JSONResponse({"error": error}, status_code=400)


def _oauth_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)
