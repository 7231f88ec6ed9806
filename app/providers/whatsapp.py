"""WhatsApp Business messages through Meta's WhatsApp Cloud API, with delivery reports and replies
from its webhooks.

- Send: `POST /{version}/{phone_number_id}/messages` on graph.facebook.com with the access token
  (a System User's, which does not expire) as a bearer token: `messaging_product: whatsapp`,
  `to` (the number in E.164 without its "+"), and either an approved template (`type:
  template`, its `name`, `language.code` and the body's text parameters in order) or, inside
  the 24 hours after the person last wrote, plain text (`type: text`). Our message key goes
  as `biz_opaque_callback_data`, which Meta copies into every status about the message. Meta
  answers `{"messages": [{"id": "wamid…"}]}`: the message is queued.
- Errors are Graph API errors, `{"error": {"message", "type", "code", "error_subcode",
  "error_data": {"details"}, "fbtrace_id"}}`, nearly all with HTTP 400 whatever they mean, so
  the `code` decides: 190 (the token expired or was revoked), 0, 10 and 200–299 are refused
  credentials; 4, 80007, 130429 (throughput), 131048 (spam rate limit) and 131056 (too many
  messages to one person) are rate limits — Meta did not act, and the send waits; 131026
  (undeliverable: not on WhatsApp, old app, terms not accepted), 131047 (outside the 24-hour
  window), 131049, 131050 (the person stopped marketing messages: an opt-out), 131051, 131021,
  100/131008/131009 (a parameter such as the number) and the template errors 132000–132016 fail
  that one message and the next goes. Anything else (the account locked, payment, the phone
  number id unknown) stops the send for a person to look at.
- Not idempotent, and Meta keeps no list of sent messages to search: `find` cannot tell.
- Health: `GET /{version}/{phone_number_id}` (the number's display name and quality rating).
- Webhooks: `POST`s signed with `X-Hub-Signature-256` (HMAC-SHA256 of the body with the app
  secret; `HubSignatureVerifier`), body `{"object": "whatsapp_business_account", "entry":
  [{"changes": [{"field": "messages", "value": {...}}]}]}` whose value holds `statuses` (sent,
  delivered, read, failed with `errors`) and `messages` (what people write: "STOP" is read as
  an opt-out, like an SMS reply). Subscribing the address first needs Meta's verification
  request answered (`subscription_answer`).

Relied on: Meta's WhatsApp Cloud API docs (developers.facebook.com/docs/whatsapp/cloud-api:
"Send messages", "Message templates" and "Template messages" (components and parameters),
"Text messages", the messages endpoint reference with `biz_opaque_callback_data`; "Error
codes" (developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes:
the error object, the codes above and their HTTP status); "Throughput" (80 messages a second
per number by default); webhooks "Status messages" and "Received messages" payloads and
"Webhooks from Meta" (verification requests with hub.mode, hub.verify_token, hub.challenge;
X-Hub-Signature-256); the Graph API's "Handling errors" (code 190, OAuthException)) and the
phone number node (`GET /{phone-number-id}`: verified_name, display_phone_number,
quality_rating).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from app.domain.messages import Channel, MessageStatus
from app.providers.base import HealthResult, Provider
from app.providers.http import CredentialsRefused, ProviderError, RateLimited, ResilientClient
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

GRAPH_URL = "https://graph.facebook.com"
DEFAULT_VERSION = "v21.0"
SEND = Operation("messages", "POST", "/{version}/{phone_number_id}/messages")
PHONE_NUMBER = Operation("phone-number", "GET", "/{version}/{phone_number_id}", timeout=10.0)

# Graph API codes that are the access token's or its permissions' fault.
CREDENTIAL_CODES = frozenset({0, 10, 190})
# Meta did not act: the send waits and resumes.
RATE_LIMIT_CODES = {
    4: "the app made too many calls",
    80007: "the WhatsApp Business Account's rate limit was reached",
    130429: "the number's throughput (messages a second) was reached",
    131048: "too many messages were marked as spam lately, so the number is slowed down",
    131056: "too many messages went to one person in a short time",
}
# Meta refuses this message to this person; others may go.
REFUSED_CODES = {
    100: "A value in the message is not valid.",
    131008: "A value the message needs is missing.",
    131009: "A value in the message is not valid (often the phone number).",
    131021: "This is the school's own WhatsApp number.",
    131026: "WhatsApp could not deliver it: the number may not use WhatsApp, may not have "
    "accepted WhatsApp's current terms, or may run an app too old for this message.",
    131047: "More than 24 hours have passed since the person last wrote, so only an approved "
    "template may be sent to them.",
    131049: "Meta chose not to deliver this marketing message, so that the person does not get "
    "too many.",
    131050: "The person chose to stop getting marketing messages from the school on WhatsApp.",
    131051: "WhatsApp does not support this kind of message.",
    132000: "The number of parameters does not match the template's.",
    132001: "The template does not exist in this language or is not approved yet; check its "
    "name and language in WhatsApp Manager.",
    132005: "The template's text is too long once its parameters are filled in.",
    132007: "The filled-in template breaks WhatsApp's content rules.",
    132012: "A parameter does not have the format the template expects.",
    132015: "The template is paused because people reported it; edit it in WhatsApp Manager.",
    132016: "The template is disabled.",
}
OPTED_OUT_CODES = frozenset({131050})
UNKNOWN_OBJECT_SUBCODE = 33  # code 100: the id in the path does not exist (or is not ours)

STATUSES = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "failed": MessageStatus.FAILED,
}


class WhatsApp(Provider):
    channels = frozenset({Channel.WHATSAPP})

    async def call(self, operation: Operation, **arguments: Any) -> httpx.Response:
        values = {
            "version": self.config.get("api_version") or DEFAULT_VERSION,
            "phone_number_id": self.config.get("phone_number_id", ""),
            **(arguments.get("path_params") or {}),
        }
        return await super().call(operation, **{**arguments, "path_params": values})

    async def send(self, message: OutgoingMessage) -> Sent:
        response = await self.call(SEND, json=self._message(message))
        body = _json(response)
        if response.status_code >= 400:
            raise self._refusal(response.status_code, body)
        messages = body.get("messages")
        first = messages[0] if isinstance(messages, list) and messages else None
        wamid = text_of(first.get("id")) if isinstance(first, dict) else ""
        return Sent(wamid, MessageStatus.QUEUED)

    async def find(self, message: OutgoingMessage, since: datetime) -> Sent | None:
        raise CannotTell(
            "WhatsApp keeps no list of sent messages to search, so whether this one went cannot "
            "be asked; a delivery report may still arrive for it."
        )

    async def check_health(self) -> HealthResult:
        started = time.monotonic()
        try:
            response = await self.call(PHONE_NUMBER)
        except ProviderError as exc:
            return HealthResult(False, _since(started), str(exc), exc.error_class)
        elapsed = _since(started)
        body = _json(response)
        if response.status_code >= 400:
            error = self._refusal(response.status_code, body)
            return HealthResult(False, elapsed, str(error), error.error_class)
        number = text_of(body.get("display_phone_number"))
        quality = text_of(body.get("quality_rating"))
        about = ", ".join(part for part in (number, quality and f"quality {quality}") if part)
        return HealthResult(
            True,
            elapsed,
            f"{self.spec.name} answered in {elapsed:.0f} ms" + (f" ({about})." if about else "."),
        )

    def _message(self, message: OutgoingMessage) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.to.removeprefix("+"),
            "biz_opaque_callback_data": message.key,
        }
        if message.template_name:
            template: dict[str, Any] = {
                "name": message.template_name,
                "language": {
                    "code": message.template_language
                    or str(self.config.get("template_language") or "en")
                },
            }
            if message.parameters:
                template["components"] = [
                    {
                        "type": "body",
                        "parameters": [{"type": "text", "text": p} for p in message.parameters],
                    }
                ]
            body.update(type="template", template=template)
        elif message.text:
            body.update(type="text", text={"preview_url": False, "body": message.text})
        else:
            raise MessageRefused(
                "The WhatsApp message has neither an approved template nor text to send."
            )
        return body

    def _refusal(self, status: int, body: Mapping[str, Any]) -> ProviderError:
        found = body.get("error")
        error: Mapping[str, Any] = found if isinstance(found, dict) else {}
        code = _int(error.get("code"))
        subcode = _int(error.get("error_subcode"))
        data = error.get("error_data")
        details = text_of(data.get("details")) if isinstance(data, dict) else ""
        said = text_of(error.get("message")) or f"HTTP {status}"
        said = f"{said} ({details})" if details and details not in said else said
        if code in CREDENTIAL_CODES or 200 <= code <= 299 or (status == 401 and not code):
            return CredentialsRefused(
                f"WhatsApp refused the access token ({said}); create a permanent token for a "
                "System User with the whatsapp_business_messaging permission in Meta Business "
                "Settings and give it to the connection.",
                status=status,
            )
        if code in RATE_LIMIT_CODES:
            return RateLimited(
                f"WhatsApp asked Switchboard to slow down: {RATE_LIMIT_CODES[code]} ({said}).",
                status=status,
            )
        if code == 100 and subcode == UNKNOWN_OBJECT_SUBCODE:
            return ProviderError(
                f"WhatsApp does not know the phone number ID {self.config.get('phone_number_id')} "
                f"({said}); copy it again from WhatsApp Manager (API Setup).",
                status=status,
            )
        # Before the status: a template Meta does not know is a 404 about this message.
        if code in REFUSED_CODES:
            return MessageRefused(
                f"WhatsApp refused the message: {REFUSED_CODES[code]} ({said})",
                code=str(code),
                opted_out=code in OPTED_OUT_CODES,
            )
        return ProviderError(
            f"WhatsApp refused to send ({said}); look at the WhatsApp Business Account in "
            "Meta Business Suite.",
            status=status,
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _since(started: float) -> float:
    return (time.monotonic() - started) * 1000


# --- webhooks -------------------------------------------------------------------------------------


def subscription_answer(query: Mapping[str, str], verify_tokens: Sequence[str]) -> str | None:
    """What to answer Meta's verification request (`GET ?hub.mode=subscribe&hub.verify_token=…
    &hub.challenge=…`) when the webhook address is set in the app's dashboard: the challenge,
    as the whole body with status 200, when the token is one of ours; None (answer 403)
    otherwise."""
    if query.get("hub.mode") != "subscribe":
        return None
    given = query.get("hub.verify_token", "").encode("utf-8", "surrogatepass")
    found = False
    for token in verify_tokens:
        if token:
            found = hmac.compare_digest(token.encode("utf-8", "surrogatepass"), given) or found
    challenge = query.get("hub.challenge", "")
    return challenge if found and challenge else None


@reads_deliveries("whatsapp")
def deliveries(event_type: str, body: bytes) -> Sequence[Delivery | Reply]:
    """The statuses of our messages and the messages people wrote, in the order sent."""
    try:
        notification = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(notification, dict):
        return []
    reports: list[Delivery | Reply] = []
    for value in _values(notification):
        for status in _dicts(value.get("statuses")):
            delivery = _delivery(status)
            if delivery is not None:
                reports.append(delivery)
        for message in _dicts(value.get("messages")):
            reply = _reply(message)
            if reply is not None:
                reports.append(reply)
    return reports


def _values(notification: Mapping[str, Any]) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = []
    for entry in _dicts(notification.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if change.get("field", "messages") == "messages" and isinstance(value, dict):
                values.append(value)
    return values


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _delivery(status: Mapping[str, Any]) -> Delivery | None:
    wamid = text_of(status.get("id"))
    state = STATUSES.get(text_of(status.get("status")).lower())
    if not wamid or state is None:
        return None  # "deleted", "warning", and whatever Meta adds: nothing about delivery
    recipient = text_of(status.get("recipient_id"))
    address = f"+{recipient}" if recipient.isdigit() else recipient
    error, opted_out = "", False
    if state is MessageStatus.FAILED:
        errors = _dicts(status.get("errors"))
        first = errors[0] if errors else {}
        code = _int(first.get("code"))
        data = first.get("error_data")
        said = (text_of(data.get("details")) if isinstance(data, dict) else "") or text_of(
            first.get("message") or first.get("title")
        )
        hint = REFUSED_CODES.get(code, "")
        error = " ".join(part for part in (hint, said and f"({said})") if part) or (
            "WhatsApp reported the message failed"
        )
        if code:
            error += f" [{code}]"
        opted_out = code in OPTED_OUT_CODES
    return Delivery(wamid, state, error=error, opted_out=opted_out, address=address)


def _reply(message: Mapping[str, Any]) -> Reply | None:
    sender = text_of(message.get("from"))
    if not sender:
        return None
    kind = text_of(message.get("type"))
    text = ""
    if kind == "text":
        text = _field(message, "text", "body")
    elif kind == "button":  # a template's quick-reply button
        text = _field(message, "button", "text")
    elif kind == "interactive":
        interactive = message.get("interactive")
        if isinstance(interactive, dict):
            text = _field(interactive, "button_reply", "title") or _field(
                interactive, "list_reply", "title"
            )
    else:
        return None  # pictures, voice notes, locations: nothing to read as an opt-out
    address = f"+{sender}" if sender.isdigit() else sender
    return Reply(address, text, text_of(message.get("id")))


def _field(container: Mapping[str, Any], name: str, inner: str) -> str:
    value = container.get(name)
    return text_of(value.get(inner)) if isinstance(value, dict) else ""


# --- the connection --------------------------------------------------------------------------


def _phone_number_id(text: str) -> None:
    if not text.isascii() or not text.isdigit():
        raise ValueError(
            "The phone number ID is a long number shown under WhatsApp → API Setup (not the "
            "phone number itself)."
        )


def _version(text: str) -> None:
    if not re.fullmatch(r"v\d{1,3}\.\d{1,2}", text):
        raise ValueError(f"The Graph API version looks like {DEFAULT_VERSION}.")


def _whatsapp(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return WhatsApp(spec, client, config, secrets)


def _headers(_config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {secrets.get('access_token', '')}"}


WHATSAPP = ProviderSpec(
    key="whatsapp",
    name="WhatsApp",
    category=Category.MESSAGING,
    description=(
        "WhatsApp messages to families through Meta's WhatsApp Cloud API: approved templates "
        "at any time, and plain text within 24 hours of a family's last message, with delivery "
        "and read reports."
    ),
    fields=(
        ConfigField(
            "phone_number_id",
            "Phone number ID",
            help="The ID of the school's WhatsApp number, under WhatsApp → API Setup in the "
            "Meta app's dashboard.",
            check=_phone_number_id,
        ),
        ConfigField(
            "access_token",
            "Access token",
            FieldKind.SECRET,
            help="A permanent token of a System User with the whatsapp_business_messaging "
            "permission (Meta Business Settings → System users → Generate new token).",
        ),
        ConfigField(
            "template_language",
            "Templates' language",
            required=False,
            default="en",
            help="The language code of the approved templates when a message does not name one "
            "(en, en_US, pt_BR …).",
        ),
        ConfigField(
            "app_secret",
            "App secret",
            FieldKind.SECRET,
            required=False,
            help="The Meta app's secret (App settings → Basic): Meta signs delivery reports "
            "with it. While replacing it, give the new and the old one separated by a space.",
        ),
        ConfigField(
            "verify_token",
            "Webhook verify token",
            FieldKind.SECRET,
            required=False,
            help="Any phrase you choose; type the same in the Meta app's WhatsApp → "
            "Configuration when you give it Switchboard's webhook address.",
        ),
        ConfigField(
            "api_version",
            "Graph API version",
            required=False,
            default=DEFAULT_VERSION,
            help="Leave as it is unless Meta has retired this version.",
            check=_version,
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use Meta's own address.",
        ),
    ),
    auth=AuthKind.API_KEY,
    capabilities=frozenset({MESSAGING}),
    health=PHONE_NUMBER,
    base_url=lambda config: str(config.get("api_url") or GRAPH_URL),
    factory=_whatsapp,
    policy=ResiliencePolicy(
        timeout=15.0,
        retry=RetryPolicy(attempts=3, base_delay=0.5, max_delay=8.0),
        rate=RatePolicy(requests=80, per_seconds=1),  # Meta's default throughput per number
    ),
    headers=_headers,
    webhook=WebhookSpec("hub-signature-256", "app_secret"),
)
