"""Twilio Programmable Messaging: SMS (and WhatsApp through Twilio's sender) with status
callbacks.

- Send: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`, `From` (or
  `MessagingServiceSid`), `Body`, `StatusCallback`; HTTP Basic with the Account SID and the
  Auth Token. 201 answers the Message resource: `sid`, `status` (`queued`, or `accepted`
  through a Messaging Service), `num_segments`, `price` (negative, filled in later) and
  `price_unit`.
- Errors: `{"code", "message", "more_info", "status"}`. A 400 is about this message (21211 not
  a valid number, 21408 region not enabled, 21610 the person replied STOP, 21614 not a mobile
  number): the message failed and the next one goes. 20003 is refused credentials, 20429 "too
  many requests" (the resilient layer waits and tries again: Twilio did not act on it).
- Not idempotent: Twilio takes no idempotency key, so a create that got no answer is never
  repeated; `find` lists the account's messages to the number since the send began
  (`GET …/Messages.json?To=&DateSent>=`) and recognizes ours by its text.
- Status callbacks: form posts signed with `X-Twilio-Signature` (the auth token's HMAC-SHA1 of
  the URL and the sorted parameters; `TwilioVerifier`) carrying `MessageSid`, `MessageStatus`
  (queued, sending, sent, delivered, undelivered, failed, read) and `ErrorCode`; an incoming
  SMS to the number comes the same way with `SmsStatus=received`, `From` and `Body`: "STOP"
  and "START" change the sender's opt-out (Twilio itself blocks further messages after STOP,
  answering 21610).

Relied on: twilio.com/docs/messaging/api/message-resource (create, list filters, properties),
".../guides/outbound-message-status-in-status-callbacks", twilio.com/docs/api/errors (21211,
21610, 20003, 20429), "Advanced opt-out" (the standard keywords).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import httpx

from app.domain.messages import Channel, MessageStatus, sms_length
from app.domain.money import exponent
from app.providers.base import Provider
from app.providers.http import CredentialsRefused, ProviderError, ResilientClient
from app.providers.messaging import (
    MESSAGING,
    Delivery,
    MessageRefused,
    OutgoingMessage,
    Reply,
    Sent,
    reads_deliveries,
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

TWILIO_URL = "https://api.twilio.com"
ACCOUNT = Operation("account", "GET", "/2010-04-01/Accounts/{account}.json", timeout=10.0)
SEND = Operation("messages.create", "POST", "/2010-04-01/Accounts/{account}/Messages.json")
LIST = Operation("messages.list", "GET", "/2010-04-01/Accounts/{account}/Messages.json")

STATUSES = {
    "accepted": MessageStatus.QUEUED,
    "scheduled": MessageStatus.QUEUED,
    "queued": MessageStatus.QUEUED,
    "sending": MessageStatus.QUEUED,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.FAILED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,
}
# Error codes that say the person asked not to get messages from this sender.
OPTED_OUT_CODES = frozenset({"21610"})
ERROR_HINTS = {
    "21211": "The number is not a valid phone number; correct it in the contact's details.",
    "21408": "Twilio is not allowed to send to this country; enable it in Twilio's "
    "Messaging Geographic Permissions.",
    "21610": "The person replied STOP to this number, so Twilio will not send to them.",
    "21614": "The number cannot receive SMS (it is not a mobile number).",
    "30003": "The phone was switched off or out of reach.",
    "30004": "The message was blocked by the person or their network.",
    "30005": "The number does not exist (any more).",
    "30006": "The number cannot receive SMS (a landline, or the network does not allow it).",
    "30007": "The network filtered the message as spam.",
}


def _account_sid(text: str) -> None:
    if not re.fullmatch(r"AC[0-9a-fA-F]{32}", text):
        raise ValueError("The Account SID starts with AC and has 32 more letters and digits.")


class Twilio(Provider):
    channels = frozenset({Channel.SMS})

    async def call(self, operation: Operation, **arguments: Any) -> httpx.Response:
        values = {
            "account": self.config.get("account_sid", ""),
            **(arguments.get("path_params") or {}),
        }
        return await super().call(operation, **{**arguments, "path_params": values})

    async def send(self, message: OutgoingMessage) -> Sent:
        form = {"To": message.to, "Body": message.text}
        service = str(self.config.get("messaging_service_sid") or "")
        sender = str(self.config.get("from_number") or "")
        if service:
            form["MessagingServiceSid"] = service
        elif sender:
            form["From"] = sender
        else:
            raise MessageRefused(
                f"{self.spec.name} has no sender: give the connection a From number or a "
                "Messaging Service SID."
            )
        if message.status_callback:
            form["StatusCallback"] = message.status_callback
        response = await self.call(SEND, data=form)
        body = _json(response)
        if response.status_code >= 400:
            raise self._refusal(response.status_code, body)
        return self._sent(body, message.text)

    async def find(self, message: OutgoingMessage, since: datetime) -> Sent | None:
        params = {
            "To": message.to,
            "DateSent>": since.strftime("%Y-%m-%d"),
            "PageSize": "100",
        }
        pages = 0
        next_uri: str | None = None
        while pages < 10:
            if next_uri:
                query = dict(parse_qsl(next_uri.partition("?")[2], keep_blank_values=True))
                response = await self.call(LIST, params=query)
            else:
                response = await self.call(LIST, params=params)
            body = _json(response)
            if response.status_code >= 400:
                raise self._refusal(response.status_code, body)
            for item in body.get("messages") or []:
                if not isinstance(item, dict):
                    continue
                if item.get("direction", "outbound-api") != "outbound-api":
                    continue
                if item.get("to") == message.to and item.get("body") == message.text:
                    return self._sent(item, message.text)
            next_uri = (
                body.get("next_page_uri") if isinstance(body.get("next_page_uri"), str) else None
            )
            if not next_uri:
                return None
            pages += 1
        return None

    def _sent(self, body: Mapping[str, Any], text: str) -> Sent:
        status = STATUSES.get(str(body.get("status") or "queued"), MessageStatus.QUEUED)
        segments = _int(body.get("num_segments")) or sms_length(text).segments
        cost, currency = _price(body.get("price"), body.get("price_unit"))
        if cost is None:
            estimate = self.config.get("price_per_segment")
            currency = str(self.config.get("price_currency") or "USD")
            if isinstance(estimate, int | float) and estimate > 0:
                cost = round(Decimal(str(estimate)) * segments * 10 ** exponent(currency))
        return Sent(
            provider_id=str(body.get("sid") or ""),
            status=status,
            cost_minor=cost,
            currency=currency if cost is not None else "",
            segments=segments,
        )

    def _refusal(self, status: int, body: Mapping[str, Any]) -> ProviderError:
        code = str(body.get("code") or "")
        said = str(body.get("message") or f"HTTP {status}")
        if status in (401, 403) or code == "20003":
            return CredentialsRefused(
                f"{self.spec.name} refused the Account SID and Auth Token ({said}); check them "
                "in the connection's settings.",
                status=status,
            )
        if status == 404:
            return ProviderError(
                f"{self.spec.name} does not know this account ({said}).", status=status
            )
        hint = ERROR_HINTS.get(code, "")
        return MessageRefused(
            f"{self.spec.name} refused the message: {said}" + (f" {hint}" if hint else ""),
            code=code,
            opted_out=code in OPTED_OUT_CODES,
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _price(value: Any, unit: Any) -> tuple[int | None, str]:
    """Twilio's price ("-0.00750", negative for a charge) in minor units of its currency."""
    if value in (None, "") or not isinstance(unit, str) or not unit:
        return None, ""
    try:
        amount = abs(Decimal(str(value)))
        currency = unit.upper()
        return round(amount * 10 ** exponent(currency)), currency
    except (InvalidOperation, ValueError):
        return None, ""


@reads_deliveries("twilio")
def deliveries(event_type: str, body: bytes) -> Sequence[Delivery | Reply]:
    """A status callback's report, or an incoming SMS as a reply."""
    try:
        fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return []
    if not fields:
        try:
            loaded = json.loads(body)
        except ValueError:
            return []
        fields = (
            {k: v for k, v in loaded.items() if isinstance(v, str)}
            if isinstance(loaded, dict)
            else {}
        )
    sid = fields.get("MessageSid") or fields.get("SmsSid") or ""
    raw = (fields.get("MessageStatus") or fields.get("SmsStatus") or "").lower()
    if not sid or not raw:
        return []
    if raw == "received":
        return [Reply(fields.get("From", ""), fields.get("Body", ""), sid)]
    status = STATUSES.get(raw)
    if status is None:
        return []
    code = fields.get("ErrorCode", "")
    error = ""
    if status is MessageStatus.FAILED:
        error = ERROR_HINTS.get(code, f"Twilio reported the message {raw}") + (
            f" (error {code})" if code else ""
        )
    return [
        Delivery(
            provider_id=sid,
            status=status,
            error=error,
            opted_out=code in OPTED_OUT_CODES,
            address=fields.get("To", ""),
        )
    ]


def _twilio(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return Twilio(spec, client, config, secrets)


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _headers(config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    return basic_auth(str(config.get("account_sid", "")), secrets.get("auth_token", ""))


TWILIO_FIELDS = (
    ConfigField(
        "account_sid",
        "Account SID",
        help="On your Twilio Console's home page (starts with AC).",
        check=_account_sid,
    ),
    ConfigField(
        "auth_token",
        "Auth Token",
        FieldKind.SECRET,
        help="Next to the Account SID. It also signs Twilio's delivery reports.",
    ),
    ConfigField(
        "from_number",
        "From number",
        required=False,
        help="Your Twilio phone number in international form (+1 555 …) or an alphanumeric "
        "sender ID. Not needed with a Messaging Service.",
    ),
    ConfigField(
        "messaging_service_sid",
        "Messaging Service SID",
        required=False,
        help="Send through a Messaging Service (starts with MG) instead of one number.",
    ),
    ConfigField(
        "rate_per_second",
        "Messages per second",
        FieldKind.NUMBER,
        required=False,
        default=10,
        minimum=0.1,
        maximum=1000,
        help="How many messages your Twilio numbers may send a second (1 for one US long "
        "code; more for short codes and Messaging Services with several numbers).",
    ),
    ConfigField(
        "price_per_segment",
        "Price per SMS part (for estimates)",
        FieldKind.NUMBER,
        required=False,
        default=0.0,
        minimum=0,
        maximum=10,
        help="Used to show what a send will cost before Twilio reports its own price.",
    ),
    ConfigField("price_currency", "Currency of that price", required=False, default="USD"),
    ConfigField(
        "api_url",
        "Address (advanced)",
        FieldKind.URL,
        required=False,
        help="Leave empty to use Twilio's own address.",
    ),
)

TWILIO = ProviderSpec(
    key="twilio",
    name="Twilio SMS",
    category=Category.MESSAGING,
    description="Text messages to families and teachers through your Twilio account, with "
    "delivery reports and STOP replies honoured.",
    fields=TWILIO_FIELDS,
    auth=AuthKind.BASIC,
    capabilities=frozenset({MESSAGING}),
    health=ACCOUNT,
    base_url=lambda config: str(config.get("api_url") or TWILIO_URL),
    factory=_twilio,
    policy=ResiliencePolicy(
        timeout=15.0,
        retry=RetryPolicy(attempts=4, base_delay=0.5, max_delay=4.0),
        rate=RatePolicy(requests=10, per_seconds=1),
    ),
    headers=_headers,
    webhook=WebhookSpec("twilio", "auth_token", "application/x-www-form-urlencoded"),
    rate_field="rate_per_second",
)
