"""The resilient HTTP layer: the one way Switchboard calls a provider.

One `ResilientClient` per connection holds one `httpx.AsyncClient` (HTTP/1.1 keep-alive), and
every call goes through, in this order:

1. a pause switch (a person paused the connection) and the connection's quota;
2. a TTL cache, for GETs the provider allows to be reused;
3. the pacer, which spreads calls evenly at the provider's rate, so we never call faster than
   it allows and, kept busy, run at that rate;
4. the circuit breakers (the connection's, and the endpoint's where it has one), which refuse
   fast while a provider is failing instead of letting every call wait for a timeout;
5. the request, with the operation's timeout;
6. retries (exponential backoff with full jitter, or the provider's Retry-After when it
   gives one) only where repeating cannot do something twice: idempotent operations, calls that
   carry an idempotency key, and requests that never reached the provider;
7. a request-log record for every attempt, with the URL's secrets masked.

Answers below 400, and 4xx answers about our request (a declined card, a missing record), are
returned; the caller decides what they mean. Everything else becomes a ProviderError whose
`error_class` says what kind of failure it was.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from cachetools import TLRUCache

from app.domain.errors import SwitchboardError
from app.logs import REDACTOR
from app.providers.breaker import BreakerOpen, BreakerSnapshot, CircuitBreaker, Permit
from app.providers.spec import Operation, ResiliencePolicy

log = logging.getLogger("switchboard.providers")

SECRET_QUERY = ("key", "token", "secret", "password", "signature", "sig", "auth", "code")


# --- what happened -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One attempt at one call: what the request log keeps (never a secret)."""

    connection_id: int
    operation: str
    method: str
    url: str
    status_code: int | None
    latency_ms: float
    error_class: str | None
    attempt: int
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ProviderError(SwitchboardError):
    """A call that did not get a usable answer. `error_class` names the kind of failure.

    The message often quotes the provider's answer, which may quote the credentials it was
    sent; the secrets Switchboard knows are masked in it, because it is shown, stored (health
    checks, failed messages) and printed."""

    error_class: ClassVar[str] = "error"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(REDACTOR.mask_known(message))
        self.status = status
        self.retry_after = retry_after


class ProviderPaused(ProviderError):
    error_class = "paused"


class ProviderUnavailable(ProviderError):
    """The circuit breaker is open: the provider has been failing, so we do not call it."""

    error_class = "breaker_open"


class QuotaExceeded(ProviderError):
    error_class = "quota"


class RateLimited(ProviderError):
    error_class = "http_429"


class ProviderUnreachable(ProviderError):
    error_class = "connect"


class ProviderTimeout(ProviderError):
    error_class = "timeout"


class OutcomeUnknown(ProviderError):
    """The request reached the provider but no answer came back, and repeating it could do it
    twice: whether it happened must be found out, not assumed."""

    error_class = "timeout_unknown"


class ProviderFailed(ProviderError):
    error_class = "http_5xx"


class CredentialsRefused(ProviderError):
    """The provider does not accept the connection's credentials: a person must fix them."""

    error_class = "auth"


# Answers after which the provider may have acted: it failed inside, or a proxy in front of it
# gave up waiting (503 and 429 mean it refused without acting).
ACTED_STATUSES = frozenset({500, 502, 504})


def may_have_reached(error: ProviderError) -> bool:
    """Whether the request behind this error may have been acted on by the provider."""
    if isinstance(error, ProviderTimeout | OutcomeUnknown):
        return True
    return isinstance(error, ProviderFailed) and error.status in ACTED_STATUSES


def _unknown_if(uncertain: ProviderError | None, error: ProviderError) -> ProviderError:
    """`error`, unless an earlier try may have reached the provider and this one says
    nothing about it: then the outcome is unknown."""
    if uncertain is None or may_have_reached(error):
        return error
    return OutcomeUnknown(
        f"{uncertain} Trying again then failed ({error}), so whether it was done is not known."
    )


# How the request log's error classes count in the metrics: a call the breaker refused never
# left (refused, not a request); these failed because of the provider; anything else (4xx, 429)
# is about our request, not the provider's health.
REFUSED = frozenset({ProviderUnavailable.error_class})
PROVIDER_FAILURES = frozenset(
    {
        ProviderFailed.error_class,
        ProviderTimeout.error_class,
        OutcomeUnknown.error_class,
        ProviderUnreachable.error_class,
    }
)


class _Again(Exception):
    """An attempt that may be repeated: carries the error to raise if no attempt is left."""

    def __init__(self, error: ProviderError, wait: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


# --- helpers -------------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def redact_url(url: str, secrets: Sequence[str] = ()) -> str:
    """The URL as the request log may keep it: no user:password, no secret-looking query
    values, no known secret anywhere."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [
            (name, "***" if any(word in name.lower() for word in SECRET_QUERY) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    text = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return REDACTOR.redact(text)


@dataclass
class _Cached:
    status: int
    headers: list[tuple[str, str]]
    content: bytes
    ttl: float


class _Permits:
    """The permits of every breaker a call passes, settled together."""

    def __init__(self, permits: list[Permit]) -> None:
        self._permits = permits

    def success(self, seconds: float) -> None:
        for permit in self._permits:
            permit.success(seconds)

    def failure(self, seconds: float) -> None:
        for permit in self._permits:
            permit.failure(seconds)

    def ignore(self) -> None:
        for permit in self._permits:
            permit.ignore()


# --- the client ----------------------------------------------------------------------------------


class Pacer:
    """Calls spread evenly, `requests` every `per_seconds`. Each call gets the next free slot on a
    fixed timeline (or now, if the timeline is behind), so no burst follows a quiet spell, and a
    sleep that wakes a little late does not push later calls back: a busy connection runs at its
    rate, not below it. (A one-token bucket that refills from each wake-up, such as aiolimiter's,
    lost ~10 % of a 100/s limit that way.) A call that wakes more than a slot late (the event
    loop stalled) starts the timeline again from now instead of letting every overdue slot go at
    once, and the moments calls really went are kept: no window of `per_seconds` ever holds more
    than `requests` of them. Calls go in the order they asked."""

    def __init__(self, requests: float, per_seconds: float) -> None:
        self.interval = per_seconds / requests
        size = max(1, int(requests))
        self._window = size * self.interval
        self._sent: deque[float] = deque(maxlen=size)
        self._next = 0.0
        self._turn = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._turn:
            slot = max(time.monotonic(), self._next)
            self._next = slot + self.interval
            while True:
                now = time.monotonic()
                due = slot
                if len(self._sent) == self._sent.maxlen:
                    due = max(due, self._sent[0] + self._window)
                if due <= now:
                    break
                await asyncio.sleep(due - now)
            if now - slot > self.interval:
                self._next = now + self.interval
            self._sent.append(now)


class ResilientClient:
    """Calls one connection's provider; see the module docstring for what every call passes."""

    def __init__(
        self,
        *,
        connection_id: int,
        name: str,
        base_url: str,
        policy: ResiliencePolicy,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        restore: Mapping[str, BreakerSnapshot] | None = None,
        on_request: Callable[[RequestRecord], None] | None = None,
        on_breaker_change: Callable[[str, BreakerSnapshot], None] | None = None,
        idempotency_header: str = "Idempotency-Key",
        secrets: Sequence[str] = (),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.connection_id = connection_id
        self.name = name
        self.policy = policy
        self.paused = False
        self._on_request = on_request
        self._on_breaker_change = on_breaker_change
        self._idempotency_header = idempotency_header
        self._secrets = tuple(secret for secret in secrets if secret)
        self._sleep = sleep
        self._jitter = jitter
        self._restore = dict(restore or {})
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            auth=auth,
            transport=transport,
            timeout=policy.timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )
        self.breaker = self._new_breaker("")
        self._endpoint_breakers: dict[str, CircuitBreaker] = {
            endpoint: self._new_breaker(endpoint) for endpoint in self._restore if endpoint
        }
        rate = policy.rate
        self._limiter = Pacer(rate.requests, rate.per_seconds)
        self._quota_started = time.monotonic()
        self._quota_used = 0
        self._cache: TLRUCache[tuple[Any, ...], _Cached] = TLRUCache(
            maxsize=256, ttu=lambda _key, value, now: now + value.ttl, timer=time.monotonic
        )

    # --- breakers -------------------------------------------------------------------------------

    def _new_breaker(self, endpoint: str) -> CircuitBreaker:
        label = f"{self.name}/{endpoint}" if endpoint else self.name

        def changed(snapshot: BreakerSnapshot) -> None:
            if self._on_breaker_change is not None:
                self._on_breaker_change(endpoint, snapshot)
            log.warning(
                "circuit breaker %s",
                snapshot.state.value,
                extra={
                    "connection": self.connection_id,
                    "endpoint": endpoint or "*",
                    "reason": snapshot.reason,
                },
            )

        saved = self._restore.get(endpoint)
        if saved is not None:
            # As it was before the restart: an open breaker keeps waiting out its time.
            return CircuitBreaker.restored(label, self.policy.breaker, saved, on_change=changed)
        return CircuitBreaker(label, self.policy.breaker, on_change=changed)

    def endpoint_breaker(self, operation: Operation) -> CircuitBreaker:
        if operation.name not in self._endpoint_breakers:
            self._endpoint_breakers[operation.name] = self._new_breaker(operation.name)
        return self._endpoint_breakers[operation.name]

    def breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker of this connection: "" is the connection's, others are endpoints'."""
        return {"": self.breaker, **self._endpoint_breakers}

    # --- calling --------------------------------------------------------------------------------

    async def call(
        self,
        operation: Operation,
        *,
        path_params: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """One call, with `json`, form `data` or raw `content` (give its Content-Type in
        `headers`) as the body."""
        if self.paused:
            raise ProviderPaused(f"{self.name} is paused; resume it on the dashboard to call it.")
        self._count_quota()
        path = operation.url_path(path_params)
        cache_key: tuple[Any, ...] | None = None
        if operation.cache_seconds and operation.method == "GET":
            cache_key = (operation.name, path, tuple(sorted((params or {}).items())))
            hit = self._cache.get(cache_key)
            if hit is not None:
                return httpx.Response(
                    hit.status,
                    headers=hit.headers,
                    content=hit.content,
                    request=httpx.Request("GET", self._http.base_url.join(path)),
                )
        request_headers = dict(headers or {})
        if idempotency_key is not None:
            request_headers[self._idempotency_header] = idempotency_key
        repeatable = operation.safe_to_repeat or idempotency_key is not None
        retry = self.policy.retry
        attempts = max(retry.attempts, 1)
        # A plain loop rather than a retry library: tenacity builds some forty linked objects
        # per call, and at a few hundred calls a second collecting them paused every thread,
        # the window's included, for up to 70 ms (bench ui-stall).
        # Whether a try so far may have reached the provider without an answer: then a later
        # try failing for another reason (a 503, a refused connection, the breaker) still
        # leaves the outcome unknown, and must say so.
        uncertain: ProviderError | None = None
        for attempt in range(1, attempts + 1):
            try:
                response = await self._attempt(
                    operation,
                    path,
                    params,
                    json,
                    data,
                    content,
                    request_headers,
                    repeatable,
                    attempt,
                )
            except _Again as again:
                if uncertain is None and may_have_reached(again.error):
                    uncertain = again.error
                if attempt == attempts:
                    raise _unknown_if(uncertain, again.error) from again
                if again.wait is not None:
                    delay = again.wait  # the provider said how long: honour it
                else:
                    # Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): a
                    # random wait up to an exponentially growing cap, so retrying clients do not
                    # move in step.
                    cap = min(retry.max_delay, retry.base_delay * 2.0 ** (attempt - 1))
                    delay = float(self._jitter() * cap)
                await self._sleep(delay)
                continue
            except ProviderError as error:
                raise _unknown_if(uncertain, error) from error
            if cache_key is not None and operation.cache_seconds:
                self._cache[cache_key] = _Cached(
                    response.status_code,
                    list(response.headers.multi_items()),
                    response.content,
                    operation.cache_seconds,
                )
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(
        self,
        operation: Operation,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Mapping[str, Any] | None,
        content: bytes | None,
        headers: Mapping[str, str],
        repeatable: bool,
        attempt: int,
    ) -> httpx.Response:
        await self._limiter.acquire()
        full_url = self._http.base_url.join(path).copy_merge_params(dict(params or {}))
        url_for_log = redact_url(str(full_url), self._secrets)
        permits = self._acquire(operation, url_for_log, attempt)
        timeout = operation.timeout or self.policy.timeout
        started = time.monotonic()
        try:
            response = await self._http.request(
                operation.method,
                path,
                params=params,
                json=json,
                data=data,
                content=content,
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            )
        except asyncio.CancelledError:
            permits.ignore()
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never left: repeating it cannot do anything twice.
            error: ProviderError = ProviderUnreachable(
                f"{self.name} could not be reached ({type(exc).__name__}); check the internet "
                "connection and the provider's address."
            )
            raise self._failed(
                permits, started, operation, url_for_log, attempt, error, True
            ) from exc
        except httpx.TimeoutException as exc:
            error = self._lost(operation, repeatable, f"did not answer within {timeout:g} s")
            raise self._failed(
                permits, started, operation, url_for_log, attempt, error, repeatable
            ) from exc
        except httpx.TransportError as exc:
            error = self._lost(
                operation, repeatable, f"dropped the connection ({type(exc).__name__})"
            )
            raise self._failed(
                permits, started, operation, url_for_log, attempt, error, repeatable
            ) from exc
        except Exception:
            # Anything else (a redirect loop, an undecodable body, a bug) says nothing about the
            # provider's health, but the permit must be settled or a half-open breaker waits on it.
            permits.ignore()
            raise
        seconds = time.monotonic() - started
        status = response.status_code
        self._record(operation, url_for_log, status, seconds, attempt, None)
        if status == 429:
            permits.ignore()  # the provider is healthy; we were too fast
            after = retry_after_seconds(response.headers.get("Retry-After"))
            error = RateLimited(
                f"{self.name} asked us to slow down"
                + (f" and try again in {after:.0f} s." if after else "."),
                status=status,
                retry_after=after,
            )
            # A 429 means the provider did not act on the request: safe to repeat any call.
            raise self._again(error, after)
        if status == 408 or status >= 500:
            permits.failure(seconds)
            after = retry_after_seconds(response.headers.get("Retry-After"))
            error = ProviderFailed(
                f"{self.name} had a problem of its own (HTTP {status}).",
                status=status,
                retry_after=after,
            )
            if repeatable:
                raise self._again(error, after)
            raise error
        if status >= 400:
            permits.ignore()  # about our request, not the provider's health
        else:
            permits.success(seconds)
        return response

    def _acquire(self, operation: Operation, url: str, attempt: int) -> _Permits:
        granted: list[Permit] = []
        try:
            if operation.own_breaker:
                # The connection's breaker still stops it (the provider is down, or held open
                # for maintenance), but its outcome counts only on the endpoint's own breaker:
                # one broken endpoint must not take the whole connection down.
                self.breaker.acquire().ignore()
                granted.append(self.endpoint_breaker(operation).acquire())
            else:
                granted.append(self.breaker.acquire())
        except BreakerOpen as exc:
            for permit in granted:
                permit.ignore()
            self._record(operation, url, None, 0.0, attempt, ProviderUnavailable.error_class)
            wait = f" It will be tried again in {exc.retry_after:.0f} s." if exc.retry_after else ""
            reason = exc.snapshot.reason or "it has been failing"
            raise ProviderUnavailable(
                f"{self.name} is not being called: {reason}.{wait}", retry_after=exc.retry_after
            ) from exc
        return _Permits(granted)

    def _lost(self, operation: Operation, repeatable: bool, what: str) -> ProviderError:
        if repeatable:
            return ProviderTimeout(f"{self.name} {what}.")
        return OutcomeUnknown(
            f"{self.name} {what} after receiving “{operation.name}”; it may or may not have "
            "been done, so it was not sent again. Check with the provider before retrying."
        )

    def _failed(
        self,
        permits: _Permits,
        started: float,
        operation: Operation,
        url: str,
        attempt: int,
        error: ProviderError,
        may_repeat: bool,
    ) -> Exception:
        """Count and log a call that got no answer; the exception to raise for it."""
        seconds = time.monotonic() - started
        permits.failure(seconds)
        self._record(operation, url, None, seconds, attempt, error.error_class)
        return self._again(error, None) if may_repeat else error

    def _again(self, error: ProviderError, wait: float | None) -> Exception:
        limit = self.policy.retry.max_retry_after
        if wait is not None and wait > limit:
            return error  # too long to wait here: fail now, saying when to try
        return _Again(error, wait)

    def _count_quota(self) -> None:
        rate = self.policy.rate
        if rate.quota is None:
            return
        now = time.monotonic()
        if now - self._quota_started >= rate.quota_seconds:
            self._quota_started, self._quota_used = now, 0
        if self._quota_used >= rate.quota:
            left = rate.quota_seconds - (now - self._quota_started)
            raise QuotaExceeded(
                f"{self.name} allows {rate.quota} calls per {rate.quota_seconds / 3600:g} h and "
                f"they are used up; more can be made in {left / 60:.0f} min.",
                retry_after=left,
            )
        self._quota_used += 1

    def use_quota(self, used: int) -> None:
        """Start the quota count where it stood (read from the request log after a restart)."""
        self._quota_used = used

    def _record(
        self,
        operation: Operation,
        url: str,
        status: int | None,
        seconds: float,
        attempt: int,
        error_class: str | None,
    ) -> None:
        if status is not None and status >= 400 and error_class is None:
            error_class = "http_429" if status == 429 else f"http_{status // 100}xx"
        if self._on_request is not None:
            self._on_request(
                RequestRecord(
                    connection_id=self.connection_id,
                    operation=operation.name,
                    method=operation.method,
                    url=url,
                    status_code=status,
                    latency_ms=round(seconds * 1000, 3),
                    error_class=error_class,
                    attempt=attempt,
                )
            )

    async def aclose(self) -> None:
        await self._http.aclose()
