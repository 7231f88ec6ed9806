"""Messages to families and staff, as plain values: the channels a message travels on, what
becomes of it, how many parts an SMS costs, and addresses written the one way providers accept.

SMS length follows GSM 03.38 / 3GPP TS 23.038: a text that uses only the GSM 7-bit alphabet
travels 160 characters to a message, or 153 a part once it must be split (the other seven go
to the header that joins the parts); a character of the extension table (€ [ ] { } ...) costs
two (an escape and itself) and the pair is never split across parts. Any other character
makes the whole text UCS-2: 70 UTF-16 units, or 67 a part, and a character outside the Basic
Multilingual Plane (most emoji) is two units that are never split. Twilio's "What the heck is a
segment?" and its Messaging Segment Calculator count the same way.

Phone numbers are normalized to E.164 (+263771234567) with Google's libphonenumber
(`phonenumbers`), reading numbers written without a country code as the school's country.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    PUSH = "push"

    @property
    def label(self) -> str:
        return {"email": "E-mail", "sms": "SMS", "whatsapp": "WhatsApp", "push": "Push"}[self.value]


class MessageStatus(StrEnum):
    """Where one message stands. `SENDING` is written before the provider is called: a message
    found in it after a crash may or may not have gone, and is looked up, never sent again
    blindly. `UNKNOWN` is one the provider could not tell us about either."""

    PREPARED = "prepared"  # waits for the person to confirm the send
    SENDING = "sending"
    QUEUED = "queued"  # the provider accepted it
    SENT = "sent"  # the provider handed it on (to the carrier, the mail server)
    DELIVERED = "delivered"
    FAILED = "failed"
    BOUNCED = "bounced"
    OPTED_OUT = "opted_out"  # the person asked not to get messages on this channel
    SKIPPED = "skipped"  # no address to send to
    CANCELLED = "cancelled"  # the send was stopped before this one went
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES

    @property
    def reached_provider(self) -> bool:
        """Whether the provider has (or may have) the message, so it must never be sent again."""
        return self not in (MessageStatus.PREPARED, MessageStatus.CANCELLED, MessageStatus.SKIPPED)


FINAL_STATUSES = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.FAILED,
        MessageStatus.BOUNCED,
        MessageStatus.OPTED_OUT,
        MessageStatus.SKIPPED,
        MessageStatus.CANCELLED,
        MessageStatus.UNKNOWN,
    }
)

# How far each status is along the way: a late callback ("sent" after "delivered") never moves
# a message back.
PROGRESS = {
    MessageStatus.PREPARED: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.QUEUED: 2,
    MessageStatus.SENT: 3,
    MessageStatus.DELIVERED: 4,
    MessageStatus.FAILED: 4,
    MessageStatus.BOUNCED: 4,
    MessageStatus.OPTED_OUT: 4,
    MessageStatus.SKIPPED: 4,
    MessageStatus.CANCELLED: 4,
    MessageStatus.UNKNOWN: 2,
}


def advances(current: MessageStatus, new: MessageStatus) -> bool:
    """Whether a report of `new` moves a message that is `current` forward. A final status
    stays, except that a delivered e-mail may still bounce and an unknown one may be found."""
    if current == new:
        return False
    if current is MessageStatus.UNKNOWN:
        return True
    if current is MessageStatus.DELIVERED and new is MessageStatus.BOUNCED:
        return True
    if current.final:
        return False
    return PROGRESS[new] >= PROGRESS[current]


# --- SMS segments ---------------------------------------------------------------------------------

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True)
class SmsLength:
    encoding: Encoding
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    per_segment: int  # how many units a part holds at this length
    remaining: int  # units left in the last part before another is needed
    # The characters that forced UCS-2, so the editor can say which to replace.
    unicode_characters: tuple[str, ...] = ()


def sms_length(text: str) -> SmsLength:
    """How `text` travels as an SMS: its encoding, its length in units and in parts."""
    if not text:
        return SmsLength(Encoding.GSM7, 0, 0, 160, 160)
    outside = tuple(
        dict.fromkeys(ch for ch in text if ch not in GSM_BASIC and ch not in GSM_EXTENSION)
    )
    if not outside:
        sizes = [2 if ch in GSM_EXTENSION else 1 for ch in text]
        return _length(Encoding.GSM7, sizes, single=160, part=153, unicode=())
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return _length(Encoding.UCS2, sizes, single=70, part=67, unicode=outside)


def _length(
    encoding: Encoding, sizes: list[int], *, single: int, part: int, unicode: tuple[str, ...]
) -> SmsLength:
    units = sum(sizes)
    if units <= single:
        return SmsLength(encoding, units, 1, single, single - units, unicode)
    # Fill parts in order; a character of two units that does not fit starts the next part.
    segments, used = 1, 0
    for size in sizes:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return SmsLength(encoding, units, segments, part, part - used, unicode)


def sms_cost_minor(text: str, price_per_segment_minor: int) -> int:
    return sms_length(text).segments * price_per_segment_minor


# --- addresses ------------------------------------------------------------------------------------


class AddressError(ValueError):
    """An address a message cannot be sent to; the message says what to write instead."""


def e164(raw: str, region: str = "") -> str:
    """The number in E.164 (+263771234567). `region`: the country (ZW, GB) of numbers written
    without a country code. AddressError when it is not a number anyone can be reached on."""
    text = raw.strip()
    if not text:
        raise AddressError("There is no phone number.")
    try:
        number = phonenumbers.parse(text, region.upper() or None)
    except phonenumbers.NumberParseException:
        hint = "" if region else " (write it with its country code, like +263 77 123 4567)"
        raise AddressError(f"{raw!r} is not a phone number{hint}.") from None
    if not phonenumbers.is_valid_number(number):
        raise AddressError(f"{raw!r} is not a valid phone number.")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def region_of_locale(locale: str) -> str:
    """The country part of a locale such as en_ZW ("ZW"), or "" without one."""
    match = re.search(r"[_-]([A-Za-z]{2})\b", locale)
    return match.group(1).upper() if match else ""


EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def email_address(raw: str) -> str:
    """The address trimmed, its domain in lower case; AddressError if it cannot be one."""
    text = raw.strip()
    if not text:
        raise AddressError("There is no e-mail address.")
    if len(text) > 254 or not EMAIL_PATTERN.match(text):
        raise AddressError(f"{raw!r} is not an e-mail address.")
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


def address_for(channel: Channel, raw: str, region: str = "") -> str:
    """`raw` written as `channel`'s providers accept it."""
    if channel is Channel.EMAIL:
        return email_address(raw)
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return e164(raw, region)
    text = raw.strip()
    if not text:
        raise AddressError("There is no device to send the notification to.")
    return text


# Words that, alone in an SMS reply, ask to stop (or start again) getting messages: the CTIA's
# and Twilio's standard opt-out and opt-in keywords.
STOP_WORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "optout", "revoke"}
)
START_WORDS = frozenset({"start", "unstop", "yes", "subscribe", "optin"})


def reply_intent(body: str) -> str:
    """ "stop", "start" or "" for an SMS reply's text."""
    word = re.sub(r"[^a-z]", "", body.strip().lower())
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    return ""


def segments_label(length: SmsLength) -> str:
    if length.segments <= 1:
        return f"1 SMS · {length.encoding.value} · {length.remaining} characters left"
    return (
        f"{length.segments} SMS parts · {length.encoding.value} · "
        f"{length.remaining} characters left in the last part"
    )


# --- unsubscribe links ----------------------------------------------------------------------------

UNSUBSCRIBE_PATH = "/unsubscribe/"


def new_unsubscribe_token() -> str:
    """192 random bits: a link that cannot be guessed or made for someone else's address."""
    return secrets.token_urlsafe(24)


def unsubscribe_link(base: str, token: str) -> str:
    """The link the receiver answers at `base` (its public address) for this token."""
    return f"{base.rstrip('/')}{UNSUBSCRIBE_PATH}{token}"
