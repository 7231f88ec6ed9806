"""What another computer or program changes in the database reaches this computer's pages live:
over LISTEN/NOTIFY on PostgreSQL, by polling on SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.config import Config
from app.services import Services
from app.services.events import EngineEvent, EventHub
from app.services.school import TOPIC_ROOMS
from app.services.shared_changes import SharedChanges
from tests.support.polling import until

pytestmark = pytest.mark.both_databases


class Office:
    """One computer: its services, its hub, and what its pages heard."""

    def __init__(self, services: Services, name: str) -> None:
        self.services = services
        self.heard: list[EngineEvent] = []
        services.events.subscribe(self.heard.append)
        self.changes = SharedChanges(services.db, services.events, name=name)

    def remote(self, topic: str) -> list[EngineEvent]:
        return [e for e in self.heard if e.topic == topic and "remote" in e.payload]


@pytest.fixture
async def offices(config: Config, tmp_path: Path) -> AsyncIterator[tuple[Office, Office]]:
    other_config = dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data_dir=tmp_path / "office-2")
    )
    opened = []
    for each in (config, other_config):
        hub = EventHub(min_interval=0)
        hub.bind(asyncio.get_running_loop())
        opened.append(await Services.open(each, hub))
    first, second = Office(opened[0], "office-1"), Office(opened[1], "office-2")
    for office in (first, second):
        office.changes.start()
    await asyncio.sleep(0.3)  # the listeners are listening
    yield first, second
    for office in (first, second):
        await office.changes.close()
        await office.services.close()


async def test_a_change_on_one_computer_is_heard_on_the_other(
    offices: tuple[Office, Office],
) -> None:
    first, second = offices
    room = await first.services.school.add_room("Studio 4")
    await until(lambda: second.remote(TOPIC_ROOMS), limit=5)
    assert [room.name for room in await second.services.school.rooms()] == ["Studio 4"]
    # The computer that made the change heard it once, as its own (not again from outside).
    await asyncio.sleep(1.5)
    assert first.remote(TOPIC_ROOMS) == []
    assert [e for e in first.heard if e.topic == TOPIC_ROOMS]
    if first.services.db.is_postgres:  # the notification carries what changed
        assert second.remote(TOPIC_ROOMS)[0].payload["ids"] == [room.id]
