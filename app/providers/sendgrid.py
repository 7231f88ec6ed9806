"""SendGrid: e-mail to families and staff through SendGrid's v3 Web API, with its signed Event
Webhook reporting what became of each message.

- Send: `POST /v3/mail/send` with the API key as a bearer token. One personalization per
  message: `to`, and `custom_args` carrying our message key (SendGrid copies custom arguments
  into every event about the message). `from` (and `reply_to`) come from the connection;
  `content` lists text/plain before text/html, as SendGrid requires. With an unsubscribe
  address, the `List-Unsubscribe` and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
  headers make the one-click unsubscribe of RFC 8058 that Gmail and Yahoo ask bulk senders for.
  SendGrid answers 202 with no body and the message's id in `X-Message-Id`: the message is
  queued.
- Errors: `{"errors": [{"message", "field", "help"}]}`. A 400 about the message (an address
  that cannot be one, a body too long) fails that message and the next one goes; a 400 about
  the sender (`from`, `reply_to`) would fail every message, so it stops the send for a person
  to fix the settings. 401 is a key SendGrid does not know; 403 a key without the Mail Send
  permission, or a From address that is not a verified sender. 429 is handled by the resilient
  layer (SendGrid acted on nothing, so it waits and tries again).
- Not idempotent, and `find` cannot help: only the paid Email Activity add-on lets a message be
  looked up, so a send whose answer was lost is left for a person to check (`CannotTell`).
- Health: `GET /v3/scopes`, which any valid key may call and which says whether the key holds
  `mail.send`.
- Event Webhook: SendGrid posts JSON arrays of events (processed, deferred, delivered, bounce,
  dropped, open, click, spamreport, unsubscribe, group_unsubscribe …), signed with ECDSA
  (`SendGridVerifier`). Each event's `sg_message_id` is the X-Message-Id followed by a dot and
  SendGrid's own routing suffix.

Relied on: SendGrid's v3 API reference (twilio.com/docs/sendgrid/api-reference: "Send email
with Twilio SendGrid" — the request body, 202 and the errors object; "Mail Send errors";
"Retrieve a list of scopes for which this user has access"), "Personalizations", "Custom
Arguments", "How to implement list-unsubscribe" (with the One-Click header), the Event Webhook
Reference (event types, `sg_message_id`, `reason`, `type` of a bounce, `email`), "Getting
Started with the Event Webhook Security Features", "Email Activity Feed API" (an add-on), "Sender
Identity" (the 403 for an unverified From), and "Regional Email Sending" (api.eu.sendgrid.com).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.domain.messages import AddressError, Channel, MessageStatus, email_address
from app.providers.base import HealthResult, Provider
from app.providers.http import CredentialsRefused, ProviderError, ResilientClient
from app.providers.messaging import (
    MESSAGING,
    CannotTell,
    Delivery,
    MessageRefused,
    OutgoingMessage,
    Reply,
    Sent,
    reads_deliveries,
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
    WebhookSpec,
)

REGIONS = {
    "global": "https://api.sendgrid.com",
    "eu": "https://api.eu.sendgrid.com",  # subusers with EU data residency
}
SEND = Operation("mail.send", "POST", "/v3/mail/send")
SCOPES = Operation("scopes", "GET", "/v3/scopes", timeout=10.0)
MAIL_SEND_SCOPE = "mail.send"
# The custom argument that carries our message key into every event about the message.
KEY_ARGUMENT = "switchboard_key"
# Fields of a 400 that are about the connection's settings, not the message.
SENDER_FIELDS = ("from", "reply_to")

# What each event says became of the message. Opens and clicks prove it arrived (a "delivered"
# that comes later changes nothing). Events not named here (group_resubscribe, and any SendGrid
# adds) report nothing.
EVENT_STATUSES = {
    "processed": MessageStatus.QUEUED,
    "deferred": MessageStatus.QUEUED,  # the receiving server said "later": SendGrid retries
    "delivered": MessageStatus.DELIVERED,
    "open": MessageStatus.DELIVERED,
    "click": MessageStatus.DELIVERED,
    "bounce": MessageStatus.BOUNCED,  # `type` "bounce" or "blocked": either way it did not arrive
    "dropped": MessageStatus.FAILED,
}
# The person asked not to get the school's e-mail: from the message itself (so it arrived).
OPT_OUT_EVENTS = frozenset({"unsubscribe", "group_unsubscribe", "spamreport"})
# A drop because the address is on a suppression list the person put it on.
OPT_OUT_DROPS = frozenset({"unsubscribed address", "spam reporting address"})


class SendGrid(Provider):
    channels = frozenset({Channel.EMAIL})

    async def send(self, message: OutgoingMessage) -> Sent:
        if not (message.text or message.html):
            raise MessageRefused("The e-mail has no text: its template gave neither text nor HTML.")
        response = await self.call(SEND, json=self._mail(message))
        if response.status_code >= 400:
            raise self._refusal(response)
        # SendGrid always names the message; without the header, it was still accepted.
        return Sent(response.headers.get("X-Message-Id", ""), MessageStatus.QUEUED)

    async def find(self, message: OutgoingMessage, since: datetime) -> Sent | None:
        raise CannotTell(
            "SendGrid can only look a message up with its paid Email Activity add-on, so "
            "whether this e-mail went cannot be asked; check SendGrid's Activity page."
        )

    async def check_health(self) -> HealthResult:
        started = time.monotonic()
        try:
            response = await self.call(SCOPES)
        except ProviderError as exc:
            return HealthResult(False, _since(started), str(exc), exc.error_class)
        elapsed = _since(started)
        if response.status_code >= 400:
            error = self._refusal(response)
            return HealthResult(False, elapsed, str(error), error.error_class)
        scopes = _json(response).get("scopes")
        if isinstance(scopes, list) and MAIL_SEND_SCOPE not in scopes:
            return HealthResult(
                False,
                elapsed,
                "SendGrid accepts the API key, but the key may not send e-mail: give it the "
                "Mail Send permission (Settings → API Keys) or create a new one.",
                CredentialsRefused.error_class,
            )
        return HealthResult(True, elapsed, f"{self.spec.name} answered in {elapsed:.0f} ms.")

    def _mail(self, message: OutgoingMessage) -> dict[str, Any]:
        sender: dict[str, str] = {"email": str(self.config.get("from_email", ""))}
        if self.config.get("from_name"):
            sender["name"] = str(self.config["from_name"])
        content = [
            {"type": kind, "value": value}
            for kind, value in (("text/plain", message.text), ("text/html", message.html))
            if value
        ]
        mail: dict[str, Any] = {
            "personalizations": [
                {"to": [{"email": message.to}], "custom_args": {KEY_ARGUMENT: message.key}}
            ],
            "from": sender,
            "subject": message.subject,
            "content": content,
        }
        if self.config.get("reply_to"):
            mail["reply_to"] = {"email": str(self.config["reply_to"])}
        if message.unsubscribe_url:
            mail["headers"] = {
                "List-Unsubscribe": f"<{message.unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        return mail

    def _refusal(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        errors = [error for error in _json(response).get("errors") or [] if isinstance(error, dict)]
        said = "; ".join(text_of(error.get("message")) for error in errors if error.get("message"))
        said = said or f"HTTP {status}"
        fields = [text_of(error.get("field")) for error in errors]
        if status == 401:
            return CredentialsRefused(
                f"SendGrid refused the API key ({said}); create one with the Mail Send "
                "permission (Settings → API Keys) and give it to the connection.",
                status=status,
            )
        if status == 403:
            return CredentialsRefused(
                f"SendGrid would not send ({said}). The API key needs the Mail Send permission "
                "and the From address must be a verified sender in SendGrid.",
                status=status,
            )
        if status == 400 and any(field.startswith(SENDER_FIELDS) for field in fields):
            return ProviderError(
                f"SendGrid refused the sender ({said}); correct the From or Reply-To address "
                "in the connection's settings.",
                status=status,
            )
        if status in (400, 413):
            return MessageRefused(
                f"SendGrid refused the e-mail: {said}", code=next((f for f in fields if f), "")
            )
        return ProviderError(f"SendGrid answered HTTP {status}: {said}", status=status)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _since(started: float) -> float:
    return (time.monotonic() - started) * 1000


def message_id(sg_message_id: str) -> str:
    """The X-Message-Id a send answered, from an event's `sg_message_id` ("<id>.filter…")."""
    return sg_message_id.partition(".")[0]


@reads_deliveries("sendgrid")
def deliveries(event_type: str, body: bytes) -> Sequence[Delivery | Reply]:
    """Every event in a batch that says what became of a message, in the order sent."""
    try:
        events = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(events, list):
        return []
    reports: list[Delivery | Reply] = []
    for event in events:
        if not isinstance(event, dict):
            continue
        report = _report(event)
        if report is not None:
            reports.append(report)
    return reports


def _report(event: Mapping[str, Any]) -> Delivery | None:
    name = text_of(event.get("event")).lower()
    provider_id = message_id(text_of(event.get("sg_message_id")))
    address = text_of(event.get("email"))
    reason = text_of(event.get("reason"))
    if name in OPT_OUT_EVENTS:
        # Kept even without a message id (a person can unsubscribe from the group's page).
        return Delivery(provider_id, MessageStatus.DELIVERED, opted_out=True, address=address)
    status = EVENT_STATUSES.get(name)
    if status is None or not provider_id:
        return None
    if name == "dropped" and reason.strip().lower() in OPT_OUT_DROPS:
        return Delivery(
            provider_id, MessageStatus.OPTED_OUT, error=reason, opted_out=True, address=address
        )
    error = ""
    if status in (MessageStatus.BOUNCED, MessageStatus.FAILED):
        code = text_of(event.get("status"))
        error = (reason or f"SendGrid reported the e-mail {name}") + (f" ({code})" if code else "")
    return Delivery(provider_id, status, error=error, address=address)


# --- the connection --------------------------------------------------------------------------


def _api_key(text: str) -> None:
    if not text.startswith("SG."):
        raise ValueError("A SendGrid API key starts with SG. (Settings → API Keys).")


def _email(text: str) -> None:
    try:
        email_address(text)
    except AddressError as exc:
        raise ValueError(str(exc)) from None


def verification_key(text: str) -> ec.EllipticCurvePublicKey:
    """The Event Webhook's verification key as SendGrid shows it (base64 of a P-256 public key,
    "MFkw…"), or ValueError saying what to paste."""
    try:
        key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(
            "Paste the verification key exactly as SendGrid shows it under Settings → Mail "
            "Settings → Event Webhook → Signature verification (one line starting MFkw)."
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("That is a public key, but not the P-256 key SendGrid signs with.")
    return key


def _verification_keys(text: str) -> None:
    # Several keys, separated by spaces, while one is being replaced.
    for part in text.split():
        verification_key(part)


def _sendgrid(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return SendGrid(spec, client, config, secrets)


def _headers(_config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {secrets.get('api_key', '')}"}


def _base_url(config: Mapping[str, Any]) -> str:
    return str(config.get("api_url") or REGIONS[str(config.get("region") or "global")])


SENDGRID = ProviderSpec(
    key="sendgrid",
    name="SendGrid",
    category=Category.MESSAGING,
    description=(
        "E-mail to families and staff through your SendGrid account, with deliveries, bounces "
        "and unsubscribes reported back by SendGrid's signed Event Webhook."
    ),
    fields=(
        ConfigField(
            "api_key",
            "API key",
            FieldKind.SECRET,
            help="Create one under Settings → API Keys with at least the Mail Send permission; "
            "SendGrid shows it only once.",
            check=_api_key,
        ),
        ConfigField(
            "from_email",
            "From address",
            help="The address e-mails come from: a verified Single Sender, or any address at a "
            "domain you authenticated in SendGrid (Settings → Sender Authentication).",
            check=_email,
        ),
        ConfigField(
            "from_name",
            "From name",
            required=False,
            help="The name families see beside the address, like the school's name.",
        ),
        ConfigField(
            "reply_to",
            "Reply-To address",
            required=False,
            help="Where replies go, if not to the From address (the school office, say).",
            check=_email,
        ),
        ConfigField(
            "region",
            "Region",
            FieldKind.SELECT,
            required=False,
            default="global",
            choices=tuple(REGIONS),
            help="EU for a SendGrid subuser with EU data residency; otherwise Global.",
        ),
        ConfigField(
            "verification_key",
            "Event Webhook verification key",
            FieldKind.SECRET,
            required=False,
            help="Turn on Signed Event Webhook (Settings → Mail Settings → Event Webhook) and "
            "paste the verification key it shows, so delivery reports are believed. While "
            "replacing it, give the new and the old one separated by a space.",
            check=_verification_keys,
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use SendGrid's own address for the region.",
        ),
    ),
    auth=AuthKind.API_KEY,
    capabilities=frozenset({MESSAGING}),
    health=SCOPES,
    base_url=_base_url,
    factory=_sendgrid,
    policy=ResiliencePolicy(
        timeout=15.0,
        retry=RetryPolicy(attempts=3, base_delay=0.5, max_delay=8.0),
        rate=RatePolicy(requests=10, per_seconds=1),
    ),
    headers=_headers,
    webhook=WebhookSpec("sendgrid", "verification_key"),
)
