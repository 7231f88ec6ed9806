"""The school's API for Zapier (and any app that calls with an API key), served by the receiver
under `/zapier`:

- `GET /zapier/me`: the key works (Zapier's authentication test); the school's name.
- REST hooks: `POST /zapier/hooks` with `{"target_url", "event"}` subscribes (201 and the
  subscription's `id`), `DELETE /zapier/hooks/{id}` unsubscribes. A subscription is an
  outbound webhook endpoint made by the API (signed, retried, logged like any other), and a
  410 Gone from its target URL removes it, as Zapier's REST hook convention asks.
- A polling trigger: `GET /zapier/triggers/{event}` answers the newest events of that type
  first, each with a stable `id` (the event's webhook-id), so Zapier can tell new from seen.
- Actions: `POST /zapier/actions/students`, `/lessons`, `/invoices` create a record through
  the school service (the same checks as the app's forms); a bad field answers 400 with each
  problem, `{"errors": [{"field", "message"}]}`.

Every request carries the key in `X-API-Key` (or `Authorization: Bearer`); a missing, wrong or
revoked key answers 401 and nothing else happens.

Relied on: Zapier Platform docs, "REST Hooks" (subscribe with the target URL, unsubscribe by
the id returned, 410 from the target URL unsubscribes), "Polling triggers" (an array, newest
first, each with a unique `id`) and "API key authentication" (a test request).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.domain.errors import FieldError, NotFound, SwitchboardError, ValidationFailed
from app.domain.money import exponent, is_known_currency
from app.domain.school import InvoiceDraft, InvoiceLine, LessonDraft, StudentDraft
from app.services.api_keys import ApiKeys
from app.services.outbound_webhooks import OutboundWebhooks
from app.services.school import SchoolService
from app.services.settings import SettingsService

log = logging.getLogger("switchboard.zapier")

PREFIX = "/zapier"
MAX_BODY = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def _problems(errors: list[FieldError]) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"field": e.field, "message": e.message} for e in errors]}, status_code=400
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"field": "", "message": message}]}, status_code=status)


class ZapierApi:
    def __init__(
        self,
        keys: ApiKeys,
        outbound: OutboundWebhooks,
        school: SchoolService,
        settings: SettingsService,
    ) -> None:
        self._keys = keys
        self._outbound = outbound
        self._school = school
        self._settings = settings
        self.app = Starlette(
            routes=[
                Route(f"{PREFIX}/me", self._guard(self._me), methods=["GET"]),
                Route(f"{PREFIX}/hooks", self._guard(self._subscribe), methods=["POST"]),
                Route(
                    f"{PREFIX}/hooks/{{hook_id:int}}",
                    self._guard(self._unsubscribe),
                    methods=["DELETE"],
                ),
                Route(f"{PREFIX}/triggers/{{event}}", self._guard(self._poll), methods=["GET"]),
                Route(f"{PREFIX}/actions/{{kind}}", self._guard(self._action), methods=["POST"]),
            ]
        )

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            given = request.headers.get("x-api-key", "")
            if not given:
                scheme, _, token = request.headers.get("authorization", "").partition(" ")
                given = token.strip() if scheme.lower() == "bearer" else ""
            if await self._keys.check(given) is None:
                return _error(401, "The API key is missing, wrong or revoked.")
            try:
                return await handler(request)
            except ValidationFailed as exc:
                return _problems(list(exc.errors))
            except NotFound as exc:
                return _error(404, str(exc))
            except SwitchboardError as exc:
                return _error(400, str(exc))

        return guarded

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise SwitchboardError("The request is too large.")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise SwitchboardError("The request is not JSON.") from None
        if not isinstance(body, dict):
            raise SwitchboardError("The request must be a JSON object.")
        return body

    async def _me(self, _request: Request) -> Response:
        return JSONResponse({"school": self._settings.get("school.name")})

    async def _subscribe(self, request: Request) -> Response:
        body = await self._body(request)
        target = str(body.get("target_url") or body.get("targetUrl") or "")
        event = str(body.get("event") or "")
        if not event:
            return _problems([FieldError("event", "Say which event to subscribe to.")])
        endpoint = await self._outbound.add_endpoint(
            target, description=f"Zapier: {event}", event_types=[event], subscription=True
        )
        log.info("zapier subscribed", extra={"endpoint": endpoint.id, "event": event})
        return JSONResponse({"id": endpoint.id, "event": event}, status_code=201)

    async def _unsubscribe(self, request: Request) -> Response:
        hook_id = int(request.path_params["hook_id"])
        endpoint = await self._outbound.endpoint(hook_id)
        if not endpoint.subscription:
            raise NotFound(f"There is no subscription {hook_id}.")
        await self._outbound.remove_endpoint(hook_id)
        return JSONResponse({"id": hook_id, "removed": True})

    async def _poll(self, request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit") or 50)
        except ValueError:
            limit = 50
        events = await self._outbound.recent(str(request.path_params["event"]), limit)
        return JSONResponse(
            [
                {**event.payload, "id": event.id, "created_at": event.created_at.isoformat()}
                for event in events
            ]
        )

    async def _action(self, request: Request) -> Response:
        kind = str(request.path_params["kind"])
        body = await self._body(request)
        if kind == "students":
            student = await self._school.save_student(_student(body))
            return JSONResponse({"id": student.id, "ref": student.ref}, status_code=201)
        if kind == "lessons":
            lesson = await self._school.save_lesson(_lesson(body))
            return JSONResponse({"id": lesson.id, "ref": lesson.ref}, status_code=201)
        if kind == "invoices":
            invoice = await self._school.save_invoice(_invoice(body))
            return JSONResponse({"id": invoice.id, "number": invoice.number}, status_code=201)
        raise NotFound(f"There is no action {kind!r}; the actions are students, lessons, invoices.")


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    return str(value).strip() if value is not None else ""


def _student(body: dict[str, Any]) -> StudentDraft:
    return StudentDraft(
        first_name=_text(body, "first_name"),
        last_name=_text(body, "last_name"),
        ref=_text(body, "ref"),
        grade=_text(body, "grade"),
        email=_text(body, "email"),
        phone=_text(body, "phone"),
        notes=_text(body, "notes"),
    )


def _when(body: dict[str, Any], name: str, errors: list[FieldError]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(_text(body, name))
    except ValueError:
        errors.append(
            FieldError(name, f"{name} must be a date and time like 2026-12-08T15:00+02:00.")
        )
        return None
    if moment.tzinfo is None:
        errors.append(FieldError(name, f"{name} needs its time zone, like +02:00."))
        return None
    return moment


def _lesson(body: dict[str, Any]) -> LessonDraft:
    errors: list[FieldError] = []
    starts, ends = _when(body, "starts_at", errors), _when(body, "ends_at", errors)
    teacher = body.get("teacher_id")
    if not isinstance(teacher, int):
        errors.append(FieldError("teacher_id", "teacher_id must be a teacher's number."))
    students = body.get("student_ids") or []
    if not isinstance(students, list) or not all(isinstance(s, int) for s in students):
        errors.append(FieldError("student_ids", "student_ids must be a list of numbers."))
        students = []
    if errors or starts is None or ends is None or not isinstance(teacher, int):
        raise ValidationFailed(errors)
    return LessonDraft(
        title=_text(body, "title"),
        teacher_id=teacher,
        starts_at=starts,
        ends_at=ends,
        student_ids=tuple(students),
        notes=_text(body, "notes"),
    )


def _invoice(body: dict[str, Any]) -> InvoiceDraft:
    errors: list[FieldError] = []
    currency = _text(body, "currency").upper()
    if not is_known_currency(currency):
        raise ValidationFailed([FieldError("currency", f"{currency!r} is not a currency code.")])
    lines: list[InvoiceLine] = []
    for number, line in enumerate(body.get("lines") or [], start=1):
        try:
            amount = Decimal(str(line.get("amount")))
            quantity = int(line.get("quantity", 1))
            minor = int((amount * 10 ** exponent(currency)).to_integral_exact())
        except (InvalidOperation, TypeError, ValueError, AttributeError):
            errors.append(FieldError("lines", f"Line {number} needs an amount like 45.00."))
            continue
        lines.append(InvoiceLine(str(line.get("description") or ""), quantity, minor))
    try:
        issued = date.fromisoformat(_text(body, "issued_on") or date.today().isoformat())
        due = date.fromisoformat(_text(body, "due_on"))
    except ValueError:
        errors.append(FieldError("due_on", "due_on must be a date like 2026-12-31."))
        raise ValidationFailed(errors) from None
    if errors:
        raise ValidationFailed(errors)
    student, guardian = body.get("student_id"), body.get("guardian_id")
    return InvoiceDraft(
        currency=currency,
        issued_on=issued,
        due_on=due,
        lines=tuple(lines),
        student_id=student if isinstance(student, int) else None,
        guardian_id=guardian if isinstance(guardian, int) else None,
        notes=_text(body, "notes"),
    )
