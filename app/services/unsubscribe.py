"""Unsubscribe links: each e-mail Switchboard sends (when the receiver has a public address)
carries a link of its own, in its text (`{{ unsubscribe_url }}`) and in its
`List-Unsubscribe` header, and the receiver answers it under `/unsubscribe/{token}`.

Opening the link shows a page with one button: mail scanners and link previews open links
without a person, so a GET never unsubscribes anyone. The button (and a mail client's one-click
unsubscribe, RFC 8058: a POST with `List-Unsubscribe=One-Click`) adds the address to the
opt-outs, which every later send honours. The token is 192 random bits kept on the message, so
a link cannot be guessed or made for someone else's address.
"""

from __future__ import annotations

import html
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.domain.messages import UNSUBSCRIBE_PATH
from app.services.events import EventHub
from app.services.messaging import TOPIC, add_opt_out
from app.services.settings import SettingsService
from app.store.database import Database
from app.store.messaging import MessageRow, OptOutRow

log = logging.getLogger("switchboard.messaging")


def _page(title: str, body: str, button: bool = False) -> str:
    form = (
        '<form method="post"><button type="submit" style="font-size:1.1em;padding:.5em 1.5em">'
        "Unsubscribe</button></form>"
        if button
        else ""
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<body style="font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;'
        'padding:0 1em">'
        f"<h1 style=font-size:1.4em>{html.escape(title)}</h1><p>{html.escape(body)}</p>{form}"
    )


class UnsubscribeLinks:
    def __init__(self, db: Database, events: EventHub, settings: SettingsService) -> None:
        self._db = db
        self._events = events
        self._settings = settings
        self.app = Starlette(
            routes=[Route(UNSUBSCRIBE_PATH + "{token}", self._answer, methods=["GET", "POST"])]
        )

    async def _answer(self, request: Request) -> Response:
        token = str(request.path_params["token"])
        school = str(self._settings.get("school.name") or "the school")
        found = await self._db.read(_address, token) if 20 <= len(token) <= 64 else None
        if found is None:
            return HTMLResponse(
                _page("This link does not work", "It may have been copied incompletely."),
                status_code=404,
            )
        channel, address, already = found
        if request.method == "GET":
            if already:
                return HTMLResponse(
                    _page("You are unsubscribed", f"{address} gets no more e-mails from {school}.")
                )
            return HTMLResponse(
                _page(
                    f"Unsubscribe from {school}",
                    f"Press the button and {address} will get no more e-mails from {school}.",
                    button=True,
                )
            )
        await self._db.write(add_opt_out, channel, address, "unsubscribe", "Unsubscribe link")
        self._events.publish(TOPIC, {"opt_out": channel})
        log.info("unsubscribed by link", extra={"channel": channel})
        return HTMLResponse(
            _page("You are unsubscribed", f"{address} gets no more e-mails from {school}.")
        )


def _address(session: Session, token: str) -> tuple[str, str, bool] | None:
    row = session.execute(
        select(MessageRow.channel, MessageRow.address).where(MessageRow.unsubscribe_token == token)
    ).first()
    if row is None:
        return None
    channel, address = row
    already = session.scalar(
        select(OptOutRow.id).where(OptOutRow.channel == channel, OptOutRow.address == address)
    )
    return str(channel), str(address), already is not None
