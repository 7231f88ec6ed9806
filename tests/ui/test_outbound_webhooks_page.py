"""The Outbound webhooks page, driven as a school's administrator drives it, with a real webhook
consumer on loopback that answers 200 or 500 as each test says: an endpoint added in the dialog
shows its signing secret once and then receives signed events, a failing consumer shows as
failing with the log of every try, a dead letter is replayed once the consumer is fixed,
disabling cancels what waits and a time range brings back what was missed, the secret is
rotated with a day's overlap, and an endpoint is removed after asking.

The service's own delivery loop is stopped in these tests: each test makes the tries itself
with `deliver_due()`, through the bridge, so what the page shows is what the test made."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot
from sqlalchemy import select
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.services.outbound_webhooks import MAX_ATTEMPTS, RETRY_DELAYS, Delivery, Endpoint
from app.store.base import utcnow
from app.store.outbound import (
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookMessageRow,
)
from app.ui import tasks
from app.ui.reason_dialog import ReasonDialog
from app.ui.theme import ThemeController
from app.views.outbound_webhooks import (
    TEST_EVENT,
    EndpointDialog,
    OutboundWebhooksPage,
    ReplayRangeDialog,
    SecretDialog,
)
from tests.fakes.server import Switch, served
from tests.ui.conftest import Gui

PAGE_SIZE = (1180, 820)
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "outbound-webhooks.png"


# --- a webhook consumer on loopback ------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Consumer:
    """Any system that takes the school's webhooks: answers `status` to every request (or
    what `by_path` says for a path ending so) and keeps what it was sent."""

    def __init__(self, base_url: str) -> None:
        self.url = base_url + "/hooks/switchboard"
        self.status = 200
        self.by_path: dict[str, int] = {}
        self.received: list[Received] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        self.received.append(Received(path, dict(request.headers), body))
        ends = [status for end, status in self.by_path.items() if path.endswith(end)]
        return Response(status_code=ends[0] if ends else self.status)

    def webhook_ids(self) -> list[str]:
        return [request.headers["webhook-id"] for request in self.received]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Switch, str]]:
    switch = Switch()
    with served(switch) as url:
        yield switch, url


@pytest.fixture
def consumer(server: tuple[Switch, str]) -> Consumer:
    switch, url = server
    fresh = Consumer(url)
    switch.target = fresh.app
    return fresh


@pytest.fixture
def hooks(gui: Gui) -> Any:
    """The engine's outbound-webhook service with its loop stopped: tries are the test's."""
    service = gui.bridge.services.outbound
    gui.call(service.stop)
    return service


# --- driving the page ----------------------------------------------------------------------------


def opened(gui: Gui, qtbot: QtBot) -> OutboundWebhooksPage:
    page = OutboundWebhooksPage(gui.bridge)
    qtbot.addWidget(page)
    page.resize(*PAGE_SIZE)
    page.show()
    gui.run(page.settle())
    return page


def reload(gui: Gui, page: OutboundWebhooksPage) -> None:
    page.schedule_refresh()
    gui.run(page.settle())


def add_through_dialog(
    gui: Gui,
    page: OutboundWebhooksPage,
    url: str,
    description: str = "",
    events: list[str] | None = None,
) -> tuple[Endpoint, str]:
    """Add an endpoint as a person does; the endpoint and the secret the page showed."""
    adding = tasks.start(page.add_endpoint())
    dialog = gui.find(EndpointDialog, page)
    dialog.url.setText(url)
    dialog.description.setText(description)
    if events is not None:
        dialog.tick(events)
    dialog.save_button.click()
    shown = gui.find(SecretDialog, page)
    secret = shown.secret.text()
    shown.copy_button.click()
    shown.accept()
    endpoint = gui.run(adding)
    assert isinstance(endpoint, Endpoint)
    reload(gui, page)
    return endpoint, secret


def deliver(gui: Gui, hooks: Any) -> None:
    gui.call(hooks.deliver_due)


def endpoint_row(page: OutboundWebhooksPage, endpoint_id: int) -> dict[str, str]:
    row = page.endpoint_model.row_of(endpoint_id)
    assert row is not None
    model = page.endpoint_model
    return {
        str(model.headerData(column, Qt.Orientation.Horizontal)): model.index(row, column).data()
        for column in range(model.columnCount())
    }


def delivery_texts(page: OutboundWebhooksPage) -> list[dict[str, str]]:
    model = page.delivery_model
    return [
        {
            str(model.headerData(column, Qt.Orientation.Horizontal)): model.index(
                row, column
            ).data()
            for column in range(model.columnCount())
        }
        for row in range(model.rowCount())
    ]


def statuses(page: OutboundWebhooksPage) -> list[str]:
    return [delivery.status for delivery in page.delivery_model.records()]


def tries_logged(page: OutboundWebhooksPage) -> list[str]:
    """The answers in the detail pane's log of tries, oldest first."""
    text = page.detail.toPlainText()
    log = text.split("Tries, oldest first\n", 1)[1].split("\n\n", 1)[0]
    return [" ".join(line.split()[3:5]) for line in log.splitlines()]


def show_status(gui: Gui, page: OutboundWebhooksPage, label: str) -> None:
    page.status.setCurrentIndex(page.status.findText(label))
    gui.run(page.settle())


def fast_forward_to_last_try(gui: Gui, delivery_id: int) -> None:
    """As if Svix's schedule had run its course: the delivery's tries are moved back by the
    ~28 hours the schedule takes, the tries between logged as the same failure, and its last
    try due now."""
    now = utcnow()
    start = now - sum(RETRY_DELAYS, timedelta()) - timedelta(minutes=1)
    moments = [start]
    for delay in RETRY_DELAYS[:-1]:
        moments.append(moments[-1] + delay)

    def write(session: Session) -> None:
        delivery = session.get_one(WebhookDeliveryRow, delivery_id)
        tries = session.scalars(
            select(WebhookAttemptRow)
            .where(WebhookAttemptRow.delivery_id == delivery_id)
            .order_by(WebhookAttemptRow.id)
        ).all()
        for row, at in zip(tries, moments, strict=False):
            row.at = at
        for at in moments[len(tries) :]:
            session.add(
                WebhookAttemptRow(
                    delivery_id=delivery_id,
                    at=at,
                    status_code=tries[0].status_code,
                    latency_ms=tries[0].latency_ms,
                    error=tries[0].error,
                )
            )
        delivery.attempts = MAX_ATTEMPTS - 1
        delivery.created_at = start
        delivery.last_attempt_at = moments[-1]
        delivery.next_attempt_at = now
        session.get_one(WebhookMessageRow, delivery.message_id).created_at = start
        endpoint = session.get_one(WebhookEndpointRow, delivery.endpoint_id)
        endpoint.failing_since = start

    gui.call(gui.bridge.services.db.write, write)


# --- the tests -----------------------------------------------------------------------------------


def test_without_endpoints_the_page_says_how_to_add_one(gui: Gui, qtbot: QtBot, hooks: Any) -> None:
    page = opened(gui, qtbot)
    assert page.states.state == "empty"
    assert "Add the web address the other system gives" in page.states._empty_text.text()
    gui.save(page, "outbound-webhooks-empty")


def test_an_added_endpoint_shows_its_secret_once_then_receives_events_signed_with_it(
    gui: Gui, qtbot: QtBot, hooks: Any, consumer: Consumer
) -> None:
    page = opened(gui, qtbot)
    adding = tasks.start(page.add_endpoint())
    dialog = gui.find(EndpointDialog, page)
    dialog.url.setText("crm.example.org/hooks")
    assert gui.run(dialog.submit()) is False
    assert "Enter a web address like https://" in dialog.error_text("url")
    dialog.url.setText(consumer.url)
    dialog.description.setText("School CRM")
    gui.save(dialog, "outbound-webhooks-add")
    dialog.save_button.click()

    shown = gui.find(SecretDialog, page)
    secret = shown.secret.text()
    assert secret.startswith("whsec_")
    assert secret == gui.call(hooks.secret, 1)
    assert shown.secret.isReadOnly()
    shown.copy_button.click()
    assert QGuiApplication.clipboard().text() == secret
    assert shown.copy_button.text() == "Copied"
    explained = " ".join(label.text() for label in shown.findChildren(type(page.footer)))
    assert "Standard Webhooks" in explained
    assert "webhook-signature" in explained
    gui.save(shown, "outbound-webhooks-secret")
    shown.accept()
    endpoint = gui.run(adding)
    assert endpoint.url == consumer.url

    gui.wait_until(lambda: page.endpoint_model.rowCount() == 1)
    row = endpoint_row(page, endpoint.id)
    assert (row["Description"], row["Events"], row["State"]) == (
        "School CRM",
        "All events",
        "Healthy",
    )
    assert row["Last try"] == "never tried"
    assert "Nothing has been sent to this endpoint yet" in page.no_deliveries.text()

    message_id = gui.call(hooks.emit, "payment.succeeded", {"payment": 42, "amount": "10.00"})
    deliver(gui, hooks)

    [request] = consumer.received
    event = Webhook(secret).verify(request.body, request.headers)
    assert (event["type"], event["data"]) == (
        "payment.succeeded",
        {"payment": 42, "amount": "10.00"},
    )
    gui.wait_until(lambda: statuses(page) == ["delivered"])
    [texts] = delivery_texts(page)
    assert (texts["Event"], texts["webhook-id"], texts["Status"]) == (
        "payment.succeeded",
        message_id,
        "delivered",
    )
    assert (texts["Tries"], texts["Next try"], texts["Last answer"]) == ("1", "—", "HTTP 200")
    gui.wait_until(lambda: endpoint_row(page, endpoint.id)["Last try"].endswith("· HTTP 200"))
    gui.wait_until(lambda: "HTTP 200" in page.detail.toPlainText())
    assert f"webhook-id:  {message_id}" in page.detail.toPlainText()
    assert '"amount": "10.00"' in page.detail.toPlainText()


def test_only_the_events_ticked_are_sent_and_a_test_event_reaches_the_endpoint(
    gui: Gui, qtbot: QtBot, hooks: Any, consumer: Consumer
) -> None:
    page = opened(gui, qtbot)
    lessons, _ = add_through_dialog(
        gui, page, consumer.url + "/lessons", "Timetable screen", ["lesson.created"]
    )
    crm, secret = add_through_dialog(
        gui, page, consumer.url + "/crm", "CRM", ["payment.succeeded", TEST_EVENT]
    )
    assert endpoint_row(page, crm.id)["Events"] == f"payment.succeeded, {TEST_EVENT}"

    gui.call(hooks.emit, "lesson.created", {"lesson": 7})
    gui.call(hooks.emit, "payment.succeeded", {"payment": 8})
    deliver(gui, hooks)
    assert sorted(request.path for request in consumer.received) == [
        "/hooks/switchboard/crm",
        "/hooks/switchboard/lessons",
    ]

    assert page.endpoints.select_key(lessons.id)
    assert page.test_button.isEnabled()
    gui.run(page.send_test())
    assert f"{TEST_EVENT} is not one: tick it under Edit…" in page.notice.text()

    assert page.endpoints.select_key(crm.id)
    gui.wait_until(lambda: page.deliveries_heading.text().endswith("/crm"))
    message_id = gui.run(page.send_test())
    assert message_id is not None
    assert "its delivery shows below" in page.notice.text()
    deliver(gui, hooks)
    test = consumer.received[-1]
    assert test.path == "/hooks/switchboard/crm"
    assert Webhook(secret).verify(test.body, test.headers)["type"] == TEST_EVENT
    gui.wait_until(
        lambda: [d.event_type for d in page.delivery_model.records()][:1] == [TEST_EVENT]
    )
    gui.wait_until(lambda: statuses(page)[:1] == ["delivered"])


def test_a_failing_consumer_shows_failing_with_its_tries_and_a_dead_letter_is_replayed_once_fixed(
    gui: Gui, qtbot: QtBot, hooks: Any, consumer: Consumer
) -> None:
    consumer.status = 500
    page = opened(gui, qtbot)
    endpoint, _ = add_through_dialog(gui, page, consumer.url, "Zapier")
    message_id = gui.call(hooks.emit, "lesson.cancelled", {"lesson": 3})
    deliver(gui, hooks)

    gui.wait_until(lambda: endpoint_row(page, endpoint.id)["State"].startswith("Failing since"))
    gui.wait_until(lambda: statuses(page) == ["failed"])
    [texts] = delivery_texts(page)
    assert (texts["Status"], texts["Tries"], texts["Last answer"]) == (
        "failed, will retry",
        "1",
        "HTTP 500",
    )
    assert texts["Next try"] != "—"
    assert endpoint_row(page, endpoint.id)["Waiting"] == "1"
    gui.wait_until(lambda: "The endpoint answered HTTP 500." in page.detail.toPlainText())
    assert "failed, will retry after 1 of at most 8 tries" in page.detail.toPlainText()

    [failed] = page.delivery_model.records()
    fast_forward_to_last_try(gui, failed.id)
    deliver(gui, hooks)
    show_status(gui, page, "Dead letters")
    assert statuses(page) == ["dead"]
    assert endpoint_row(page, endpoint.id)["Dead"] == "1"
    gui.wait_until(lambda: "dead letter after 8 of at most 8 tries" in page.detail.toPlainText())
    assert tries_logged(page) == ["HTTP 500"] * MAX_ATTEMPTS

    consumer.status = 200
    page.deliveries.selectAll()
    page.activateWindow()  # back from the dialogs: the page's shortcuts work in its window
    gui.wait_until(page.isActiveWindow)
    page.deliveries.setFocus()
    qtbot.keyClick(page.deliveries, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    gui.wait_until(lambda: "1 delivery will be sent again" in page.notice.text())
    deliver(gui, hooks)

    assert consumer.webhook_ids() == [message_id] * (2 + 1)  # first try, last try, the replay
    show_status(gui, page, "Every status")
    gui.wait_until(lambda: statuses(page) == ["delivered", "dead"])
    replay: Delivery = page.delivery_model.records()[0]
    assert replay.replay_of == failed.id
    gui.wait_until(lambda: endpoint_row(page, endpoint.id)["State"] == "Healthy")


def test_disabling_cancels_what_waits_and_a_time_range_replay_sends_what_was_missed(
    gui: Gui, qtbot: QtBot, hooks: Any, consumer: Consumer
) -> None:
    consumer.status = 500
    page = opened(gui, qtbot)
    endpoint, _ = add_through_dialog(gui, page, consumer.url, "Website")
    first = gui.call(hooks.emit, "student.added", {"student": 1})
    deliver(gui, hooks)
    gui.wait_until(lambda: statuses(page) == ["failed"])

    disabling = tasks.start(page.toggle_enabled())
    asked = gui.find(ReasonDialog, page)
    assert (
        "Deliveries still waiting for it are cancelled"
        in asked.findChildren(type(page.notice))[0].text()
    )
    asked.reason.setText("The website is being rebuilt")
    asked.ok_button.click()
    gui.run(disabling)

    gui.wait_until(
        lambda: endpoint_row(page, endpoint.id)["State"] == "Disabled: The website is being rebuilt"
    )
    gui.wait_until(lambda: statuses(page) == ["cancelled"])
    assert not page.test_button.isEnabled()
    assert page.enable_button.text() == "Enable"

    second = gui.call(hooks.emit, "student.added", {"student": 2})
    deliver(gui, hooks)
    assert gui.call(hooks.deliveries, message_id=second) == []  # nothing for a disabled one

    consumer.status = 200
    gui.run(page.toggle_enabled())
    gui.wait_until(lambda: endpoint_row(page, endpoint.id)["State"] == "Healthy")
    assert "What it missed while disabled is sent only if you replay it" in page.notice.text()

    replaying = tasks.start(page.replay_range())
    dialog = gui.find(ReplayRangeDialog, page)
    assert not dialog.include_delivered.isChecked()
    gui.save(dialog, "outbound-webhooks-replay-range")
    dialog.ok_button.click()
    replayed = gui.run(replaying)
    assert replayed is not None
    assert len(replayed) == 2
    assert "2 event(s) from that time will be sent again" in page.notice.text()
    deliver(gui, hooks)

    assert sorted(consumer.webhook_ids()[1:]) == sorted([first, second])
    gui.wait_until(lambda: statuses(page) == ["delivered", "delivered", "cancelled"])

    replaying = tasks.start(page.replay_range())
    gui.find(ReplayRangeDialog, page).ok_button.click()
    assert gui.run(replaying) == []
    assert "Nothing to replay: the endpoint has every event of that time" in page.notice.text()
    replaying = tasks.start(page.replay_range())
    dialog = gui.find(ReplayRangeDialog, page)
    dialog.include_delivered.setChecked(True)
    dialog.ok_button.click()
    assert len(gui.run(replaying)) == 2
    deliver(gui, hooks)
    assert sorted(consumer.webhook_ids()[3:]) == sorted([first, second])


def test_waiting_deliveries_are_cancelled_after_asking(
    gui: Gui, qtbot: QtBot, hooks: Any, consumer: Consumer
) -> None:
    consumer.status = 500
    page = opened(gui, qtbot)
    add_through_dialog(gui, page, consumer.url)
    gui.call(hooks.emit, "invoice.overdue", {"invoice": 1})
    gui.call(hooks.emit, "invoice.overdue", {"invoice": 2})
    deliver(gui, hooks)
    gui.wait_until(lambda: statuses(page) == ["failed", "failed"])
    page.deliveries.selectAll()
    assert page.cancel_button.isEnabled()
    cancelling = tasks.start(page.cancel_selected())
    gui.answer(page, "Stop trying")
    assert gui.run(cancelling) == 2
    gui.wait_until(lambda: statuses(page) == ["cancelled", "cancelled"])
    assert not page.cancel_button.isEnabled()


def test_a_rotated_secret_is_shown_and_both_secrets_sign_for_a_day(
    gui: Gui, qtbot: QtBot, hooks: Any, consumer: Consumer
) -> None:
    page = opened(gui, qtbot)
    _, old = add_through_dialog(gui, page, consumer.url)
    rotating = tasks.start(page.rotate_secret())
    gui.answer(page, "Rotate secret")
    shown = gui.find(SecretDialog, page)
    new = shown.secret.text()
    explained = " ".join(label.text() for label in shown.findChildren(type(page.footer)))
    assert "The old secret keeps signing too until" in explained
    assert "(24 hours)" in explained
    shown.accept()
    assert gui.run(rotating) == new != old

    gui.call(hooks.emit, "refund.issued", {"refund": 5})
    deliver(gui, hooks)
    [request] = consumer.received
    for secret in (old, new):
        assert Webhook(secret).verify(request.body, request.headers)["type"] == "refund.issued"
    gui.wait_until(
        lambda: "previous signing secret also signs until" in page.endpoint_summary.text()
    )


def test_an_endpoint_is_changed_then_removed_after_asking(
    gui: Gui, qtbot: QtBot, hooks: Any, consumer: Consumer
) -> None:
    page = opened(gui, qtbot)
    endpoint, _ = add_through_dialog(gui, page, consumer.url, "Old CRM")
    editing = tasks.start(page.edit_endpoint(page.selected_endpoint()))
    dialog = gui.find(EndpointDialog, page)
    assert dialog.all_events.isChecked()
    dialog.description.setText("New CRM")
    dialog.tick(["payment.failed"])
    dialog.save_button.click()
    saved = gui.run(editing)
    assert saved.event_types == ("payment.failed",)
    gui.wait_until(lambda: endpoint_row(page, endpoint.id)["Description"] == "New CRM")

    removing = tasks.start(page.remove_endpoint(page.selected_endpoint()))
    gui.answer(page, "Cancel")
    assert gui.run(removing) is False
    removing = tasks.start(page.remove_endpoint(page.selected_endpoint()))
    gui.answer(page, "Remove")
    assert gui.run(removing) is True
    gui.wait_until(lambda: page.states.state == "empty")
    assert gui.call(hooks.endpoints) == []


def test_screenshot_of_a_healthy_and_a_failing_endpoint(
    gui: Gui, qtbot: QtBot, qapp: QApplication, hooks: Any, consumer: Consumer
) -> None:
    """The page as a school sees it: the CRM takes everything, the automation's address fails
    and has a dead letter, whose tries are shown (docs/screenshots/outbound-webhooks.png)."""
    gui.call(gui.bridge.services.settings.set, "school.timezone", "Africa/Harare")
    style, palette = qapp.styleSheet(), qapp.palette()
    ThemeController(qapp, "light")
    try:
        page = opened(gui, qtbot)
        crm, _ = add_through_dialog(gui, page, consumer.url + "/crm", "School CRM")
        zap, _ = add_through_dialog(
            gui,
            page,
            consumer.url + "/zapier",
            "Zapier: lessons to the parents' group",
            ["lesson.created", "lesson.changed", "lesson.cancelled", TEST_EVENT],
        )
        for n, kind in enumerate(["payment.succeeded", "lesson.created", "student.added"]):
            gui.call(hooks.emit, kind, {"id": n + 1})
        deliver(gui, hooks)
        consumer.by_path["/zapier"] = 500
        gui.call(hooks.emit, "lesson.changed", {"lesson": 12, "starts_at": "2030-03-04T15:00"})
        deliver(gui, hooks)
        [dead] = gui.call(hooks.deliveries, endpoint_id=zap.id, status="failed")
        fast_forward_to_last_try(gui, dead.id)
        deliver(gui, hooks)
        gui.call(hooks.emit, "lesson.cancelled", {"lesson": 13})
        deliver(gui, hooks)
        assert page.endpoints.select_key(zap.id)
        reload(gui, page)
        page.deliveries.clearSelection()
        assert page.deliveries.select_key(dead.id)
        gui.wait_until(lambda: "dead letter after 8" in page.detail.toPlainText())
        assert endpoint_row(page, crm.id)["State"] == "Healthy"
        assert endpoint_row(page, zap.id)["State"].startswith("Failing since")
        gui.save(page, "outbound-webhooks")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert page.grab().save(str(SCREENSHOT))
    finally:  # later tests see the application as they would have
        qapp.setStyleSheet(style)
        qapp.setPalette(palette)
