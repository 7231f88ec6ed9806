"""Webhook signature verifiers: is this request really from the provider, and which event is it?

Anyone on the internet can post to the receiver's address, so nothing in a webhook is believed
until its signature checks out against a secret only we and the provider know. Each verifier
here is pure and synchronous (no I/O, no clock: the receiver says when the request arrived), so
the receiver, the sandbox sender, the benchmark and the tests all use the same code.

The rules every verifier keeps:

- `secrets` may hold several secrets while one is being rotated; a request is good if any one
  of them verifies it. No secret at all refuses everything.
- Every comparison is constant-time (`hmac.compare_digest`), so the time an answer takes says
  nothing about how much of a forged signature was right.
- A signed timestamp must be within the tolerance of the arrival time in both directions: an
  old one may be a captured request replayed, a future one a clock we should not trust.
- What goes wrong is a `Rejected` with one of two reasons, never another exception:
  "signature" (the receiver answers 401) when the signature is missing, does not match, or
  is stale; "malformed" (400) when a piece needed to check it (a timestamp, an id) or the body
  that names the event cannot be read. A signature value that is not even hex or base64 is a
  wrong signature, so it is "signature" too.
- The signature is checked before the body is read for the event's id, and the timestamp after
  the signature, so a "stale" in the log always means a genuine request arrived late.
- `Verified.event_id` is the provider's id of the event (never empty), which the receiver
  deduplicates on: providers deliver at least once. Where a scheme has no id, the id is
  "sha256:" and the body's digest, which is the same for every retry of the same delivery.

Messages are for the log only and never hold a secret or a signature.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import secrets as random_secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_TOLERANCE_SECONDS = 300

# Generous for every scheme here (the longest real header is a Stripe header during rotation,
# well under 1 KiB), and small enough that parsing a hostile header costs nothing.
MAX_HEADER_LENGTH = 8192
# The receiver stores the id to deduplicate on; real ids are under 100 characters.
MAX_EVENT_ID_LENGTH = 255
# Twilio's and Paynow's form bodies have a few dozen fields.
MAX_FORM_FIELDS = 1000

_Key = TypeVar("_Key", str, bytes)


# --- what the receiver passes in and gets back -------------------------------------------------


@dataclass(frozen=True)
class WebhookRequest:
    """One request as it arrived: the receiver lower-cases the header names."""

    url: str  # the full URL the provider called (scheme, host, path and query): Twilio signs it
    headers: Mapping[str, str]
    body: bytes
    received_at: float  # epoch seconds


class Rejected(Exception):
    """Why a request is refused. `reason` is "malformed" (the receiver answers 400) or
    "signature" (401: missing, bad, stale or future signature). The message is for the log only,
    never sent back, and never contains a secret or a full signature."""

    def __init__(self, reason: Literal["malformed", "signature"], message: str) -> None:
        super().__init__(message)
        self.reason: Literal["malformed", "signature"] = reason
        self.message = message


@dataclass(frozen=True)
class Verified:
    """A request that is from the provider: which event it carries."""

    event_id: str  # the provider's id of this event, to deduplicate on (never empty)
    event_type: str  # e.g. "payment_intent.succeeded"; "" when the provider names none


class Verifier(Protocol):
    key: str

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified: ...

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        """Headers a sender would add (used by our own sandbox sender, the benchmark and tests)."""
        ...


def new_standard_webhooks_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: "whsec_" and 24 random bytes in
    base64 (what Svix issues), for our own senders and for a person to paste into one."""
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(24)).decode("ascii")


# --- shared pieces -----------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    # "surrogatepass" so that no string, however odd, makes encoding raise.
    return text.encode("utf-8", "surrogatepass")


def _same(expected: str, given: str) -> bool:
    """Constant-time equality of what we computed and what the request carries."""
    return hmac.compare_digest(_utf8(expected), _utf8(given))


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _hmac_base64(key: bytes, message: bytes, digest: str = "sha256") -> str:
    return base64.b64encode(hmac.new(key, message, digest).digest()).decode("ascii")


def _usable(secrets: Sequence[str]) -> list[str]:
    """The secrets to try. An empty secret is a setup mistake, never a key: with it, a request
    without any token would match an empty expected token."""
    if isinstance(secrets, str):  # one secret passed where a list was meant
        secrets = [secrets]
    usable = [secret for secret in secrets if secret]
    if not usable:
        raise Rejected("signature", "no webhook secret is set for this connection")
    return usable


def _any_secret(secrets: Sequence[_Key], matches: Callable[[_Key], bool]) -> bool:
    """Whether any secret verifies the request. Every secret is tried, so the time taken does
    not say which one matched."""
    found = False
    for secret in secrets:
        found = matches(secret) or found
    return found


def _header(request: WebhookRequest, name: str) -> str | None:
    """A header's value, trimmed; None when absent. `name` is lower-case."""
    value = request.headers.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH:
        raise Rejected("malformed", f"the {name} header is not a plausible value")
    return value.strip()


def _signature_header(request: WebhookRequest, name: str) -> str:
    value = _header(request, name)
    if not value:
        raise Rejected("signature", f"the request has no {name} header")
    return value


def _timestamp(text: str | None, name: str) -> int:
    # ASCII digits only: str.isdigit() alone accepts "²", which int() refuses.
    if not text or not (text.isascii() and text.isdigit()) or len(text) > 15:
        raise Rejected("malformed", f"{name} is not a timestamp in epoch seconds")
    return int(text)


def _check_age(signed_at: int, received_at: float, tolerance: float) -> None:
    age = received_at - signed_at
    # Written so that a NaN arrival time fails instead of passing every comparison.
    if -tolerance <= age <= tolerance:
        return
    if age > 0:
        raise Rejected(
            "signature",
            f"its timestamp is {age:.0f} s before it arrived, more than the {tolerance:g} s "
            "allowed (a replay, or a delivery that waited too long)",
        )
    raise Rejected(
        "signature",
        f"its timestamp is {-age:.0f} s after it arrived, more than the {tolerance:g} s "
        "allowed (the sender's clock is wrong)",
    )


def _body_id(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _event_id(value: str) -> str:
    if not value or len(value) > MAX_EVENT_ID_LENGTH:
        raise Rejected("malformed", "the event id is empty or implausibly long")
    return value


def _json(body: bytes) -> Any:
    """The body as JSON, or None when it is not JSON."""
    try:
        return json.loads(body)
    # ValueError covers bad JSON and bad UTF-8; RecursionError a body nested thousands deep.
    except (ValueError, RecursionError):
        return None


def _json_object(body: bytes) -> dict[str, Any]:
    parsed = _json(body)
    if not isinstance(parsed, dict):
        raise Rejected("malformed", "the body is not a JSON object")
    return parsed


def _json_event(body: bytes, id_field: str, type_field: str) -> Verified:
    event = _json_object(body)
    event_id = event.get(id_field)
    if not isinstance(event_id, str):
        raise Rejected("malformed", f"the body has no {id_field!r} string")
    event_type = event.get(type_field)
    return Verified(_event_id(event_id), event_type if isinstance(event_type, str) else "")


def _form(text: str | bytes) -> list[tuple[str, str]]:
    """Form fields (application/x-www-form-urlencoded) in the order sent; a field without "=" is
    a field with an empty value, as web frameworks read it."""
    try:
        decoded = text.decode("utf-8") if isinstance(text, bytes) else text
        return parse_qsl(
            decoded, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError as exc:  # bad UTF-8, bad percent-escapes, too many fields
        raise Rejected("malformed", "the body is not a readable form") from exc


# --- Stripe --------------------------------------------------------------------------------------


class StripeVerifier:
    """`Stripe-Signature: t=<epoch>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 of "<t>.<body>" with the
    endpoint's signing secret. Several v1 entries come while a secret is being rolled; v0 and
    unknown schemes are ignored.

    Relied on: the SDK's stripe/_webhook.py (WebhookSignature.verify_header and
    generate_signature_header) in stripe 16.1, and Stripe's "Check the webhook signatures",
    verifying manually (stripe.com/docs/webhooks/signatures).
    """

    key = "stripe"

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE_SECONDS) -> None:
        self.tolerance = tolerance

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        keys = _usable(secrets)
        header = _signature_header(request, "stripe-signature")
        timestamp: str | None = None
        signatures: list[str] = []
        for item in header.split(","):
            name, _, value = item.partition("=")
            name, value = name.strip(), value.strip()
            if name == "t" and timestamp is None:  # the first t, as the SDK takes it
                timestamp = value
            elif name == "v1" and value:
                signatures.append(value.lower())
        signed_at = _timestamp(timestamp, "the Stripe-Signature t")
        if not signatures:
            raise Rejected("signature", "Stripe-Signature has no v1 signature")
        signed = f"{signed_at}.".encode() + request.body
        if not _any_secret(
            keys,
            lambda secret: any(
                _same(_hmac_hex(_utf8(secret), signed), given) for given in signatures
            ),
        ):
            raise Rejected("signature", "no v1 signature in Stripe-Signature matches the body")
        _check_age(signed_at, request.received_at, self.tolerance)
        return _json_event(request.body, "id", "type")

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        """The id travels in the body, so `event_id` is not used."""
        signature = _hmac_hex(_utf8(secret), f"{timestamp}.".encode() + body)
        return {"Stripe-Signature": f"t={timestamp},v1={signature}"}


# --- Standard Webhooks (Svix) ----------------------------------------------------------------


class StandardWebhooksVerifier:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (space-separated "v1,<base64>"
    entries), HMAC-SHA256 of "<id>.<timestamp>.<body>" keyed with the base64-decoded secret
    ("whsec_" prefix optional). Svix sends the same headers named svix-*.

    Relied on: the Standard Webhooks specification and its reference library
    (standard-webhooks/standard-webhooks, libraries/python/standardwebhooks/webhooks.py), and
    Svix's "Verifying webhooks manually" (docs.svix.com/receiving/verifying-payloads/how-manual).
    """

    key = "standard-webhooks"

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE_SECONDS) -> None:
        self.tolerance = tolerance

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        keys = [key for key in map(self._secret_key, _usable(secrets)) if key]
        if not keys:
            raise Rejected("signature", "no webhook secret for this connection is valid base64")
        # One family of names or the other, never a mix of the two.
        prefix = "webhook-" if "webhook-signature" in request.headers else "svix-"
        header = _signature_header(request, prefix + "signature")
        message_id = _header(request, prefix + "id")
        if not message_id:
            raise Rejected("malformed", f"the request has no {prefix}id header")
        timestamp = _header(request, prefix + "timestamp")
        signed_at = _timestamp(timestamp, f"the {prefix}timestamp header")
        signatures = [
            value.strip()
            for version, _, value in (entry.partition(",") for entry in header.split())
            if version == "v1" and value.strip()
        ]
        if not signatures:
            raise Rejected("signature", f"{prefix}signature has no v1 signature")
        # The timestamp exactly as sent, since that is the text the sender signed.
        signed = _utf8(f"{message_id}.{timestamp}.") + request.body
        if not _any_secret(
            keys,
            lambda key: any(_same(_hmac_base64(key, signed), given) for given in signatures),
        ):
            raise Rejected("signature", f"no v1 signature in {prefix}signature matches the body")
        _check_age(signed_at, request.received_at, self.tolerance)
        event = _json(request.body)
        event_type = event.get("type") if isinstance(event, dict) else None
        return Verified(_event_id(message_id), event_type if isinstance(event_type, str) else "")

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        key = self._secret_key(secret)
        if not key or not event_id:
            raise ValueError("Standard Webhooks needs a base64 secret and an event id to sign")
        signature = _hmac_base64(key, _utf8(f"{event_id}.{timestamp}.") + body)
        return {
            "webhook-id": event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{signature}",
        }

    @staticmethod
    def _secret_key(secret: str) -> bytes:
        """The HMAC key a secret stands for; b"" when it is not base64."""
        text = secret.strip().removeprefix("whsec_")
        try:
            # As the reference library does: padding added in case the secret was unpadded
            # (the decoder ignores padding beyond what it needs).
            return base64.b64decode(text + "==")
        except ValueError:  # binascii.Error, or a non-ASCII secret
            return b""


# --- Twilio ---------------------------------------------------------------------------------------

_TWILIO_DIGESTS = {"HMAC_SHA1": "sha1", "HMAC_SHA256": "sha256"}

# (the id field, the status fields in order of preference, the event's kind)
_TWILIO_EVENTS = (
    ("MessageSid", ("MessageStatus", "SmsStatus"), "message"),
    ("SmsSid", ("SmsStatus", "MessageStatus"), "message"),
    ("CallSid", ("CallStatus",), "call"),
)


def twilio_body_url(url: str, body: bytes) -> str:
    """`url` with the bodySHA256 query parameter Twilio adds when it posts a JSON body; sign and
    send to this URL."""
    parts = urlsplit(url)
    query = urlencode([("bodySHA256", hashlib.sha256(body).hexdigest())])
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


class TwilioVerifier:
    """`X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the auth token, of the full URL followed
    by every POST parameter's name and value, sorted by name. For a JSON body the URL carries
    `bodySHA256` (the body's SHA-256 in hex), only the URL is signed, and the body must hash to
    that value. No timestamp: a replayed request is caught by its event id instead.

    Relied on: Twilio's "Secure webhooks" (twilio.com/docs/usage/webhooks/webhooks-security), the
    support article "Twilio Signature Validation Program Examples for JSON Content", and the SDK's
    twilio/request_validator.py (RequestValidator) in twilio 9.13, whose port handling,
    parameter sorting and X-Twilio-Webhooks-Signature-Settings algorithm choice this mirrors.
    """

    key = "twilio"

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        tokens = _usable(secrets)
        signature = _signature_header(request, "x-twilio-signature")
        digest = self._digest(_header(request, "x-twilio-webhooks-signature-settings"))
        try:
            query = parse_qsl(urlsplit(request.url).query, keep_blank_values=True)
        except ValueError as exc:  # an unreadable URL (a bad IPv6 host, a bad escape)
            raise Rejected("malformed", "the request URL cannot be read") from exc
        body_hash = next((value for name, value in query if name == "bodySHA256"), None)
        if body_hash is None:
            params = _form(request.body)
        else:
            params = []
            if not _same(hashlib.sha256(request.body).hexdigest(), body_hash.strip().lower()):
                raise Rejected("signature", "the body does not match the URL's bodySHA256")
        urls = self._urls(request.url)
        if not _any_secret(
            tokens,
            lambda token: any(
                _same(self._signature(token, url, params, digest), signature) for url in urls
            ),
        ):
            raise Rejected("signature", "X-Twilio-Signature does not match the URL and body")
        if body_hash is not None:
            event = _json_object(request.body)
            fields = {name: value for name, value in event.items() if isinstance(value, str)}
        else:
            # A GET callback carries its parameters in the URL instead of the body.
            fields = dict(reversed(params or query))  # reversed: the first value wins
        return self._event(fields, request.body)

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        """Signs `url` and the form `body`; for a JSON body, pass `twilio_body_url(url, body)`.
        Twilio's ids travel in the body, so `event_id` and `timestamp` are not used."""
        has_body_hash = any(name == "bodySHA256" for name, _ in parse_qsl(urlsplit(url).query))
        params = [] if has_body_hash else _form(body)
        return {"X-Twilio-Signature": self._signature(secret, url, params, "sha1")}

    @staticmethod
    def _signature(token: str, url: str, params: list[tuple[str, str]], digest: str) -> str:
        values: dict[str, set[str]] = {}
        for name, value in params:
            values.setdefault(name, set()).add(value)
        # As the SDK: names sorted, and a name's values sorted with repeats dropped.
        signed = url + "".join(
            name + value for name in sorted(values) for value in sorted(values[name])
        )
        return _hmac_base64(_utf8(token), _utf8(signed), digest)

    @staticmethod
    def _digest(settings: str | None) -> str:
        """The hash a SharedKey signature uses (twilio.com/docs/usage/webhooks/webhook-shared-keys):
        the settings header names it; without the header it is the auth token's HMAC-SHA1."""
        for part in (settings or "").split(","):
            name, _, value = part.partition("=")
            if name.strip() == "algorithm" and value.strip():
                digest = _TWILIO_DIGESTS.get(value.strip().upper())
                if digest is None:
                    raise Rejected("signature", "the request names an unknown signing algorithm")
                return digest
        return "sha1"

    @staticmethod
    def _urls(url: str) -> list[str]:
        """The URL as given, without its port and with the default port: Twilio signs whichever
        form it called, and the SDK tries both because Twilio's back end is not consistent."""
        urls = [url]
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return urls
        if port is not None:
            urls.append(urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0])))
        elif parts.netloc:
            default = 443 if parts.scheme == "https" else 80
            urls.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")))
        return urls

    @staticmethod
    def _event(fields: Mapping[str, str], body: bytes) -> Verified:
        # Twilio posts one callback per status of a message or call, all with the same sid, so
        # the status is part of the id; retries of one callback share both.
        for sid_field, status_fields, kind in _TWILIO_EVENTS:
            sid = fields.get(sid_field)
            if not sid:
                continue
            status = next((fields[name] for name in status_fields if fields.get(name)), "")
            if not status:
                # Several callbacks without a status (recordings, say) share the sid: the
                # body tells them apart, and is the same for every retry of one of them.
                return Verified(_body_id(body), kind)
            status = status.strip().lower()
            return Verified(_event_id(f"{sid}:{status}"), f"{kind}.{status}")
        return Verified(_body_id(body), "")


# --- X-Hub-Signature-256 (GitHub, Meta's WhatsApp Cloud API) ---------------------------------


class HubSignatureVerifier:
    """`X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the raw body: GitHub keys it with the
    webhook's secret, Meta (WhatsApp Cloud API) with the app secret. No timestamp.

    Relied on: GitHub's "Validating webhook deliveries" (docs.github.com/webhooks/using-webhooks/
    validating-webhook-deliveries) and Meta's "Webhooks from Meta" (developers.facebook.com/
    docs/graph-api/webhooks: getting started, validating payloads; the notification's shape).
    """

    key = "hub-signature-256"

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        keys = _usable(secrets)
        header = _signature_header(request, "x-hub-signature-256")
        scheme, _, given = header.partition("=")
        if scheme.strip().lower() != "sha256" or not given.strip():
            raise Rejected("signature", "X-Hub-Signature-256 is not sha256=<hex>")
        given = given.strip().lower()
        if not _any_secret(keys, lambda key: _same(_hmac_hex(_utf8(key), request.body), given)):
            raise Rejected("signature", "X-Hub-Signature-256 does not match the body")
        delivery = _header(request, "x-github-delivery")
        event_id = _event_id(delivery) if delivery else _body_id(request.body)
        return Verified(event_id, _header(request, "x-github-event") or self._meta_field(request))

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        headers = {"X-Hub-Signature-256": "sha256=" + _hmac_hex(_utf8(secret), body)}
        if event_id:
            headers["X-GitHub-Delivery"] = event_id
        return headers

    @staticmethod
    def _meta_field(request: WebhookRequest) -> str:
        """The first change's field of a Meta notification ({"object", "entry": [{"changes":
        [{"field": …}]}]}), e.g. "messages"; "" for any other body."""
        event = _json(request.body)
        if not isinstance(event, dict) or "object" not in event:
            return ""
        entries = event.get("entry")
        entry = entries[0] if isinstance(entries, list) and entries else None
        changes = entry.get("changes") if isinstance(entry, dict) else None
        change = changes[0] if isinstance(changes, list) and changes else None
        field = change.get("field") if isinstance(change, dict) else None
        return field if isinstance(field, str) else ""


# --- Dwolla -----------------------------------------------------------------------------------


class DwollaVerifier:
    """`X-Request-Signature-SHA-256`: hex HMAC-SHA256 of the raw body, keyed with the secret given
    when the webhook subscription was created. No timestamp.

    Relied on: Dwolla's "Processing & validating webhooks" (developers.dwolla.com/docs/balance/
    webhooks/process-validate) and its webhooks FAQ.
    """

    key = "dwolla"

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        keys = _usable(secrets)
        given = _signature_header(request, "x-request-signature-sha-256").lower()
        if not _any_secret(keys, lambda key: _same(_hmac_hex(_utf8(key), request.body), given)):
            raise Rejected("signature", "X-Request-Signature-SHA-256 does not match the body")
        return _json_event(request.body, "id", "topic")

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        """The id travels in the body, so `event_id` is not used."""
        return {"X-Request-Signature-SHA-256": _hmac_hex(_utf8(secret), body)}


# --- Google Calendar push notifications -----------------------------------------------------------


class GoogleChannelVerifier:
    """Google Calendar push notifications carry no body and no signature: the channel's token,
    which we chose when we created the channel, comes back in `X-Goog-Channel-Token`, and is the
    secret here. No timestamp.

    Relied on: Google Calendar API "Push notifications" (developers.google.com/calendar/api/
    guides/push), "Understand the notification message format".
    """

    key = "google-channel"

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        tokens = _usable(secrets)
        token = _signature_header(request, "x-goog-channel-token")
        if not _any_secret(tokens, lambda expected: _same(expected, token)):
            raise Rejected("signature", "X-Goog-Channel-Token is not this channel's token")
        channel = _header(request, "x-goog-channel-id")
        number = _header(request, "x-goog-message-number")
        if not channel:
            raise Rejected("malformed", "the request has no X-Goog-Channel-ID header")
        if not number or not (number.isascii() and number.isdigit()):
            raise Rejected("malformed", "X-Goog-Message-Number is not a number")
        # The message number is unique within the channel and kept across retries.
        return Verified(
            _event_id(f"{channel}:{number}"), _header(request, "x-goog-resource-state") or ""
        )

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        """The headers of one notification: `secret` is the channel token and `event_id` is
        "<channel id>:<message number>". Message 1 is the "sync" that opens a channel."""
        channel, _, number = event_id.rpartition(":")
        if not channel or not number.isdigit():
            raise ValueError("a Google channel event id is '<channel id>:<message number>'")
        return {
            "X-Goog-Channel-ID": channel,
            "X-Goog-Channel-Token": secret,
            "X-Goog-Message-Number": number,
            "X-Goog-Resource-ID": f"resource-{channel}",
            "X-Goog-Resource-State": "sync" if number == "1" else "exists",
        }


# --- Paynow (Zimbabwe) ------------------------------------------------------------------------


def paynow_hash(values: Sequence[str], integration_key: str) -> str:
    """Paynow's hash of a message: the values in order, then the integration key in lower case
    (as Paynow's own SDKs write it: a key pasted in capitals is the same key)."""
    return hashlib.sha512(_utf8("".join(values) + integration_key.lower())).hexdigest().upper()


def paynow_signed_body(fields: Mapping[str, str], integration_key: str) -> bytes:
    """A status update's form body with its `hash` field added, as Paynow would post it (the
    signature is in the body, which is why PaynowVerifier.sign returns no headers)."""
    items = [(name, value) for name, value in fields.items() if name.lower() != "hash"]
    digest = paynow_hash([value for _, value in items], integration_key)
    return urlencode([*items, ("hash", digest)]).encode("ascii")


class PaynowVerifier:
    """A Paynow status update is a form whose `hash` field is the upper-case hex SHA-512 of every
    other field's URL-decoded value, in the order sent, followed by the integration key. No
    timestamp and no header.

    Relied on: Paynow's developer docs (paynow/docs: docs/status_update.md, "Generating Hash",
    and "Validating a hash on an inbound message" with its worked example; the key in lower case
    as paynow/Paynow-Python-SDK and the PHP and .NET SDKs hash it).
    """

    key = "paynow"

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        keys = _usable(secrets)
        fields = _form(request.body)
        hashes = [value for name, value in fields if name.lower() == "hash"]
        if not hashes or not hashes[0].strip():
            raise Rejected("signature", "the status update has no hash field")
        if len(hashes) > 1:
            raise Rejected("malformed", "the status update has more than one hash field")
        given = hashes[0].strip().upper()
        values = [value for name, value in fields if name.lower() != "hash"]
        if not _any_secret(keys, lambda key: _same(paynow_hash(values, key), given)):
            raise Rejected("signature", "the status update's hash does not match its fields")
        named = {name.lower(): value.strip() for name, value in reversed(fields)}
        reference, status = named.get("paynowreference"), named.get("status", "").lower()
        if not reference or not status:
            raise Rejected("malformed", "the status update has no paynowreference or status")
        # Paynow posts again when the status changes (paid, then delivered): one event each.
        return Verified(_event_id(f"{reference}:{status}"), f"payment.{status}")

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        """No headers: the signature is the body's `hash` field (see paynow_signed_body)."""
        return {}


# --- PayPal -------------------------------------------------------------------------------------

# The headers PayPal sends with every notification, and the verify-webhook-signature fields
# each one fills in.
PAYPAL_HEADERS = {
    "paypal-transmission-id": "transmission_id",
    "paypal-transmission-time": "transmission_time",
    "paypal-transmission-sig": "transmission_sig",
    "paypal-cert-url": "cert_url",
    "paypal-auth-algo": "auth_algo",
}


@dataclass(frozen=True)
class PayPalCheck:
    """What to ask PayPal about one notification: PayPal signs with a private key of its own, so
    only PayPal's verify-webhook-signature API can say whether a signature is good (the
    provider makes the call, through the resilient HTTP layer)."""

    request_body: bytes  # the API's JSON request, the event in it exactly as it arrived
    signed_at: float  # PAYPAL-TRANSMISSION-TIME, epoch seconds
    event: Verified


def paypal_check(request: WebhookRequest, webhook_id: str) -> PayPalCheck:
    """The question to put to PayPal, or `Rejected` when the notification cannot be one: a
    signature header missing (401), or a transmission time or body that cannot be read (400).

    The event goes into the request as the bytes that arrived, not parsed and written again:
    PayPal checks a digest of the event, and JSON written again may differ (key order, escapes),
    which is the usual reason verification "always fails" for people who post the parsed event
    back (paypal/PayPal-Python-SDK#175).

    Relied on: PayPal's Webhooks API v1, "Verify webhook signature" (developer.paypal.com/api/
    webhooks/v1/#verify-webhook-signature_post) and its request definition.
    """
    if not webhook_id:
        raise Rejected("signature", "the connection has no PayPal webhook ID to check against")
    fields: dict[str, str] = {}
    for header, name in PAYPAL_HEADERS.items():
        value = _header(request, header)
        if not value:
            raise Rejected("signature", f"the request has no {header} header")
        fields[name] = value
    try:
        sent = datetime.fromisoformat(fields["transmission_time"])
        signed_at = (sent if sent.tzinfo else sent.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise Rejected("malformed", "paypal-transmission-time is not a date and time") from exc
    event = _json_event(request.body, "id", "event_type")
    try:
        request.body.decode("utf-8")  # what the API's request is written in
    except UnicodeDecodeError as exc:
        raise Rejected("malformed", "the body is not UTF-8") from exc
    fields["webhook_id"] = webhook_id
    head = json.dumps(fields, separators=(",", ":")).encode("ascii")
    body = head[:-1] + b',"webhook_event":' + request.body.strip() + b"}"
    return PayPalCheck(body, signed_at, event)


def paypal_verdict(
    check: PayPalCheck,
    answer: Any,
    received_at: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> Verified:
    """The event, if PayPal's answer to the check is SUCCESS and it arrived in time."""
    status = answer.get("verification_status") if isinstance(answer, dict) else None
    if status != "SUCCESS":
        raise Rejected("signature", f"PayPal says the signature is not its own ({status})")
    _check_age(int(check.signed_at), received_at, tolerance)
    return check.event


class PaysafeVerifier:
    """`Signature: <base64>`, the HMAC-SHA256 of the raw body with the HMAC key agreed with
    Paysafe. No timestamp. Paysafe documents the key only as "hmacKey" and issues it as base64
    text, so the key is tried both as that text and base64-decoded. The event's id is the
    body's `id` where there is one, else "<resourceId>:<eventName>", which stays the same when
    Paysafe delivers the event again (only `attemptNumber` changes).

    Relied on: Paysafe's developer docs (Payments API, "Webhooks": the Signature header and
    the notification body with eventName, resourceId and attemptNumber).
    """

    key = "paysafe"

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        keys = [key for secret in _usable(secrets) for key in _paysafe_keys(secret)]
        given = _signature_header(request, "signature")
        if not _any_secret(keys, lambda key: _same(_hmac_base64(key, request.body), given)):
            raise Rejected("signature", "the Signature header does not match the body")
        event = _json_object(request.body)
        name = event.get("eventName") or event.get("eventType")
        event_type = name if isinstance(name, str) else ""
        given_id, resource = event.get("id"), event.get("resourceId")
        if isinstance(given_id, str) and given_id:
            event_id = given_id
        elif isinstance(resource, str) and resource and event_type:
            event_id = f"{resource}:{event_type}"
        else:
            event_id = _body_id(request.body)
        return Verified(_event_id(event_id), event_type)

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        """The id travels in the body, so `event_id` is not used."""
        return {"Signature": _hmac_base64(_utf8(secret), body)}


def _paysafe_keys(secret: str) -> list[bytes]:
    keys = [_utf8(secret)]
    try:
        decoded = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return keys
    return [*keys, decoded] if decoded else keys


# --- SendGrid Event Webhook ----------------------------------------------------------------------


class SendGridVerifier:
    """`X-Twilio-Email-Event-Webhook-Signature`: base64 of a DER ECDSA signature (P-256,
    SHA-256) of `X-Twilio-Email-Event-Webhook-Timestamp` (exactly as sent) followed by the raw
    body. The secret is the verification key SendGrid shows once signing is enabled: base64 DER
    of a P-256 public key (one line, "MFkw…"); SendGrid keeps the private key. A private key
    given instead (our own senders and tests hold one) stands for its public key.

    The body is a JSON array of events. SendGrid documents no tolerance for the timestamp; the
    house's 300 s in both directions applies. The batch has no id of its own, so the event id
    is the body's digest; the type is the batch's event names ("delivered", "open,click").

    Relied on: SendGrid's "Getting Started with the Event Webhook Security Features" and
    "Event Webhook Reference" (twilio.com/docs/sendgrid/for-developers/tracking-events), and the
    SDK's sendgrid/helpers/eventwebhook/__init__.py (EventWebhook.verify_signature: the
    timestamp and the payload concatenated, the key read as the body of a PEM public key).
    """

    key = "sendgrid"
    # SendGrid's events name themselves in a word or two; anything longer is not a type.
    event_name_length = 40

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE_SECONDS) -> None:
        self.tolerance = tolerance

    def verify(self, request: WebhookRequest, secrets: Sequence[str]) -> Verified:
        keys = [key for key in map(self._public_key, _usable(secrets)) if key is not None]
        if not keys:
            raise Rejected("signature", "no verification key for this connection is a P-256 key")
        header = _signature_header(request, "x-twilio-email-event-webhook-signature")
        timestamp = _header(request, "x-twilio-email-event-webhook-timestamp")
        signed_at = _timestamp(timestamp, "the X-Twilio-Email-Event-Webhook-Timestamp header")
        try:
            signature = base64.b64decode(header, validate=True)
        except (binascii.Error, ValueError) as exc:  # not base64, or not ASCII
            raise Rejected("signature", "the event webhook signature is not base64") from exc
        signed = _utf8(str(timestamp)) + request.body
        matched = False
        for key in keys:  # every key tried, as `_any_secret` does
            matched = self._signed_by(key, signature, signed) or matched
        if not matched:
            raise Rejected("signature", "the event webhook signature does not match the body")
        _check_age(signed_at, request.received_at, self.tolerance)
        events = _json(request.body)
        if not isinstance(events, list):
            raise Rejected("malformed", "the body is not a JSON array of events")
        names = dict.fromkeys(
            event["event"]
            for event in events
            if isinstance(event, dict)
            and isinstance(event.get("event"), str)
            and 0 < len(event["event"]) <= self.event_name_length
        )
        return Verified(_body_id(request.body), ",".join(names)[:200])

    def sign(
        self, secret: str, body: bytes, *, url: str, timestamp: int, event_id: str
    ) -> dict[str, str]:
        """`secret` is a P-256 private key (base64 DER PKCS#8 on one line, or PEM); the batch
        has no id, so `event_id` is not used."""
        private = self._private_key(secret)
        if private is None:
            raise ValueError("SendGrid's event webhook is signed with a P-256 private key")
        signature = private.sign(_utf8(str(timestamp)) + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode("ascii"),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
        }

    @staticmethod
    def _signed_by(key: ec.EllipticCurvePublicKey, signature: bytes, signed: bytes) -> bool:
        try:
            key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):  # a wrong signature, or not DER at all
            return False
        return True

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _public_key(secret: str) -> ec.EllipticCurvePublicKey | None:
        """The P-256 public key a secret stands for; None when it is not one."""
        der = SendGridVerifier._der(secret)
        if der is None:
            return None
        try:
            key: object = serialization.load_der_public_key(der)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            private = SendGridVerifier._private_key(secret)
            key = private.public_key() if private is not None else None
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        return None

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _private_key(secret: str) -> ec.EllipticCurvePrivateKey | None:
        text = secret.strip()
        try:
            if text.startswith("-----BEGIN"):
                key: object = serialization.load_pem_private_key(_utf8(text), password=None)
            else:
                der = SendGridVerifier._der(text)
                if der is None:
                    return None
                key = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):  # not a key, or one with a password
            return None
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            return key
        return None

    @staticmethod
    def _der(secret: str) -> bytes | None:
        try:
            return base64.b64decode(secret.strip(), validate=True) or None
        except (binascii.Error, ValueError):
            return None


# --- the registry ---------------------------------------------------------------------------------

VERIFIERS: dict[str, Verifier] = {
    verifier.key: verifier
    for verifier in (
        StripeVerifier(),
        StandardWebhooksVerifier(),
        TwilioVerifier(),
        HubSignatureVerifier(),
        DwollaVerifier(),
        GoogleChannelVerifier(),
        PaynowVerifier(),
        PaysafeVerifier(),
        SendGridVerifier(),
    )
}
