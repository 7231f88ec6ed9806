"""The declarative description of a provider kind: what it is, what it needs to be configured,
how it authenticates, what it can do, how its calls should behave, and how to check its health.

The "Connect provider" dialog, the command line and the validation are all generated from a
spec, so adding a provider never means writing another form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from app.domain.errors import FieldError
from app.providers.breaker import BreakerPolicy

if TYPE_CHECKING:
    from app.providers.base import Provider
    from app.providers.http import ResilientClient


class Category(StrEnum):
    PAYMENTS = "payments"
    CALENDAR = "calendar"
    MESSAGING = "messaging"
    AUTOMATION = "automation"
    RATES = "rates"


class FieldKind(StrEnum):
    TEXT = "text"
    URL = "url"
    SECRET = "secret"  # noqa: S105 - the name of a field kind, not a password
    SELECT = "select"
    BOOL = "bool"
    NUMBER = "number"


class AuthKind(StrEnum):
    NONE = "none"
    API_KEY = "api_key"
    BASIC = "basic"
    OAUTH2_PKCE = "oauth2_pkce"
    OAUTH2_CLIENT_CREDENTIALS = "oauth2_client_credentials"


@dataclass(frozen=True)
class ConfigField:
    """One thing a person fills in to connect a provider. Secret fields go to the credential
    store, never to the database."""

    name: str
    label: str
    kind: FieldKind = FieldKind.TEXT
    required: bool = True
    default: str | float | bool | None = None
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 2000  # characters of text (a key file is longer than most settings)
    # Further checks of a parsed value: raise ValueError with a sentence saying what to write.
    check: Callable[[Any], object] | None = field(default=None, compare=False)

    @property
    def secret(self) -> bool:
        return self.kind is FieldKind.SECRET

    def parse(self, raw: str | float | bool | None) -> str | float | bool | None:
        """The typed value, or ValueError with a sentence saying what to write."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if self.required and self.default is None:
                raise ValueError(f"{self.label} is required.")
            return self.default
        if self.kind is FieldKind.BOOL:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("yes", "true", "1", "on"):
                return True
            if text in ("no", "false", "0", "off"):
                return False
            raise ValueError(f"{self.label} must be yes or no, not {raw!r}.")
        if self.kind is FieldKind.NUMBER:
            try:
                number = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{self.label} must be a number, not {raw!r}.") from None
            if self.minimum is not None and number < self.minimum:
                raise ValueError(f"{self.label} must be at least {self.minimum:g}.")
            if self.maximum is not None and number > self.maximum:
                raise ValueError(f"{self.label} must be at most {self.maximum:g}.")
            return number
        text = str(raw).strip()
        if self.kind is FieldKind.SELECT and text not in self.choices:
            raise ValueError(f"{self.label} must be one of {', '.join(self.choices)}.")
        if self.kind is FieldKind.URL:
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"{self.label} must be a web address like https://api.example.com."
                )
        if len(text) > self.max_length:
            raise ValueError(f"{self.label} is too long.")
        if self.check is not None:
            self.check(text)
        return text


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a provider's Retry-After wins when it says more."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    # Retry-After longer than this is not waited for: the call fails and says when to try.
    max_retry_after: float = 30.0


@dataclass(frozen=True)
class RatePolicy:
    """How fast a connection may call its provider (a token bucket), and an optional quota."""

    requests: float = 25.0
    per_seconds: float = 1.0
    quota: int | None = None
    quota_seconds: float = 86_400.0


@dataclass(frozen=True)
class ResiliencePolicy:
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate: RatePolicy = field(default_factory=RatePolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class Operation:
    """One kind of call to a provider. Only idempotent operations, or calls that carry an
    idempotency key, are ever retried after the request may have reached the provider."""

    name: str
    method: str
    path: str
    idempotent: bool | None = None  # None: by HTTP method
    timeout: float | None = None  # None: the connection's policy
    cache_seconds: float | None = None  # GETs the provider allows to be reused for a while
    own_breaker: bool = False  # an endpoint that fails on its own gets its own breaker

    @property
    def safe_to_repeat(self) -> bool:
        return self.idempotent if self.idempotent is not None else self.method in IDEMPOTENT_METHODS

    def url_path(self, values: Mapping[str, Any] | None = None) -> str:
        """The path with `{name}` parts filled in, URL-quoted whole; `{+name}` parts (RFC 6570's
        reserved expansion) keep their slashes, for a path the provider gave us (a WebDAV
        href)."""
        values = values or {}

        def fill(match: re.Match[str]) -> str:
            reserved, name = match.group(1), match.group(2)
            return quote(str(values[name]), safe="/:@%" if reserved else "")

        return re.sub(r"\{(\+?)(\w+)\}", fill, self.path)


ProviderFactory = Callable[
    ["ProviderSpec", "ResilientClient", Mapping[str, Any], Mapping[str, str]], "Provider"
]
# A provider that is simulated in-process supplies its own transport; real ones use the network.
TransportFactory = Callable[[int, Mapping[str, Any], Mapping[str, str]], httpx.AsyncBaseTransport]
HeadersFactory = Callable[[Mapping[str, Any], Mapping[str, str]], dict[str, str]]


@dataclass(frozen=True)
class WebhookSpec:
    """How a provider calls Switchboard back: the signature scheme (a key of
    `app.providers.webhooks.VERIFIERS`), the secret field holding the signing secret (several,
    separated by spaces, while one is being replaced), and the body it sends.

    `verifier="remote"`: only the provider itself can say whether a signature is its own (PayPal
    signs with a private key), so the connection's `Provider.verify_webhook` asks it, and there
    is no secret field."""

    verifier: str
    secret_field: str = ""
    content_type: str = "application/json"

    @property
    def remote(self) -> bool:
        return self.verifier == REMOTE_VERIFIER


REMOTE_VERIFIER = "remote"


@dataclass(frozen=True)
class ProviderSpec:
    key: str
    name: str
    category: Category
    description: str
    fields: tuple[ConfigField, ...]
    auth: AuthKind
    capabilities: frozenset[str]
    health: Operation
    base_url: Callable[[Mapping[str, Any]], str]
    factory: ProviderFactory
    policy: ResiliencePolicy = field(default_factory=ResiliencePolicy)
    headers: HeadersFactory | None = None  # authentication and fixed headers for every call
    transport: TransportFactory | None = None
    idempotency_header: str = "Idempotency-Key"
    health_interval: float = 60.0
    sandbox: bool = False
    webhook: WebhookSpec | None = None  # None: the provider never calls back
    # A number field saying how many calls a second this connection may make (an SMS
    # provider's throughput is the account's, not the kind's); "" keeps the policy's rate.
    rate_field: str = ""

    def policy_for(self, config: Mapping[str, Any]) -> ResiliencePolicy:
        """The connection's resilience policy: the kind's, with its own rate where it has one."""
        rate = config.get(self.rate_field) if self.rate_field else None
        if not isinstance(rate, int | float) or rate <= 0:
            return self.policy
        return replace(self.policy, rate=replace(self.policy.rate, requests=float(rate)))

    def field(self, name: str) -> ConfigField:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(name)

    def check(
        self,
        values: Mapping[str, Any],
        secrets: Mapping[str, str],
        stored: Collection[str] = (),
    ) -> tuple[dict[str, Any], dict[str, str], list[FieldError]]:
        """The typed settings and secrets for this kind, and every problem with them. `stored`:
        secret fields already in the credential store and not given again (they count as
        filled in, and are not checked again)."""
        config: dict[str, Any] = {}
        kept: dict[str, str] = {}
        errors: list[FieldError] = []
        known = {spec_field.name for spec_field in self.fields}
        for name in (*values, *secrets, *stored):
            if name not in known:
                errors.append(FieldError(name, f"{self.name} has no setting called {name!r}."))
        for spec_field in self.fields:
            if spec_field.secret and spec_field.name in stored and not secrets.get(spec_field.name):
                continue
            raw = secrets.get(spec_field.name) if spec_field.secret else values.get(spec_field.name)
            try:
                value = spec_field.parse(raw)
            except ValueError as exc:
                errors.append(FieldError(spec_field.name, str(exc)))
                continue
            if spec_field.secret:
                if value:
                    kept[spec_field.name] = str(value)
            elif value is not None:
                config[spec_field.name] = value
        return config, kept, errors
