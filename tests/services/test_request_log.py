"""The request log writes calls in batches and loses none, even for a connection just removed."""

from __future__ import annotations

from datetime import UTC, datetime

from app.providers.http import RequestRecord
from app.services import Services


def record(connection_id: int, n: int) -> RequestRecord:
    return RequestRecord(
        connection_id, "op", "GET", f"https://x.example/{n}", 200, 1.0, None, 1, datetime.now(UTC)
    )


async def test_records_are_written_in_one_batch_per_flush(services: Services) -> None:
    batches: list[int] = []
    services.events.subscribe(
        lambda event: batches.append(event.payload["count"]) if event.topic == "requests" else None
    )
    for n in range(300):
        services.requests.add(record(0, n))
    await services.requests.flush()
    assert len(await services.requests.recent(limit=1000)) == 300
    assert batches == [300]


async def test_rows_of_a_connection_that_no_longer_exists_are_kept_unattributed(
    services: Services,
) -> None:
    services.requests.add(record(999, 1))  # no such connection
    services.requests.add(record(0, 2))
    await services.requests.flush()
    logged = await services.requests.recent()
    assert sorted(entry.url for entry in logged) == ["https://x.example/1", "https://x.example/2"]
    assert {entry.connection_id for entry in logged} == {None}
