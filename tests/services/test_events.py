"""A flood of engine events reaches a subscriber coalesced, never dropped entirely."""

from __future__ import annotations

import asyncio
import threading

from app.services.events import EngineEvent, EventHub


async def test_a_burst_on_one_topic_is_delivered_at_most_every_interval_with_the_last_payload() -> (
    None
):
    hub = EventHub(min_interval=0.05)
    hub.bind(asyncio.get_running_loop())
    heard: list[EngineEvent] = []
    hub.subscribe(heard.append)
    for number in range(1000):
        hub.publish("webhooks", {"n": number})
    await asyncio.sleep(0.15)
    assert len(heard) == 2
    assert heard[-1].payload == {"n": 999}
    assert sum(event.count for event in heard) == 1000


async def test_topics_are_coalesced_separately() -> None:
    hub = EventHub(min_interval=0.05)
    hub.bind(asyncio.get_running_loop())
    heard: list[str] = []
    hub.subscribe(lambda event: heard.append(event.topic))
    hub.publish("a")
    hub.publish("b")
    await asyncio.sleep(0.01)
    assert heard == ["a", "b"]


async def test_events_published_from_another_thread_arrive_on_the_loop() -> None:
    hub = EventHub()
    loop = asyncio.get_running_loop()
    hub.bind(loop)
    arrived = asyncio.Event()
    threads: list[int] = []

    def on_event(_event: EngineEvent) -> None:
        threads.append(threading.get_ident())
        arrived.set()

    hub.subscribe(on_event)
    worker = threading.Thread(target=hub.publish, args=("x",))
    worker.start()
    worker.join()
    await asyncio.wait_for(arrived.wait(), 2)
    assert threads == [threading.get_ident()]


async def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    hub = EventHub()
    hub.bind(asyncio.get_running_loop())
    heard: list[str] = []

    def broken(_event: EngineEvent) -> None:
        raise RuntimeError("boom")

    hub.subscribe(broken)
    hub.subscribe(lambda event: heard.append(event.topic))
    hub.publish("x")
    assert heard == ["x"]


async def test_unsubscribed_listeners_hear_nothing_more() -> None:
    hub = EventHub()
    hub.bind(asyncio.get_running_loop())
    heard: list[str] = []
    unsubscribe = hub.subscribe(lambda event: heard.append(event.topic))
    unsubscribe()
    hub.publish("x")
    assert heard == []
