"""The engine runs the services on its own thread and loop, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest
import trustme

from app.config import Config, resolve_config
from app.domain.school import TeacherDraft
from app.engine import Engine, EngineError, EngineState
from app.services import Services
from app.services.events import EngineEvent
from tests.support.polling import wait_for


def other_threads(before: set[int]) -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.ident not in before]


def test_start_and_stop_leave_no_thread_behind(config: Config) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    engine = Engine(config)
    engine.start()
    assert engine.state is EngineState.RUNNING
    assert "switchboard-engine" in other_threads(before)
    # Work on the database starts reader, writer and to_thread workers: all must end too.
    engine.submit(engine.services.school.save_teacher(TeacherDraft("Ann", "Dube"))).result(10)
    engine.submit(engine.services.school.teachers()).result(10)
    engine.stop()
    assert engine.state is EngineState.STOPPED
    assert other_threads(before) == []


def test_services_are_called_from_another_thread_through_submit(config: Config) -> None:
    engine = Engine(config, scheduler=False)
    engine.start()
    try:
        saved = engine.submit(
            engine.services.school.save_teacher(TeacherDraft("Ann", "Dube"))
        ).result(10)
        assert saved.name == "Ann Dube"
    finally:
        engine.stop()
    with pytest.raises(EngineError, match="not running"):
        engine.submit(_noop())


async def _noop() -> None:
    return None


def test_pausing_holds_background_work_and_is_announced(config: Config) -> None:
    engine = Engine(config)
    states: list[str] = []
    engine.events.subscribe(
        lambda event: (
            states.append(event.payload.get("state", "")) if event.topic == "engine.state" else None
        )
    )
    engine.start()
    try:
        wait_for(lambda: states[-1:] == ["running"])
        runs: list[float] = []
        scheduler = engine._scheduler
        assert scheduler is not None
        # A job due every 50 ms, standing in for the real ones (due every few hours).
        engine._loop.call_soon_threadsafe(  # type: ignore[union-attr]
            lambda: scheduler.add_job(
                lambda: runs.append(time.monotonic()), "interval", seconds=0.05
            )
        )
        wait_for(lambda: len(runs) >= 2)
        engine.pause()
        # State events are coalesced (the latest state wins), so wait for each to arrive.
        wait_for(lambda: states[-1:] == ["paused"])
        assert engine.state is EngineState.PAUSED
        paused_at = time.monotonic()
        time.sleep(0.3)
        assert [moment for moment in runs if moment > paused_at + 0.06] == []
        engine.resume()
        wait_for(lambda: states[-1:] == ["running"])
        resumed = len(runs)
        wait_for(lambda: len(runs) > resumed)
    finally:
        engine.stop()
    assert states[-1] == "stopped"


def test_the_upkeep_job_is_scheduled_with_a_generous_misfire_grace(config: Config) -> None:
    engine = Engine(config)
    engine.start()
    try:
        job = engine._scheduler.get_job("database-upkeep")  # type: ignore[union-attr]
        assert job is not None
        assert job.misfire_grace_time >= 3600
        assert job.coalesce
        assert job.max_instances == 1
    finally:
        engine.stop()


def test_a_failed_start_says_why_and_leaves_no_thread(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be")
    before = {thread.ident for thread in threading.enumerate()}
    engine = Engine(resolve_config(str(tmp_path / "data"), environ={}))
    with pytest.raises(EngineError):
        engine.start()
    assert engine.state is EngineState.FAILED
    assert other_threads(before) == []


def test_the_receiver_answers_health_on_the_port_it_bound(config: Config) -> None:
    engine = Engine(config, listen=("127.0.0.1", 0), scheduler=False)
    engine.start()
    try:
        address = engine.address
        assert address is not None
        assert address.port > 0
        response = httpx.get(f"{address.url}/health", timeout=5)
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        assert response.json()["database"] == "ok"
        assert httpx.get(f"{address.url}/nothing-here", timeout=5).status_code == 404
    finally:
        engine.stop()


def test_a_busy_port_is_a_clear_start_error(config: Config) -> None:
    first = Engine(config, listen=("127.0.0.1", 0), scheduler=False)
    first.start()
    try:
        assert first.address is not None
        second = Engine(config, listen=("127.0.0.1", first.address.port), scheduler=False)
        with pytest.raises(EngineError, match="another program may be using that port"):
            second.start()
    finally:
        first.stop()


def test_events_from_services_reach_subscribers_of_the_engine(config: Config) -> None:
    engine = Engine(config, scheduler=False)
    heard: list[EngineEvent] = []
    engine.events.subscribe(heard.append)
    engine.start()
    try:
        engine.submit(engine.services.school.save_teacher(TeacherDraft("Ann", "Dube"))).result(10)
        wait_for(lambda: any(event.topic == "school.teachers" for event in heard))
    finally:
        engine.stop()


def test_stopping_mid_work_cancels_it_closes_cleanly_and_takes_no_more(config: Config) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    engine = Engine(config, scheduler=False)
    engine.start()
    waiting = threading.Event()

    async def long_wait() -> None:
        waiting.set()
        await asyncio.sleep(60)

    def slow_read(session) -> str:  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return "read"

    sleeping = engine.submit(long_wait())
    reading = engine.submit(engine.services.db.read(slow_read))
    assert waiting.wait(5)
    engine.stop()
    assert sleeping.cancelled()
    assert reading.cancelled() or reading.result() == "read"
    with pytest.raises(EngineError, match="not running"):
        engine.submit(_noop())
    assert other_threads(before) == []


def test_the_engine_schedules_checks_metrics_and_retention(config: Config) -> None:
    engine = Engine(config)
    engine.start()
    try:
        scheduler = engine._scheduler
        assert scheduler is not None
        ids = {job.id for job in scheduler.get_jobs()}
        assert {
            "health-checks",
            "metrics-rollup",
            "metrics-retention",
            "database-upkeep",
            "reconciliation-daily",
        } <= ids
        daily = scheduler.get_job("reconciliation-daily")
        assert str(daily.trigger.fields[5]) == "6"  # hour: 06:00 in the school's time zone
    finally:
        engine.stop()


def test_each_calendar_is_synced_by_a_job_of_its_own_kept_in_step_with_the_connections(
    config: Config,
) -> None:
    engine = Engine(config)
    engine.start()
    try:
        services = engine.services
        added = engine.submit(
            services.connections.add(
                "caldav",
                "Ms Moyo's calendar",
                {"calendar_url": "https://dav.example.org/cal/", "teacher": "T-1"},
                {},
            )
        ).result(10)

        def next_runs() -> set[str]:
            return {run.job_id for run in engine.submit(services.jobs.next_runs()).result(10)}

        wait_for(lambda: f"calendar-sync:{added.id}" in next_runs())
        assert "wake-check" in next_runs()
        engine.submit(services.connections.remove(added.id)).result(10)
        wait_for(lambda: f"calendar-sync:{added.id}" not in next_runs())
    finally:
        engine.stop()


def test_with_a_certificate_the_receiver_answers_on_https(config: Config, tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    certificate.private_key_pem.write_to_path(str(key))
    certificate.cert_chain_pems[0].write_to_path(str(chain))
    for extra in certificate.cert_chain_pems[1:]:
        extra.write_to_path(str(chain), append=True)
    authority_file = tmp_path / "authority.pem"
    authority.cert_pem.write_to_path(str(authority_file))
    set_settings(config, {"receiver.tls_certificate": str(chain), "receiver.tls_key": str(key)})
    engine = Engine(config, listen=("127.0.0.1", 0), scheduler=False)
    engine.start()
    try:
        assert engine.address is not None
        assert engine.address.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(authority_file))
        response = httpx.get(f"{engine.address.url}/health", verify=trusting, timeout=5)
        assert response.status_code == 200
    finally:
        engine.stop()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"receiver.tls_certificate": "/nowhere/cert.pem"}, "both a TLS certificate and its key"),
        (
            {"receiver.tls_certificate": "/nowhere/cert.pem", "receiver.tls_key": "/nowhere/k"},
            "certificate or key is missing",
        ),
    ],
)
def test_an_unusable_certificate_is_a_clear_start_error(
    config: Config, values: dict[str, str], message: str
) -> None:
    set_settings(config, values)
    engine = Engine(config, listen=("127.0.0.1", 0), scheduler=False)
    with pytest.raises(EngineError, match=message):
        engine.start()


def set_settings(config: Config, values: dict[str, str]) -> None:
    async def write() -> None:
        services = await Services.open(config)
        try:
            for key, value in values.items():
                await services.settings.set(key, value)
        finally:
            await services.close()

    asyncio.run(write())
