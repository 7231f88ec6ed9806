"""A payment gateway in Stripe's dialect, served over loopback from the test's own process, so it
outlives an app that is killed: the sandbox's books (app/providers/sandbox_ledger.py) behind a
real HTTP server, answering what the Stripe gateway asks (PaymentIntents confirmed at once,
refunds, balance transactions), honouring idempotency keys, and counting what it charged.

    gateway = LedgerGateway(delay=0.01)
    with served(gateway.app) as url:
        ...  # a "stripe" connection with api_url=url charges here
        gateway.charges()  # every PaymentIntent that succeeded
"""

from __future__ import annotations

import asyncio
import random
import threading
from decimal import Decimal
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.domain.payments import FeeRule, FeeSchedule
from app.providers.sandbox_ledger import Ledger


class LedgerGateway:
    def __init__(self, delay: float = 0.0, approval_rate: float = 1.0) -> None:
        self.ledger = Ledger(
            approval_rate, FeeSchedule((FeeRule(Decimal("2.9"), 30),)), random.Random(1)
        )
        self.delay = delay
        self.failing = False  # every answer a 503 while set, nothing done
        self._lock = threading.Lock()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        body = await request.body()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failing:
            unavailable = {"error": {"type": "api_error", "message": "Service unavailable"}}
            await JSONResponse(unavailable, status_code=503)(scope, receive, send)
            return
        asked = httpx.Request(
            request.method, str(request.url), headers=request.headers.raw, content=body
        )
        with self._lock:
            answer = self.ledger.handle(asked)
        if request.url.path == "/v1/account":
            answer = (200, {"id": "acct_fake", "status": "active"})
        status, document = answer or (404, {"error": {"message": "No such endpoint"}})
        await JSONResponse(document, status_code=status)(scope, receive, send)

    def charges(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                intent for intent in self.ledger.intents.values() if intent["status"] == "succeeded"
            ]
