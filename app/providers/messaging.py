"""The `MessageChannel` capability: what Switchboard asks of a provider that carries messages
(an SMTP server, SendGrid, Twilio, a local SMS gateway, WhatsApp, Firebase Cloud Messaging).

`send` hands one message over and answers what the provider said (its id for the message, its
status, the price when it tells). Sending is not idempotent at most providers: a message whose
request may have reached the provider without an answer (`OutcomeUnknown`, a timeout) is never
sent again by guesswork. `find` asks the provider whether it has a message we may have sent
(by the `key` we gave it, or by address and time) where the provider can tell; providers that
cannot raise `CannotTell`, and the message is marked unknown for a person to check.

A provider refusing one message for a reason of its own (the number is not valid, the person
unsubscribed, the template is not approved) raises `MessageRefused`: the message failed and
the next is sent. Anything else (`ProviderError`: the provider is down, our credentials are
refused, its rate limit) stops a send so it can resume later.

Providers that report delivery later (status callbacks) parse them with `deliveries`: each
report names the provider's message id and what became of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from app.domain.messages import Channel, MessageStatus
from app.providers.http import ProviderError

MESSAGING = "messaging"  # the capability's name in a spec's `capabilities`


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to one address, rendered. `key` is ours, unique per message (the provider
    keeps it where it can: a custom argument, a header, a reference), so `find` can look it up.
    Which fields count depends on the channel: e-mail uses subject, text and html; SMS uses
    text; WhatsApp a template name, language and parameters (or text inside the 24-hour
    window); push a title (`subject`), a body (`text`) and `data`."""

    key: str
    channel: Channel
    to: str  # E.164 for SMS and WhatsApp, an e-mail address, a device token
    subject: str = ""
    text: str = ""
    html: str = ""
    template_name: str = ""
    template_language: str = ""
    parameters: tuple[str, ...] = ()
    data: Mapping[str, str] = field(default_factory=dict)
    unsubscribe_url: str = ""  # e-mail: List-Unsubscribe (RFC 8058 one-click)
    status_callback: str = ""  # where the provider reports delivery; "" when nobody listens


@dataclass(frozen=True)
class Sent:
    """What the provider said when it took a message."""

    provider_id: str  # Twilio's SID, SendGrid's X-Message-Id, WhatsApp's wamid, FCM's name
    status: MessageStatus = MessageStatus.QUEUED
    cost_minor: int | None = None  # what the provider charged, when it says
    currency: str = ""
    segments: int | None = None


@dataclass(frozen=True)
class Delivery:
    """One report of what became of a message, from a provider's callback."""

    provider_id: str
    status: MessageStatus
    error: str = ""  # the provider's reason, in its words, for a failure or bounce
    cost_minor: int | None = None
    currency: str = ""
    opted_out: bool = False  # the address asked not to get messages (unsubscribed, STOP)
    address: str = ""  # whose address, where the report says (needed for opt-outs)


@dataclass(frozen=True)
class Reply:
    """A message a person sent back (an SMS reply): "STOP" and "START" change their opt-out."""

    address: str
    text: str
    provider_id: str = ""


class MessageRefused(ProviderError):
    """The provider will not carry this message to this address (an invalid number, a person
    who unsubscribed, a template it does not know). The message failed; others may go."""

    error_class = "refused"

    def __init__(self, message: str, *, code: str = "", opted_out: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.opted_out = opted_out


class CannotTell(ProviderError):
    """The provider cannot say whether it has a message (it keeps no list we can search)."""

    error_class = "cannot_tell"


@runtime_checkable
class MessageChannel(Protocol):
    """A connection that carries messages on one or more channels."""

    channels: frozenset[Channel]

    async def send(self, message: OutgoingMessage) -> Sent: ...

    async def find(self, message: OutgoingMessage, since: datetime) -> Sent | None:
        """The provider's record of `message` if it has one (sent at or after `since`), None
        if it has none; `CannotTell` where it cannot say."""
        ...


# A provider kind's reader of its delivery callbacks: the verified event's type and body, and
# the reports in it (none for events about other things).
DeliveryParser = Callable[[str, bytes], Sequence[Delivery | Reply]]

DELIVERY_PARSERS: dict[str, DeliveryParser] = {}


def reads_deliveries(kind: str) -> Callable[[DeliveryParser], DeliveryParser]:
    """Registers a provider kind's callback reader (a decorator in the provider's module)."""

    def register(parser: DeliveryParser) -> DeliveryParser:
        DELIVERY_PARSERS[kind] = parser
        return parser

    return register


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""
