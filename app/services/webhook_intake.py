"""What happens to a provider's callback between the socket and the inbox.

In order: the sender's rate, the connection and its path token, the content type, the
signature (with the provider's own scheme, against every secret the connection holds), and
then the inbox, which commits before the answer. Each refusal is an answer the sender can act
on and nothing more: the status code, a short fixed reason, never which check failed inside a
signature. Every refusal is counted by reason, and logged at most once per reason every few
seconds, so a flood of forgeries cannot flood the log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cachetools import TTLCache

from app.domain.errors import NotFound, SwitchboardError
from app.providers.http import ProviderError
from app.providers.webhooks import VERIFIERS, Rejected, Verified, Verifier, WebhookRequest
from app.providers.whatsapp import subscription_answer
from app.services.connections import ConnectionService, SigningSecrets
from app.services.inbox import ConnectionGone, Inbox, InboxUnavailable, IncomingEvent
from app.services.secrets import SecretStore

log = logging.getLogger("switchboard.webhooks")

# Header values never kept in the inbox: credentials, not evidence.
REDACTED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-goog-channel-token", "x-api-key"}
)
LOG_EVERY_SECONDS = 10.0
ID_LENGTH = 200  # the inbox's column
SOURCES_TRACKED = 10_000


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str  # a few fixed words, safe to send back


ACCEPTED = Answer(200, "accepted")
DUPLICATE = Answer(200, "duplicate")
TOO_LARGE = Answer(413, "body too large")
UNKNOWN = Answer(404, "not found")
BAD_CONTENT_TYPE = Answer(400, "wrong content type")
MALFORMED = Answer(400, "malformed request")
BAD_SIGNATURE = Answer(401, "signature not valid")
TOO_FAST = Answer(429, "too many requests")
UNAVAILABLE = Answer(503, "try again later")
GONE = Answer(400, "sender hung up")
FORBIDDEN = Answer(403, "forbidden")
NOT_ALLOWED = Answer(405, "method not allowed")  # counted; nobody reads the answer


@dataclass(frozen=True)
class Source:
    """A connection that receives callbacks, as the intake needs it (cached)."""

    connection_id: int
    token: str
    verifier: Verifier | None  # None: the provider is asked (Provider.verify_webhook)
    secrets: tuple[str, ...]
    content_type: str
    # While a rotation's overlap lasts, the old secrets too, until it ends (checked against
    # each request's arrival, so a source cached a moment too long refuses them on time).
    signing: SigningSecrets | None = None


class SourceLimiter:
    """A token bucket per sender address: `rate` requests a second, bursts of `burst`; the
    least recently seen senders are forgotten beyond `tracked`. rate 0: no limit."""

    def __init__(self, rate: float, burst: float, tracked: int = SOURCES_TRACKED) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tracked = tracked
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self._tracked:
            self._buckets.popitem(last=False)
        return allowed


class WebhookIntake:
    def __init__(
        self,
        connections: ConnectionService,
        secrets: SecretStore,
        inbox: Inbox,
        limiter: SourceLimiter,
    ) -> None:
        self._connections = connections
        self._secrets = secrets
        self._inbox = inbox
        self.limiter = limiter
        # A few seconds for unknown ids too, so a scan of made-up addresses costs no database
        # work per request; a changed or removed connection is forgotten at once.
        self._sources: TTLCache[int, Source | None] = TTLCache(maxsize=4096, ttl=30)
        self._loading: dict[int, asyncio.Future[Source | None]] = {}
        # Bumped when a connection changes: a lookup begun before must not cache what it read.
        self._generation: Counter[int] = Counter()
        self.refused: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()
        connections.on_changed(self.forget)

    def forget(self, connection_id: int) -> None:
        self._generation[connection_id] += 1
        self._sources.pop(connection_id, None)

    async def admit(
        self, connection_id: int, token: str, headers: Mapping[str, str], sender: str
    ) -> Source | Answer:
        """What can be checked before the body is read: the sender's rate, the connection and
        its token, the content type. The connection's source, or the refusal to send."""
        if not self.limiter.allow(sender):
            return self.refuse(TOO_FAST, connection_id, sender)
        try:
            source = await self._source(connection_id)
        except Exception:
            log.exception(
                "webhook source could not be read", extra={"connection_id": connection_id}
            )
            return self.refuse(UNAVAILABLE, connection_id, sender)
        if source is None or not hmac.compare_digest(source.token.encode(), token.encode()):
            return self.refuse(UNKNOWN, connection_id, sender)
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != source.content_type:
            return self.refuse(BAD_CONTENT_TYPE, connection_id, sender)
        return source

    async def accept(
        self, source: Source, url: str, headers: Mapping[str, str], body: bytes, sender: str
    ) -> Answer:
        """Verify an admitted callback and store it; the answer to send. `headers` are
        lower-cased."""
        connection_id = source.connection_id
        request = WebhookRequest(url=url, headers=headers, body=body, received_at=time.time())
        try:
            verified = await self._verify(source, request)
        except Rejected as rejected:
            answer = MALFORMED if rejected.reason == "malformed" else BAD_SIGNATURE
            return self.refuse(answer, connection_id, sender, str(rejected))
        except NotFound:
            return self.refuse(UNKNOWN, connection_id, sender)
        except ProviderError as error:
            # The provider could not be asked (down, or our credentials refused): the sender
            # keeps the event and tries again later.
            return self.refuse(UNAVAILABLE, connection_id, sender, str(error))
        event = IncomingEvent(
            connection_id=connection_id,
            provider_event_id=storable_id(verified.event_id),
            event_type=verified.event_type[:200],
            headers={
                name: "[redacted]" if name in REDACTED_HEADERS else value
                for name, value in headers.items()
            },
            body=body,
        )
        try:
            new = await self._inbox.store(event)
        except ConnectionGone:
            return self.refuse(UNKNOWN, connection_id, sender)
        except InboxUnavailable:
            return self.refuse(UNAVAILABLE, connection_id, sender)
        return ACCEPTED if new else DUPLICATE

    async def _verify(self, source: Source, request: WebhookRequest) -> Verified:
        if source.verifier is not None:
            secrets = source.secrets
            if source.signing is not None:
                secrets = source.signing.at(datetime.fromtimestamp(request.received_at, UTC))
            return source.verifier.verify(request, secrets)
        provider = await self._connections.provider(source.connection_id)
        return await provider.verify_webhook(request)

    async def _source(self, connection_id: int) -> Source | None:
        if connection_id in self._sources:
            return self._sources[connection_id]
        loading = self._loading.get(connection_id)
        if loading is None:
            # One lookup however many callbacks for this connection arrive meanwhile.
            loading = asyncio.ensure_future(self._load(connection_id))
            self._loading[connection_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(connection_id, None))
        return await asyncio.shield(loading)

    async def _load(self, connection_id: int) -> Source | None:
        generation = self._generation[connection_id]
        try:
            record = await self._connections.connection(connection_id)
        except NotFound:
            if generation == self._generation[connection_id]:
                self._sources[connection_id] = None
            return None
        spec = record.spec
        if spec.webhook is None or not record.webhook_token:
            source = None
        elif spec.webhook.remote:
            source = Source(
                connection_id=connection_id,
                token=record.webhook_token,
                verifier=None,
                secrets=(),
                content_type=spec.webhook.content_type,
            )
        else:
            signing = await self._connections.signing_secrets(
                connection_id, spec.webhook.secret_field
            )
            source = Source(
                connection_id=connection_id,
                token=record.webhook_token,
                verifier=VERIFIERS[spec.webhook.verifier],
                secrets=signing.current,
                content_type=spec.webhook.content_type,
                signing=signing,
            )
        if generation == self._generation[connection_id]:
            self._sources[connection_id] = source
        return source

    async def challenge(
        self, connection_id: int, token: str, query: Mapping[str, str], sender: str
    ) -> Answer:
        """A provider checking the address before it sends anything (Meta's `GET
        ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` for WhatsApp): the challenge
        back when the verify token is the connection's, 403 otherwise."""
        if not self.limiter.allow(sender):
            return self.refuse(TOO_FAST, connection_id, sender)
        source = await self._source(connection_id)
        if source is None or not hmac.compare_digest(source.token.encode(), token.encode()):
            return self.refuse(UNKNOWN, connection_id, sender)
        record = await self._connections.connection(connection_id)
        if "verify_token" not in record.secret_fields:
            return NOT_ALLOWED
        stored = await self._connections.secret(connection_id, "verify_token") or ""
        answer = subscription_answer(query, stored.split())
        # Echoed back: only the short token of digits and letters Meta sends is.
        if answer is None or len(answer) > 100 or not answer.isalnum():
            return self.refuse(FORBIDDEN, connection_id, sender)
        return Answer(200, answer)

    def refuse(self, answer: Answer, connection_id: int, sender: str, detail: str = "") -> Answer:
        self.refused[answer.reason] += 1
        now = time.monotonic()
        if now - self._logged_at.get(answer.reason, -LOG_EVERY_SECONDS) < LOG_EVERY_SECONDS:
            self._unlogged[answer.reason] += 1
            return answer
        self._logged_at[answer.reason] = now
        extra: dict[str, Any] = {
            "reason": answer.reason,
            "status": answer.status,
            "connection_id": connection_id,
            "sender": sender,
            "not_logged_since": self._unlogged.pop(answer.reason, 0),
        }
        if detail:
            extra["detail"] = detail
        log.warning("webhook refused", extra=extra)
        return answer

    def refusals(self) -> dict[str, int]:
        return dict(self.refused)

    async def url(self, connection_id: int, base: str) -> str:
        """Where this connection's provider must send its callbacks."""
        record = await self._connections.connection(connection_id)
        if record.spec.webhook is None or not record.webhook_token:
            raise SwitchboardError(f"{record.name} does not call Switchboard back.")
        return webhook_url(connection_id, record.webhook_token, base)


def storable_id(event_id: str) -> str:
    """The provider's event id as the inbox keeps it (at most 200 characters): a longer one by
    its digest, so two ids that differ only near the end are never taken for one event."""
    if len(event_id) <= ID_LENGTH:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def webhook_url(connection_id: int, token: str, base: str) -> str:
    """The address to paste into the provider: `base` is the receiver's public address (a
    tunnel's) or, without one, its local address."""
    return f"{base.rstrip('/')}/hooks/{connection_id}/{token}"
