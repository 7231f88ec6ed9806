"""The resilient HTTP layer against a real HTTP server on loopback: retries, Retry-After,
idempotency, the circuit breaker, rate limits, quotas, the cache and the request log."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest

from app.providers.breaker import BreakerPolicy, BreakerState
from app.providers.http import (
    OutcomeUnknown,
    Pacer,
    ProviderFailed,
    ProviderPaused,
    ProviderUnavailable,
    ProviderUnreachable,
    QuotaExceeded,
    RateLimited,
    RequestRecord,
    ResilientClient,
    redact_url,
    retry_after_seconds,
)
from app.providers.spec import Operation, RatePolicy, ResiliencePolicy, RetryPolicy
from tests.fakes.scripted import Reply, ScriptedServer

GET = Operation("read", "GET", "/thing")
POST = Operation("create", "POST", "/things")
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=5)


class Sleeps:
    """Records the waits between attempts, and waits for real (they are short)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(min(seconds, 0.01))


@pytest.fixture
async def make_client(
    scripted_server: ScriptedServer,
) -> AsyncIterator[Callable[..., ResilientClient]]:
    clients: list[ResilientClient] = []

    def make(
        policy: ResiliencePolicy | None = None,
        *,
        url: str | None = None,
        records: list[RequestRecord] | None = None,
        sleep: Sleeps | None = None,
        name: str = "Test gateway",
    ) -> ResilientClient:
        client = ResilientClient(
            connection_id=1,
            name=name,
            base_url=url or scripted_server.url,
            policy=policy or ResiliencePolicy(timeout=2, retry=FAST_RETRY),
            on_request=records.append if records is not None else None,
            sleep=sleep or Sleeps(),
            jitter=lambda: 1.0,  # the top of each full-jitter range, so waits are predictable
            secrets=["s3cret-key-value"],
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


# --- retries -------------------------------------------------------------------------------------


async def test_an_idempotent_call_is_retried_with_exponential_backoff(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(503), Reply(503), Reply(200, json={"ok": True}))
    sleeps = Sleeps()
    response = await make_client(sleep=sleeps).call(GET)
    assert response.json() == {"ok": True}
    assert len(scripted_server.received("GET", "/thing")) == 3
    assert sleeps.waits == [0.01, 0.02]


async def test_retry_after_from_the_provider_is_honoured(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(429, headers={"Retry-After": "2"}), Reply(200))
    sleeps = Sleeps()
    assert (await make_client(sleep=sleeps).call(GET)).status_code == 200
    assert sleeps.waits == [2.0]


async def test_a_retry_after_longer_than_we_wait_fails_at_once_and_says_when(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(429, headers={"Retry-After": "120"}))
    with pytest.raises(RateLimited, match="try again in 120 s") as raised:
        await make_client().call(GET)
    assert raised.value.retry_after == 120
    assert len(scripted_server.received()) == 1


async def test_a_rate_limited_post_is_repeated_because_the_provider_did_not_act_on_it(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("POST", "/things", Reply(429, headers={"Retry-After": "0"}), Reply(201))
    assert (await make_client().call(POST, json={"a": 1})).status_code == 201
    assert len(scripted_server.received("POST")) == 2


async def test_a_post_without_an_idempotency_key_is_never_repeated_after_a_server_error(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("POST", "/things", Reply(503), Reply(201))
    with pytest.raises(ProviderFailed, match="HTTP 503"):
        await make_client().call(POST, json={"amount": 100})
    assert len(scripted_server.received("POST")) == 1


async def test_a_post_with_an_idempotency_key_is_repeated_with_the_same_key(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("POST", "/things", Reply(503), Reply(201))
    response = await make_client().call(POST, json={"amount": 100}, idempotency_key="pay-42")
    assert response.status_code == 201
    keys = [request.headers["idempotency-key"] for request in scripted_server.received("POST")]
    assert keys == ["pay-42", "pay-42"]


async def test_a_post_that_reached_the_provider_but_got_no_answer_has_an_unknown_outcome(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("POST", "/things", Reply(hang=True))
    client = make_client(ResiliencePolicy(timeout=0.3, retry=FAST_RETRY))
    with pytest.raises(OutcomeUnknown, match="may or may not have been done"):
        await client.call(POST, json={"amount": 100})
    assert len(scripted_server.received("POST")) == 1


async def test_a_retry_that_fails_otherwise_leaves_an_earlier_lost_answer_unknown(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    # The first try may have been done; the retries' 503s say nothing about it.
    scripted_server.script("POST", "/things", Reply(hang=True), then=Reply(503))
    client = make_client(ResiliencePolicy(timeout=0.3, retry=FAST_RETRY))
    with pytest.raises(OutcomeUnknown, match="whether it was done is not known"):
        await client.call(POST, json={"amount": 100}, idempotency_key="pay-43")
    assert len(scripted_server.received("POST")) == FAST_RETRY.attempts


async def test_a_dropped_connection_on_a_read_is_simply_retried(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(drop=True), Reply(200))
    assert (await make_client().call(GET)).status_code == 200


async def test_a_request_that_never_left_is_retried_even_when_not_idempotent(
    make_client: Callable[..., ResilientClient],
) -> None:
    records: list[RequestRecord] = []
    client = make_client(url="http://127.0.0.1:9", records=records)  # nothing listens on 9
    with pytest.raises(ProviderUnreachable, match="could not be reached"):
        await client.call(POST, json={})
    assert [record.error_class for record in records] == ["connect"] * 3


async def test_answers_about_our_request_are_returned_not_retried_or_counted_against_the_provider(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("POST", "/things", Reply(402, json={"error": "card_declined"}))
    client = make_client(ResiliencePolicy(retry=FAST_RETRY, breaker=BreakerPolicy(minimum_calls=2)))
    for _ in range(3):
        assert (await client.call(POST, json={})).status_code == 402
    assert client.breaker.state is BreakerState.CLOSED
    assert client.breaker.snapshot().calls == 0


# --- the circuit breaker -------------------------------------------------------------------------

FLAKY = ResiliencePolicy(
    timeout=2,
    retry=RetryPolicy(attempts=1),
    breaker=BreakerPolicy(minimum_calls=4, failure_rate=0.5, open_seconds=0.3, half_open_calls=2),
)


async def test_the_breaker_opens_on_failures_and_then_refuses_without_calling(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(500))
    records: list[RequestRecord] = []
    client = make_client(FLAKY, records=records)
    for _ in range(4):
        with pytest.raises(ProviderFailed):
            await client.call(GET)
    assert client.breaker.state is BreakerState.OPEN
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="4 of 4 calls failed") as refused:
        await client.call(GET)
    assert time.monotonic() - started < 0.05
    assert refused.value.retry_after is not None
    assert len(scripted_server.received()) == 4  # the refused call never left
    assert records[-1].error_class == "breaker_open"


async def test_after_the_wait_probes_go_through_and_success_closes_the_breaker(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", *[Reply(500)] * 4, then=Reply(200))
    client = make_client(FLAKY)
    for _ in range(4):
        with pytest.raises(ProviderFailed):
            await client.call(GET)
    await asyncio.sleep(0.35)
    assert client.breaker.state is BreakerState.HALF_OPEN
    assert (await client.call(GET)).status_code == 200
    assert (await client.call(GET)).status_code == 200
    assert client.breaker.state is BreakerState.CLOSED


async def test_a_failing_probe_opens_the_breaker_again(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(500))
    client = make_client(FLAKY)
    for _ in range(4):
        with pytest.raises(ProviderFailed):
            await client.call(GET)
    await asyncio.sleep(0.35)
    for _ in range(2):
        with pytest.raises(ProviderFailed):
            await client.call(GET)
    assert client.breaker.state is BreakerState.OPEN


async def test_the_breaker_opens_when_calls_are_slow_even_if_they_succeed(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(200, delay=0.12))
    policy = ResiliencePolicy(
        retry=RetryPolicy(attempts=1),
        breaker=BreakerPolicy(minimum_calls=3, slow_call_rate=0.6, slow_call_seconds=0.1),
    )
    client = make_client(policy)
    for _ in range(3):
        assert (await client.call(GET)).status_code == 200
    assert client.breaker.state is BreakerState.OPEN
    assert "took" in client.breaker.snapshot().reason


async def test_an_endpoint_with_its_own_breaker_fails_alone(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    reports = Operation("reports", "GET", "/reports", own_breaker=True)
    scripted_server.script("GET", "/reports", Reply(500))
    scripted_server.script("GET", "/thing", Reply(200))
    policy = ResiliencePolicy(
        retry=RetryPolicy(attempts=1), breaker=BreakerPolicy(minimum_calls=4, failure_rate=0.9)
    )
    client = make_client(policy)
    for _ in range(4):
        with pytest.raises(ProviderFailed):
            await client.call(reports)
    for _ in range(4):
        await client.call(GET)
    assert client.endpoint_breaker(reports).state is BreakerState.OPEN
    assert client.breaker.state is BreakerState.CLOSED  # the endpoint fails on its own breaker
    with pytest.raises(ProviderUnavailable):
        await client.call(reports)
    assert (await client.call(GET)).status_code == 200


async def test_maintenance_holds_the_breaker_open_until_reset(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(200))
    client = make_client()
    client.breaker.force_open()
    with pytest.raises(ProviderUnavailable, match="maintenance"):
        await client.call(GET)
    client.breaker.reset()
    assert (await client.call(GET)).status_code == 200


# --- rate limits, quota, cache, pause ------------------------------------------------------------


async def test_the_rate_limit_holds_under_200_concurrent_callers(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(200))
    client = make_client(ResiliencePolicy(rate=RatePolicy(requests=100, per_seconds=1)))
    started = time.monotonic()
    responses = await asyncio.gather(*(client.call(GET) for _ in range(200)))
    assert all(response.status_code == 200 for response in responses)
    moments = sorted(request.at for request in scripted_server.received())
    assert len(moments) == 200
    # No second of the run saw more than the limit, give or take the few requests that a busy
    # machine delays and that then arrive close together (the calls are paced at the sender,
    # one slot each; a provider's own 429, should it come, is waited out and tried again).
    busiest = max(sum(1 for m in moments if start <= m < start + 1.0) for start in moments)
    assert busiest <= 100 * 1.1
    assert time.monotonic() - started >= 1.9
    # ... and the limit is used: 200 calls take two seconds, not more.
    assert moments[-1] - moments[0] < 2.2


async def test_a_stalled_event_loop_does_not_let_overdue_calls_burst_past_the_rate() -> None:
    pacer = Pacer(10, 1.0)
    went: list[float] = []

    async def call() -> None:
        await pacer.acquire()
        went.append(time.monotonic())

    async def stall() -> None:
        await asyncio.sleep(0.35)
        time.sleep(0.5)  # noqa: ASYNC251 - the whole loop stops, as on a machine that is paging

    await asyncio.gather(stall(), *(call() for _ in range(25)))
    busiest = max(sum(1 for m in went if start <= m < start + 1.0) for start in went)
    assert busiest <= 10
    # ... and after the stall the calls went on evenly at the rate, none waiting for a free second.
    gaps = [later - earlier for earlier, later in itertools.pairwise(went[4:])]
    assert min(gaps) > 0.07
    assert went[-1] - went[0] < 3.1


async def test_a_quota_refuses_calls_beyond_it_without_calling(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(200))
    client = make_client(ResiliencePolicy(rate=RatePolicy(quota=2, quota_seconds=3600)))
    await client.call(GET)
    await client.call(GET)
    with pytest.raises(QuotaExceeded, match="2 calls per 1 h"):
        await client.call(GET)
    assert len(scripted_server.received()) == 2


async def test_a_cacheable_read_is_reused_while_fresh(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    rates = Operation("rates", "GET", "/rates", cache_seconds=0.3)
    scripted_server.script("GET", "/rates", Reply(200, json={"USD": 1}))
    client = make_client()
    for _ in range(3):
        assert (await client.call(rates)).json() == {"USD": 1}
    assert len(scripted_server.received()) == 1
    await asyncio.sleep(0.35)
    await client.call(rates)
    assert len(scripted_server.received()) == 2


async def test_a_paused_connection_calls_nothing(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    client = make_client()
    client.paused = True
    with pytest.raises(ProviderPaused, match="paused"):
        await client.call(GET)
    assert scripted_server.received() == []


async def test_calls_share_one_kept_alive_connection(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(200))
    client = make_client()
    for _ in range(5):
        await client.call(GET)
    assert scripted_server.connections() == 1


# --- isolation -----------------------------------------------------------------------------------


async def test_one_provider_timing_out_does_not_slow_calls_to_another(
    make_client: Callable[..., ResilientClient],
) -> None:
    with ScriptedServer() as stuck, ScriptedServer() as healthy:
        stuck.script("GET", "/thing", Reply(hang=True))
        healthy.script("GET", "/thing", Reply(200))
        slow = make_client(
            ResiliencePolicy(timeout=1.0, retry=RetryPolicy(attempts=1)), url=stuck.url
        )
        fast = make_client(url=healthy.url)
        waiting = [asyncio.ensure_future(slow.call(GET)) for _ in range(20)]
        await asyncio.sleep(0.05)
        latencies = []
        for _ in range(10):
            started = time.monotonic()
            await fast.call(GET)
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 0.2
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(result, Exception) for result in results)


# --- the request log -----------------------------------------------------------------------------


async def test_every_attempt_is_recorded_without_secrets(
    scripted_server: ScriptedServer, make_client: Callable[..., ResilientClient]
) -> None:
    scripted_server.script("GET", "/thing", Reply(502), Reply(200))
    records: list[RequestRecord] = []
    client = make_client(records=records)
    await client.call(GET, params={"api_key": "s3cret-key-value", "page": "2"})
    assert [(r.attempt, r.status_code, r.error_class) for r in records] == [
        (1, 502, "http_5xx"),
        (2, 200, None),
    ]
    assert all("s3cret-key-value" not in record.url for record in records)
    assert "page=2" in records[0].url
    assert records[0].operation == "read"
    assert records[0].latency_ms >= 0


def test_urls_lose_passwords_and_secret_parameters() -> None:
    url = "https://user:hunter22@api.example.com/v1/x?token=abc&q=1&signature=zz"
    assert redact_url(url) == "https://api.example.com/v1/x?token=***&q=1&signature=***"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("30") == 30
    assert retry_after_seconds("Mon, 23 Nov 2026 12:00:45 GMT", now) == 45
    assert retry_after_seconds("soon") is None


def test_a_path_part_is_quoted_whole_unless_it_is_a_path_the_provider_gave() -> None:
    event = Operation("event", "GET", "/calendar/v3/calendars/{calendar}/events/{event}")
    resource = Operation("resource", "PUT", "/{+href}")

    assert (
        event.url_path({"calendar": "teacher@school.example", "event": "a/b"})
        == "/calendar/v3/calendars/teacher%40school.example/events/a%2Fb"
    )
    # A WebDAV href keeps its slashes, and what the server already escaped stays escaped.
    assert resource.url_path({"href": "dav/cal/lesson%201.ics"}) == "/dav/cal/lesson%201.ics"
