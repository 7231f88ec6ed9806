"""Zapier's side of Switchboard, through the real receiver: API keys, REST hooks that are
signed outbound webhooks (a 410 from Zapier unsubscribes), a polling trigger with stable ids,
newest first, and actions that create records through the same checks as the app's forms.
Also Meta's verification request for a WhatsApp connection's callback address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.services import Services
from app.services.receiver import Receiver
from tests.fakes.server import served


async def _ok() -> dict[str, Any]:
    return {"status": "ok"}


@pytest.fixture
async def api(services: Services) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake, api=services.zapier.app)
    receiver.start()
    _key, value = await services.api_keys.create("Zapier")
    assert receiver.address is not None
    async with httpx.AsyncClient(
        base_url=receiver.address.url, headers={"X-API-Key": value}, timeout=10
    ) as client:
        yield client, value
    await receiver.stop()


async def test_every_call_needs_a_key_that_is_not_revoked(
    services: Services, api: tuple[httpx.AsyncClient, str]
) -> None:
    client, value = api
    answer = await client.get("/zapier/me")
    assert answer.status_code == 200
    assert answer.json() == {"school": "My School"}
    assert (await client.get("/zapier/me", headers={"X-API-Key": "sbk_guess"})).status_code == 401
    bearer = await client.get(
        "/zapier/me", headers={"X-API-Key": "", "Authorization": f"Bearer {value}"}
    )
    assert bearer.status_code == 200
    [key] = await services.api_keys.keys()
    assert key.last_used_at is not None
    await services.api_keys.revoke(key.id)
    assert (await client.get("/zapier/me")).status_code == 401


async def test_the_key_itself_is_never_stored(services: Services) -> None:
    _key, value = await services.api_keys.create("Zapier")
    await services.db.read(lambda _s: None)
    path = services.db.sqlite_path
    assert path is not None
    for file in path.parent.glob(path.name + "*"):
        assert value.encode() not in file.read_bytes()


async def test_a_rest_hook_gets_the_events_it_subscribed_to_and_a_410_unsubscribes_it(
    services: Services, api: tuple[httpx.AsyncClient, str]
) -> None:
    client, _value = api
    received: list[dict[str, Any]] = []
    answer_with = {"status": 200}

    async def hook(request: Request) -> Response:
        received.append(await request.json())
        return Response(status_code=answer_with["status"])

    with served(Starlette(routes=[Route("/hooks/catch/1", hook, methods=["POST"])])) as url:
        subscribed = await client.post(
            "/zapier/hooks", json={"target_url": f"{url}/hooks/catch/1", "event": "student.added"}
        )
        assert subscribed.status_code == 201
        hook_id = subscribed.json()["id"]
        assert [e.endpoint.id for e in await services.outbound.endpoints()] == [hook_id]
        await services.outbound.emit("student.added", {"student_id": 7})
        await services.outbound.emit("payment.succeeded", {"payment_id": 1})  # not subscribed
        await services.outbound.deliver_due()
        assert [event["type"] for event in received] == ["student.added"]
        assert received[0]["data"] == {"student_id": 7}

        answer_with["status"] = 410  # the Zap was turned off
        await services.outbound.emit("student.added", {"student_id": 8})
        await services.outbound.deliver_due()
    assert hook_id not in {e.endpoint.id for e in await services.outbound.endpoints()}
    alerts = await services.db.read(
        lambda s: s.execute(text("select count(*) from alerts")).scalar()
    )
    assert alerts == 0  # an unsubscription is not a problem to tell anyone about


async def test_unsubscribing_removes_only_subscriptions(
    services: Services, api: tuple[httpx.AsyncClient, str]
) -> None:
    client, _value = api
    subscribed = await client.post(
        "/zapier/hooks",
        json={"target_url": "https://hooks.zapier.com/x", "event": "lesson.created"},
    )
    hook_id = subscribed.json()["id"]
    person_made = await services.outbound.add_endpoint("https://example.org/hook")
    assert (await client.delete(f"/zapier/hooks/{person_made.id}")).status_code == 404
    assert (await client.delete(f"/zapier/hooks/{hook_id}")).status_code == 200
    assert [e.endpoint.id for e in await services.outbound.endpoints()] == [person_made.id]


async def test_the_polling_trigger_answers_newest_first_with_stable_ids(
    services: Services, api: tuple[httpx.AsyncClient, str]
) -> None:
    client, _value = api
    ids = [await services.outbound.emit("payment.succeeded", {"n": n}) for n in range(3)]
    await services.outbound.emit("refund.issued", {"n": 9})
    first = (await client.get("/zapier/triggers/payment.succeeded")).json()
    assert [item["n"] for item in first] == [2, 1, 0]
    assert [item["id"] for item in first] == list(reversed(ids))
    again = (await client.get("/zapier/triggers/payment.succeeded")).json()
    assert [item["id"] for item in again] == [item["id"] for item in first]


async def test_actions_create_records_with_the_forms_checks(
    services: Services, api: tuple[httpx.AsyncClient, str]
) -> None:
    client, _value = api
    created = await client.post(
        "/zapier/actions/students", json={"first_name": "Rudo", "last_name": "Moyo", "grade": "5"}
    )
    assert created.status_code == 201
    [student] = await services.school.students()
    assert (student.first_name, student.grade) == ("Rudo", "5")

    refused = await client.post("/zapier/actions/students", json={"last_name": "Moyo"})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "first_name"

    invoice = await client.post(
        "/zapier/actions/invoices",
        json={
            "currency": "USD",
            "due_on": "2026-12-31",
            "student_id": student.id,
            "lines": [{"description": "Violin, December", "amount": "45.00"}],
        },
    )
    assert invoice.status_code == 201, invoice.text
    [saved] = await services.school.invoices()
    assert saved.total_minor == 4500

    assert (await client.post("/zapier/actions/rockets", json={})).status_code == 404
    assert (await client.post("/zapier/actions/students", content=b"[1")).status_code == 400


async def test_meta_verifying_a_whatsapp_callback_address_gets_its_challenge_back(
    services: Services,
) -> None:
    record = await services.connections.add(
        "whatsapp",
        "WhatsApp",
        {"phone_number_id": "1234567890"},
        {"access_token": "EAAG-token", "app_secret": "app-secret", "verify_token": "our-verify"},
    )
    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake)
    receiver.start()
    assert receiver.address is not None
    hook = f"{receiver.address.url}/hooks/{record.id}/{record.webhook_token}"
    try:
        async with httpx.AsyncClient() as client:
            good = await client.get(
                hook,
                params={"hub.mode": "subscribe", "hub.verify_token": "our-verify",
                        "hub.challenge": "1158201444"},
            )  # fmt: skip
            bad = await client.get(
                hook,
                params={"hub.mode": "subscribe", "hub.verify_token": "guess",
                        "hub.challenge": "1158201444"},
            )  # fmt: skip
    finally:
        await receiver.stop()
    assert (good.status_code, good.text) == (200, "1158201444")
    assert bad.status_code == 403


async def test_an_emails_unsubscribe_link_asks_first_then_opts_the_address_out(
    services: Services,
) -> None:
    from app.domain.messages import Channel
    from app.domain.templating import Variant
    from app.services.audiences import Audience
    from app.services.message_templates import TemplateDraft
    from tests.support.messaging import add_families

    receiver = Receiver(_ok, "127.0.0.1", 0, intake=services.intake, api=services.web())
    receiver.start()
    assert receiver.address is not None
    await services.settings.set("receiver.public_url", receiver.address.url)
    add_families(services.db, 2, channel="email")
    await services.templates.save(
        TemplateDraft(
            "Concert",
            variants=(
                Variant(
                    "en", Channel.EMAIL, subject="Concert",
                    text="Friday at 17:00.\nNo more e-mails: {{ unsubscribe_url }}",
                ),
            ),
        )
    )  # fmt: skip
    batch = await services.messaging.prepare("Concert", Audience())
    first, second = await services.messaging.messages(batch.id)
    link = first.text.rsplit(" ", 1)[-1]
    assert link.startswith(f"{receiver.address.url}/unsubscribe/")
    assert second.text.rsplit(" ", 1)[-1] != link  # a link of its own for each e-mail
    try:
        async with httpx.AsyncClient() as client:
            shown = await client.get(link)
            assert shown.status_code == 200
            assert "Press the button" in shown.text
            assert await services.messaging.opt_outs() == []  # opening it changes nothing
            # A mail client's one-click unsubscribe (RFC 8058).
            done = await client.post(link, content=b"List-Unsubscribe=One-Click")
            assert "You are unsubscribed" in done.text
            again = await client.get(link)
            assert "You are unsubscribed" in again.text
            bad = await client.get(f"{receiver.address.url}/unsubscribe/{'x' * 32}")
            assert bad.status_code == 404
    finally:
        await receiver.stop()
    [(channel, address, source, _at)] = await services.messaging.opt_outs()
    assert (channel, address, source) == ("email", first.address, "unsubscribe")
    later = await services.messaging.prepare("Concert", Audience())
    assert later.counts == {"prepared": 1, "opted_out": 1}
