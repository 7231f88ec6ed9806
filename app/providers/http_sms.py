"""A local SMS gateway that is "send an HTTP request with a number and a text": Africa's
Talking-style, BulkSMS-style and the many national aggregators (Econet, NetOne, MTN resellers)
whose APIs differ only in field names, how they authenticate and what they answer. Everything
that differs is a setting, so a school connects its own gateway without anyone writing code.

- The request: the send address called with POST or GET; the fields (recipient number, text,
  sender id, our reference, and any fixed ones such as an account name) sent as a form, as JSON,
  or in the address's query (GET always sends them in the query). The number written as the
  gateway wants it: E.164 (+263771234567), international without the "+" (263771234567), or
  as dialled at home (0771234567).
- Authentication: none, HTTP Basic, a bearer token, an API key in a header, or an API key in a
  field of the request (then masked in the request log like every known secret).
- What counts as sent: an HTTP status in a range (200-299 by default), and where set, a field
  of the JSON answer equal to a value (compared ignoring case: "Success", "success") and/or the
  answer's text containing some words. Anything else is `MessageRefused` with the gateway's
  own words, trimmed and with every secret of the connection masked; 401 and 403 are
  `CredentialsRefused`, which stops the send until a person fixes the settings.
- The gateway's id for the message, read from a field of the JSON answer or by a regular
  expression over the answer; without one, our reference when the gateway was given it.
- A price per SMS part and its currency, for the cost of each message (parts counted as
  GSM 03.38 / UCS-2 do, `sms_length`), rounded to the currency's minor unit.

Every call goes through the resilient HTTP layer. Sending is not idempotent (there is no
idempotency key a generic gateway honours), even with GET: a send that may have reached the
gateway without an answer (a timeout, a dropped connection, a 500) is never repeated and is
`OutcomeUnknown`; only a request that never left, or a 429 (the gateway did not act on it), is
tried again. The gateway's own pace (`rate_per_second`) is the connection's rate in the
layer (the spec's `rate_field`).

Health: with a health address (a balance or status page many gateways have), a GET of it with
the connection's credentials, as for any provider. Without one there is nothing a generic
gateway offers to check the credentials with, and calling the send address to find out would
send an SMS; so the check asks the send address for its options (`OPTIONS`, which sends
nothing) and says honestly what that proves: the gateway is reachable, the credentials are
not checked. Any HTTP answer, a 405 or 501 included, means it is reachable.

A generic gateway keeps no list Switchboard knows how to search, so `find` raises
`CannotTell`.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import phonenumbers

from app.domain.messages import AddressError, Channel, MessageStatus, e164, sms_length
from app.domain.money import exponent, is_known_currency
from app.logs import REDACTOR
from app.providers.base import HealthResult, Provider
from app.providers.http import CredentialsRefused, ProviderError, ProviderFailed, ResilientClient
from app.providers.messaging import (
    MESSAGING,
    CannotTell,
    MessageRefused,
    OutgoingMessage,
    Sent,
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
)

METHODS = ("POST", "GET")
FORM, JSON, QUERY = "form", "json", "query"
BODY_FORMATS = (FORM, JSON, QUERY)
NO_AUTH, BASIC, BEARER, KEY_HEADER, KEY_FIELD = (
    "none",
    "basic",
    "bearer",
    "api-key-header",
    "api-key-field",
)
AUTH_KINDS = (NO_AUTH, BASIC, BEARER, KEY_HEADER, KEY_FIELD)
E164, INTERNATIONAL, LOCAL = "e164", "international", "local"
NUMBER_FORMATS = (E164, INTERNATIONAL, LOCAL)
DEFAULT_TIMEOUT = 20.0
DEFAULT_RATE = 5.0
MAX_RATE = 100.0
WORDS_MAX = 300  # how much of a gateway's answer a refusal repeats
# The spec's health operation, for what lists kinds: each connection makes its own from its
# addresses (see `HttpSmsGateway`).
PROBE = Operation("probe", "OPTIONS", "/", idempotent=True, own_breaker=True)


# --- reading the settings ---------------------------------------------------------------------


def status_ranges(text: str) -> list[tuple[int, int]]:
    """ "200-299", "200,201" or "200-204, 302" as inclusive ranges; ValueError otherwise."""
    ranges: list[tuple[int, int]] = []
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", part)
        if not match:
            raise ValueError(
                f"{part or text!r} is not an HTTP status or range; write it like 200-299 or "
                "200,201."
            )
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 100 <= low <= high <= 599:
            raise ValueError(f"{part} is not a range of HTTP statuses (100 to 599).")
        ranges.append((low, high))
    return ranges


def json_path(path: str) -> list[str | int]:
    """ "a.b[0].c", "a.b.0.c" or "$.a.b" as the keys and list positions to follow."""
    text = path.strip().removeprefix("$").lstrip(".")
    steps: list[str | int] = []
    for part in re.sub(r"\[(\d+)\]", r".\1", text).split("."):
        if not part:
            raise ValueError(f"{path!r} is not a path; write it like data.messages[0].id.")
        steps.append(int(part) if part.isdigit() else part)
    return steps


def json_at(data: Any, path: str) -> tuple[bool, Any]:
    """Whether `path` leads somewhere in `data`, and what is there."""
    current = data
    for step in json_path(path):
        if isinstance(step, int) and isinstance(current, list) and step < len(current):
            current = current[step]
        elif isinstance(current, dict) and str(step) in current:
            current = current[str(step)]
        else:
            return False, None
    return True, current


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _check_ranges(text: str) -> None:
    status_ranges(text)


def _check_path(text: str) -> None:
    json_path(text)


def _check_regex(text: str) -> None:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"This is not a regular expression Python reads ({exc}).") from None


def _check_fields(text: str) -> None:
    try:
        parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError("Write fixed fields like account=school&type=plain.") from None


def _check_price(text: str) -> None:
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a price; write it like 0.035.") from None
    if not price.is_finite() or price < 0:
        raise ValueError("The price is a number of at least 0, like 0.035.")


def _check_currency(text: str) -> None:
    if not is_known_currency(text):
        raise ValueError(f"{text!r} is not a currency code; write it like USD or ZWG.")


def _check_header_name(text: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", text):
        raise ValueError(f"{text!r} cannot be a header or field name; write it like X-API-Key.")


def _check_url(text: str) -> None:
    if "{" in text or "}" in text:
        raise ValueError("The address may not contain { or }.")


# --- the provider -------------------------------------------------------------------------------


class HttpSmsGateway(Provider):
    """One configurable gateway; see the module docstring for what is configurable."""

    channels = frozenset({Channel.SMS})

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        url = urlsplit(str(config.get("url", "")))
        self.method = str(config.get("method") or "POST")
        self.body_format = QUERY if self.method == "GET" else str(config.get("body_format") or FORM)
        self.auth = str(config.get("auth") or NO_AUTH)
        self.timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
        self.send_operation = Operation(
            "send-sms", self.method, url.path or "/", idempotent=False, timeout=self.timeout
        )
        # httpx replaces an address's query with the call's parameters: keep it, and add it.
        self.url_params = dict(parse_qsl(url.query, keep_blank_values=True))
        self.fixed = dict(parse_qsl(str(config.get("extra_fields") or ""), keep_blank_values=True))
        health_url = str(config.get("health_url") or "")
        health = urlsplit(health_url)
        self.health_params = dict(parse_qsl(health.query, keep_blank_values=True))
        if self.auth == KEY_FIELD:  # the key goes where the gateway reads it on a GET
            self.health_params[str(config.get("key_name") or "apiKey")] = secrets.get("secret", "")
        self.health_operation = (
            Operation(
                "health",
                "GET",
                health._replace(query="").geturl(),
                idempotent=True,
                timeout=self.timeout,
            )
            if health_url
            else Operation(
                "probe",
                "OPTIONS",
                url.path or "/",
                idempotent=True,
                own_breaker=True,
                timeout=self.timeout,
            )
        )
        self.success = status_ranges(str(config.get("success_status") or "200-299"))
        self.price = (
            Decimal(str(config["price_per_part"])) if config.get("price_per_part") else None
        )
        self.currency = str(config.get("currency") or "")

    # --- MessageChannel -----------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> Sent:
        if message.channel is not Channel.SMS:
            raise MessageRefused(f"{self.spec.name} carries SMS, not {message.channel.label}.")
        try:
            number = self.number(message.to)
        except AddressError as exc:
            raise MessageRefused(str(exc), code="address") from None
        fields = self.fields(message, number)
        if self.body_format == QUERY:
            response = await self.call(self.send_operation, params={**self.url_params, **fields})
        elif self.body_format == JSON:
            response = await self.call(
                self.send_operation, params=self.url_params or None, json=fields
            )
        else:
            response = await self.call(
                self.send_operation, params=self.url_params or None, data=fields
            )
        self._judge(response, number)
        segments = sms_length(message.text).segments
        cost = self._cost(segments)
        return Sent(
            provider_id=self._message_id(response, message),
            status=MessageStatus.QUEUED,
            cost_minor=cost,
            currency=self.currency if cost is not None else "",
            segments=segments,
        )

    async def find(self, message: OutgoingMessage, since: datetime) -> Sent | None:
        raise CannotTell(
            f"{self.client.name} keeps no list of sent messages that Switchboard can ask; "
            "check the gateway's own website."
        )

    async def check_health(self) -> HealthResult:
        started = time.monotonic()
        try:
            response = await self.call(
                self.health_operation,
                params=self.health_params if self.health_operation.method == "GET" else None,
            )
        except ProviderFailed as exc:
            elapsed = (time.monotonic() - started) * 1000
            if self.health_operation.method == "OPTIONS" and exc.status == 501:
                return self._reachable(elapsed)  # it answered: it does not do OPTIONS
            return HealthResult(False, elapsed, str(exc), exc.error_class)
        except ProviderError as exc:
            elapsed = (time.monotonic() - started) * 1000
            return HealthResult(False, elapsed, str(exc), exc.error_class)
        elapsed = (time.monotonic() - started) * 1000
        if self.health_operation.method == "OPTIONS":
            return self._reachable(elapsed)
        if response.status_code in (401, 403):
            return HealthResult(
                False,
                elapsed,
                f"The gateway refused the credentials at its health address (HTTP "
                f"{response.status_code}); check them in the connection's settings.",
                "auth",
            )
        if response.status_code >= 400:
            return HealthResult(
                False,
                elapsed,
                f"The gateway answered HTTP {response.status_code} at its health address.",
                f"http_{response.status_code // 100}xx",
            )
        return HealthResult(True, elapsed, f"The gateway answered in {elapsed:.0f} ms.")

    def _reachable(self, elapsed: float) -> HealthResult:
        return HealthResult(
            True,
            elapsed,
            f"The gateway is reachable (it answered in {elapsed:.0f} ms). It offers no check of "
            "the credentials: give a health address (a balance or status page) in the settings "
            "to have them checked too.",
        )

    # --- shaping the request ------------------------------------------------------------------

    def number(self, to: str) -> str:
        """`to` as the gateway wants it written; AddressError if it is not a number."""
        number = e164(to)
        style = self.config.get("number_format") or E164
        if style == INTERNATIONAL:
            return number.removeprefix("+")
        if style == LOCAL:
            parsed = phonenumbers.parse(number)
            national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
            return re.sub(r"\D", "", str(national))
        return number

    def fields(self, message: OutgoingMessage, number: str) -> dict[str, str]:
        config = self.config
        fields = dict(self.fixed)
        fields[str(config.get("to_field") or "to")] = number
        fields[str(config.get("text_field") or "message")] = message.text
        sender_field, sender_id = config.get("sender_field"), config.get("sender_id")
        if sender_field and sender_id:
            fields[str(sender_field)] = str(sender_id)
        if config.get("reference_field"):
            fields[str(config["reference_field"])] = message.key
        if self.auth == KEY_FIELD:
            fields[str(config.get("key_name") or "apiKey")] = self.secrets.get("secret", "")
        return fields

    # --- reading the answer -------------------------------------------------------------------

    def _judge(self, response: httpx.Response, number: str) -> None:
        """Nothing if the answer says the gateway took the message; the refusal otherwise."""
        status = response.status_code
        in_range = any(low <= status <= high for low, high in self.success)
        if not in_range and status in (401, 403):
            raise CredentialsRefused(
                f"The gateway refused the credentials (HTTP {status}: {self._words(response)}); "
                "check them in the connection's settings.",
                status=status,
            )
        problem = ""
        if not in_range:
            problem = f"HTTP {status}"
        elif self.config.get("success_json_field"):
            path = str(self.config["success_json_field"])
            expected = str(self.config.get("success_json_value") or "")
            found, value = json_at(self._json(response), path)
            if not found:
                problem = f"no {path} in its answer"
            elif _scalar_text(value).strip().lower() != expected.strip().lower():
                problem = f"{path} is {_scalar_text(value)!r}, not {expected!r}"
        if not problem and self.config.get("success_text"):
            wanted = str(self.config["success_text"])
            if wanted not in response.text:
                problem = f"its answer does not say {wanted!r}"
        if problem:
            raise MessageRefused(
                f"The gateway did not take the SMS to {number} ({problem}): "
                f"{self._words(response)}",
                code=str(status),
            )

    def _message_id(self, response: httpx.Response, message: OutgoingMessage) -> str:
        path = str(self.config.get("message_id_json") or "")
        if path:
            found, value = json_at(self._json(response), path)
            if found and value not in (None, "", "None"):
                return _scalar_text(value)[:255]
        pattern = str(self.config.get("message_id_regex") or "")
        if pattern:
            match = re.search(pattern, response.text)
            if match:
                return (match.group(1) if match.groups() else match.group(0))[:255]
        # The gateway knows the message by our key when it was given it.
        return message.key if self.config.get("reference_field") else ""

    def _cost(self, segments: int) -> int | None:
        if self.price is None or not self.currency:
            return None
        minor = (self.price * segments).scaleb(exponent(self.currency))
        return int(minor.quantize(Decimal(1), rounding=ROUND_HALF_UP))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    def _words(self, response: httpx.Response) -> str:
        """The gateway's answer as a refusal may repeat it: on one line, short, and with the
        connection's secrets (and anything shaped like one) masked."""
        text = " ".join(response.text.split()) or "(an empty answer)"
        for secret in self.secrets.values():
            if secret:
                text = text.replace(secret, "***")
        text = REDACTOR.redact(text)
        return text if len(text) <= WORDS_MAX else text[: WORDS_MAX - 1] + "…"


# --- the spec -------------------------------------------------------------------------------------


def _headers(config: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, str]:
    auth, secret = config.get("auth") or NO_AUTH, secrets.get("secret", "")
    if auth == BASIC:
        pair = f"{config.get('username') or ''}:{secret}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}
    if auth == BEARER:
        return {"Authorization": f"Bearer {secret}"}
    if auth == KEY_HEADER:
        return {str(config.get("key_name") or "apiKey"): secret}
    return {}


def _origin(config: Mapping[str, Any]) -> str:
    parts = urlsplit(str(config.get("url", "")))
    return f"{parts.scheme}://{parts.netloc}"


def _gateway(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return HttpSmsGateway(spec, client, config, secrets)


def _optional(name: str, label: str, help: str = "", **options: Any) -> ConfigField:
    return ConfigField(name, label, required=False, help=help, **options)


HTTP_SMS = ProviderSpec(
    key="http-sms",
    name="SMS gateway (HTTP)",
    category=Category.MESSAGING,
    description=(
        "A local SMS gateway that takes a number and a text over HTTP (Africa's Talking, "
        "BulkSMS, a national aggregator): its address, fields and answers are set here."
    ),
    fields=(
        ConfigField(
            "url",
            "Send address",
            FieldKind.URL,
            help="Where the gateway takes messages, like https://api.gateway.example/sms/send.",
            check=_check_url,
        ),
        ConfigField("method", "Method", FieldKind.SELECT, default="POST", choices=METHODS),
        ConfigField(
            "body_format",
            "Send the fields as",
            FieldKind.SELECT,
            default=FORM,
            choices=BODY_FORMATS,
            help="form (application/x-www-form-urlencoded), json, or query (in the address). "
            "GET always sends them in the address.",
        ),
        ConfigField(
            "auth",
            "Authentication",
            FieldKind.SELECT,
            default=NO_AUTH,
            choices=AUTH_KINDS,
            help="basic: user name and password; bearer: a token; api-key-header or "
            "api-key-field: a key in the header or field named below.",
        ),
        _optional("username", "User name", "For basic authentication."),
        ConfigField(
            "secret",
            "Password, token or API key",
            FieldKind.SECRET,
            required=False,
            help="Kept in the credential store, never shown in logs or errors.",
        ),
        ConfigField(
            "key_name",
            "API key header or field name",
            default="apiKey",
            help="The header (or field) the key goes in, as the gateway's documentation names it.",
            check=_check_header_name,
        ),
        ConfigField("to_field", "Field for the number", default="to"),
        ConfigField("text_field", "Field for the text", default="message"),
        ConfigField("sender_field", "Field for the sender id", default="from"),
        _optional("sender_id", "Sender id", "The name or number the SMS comes from, if any."),
        _optional(
            "reference_field",
            "Field for our reference",
            "If the gateway keeps a reference of yours with each message, its field name.",
        ),
        _optional(
            "extra_fields",
            "Fixed fields",
            "Sent with every message, like username=myschool&type=plain.",
            check=_check_fields,
        ),
        ConfigField(
            "number_format",
            "Write numbers as",
            FieldKind.SELECT,
            default=E164,
            choices=NUMBER_FORMATS,
            help="e164: +263771234567; international: 263771234567; local: 0771234567.",
        ),
        ConfigField(
            "success_status",
            "Successful HTTP statuses",
            default="200-299",
            help="A range or a list, like 200-299 or 200,201.",
            check=_check_ranges,
        ),
        _optional(
            "success_json_field",
            "Success field in the JSON answer",
            "Where the answer says whether it was taken, like SMSMessageData.Recipients[0].status.",
            check=_check_path,
        ),
        _optional(
            "success_json_value",
            "…must equal",
            "The value it has when the gateway took the message, like Success.",
        ),
        _optional(
            "success_text",
            "Success words in the answer",
            "Words the answer contains when the gateway took the message, like OK.",
        ),
        _optional(
            "message_id_json",
            "Message id field in the JSON answer",
            "Like SMSMessageData.Recipients[0].messageId.",
            check=_check_path,
        ),
        _optional(
            "message_id_regex",
            "Message id in the answer (regular expression)",
            "For answers that are not JSON; the first group is the id, like ^0\\|[A-Z_]+\\|(\\d+).",
            check=_check_regex,
        ),
        _optional(
            "price_per_part",
            "Price per SMS part",
            "What one SMS part costs, for cost estimates, like 0.035.",
            check=_check_price,
        ),
        _optional("currency", "Currency of the price", "Like USD or ZWG.", check=_check_currency),
        ConfigField(
            "rate_per_second",
            "Most SMS per second",
            FieldKind.NUMBER,
            default=DEFAULT_RATE,
            minimum=0.1,
            maximum=MAX_RATE,
            help="As the gateway allows; sends are spread evenly to keep under it.",
        ),
        ConfigField(
            "timeout",
            "Timeout (seconds)",
            FieldKind.NUMBER,
            default=DEFAULT_TIMEOUT,
            minimum=1,
            maximum=120,
        ),
        _optional(
            "health_url",
            "Health address",
            "A page of the gateway that needs the credentials and sends nothing (a balance, an "
            "account status). Without one, only whether the gateway is reachable is checked.",
            kind=FieldKind.URL,
            check=_check_url,
        ),
    ),
    auth=AuthKind.API_KEY,
    capabilities=frozenset({MESSAGING}),
    health=PROBE,
    base_url=_origin,
    factory=_gateway,
    # Only requests that never left and 429s are ever repeated (the send is not idempotent).
    # Each connection goes at its gateway's own pace (`rate_per_second`).
    policy=ResiliencePolicy(
        timeout=DEFAULT_TIMEOUT, rate=RatePolicy(requests=DEFAULT_RATE, per_seconds=1)
    ),
    headers=_headers,
    rate_field="rate_per_second",
    health_interval=300.0,
)
