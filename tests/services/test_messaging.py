"""Sending messages: prepare → confirm → send, opt-outs, fallback, and never twice.

The SMS provider is a simulated Twilio account served over loopback (app/providers/
sandbox_sms.py), counting every message it accepted per number."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from app.domain.messages import Channel, MessageStatus
from app.providers.messaging import OutgoingMessage
from app.services import Services
from app.services.audiences import Audience
from app.store.messaging import MessageRow
from tests.support.messaging import ACCOUNT, TOKEN, add_families, e164_of, twilio_served

pytestmark = pytest.mark.both_databases  # the workers' claims differ by database


@pytest.fixture(autouse=True)
async def school_in_zimbabwe(services: Services) -> None:
    """Numbers written without a country code are the school's country's."""
    await services.settings.set("school.locale", "en_ZW")


async def connect_twilio(
    services: Services, url: str, name: str = "Twilio", **values: object
) -> int:
    record = await services.connections.add(
        "twilio",
        name,
        {"account_sid": ACCOUNT, "from_number": "+15005550006", "api_url": url, **values},
        {"auth_token": TOKEN},
    )
    return record.id


async def test_a_send_is_prepared_first_and_nothing_goes_until_it_is_confirmed(
    services: Services,
) -> None:
    add_families(services.db, 3, grade="5", lesson="Violin")
    add_families(services.db, 2, grade="4", lesson="Violin", start=10)
    add_families(services.db, 2, grade="5", lesson="Piano", start=20)
    with twilio_served() as (twilio, url):
        await connect_twilio(services, url)
        batch = await services.messaging.prepare(
            "Lesson reminder",
            Audience(grade="5", lesson="violin"),
            data={"lesson": {"title": "Violin", "starts": "tomorrow at 15:00", "room": ""}},
        )
        assert batch.status == "prepared"
        assert batch.counts == {"prepared": 3}
        assert batch.channels == {"sms": 3}
        assert batch.segments == 3
        assert sum(twilio.received.values()) == 0

        sent = await services.messaging.send(batch.id)
        assert sent.status == "done"
        assert sent.count(MessageStatus.QUEUED, MessageStatus.SENT, MessageStatus.DELIVERED) == 3
        assert twilio.received == {e164_of(n): 1 for n in range(3)}
        bodies = {m.body for m in twilio.messages.values()}
        assert "Reminder: Child0 has Violin tomorrow at 15:00. My School" in bodies


async def test_people_who_opted_out_or_have_no_address_are_left_out_with_a_reason(
    services: Services,
) -> None:
    add_families(services.db, 3)
    add_families(services.db, 1, start=3, with_phone=False)
    with twilio_served() as (twilio, url):
        await connect_twilio(services, url)
        await services.messaging.opt_out(Channel.SMS, "077 1000001")
        batch = await services.messaging.prepare(
            "Invoice overdue",
            Audience(),
            channel=Channel.SMS,
            data={
                "invoice": {"number": "INV-1", "amount": "$10", "due_on": "1 May", "pay_link": "x"}
            },
        )
        assert batch.counts == {"prepared": 2, "opted_out": 1, "skipped": 1}
        await services.messaging.send(batch.id)
        assert set(twilio.received) == {e164_of(0), e164_of(2)}
        views = {view.recipient: view for view in await services.messaging.messages(batch.id)}
        assert "asked not to get SMS" in views["Parent1 Moyo"].error
        assert "no phone number" in views["Parent3 Moyo"].error.lower()


async def test_a_template_with_a_name_the_data_lacks_skips_that_message_and_says_why(
    services: Services,
) -> None:
    add_families(services.db, 1)
    with twilio_served() as (_twilio, url):
        await connect_twilio(services, url)
        batch = await services.messaging.prepare("Payment receipt", Audience(), channel=Channel.SMS)
        assert batch.counts == {"skipped": 1}
        [view] = await services.messaging.messages(batch.id)
        assert "payment" in view.error


async def test_a_number_the_provider_refuses_fails_alone_and_the_others_go(
    services: Services,
) -> None:
    add_families(services.db, 4)
    with twilio_served() as (twilio, url):
        twilio.opted_out.add(e164_of(2))  # replied STOP to Twilio directly
        await connect_twilio(services, url)
        batch = await services.messaging.prepare(
            "Lesson reminder",
            Audience(),
            channel=Channel.SMS,
            data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
        )
        done = await services.messaging.send(batch.id)
        assert done.status == "done", (done.counts, done.message)
        assert done.count(MessageStatus.OPTED_OUT) == 1
        assert done.count(MessageStatus.QUEUED) == 3
        # Twilio said the person unsubscribed: the next send leaves them out from the start.
        assert (Channel.SMS.value, e164_of(2)) in {
            (channel, address) for channel, address, _s, _at in await services.messaging.opt_outs()
        }


async def test_messages_that_may_have_gone_are_looked_up_never_sent_blindly_again(
    services: Services,
) -> None:
    """The state a kill -9 leaves: messages marked sending, of which the provider has some.
    Resuming asks the provider about each and sends only the ones it does not have."""
    add_families(services.db, 6)
    # Queued at Twilio for the whole test, so each status shown is the one looked up.
    with twilio_served(delivery_seconds=(600, 600)) as (twilio, url):
        connection = await connect_twilio(services, url)
        batch = await services.messaging.prepare(
            "Lesson reminder",
            Audience(),
            channel=Channel.SMS,
            data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
        )
        rows = await services.db.read(
            lambda s: list(s.scalars(select(MessageRow).order_by(MessageRow.id)))
        )
        # The crashed process had handed the first three to Twilio, not the others.
        provider = await services.connections.provider(connection)
        for row in rows[:3]:
            await provider.send(  # type: ignore[attr-defined]
                OutgoingMessage(key="x", channel=Channel.SMS, to=row.address, text=row.text)
            )
        now = datetime.now(UTC)
        await services.db.write(
            lambda s: s.execute(
                update(MessageRow)
                .where(MessageRow.batch_id == batch.id)
                .values(status="sending", connection_id=connection, sending_at=now)
            )
        )
        resumed = await services.messaging.send(batch.id)
        assert resumed.status == "done"
        assert twilio.received == {e164_of(n): 1 for n in range(6)}
        views = await services.messaging.messages(batch.id)
        assert all(view.provider_id.startswith("SM") for view in views)
        assert {view.status for view in views} == {MessageStatus.QUEUED}


async def test_when_a_provider_cannot_be_reached_the_next_connection_carries_the_channel(
    services: Services,
) -> None:
    add_families(services.db, 3)
    with twilio_served() as (twilio, url):
        await connect_twilio(services, "http://127.0.0.1:9", name="Broken")
        await connect_twilio(services, url, name="Working")
        batch = await services.messaging.prepare(
            "Lesson reminder",
            Audience(),
            channel=Channel.SMS,
            data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
        )
        done = await services.messaging.send(batch.id)
        assert done.status == "done", (done.counts, done.message)
        assert twilio.received == {e164_of(n): 1 for n in range(3)}


async def test_with_no_connection_left_the_send_pauses_saying_why_and_resumes_later(
    services: Services,
) -> None:
    add_families(services.db, 3)
    with twilio_served() as (twilio, url):
        connection = await connect_twilio(services, url)
        twilio.fail_next = 100
        batch = await services.messaging.prepare(
            "Lesson reminder",
            Audience(),
            channel=Channel.SMS,
            data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
        )
        paused = await services.messaging.send(batch.id)
        assert paused.status == "paused"
        assert "No connection could send SMS" in paused.message
        assert sum(twilio.received.values()) == 0
        twilio.fail_next = 0
        await services.connections.reset_breakers(connection)
        services.connections._providers.pop(connection, None)  # a fresh client, as after a restart
        done = await services.messaging.send(batch.id)
        assert done.status == "done", (done.counts, done.message)
        assert twilio.received == {e164_of(n): 1 for n in range(3)}


async def test_a_cancelled_send_stops_and_sends_nothing_more(services: Services) -> None:
    add_families(services.db, 200)
    with twilio_served() as (twilio, url):
        await connect_twilio(services, url, rate_per_second=50)
        batch = await services.messaging.prepare(
            "Lesson reminder",
            Audience(),
            channel=Channel.SMS,
            data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
        )
        stop = asyncio.Event()
        seen: list[int] = []

        def progress(p: object) -> None:
            seen.append(p.done)  # type: ignore[attr-defined]
            if p.done >= 20:  # type: ignore[attr-defined]
                stop.set()

        done = await services.messaging.send(batch.id, progress=progress, cancel=stop)
        assert done.status == "cancelled"
        went = sum(twilio.received.values())
        assert 20 <= went < 200
        assert done.count(MessageStatus.CANCELLED) == 200 - went
        assert max(twilio.received.values()) == 1
        with pytest.raises(Exception, match="cancelled"):
            await services.messaging.send(batch.id)


async def test_without_a_connection_for_the_channel_the_send_waits_and_says_for_what(
    services: Services,
) -> None:
    add_families(services.db, 2)
    batch = await services.messaging.prepare(
        "Lesson reminder",
        Audience(),
        channel=Channel.SMS,
        data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
    )
    assert batch.counts == {"prepared": 2}
    [view, _other] = await services.messaging.messages(batch.id)
    assert "No connection sends SMS yet" in view.error
    paused = await services.messaging.send(batch.id)
    assert paused.status == "paused"
    assert "wait for a connection that sends SMS" in paused.message


async def test_the_schools_fallback_order_says_which_connection_goes_first(
    services: Services,
) -> None:
    add_families(services.db, 2)
    with twilio_served() as (first, first_url), twilio_served() as (second, second_url):
        await connect_twilio(services, first_url, name="Twilio")
        await connect_twilio(services, second_url, name="School SMS gateway")
        await services.settings.set("messaging.order.sms", " school sms GATEWAY , Twilio")
        batch = await services.messaging.prepare(
            "Lesson reminder",
            Audience(),
            channel=Channel.SMS,
            data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
        )
        await services.messaging.send(batch.id)
        assert sum(second.received.values()) == 2
        assert sum(first.received.values()) == 0


async def test_a_message_in_doubt_whose_connection_was_removed_is_unknown_not_resent(
    services: Services,
) -> None:
    add_families(services.db, 2)
    with twilio_served() as (twilio, url):
        connection = await connect_twilio(services, url)
        batch = await services.messaging.prepare(
            "Lesson reminder",
            Audience(),
            channel=Channel.SMS,
            data={"lesson": {"title": "Violin", "starts": "now", "room": ""}},
        )
        now = datetime.now(UTC)
        await services.db.write(
            lambda s: s.execute(
                update(MessageRow)
                .where(MessageRow.batch_id == batch.id)
                .values(status="sending", connection_id=connection, sending_at=now)
            )
        )
        await services.connections.remove(connection)
        done = await services.messaging.send(batch.id)
        assert done.status == "done"
        assert done.counts == {"unknown": 2}
        [view, _other] = await services.messaging.messages(batch.id)
        assert "may or may not have been sent" in view.error
        assert not twilio.messages
