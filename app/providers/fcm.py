"""Firebase Cloud Messaging: push notifications to the school's app on families' phones, through
FCM's HTTP v1 API with a service account of the Firebase project.

- Authentication: the service account's JSON key (kept whole as one secret) signs a JWT
  (RS256, the key's `private_key_id` as `kid`) with `iss` the account's `client_email`, the
  `firebase.messaging` scope, `aud` its `token_uri`, `iat` now and `exp` an hour later, which
  the OAuth 2.0 JWT bearer grant (RFC 7523: `grant_type=urn:ietf:params:oauth:grant-type:
  jwt-bearer&assertion=…`, form-encoded) at `token_uri` exchanges for an access token of about
  an hour. The token is kept in memory only, renewed a minute before it ends, and fetched again
  once if FCM says it is no longer valid; the token request goes through the resilient layer
  like every other call. `invalid_grant` (a deleted or disabled key, or this computer's clock
  far off) is refused credentials.
- Send: `POST /v1/projects/{project_id}/messages:send` with `{"message": {"token",
  "notification": {"title", "body"}, "data"}}`; FCM answers the message's `name`
  ("projects/…/messages/…"). FCM tells nothing more about a message after it took it (there
  are no delivery callbacks), so a push is SENT.
- Errors are google.rpc.Status objects, `{"error": {"code", "message", "status", "details"}}`,
  whose `google.firebase.fcm.v1.FcmError` detail names the FCM error: UNREGISTERED (404: the
  app was uninstalled or the token expired), INVALID_ARGUMENT (400) and SENDER_ID_MISMATCH (403:
  the device belongs to another project) fail that message and the next goes; QUOTA_EXCEEDED
  (429) is waited out by the resilient layer; UNAVAILABLE and INTERNAL are FCM's own trouble;
  THIRD_PARTY_AUTH_ERROR (401) means the APNs or web push credentials uploaded to Firebase
  are missing or wrong, which a person must fix (our own token is not renewed for it). A 403
  without an FCM detail is a service account without permission to send in the project.
- Not idempotent, and FCM keeps no list of messages: `find` cannot tell.
- Health: a token, then a send with `validate_only: true` to a topic: FCM checks everything
  (the token, the permission, the project) and delivers nothing.

Relied on: Firebase's "FCM HTTP v1 API" reference (firebase.google.com/docs/reference/fcm/rest/
v1/projects.messages: send, `validate_only`, the Message resource with token, topic,
notification and data; "ErrorCode" with each code's HTTP status), "Authorize send requests"
(the firebase.messaging scope, service accounts), "FCM error codes" (the error body with its
details), Google Identity's "Using OAuth 2.0 for Server to Server Applications" (the JWT's
header and claims, at most an hour, the token request and answer, `invalid_grant`), RFC 7523
section 2.1 and RFC 7519, and PyJWT's `jwt.encode` with RS256.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.domain.messages import Channel, MessageStatus
from app.logs import REDACTOR
from app.providers.base import BearerProvider, HealthResult, Provider
from app.providers.http import CredentialsRefused, ProviderError, ResilientClient
from app.providers.messaging import (
    MESSAGING,
    CannotTell,
    MessageRefused,
    OutgoingMessage,
    Sent,
    text_of,
)
from app.providers.spec import (
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    RatePolicy,
    ResiliencePolicy,
    RetryPolicy,
)

FCM_URL = "https://fcm.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - an address
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_SECONDS = 3600  # the longest Google accepts
RENEW_SECONDS = 60.0
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
HEALTH_TOPIC = "switchboard-health-check"

SEND = Operation("messages.send", "POST", "/v1/projects/{project}/messages:send")
# A validate-only send delivers nothing: repeating it cannot do anything twice.
VALIDATE = Operation(
    "messages.validate", "POST", "/v1/projects/{project}/messages:send", idempotent=True
)
# Getting a token changes nothing at Google; its address is the service account's, per call.
TOKEN = Operation("fcm-token", "POST", GOOGLE_TOKEN_URI, idempotent=True)

REFUSALS = {
    "UNREGISTERED": "The device is no longer registered for notifications (the app was "
    "uninstalled, or has not been opened for a long time); ask the family to open the app again.",
    "INVALID_ARGUMENT": "FCM refused the notification",
    "SENDER_ID_MISMATCH": "The device is registered with another Firebase project than this "
    "connection's.",
}


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a Google service account's JSON key that sending needs."""

    project_id: str
    client_email: str
    private_key: str  # PEM
    private_key_id: str
    token_uri: str


def service_account(text: str) -> ServiceAccount:
    """The service account in a JSON key file's text, or ValueError with a sentence saying what
    to give instead."""
    download = (
        "Give the JSON key file of the Firebase project's service account (Firebase console → "
        "Project settings → Service accounts → Generate new private key)."
    )
    try:
        key = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"That is not JSON. {download}") from None
    if not isinstance(key, dict):
        raise ValueError(f"That is not a key file. {download}")
    if key.get("type") != "service_account":
        raise ValueError(f"That JSON is not a service account's key. {download}")
    fields = {name: key.get(name) for name in ("project_id", "client_email", "private_key")}
    missing = [name for name, value in fields.items() if not isinstance(value, str) or not value]
    if missing:
        raise ValueError(f"The key file has no {', '.join(missing)}. {download}")
    token_uri = key.get("token_uri") or GOOGLE_TOKEN_URI
    parts = urlsplit(token_uri) if isinstance(token_uri, str) else None
    loopback = parts is not None and parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts is None or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ValueError(f"The key file's token_uri is not a secure web address. {download}")
    try:
        private = serialization.load_pem_private_key(str(fields["private_key"]).encode(), None)
    except (ValueError, TypeError):
        raise ValueError(f"The key file's private key cannot be read. {download}") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"The key file's private key is not an RSA key. {download}")
    key_id = key.get("private_key_id")
    return ServiceAccount(
        project_id=str(fields["project_id"]),
        client_email=str(fields["client_email"]),
        private_key=str(fields["private_key"]),
        private_key_id=key_id if isinstance(key_id, str) else "",
        token_uri=str(token_uri),
    )


class FirebaseMessaging(BearerProvider):
    channels = frozenset({Channel.PUSH})

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self._account: ServiceAccount | None = None
        self._unusable = ""
        try:
            self._account = service_account(secrets.get("service_account", ""))
        except ValueError as exc:
            self._unusable = str(exc)
        configured = str(config.get("project_id") or "")
        self.project_id = configured or (self._account.project_id if self._account else "")

    # --- authentication -------------------------------------------------------------------------

    async def call(self, operation: Operation, **arguments: Any) -> httpx.Response:
        path_params = {"project": self.project_id, **(arguments.get("path_params") or {})}
        arguments = {**arguments, "path_params": path_params}
        token = await self._access_token()
        response = await self._bearer_call(token, operation, arguments)
        if response.status_code == 401 and _fcm_code(_error(response)) != "THIRD_PARTY_AUTH_ERROR":
            # Our token expired sooner than said, or was revoked: FCM did nothing. One new
            # token, one more try.
            self._forget(token)
            response = await self._bearer_call(await self._access_token(), operation, arguments)
        return response

    async def _new_token(self) -> tuple[str, float]:
        account = self._account
        if account is None:
            raise CredentialsRefused(self._unusable or "The connection has no service account.")
        now = int(time.time())
        claims = {
            "iss": account.client_email,
            "scope": SCOPE,
            "aud": account.token_uri,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        }
        headers = {"kid": account.private_key_id} if account.private_key_id else None
        assertion = jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)
        response = await self.client.call(
            replace(TOKEN, path=account.token_uri),
            data={"grant_type": JWT_BEARER, "assertion": assertion},
            headers={"Accept": "application/json"},
        )
        answer = _body(response)
        if response.status_code in (400, 401, 403):
            error = text_of(answer.get("error"))
            description = text_of(answer.get("error_description"))
            clock = (
                " This computer's clock may be wrong: set it to the right time."
                if any(word in description for word in ("iat", "exp", "timeframe"))
                else ""
            )
            raise CredentialsRefused(
                f"Google refused the service account ({error or response.status_code}"
                + (f": {description}" if description else "")
                + "). Generate a new key in Firebase console (Project settings → Service "
                f"accounts) and give it to the connection.{clock}",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise ProviderError(
                f"Google did not give an access token (HTTP {response.status_code}).",
                status=response.status_code,
            )
        token = answer.get("access_token")
        try:
            lifetime = float(answer.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        if not isinstance(token, str) or not token:
            raise ProviderError("Google's token endpoint answered without an access token.")
        REDACTOR.add(token)
        return token, time.monotonic() + max(lifetime - RENEW_SECONDS, 0.0)

    # --- messages -------------------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> Sent:
        push: dict[str, Any] = {"token": message.to}
        shown = {"title": message.subject, "body": message.text}
        if any(shown.values()):
            push["notification"] = {name: value for name, value in shown.items() if value}
        if message.data:
            push["data"] = dict(message.data)
        response = await self.call(SEND, json={"message": push})
        if response.status_code >= 400:
            raise self._refusal(response)
        # FCM reports nothing after it took a message: the furthest a push gets is "sent".
        return Sent(text_of(_body(response).get("name")), MessageStatus.SENT)

    async def find(self, message: OutgoingMessage, since: datetime) -> Sent | None:
        raise CannotTell(
            "Firebase keeps no list of the notifications it sent, so whether this one went "
            "cannot be asked."
        )

    async def check_health(self) -> HealthResult:
        started = time.monotonic()
        dry_run = {
            "validate_only": True,
            "message": {"topic": HEALTH_TOPIC, "notification": {"title": "Health check"}},
        }
        try:
            response = await self.call(VALIDATE, json=dry_run)
        except ProviderError as exc:
            return HealthResult(False, _since(started), str(exc), exc.error_class)
        elapsed = _since(started)
        if response.status_code >= 400:
            error = self._refusal(response)
            return HealthResult(False, elapsed, str(error), error.error_class)
        return HealthResult(
            True, elapsed, f"{self.spec.name} checked a test notification in {elapsed:.0f} ms."
        )

    def _refusal(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        error = _error(response)
        code = _fcm_code(error)
        said = text_of(error.get("message")) or f"HTTP {status}"
        reason = code or text_of(error.get("status"))
        if code in REFUSALS or (status == 400 and reason == "INVALID_ARGUMENT"):
            return MessageRefused(
                f"{REFUSALS.get(code or reason, REFUSALS['INVALID_ARGUMENT'])} ({said}).",
                code=reason,
            )
        if code == "THIRD_PARTY_AUTH_ERROR":
            return CredentialsRefused(
                "Apple's (APNs) or the browsers' web push credentials in the Firebase project "
                f"are missing or not valid ({said}); upload them in Firebase console → Project "
                "settings → Cloud Messaging.",
                status=status,
            )
        if status in (401, 403):
            return CredentialsRefused(
                f"FCM refused the service account for project {self.project_id} ({said}). Give "
                "it the Firebase Cloud Messaging API Admin role and make sure the Firebase "
                "Cloud Messaging API is enabled in the project.",
                status=status,
            )
        if status == 404:
            return ProviderError(
                f"FCM does not know the project {self.project_id} ({said}); check the project "
                "ID, or the service account's key.",
                status=status,
            )
        return ProviderError(f"FCM answered HTTP {status}: {said}", status=status)


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content or b"{}")
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _error(response: httpx.Response) -> dict[str, Any]:
    error = _body(response).get("error")
    return error if isinstance(error, dict) else {}


def _fcm_code(error: Mapping[str, Any]) -> str:
    """The FcmError detail's errorCode, or ""."""
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            return text_of(detail.get("errorCode"))
    return ""


def _since(started: float) -> float:
    return (time.monotonic() - started) * 1000


# --- the connection --------------------------------------------------------------------------


def _check_service_account(text: str) -> None:
    service_account(text)


def _project_id(text: str) -> None:
    if not text.replace("-", "").isalnum() or not text.isascii() or text != text.lower():
        raise ValueError("A Firebase project ID has lower-case letters, digits and hyphens.")


def _fcm(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return FirebaseMessaging(spec, client, config, secrets)


FCM = ProviderSpec(
    key="fcm",
    name="Firebase Cloud Messaging",
    category=Category.MESSAGING,
    description=(
        "Push notifications to the school's app on families' phones and browsers, through "
        "Firebase Cloud Messaging with a service account of the app's Firebase project."
    ),
    fields=(
        ConfigField(
            "service_account",
            "Service account key (JSON)",
            FieldKind.SECRET,
            help="Firebase console → Project settings → Service accounts → Generate new private "
            "key: give the whole JSON file. It stays in this computer's credential store.",
            check=_check_service_account,
            max_length=20_000,
        ),
        ConfigField(
            "project_id",
            "Project ID",
            required=False,
            help="Leave empty to use the service account's own project.",
            check=_project_id,
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use Firebase's own address.",
        ),
    ),
    auth=AuthKind.OAUTH2_CLIENT_CREDENTIALS,
    capabilities=frozenset({MESSAGING}),
    health=VALIDATE,
    base_url=lambda config: str(config.get("api_url") or FCM_URL),
    factory=_fcm,
    policy=ResiliencePolicy(
        timeout=15.0,
        retry=RetryPolicy(attempts=3, base_delay=0.5, max_delay=8.0),
        rate=RatePolicy(requests=50, per_seconds=1),
    ),
)
