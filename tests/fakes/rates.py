"""Fake exchange-rate sources, in the formats the real ones publish: the ECB's daily reference
rates (a gesmes XML envelope of Cube elements) and Open Exchange Rates' latest.json (an App ID
in `Authorization: Token …`)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ECB_DAILY = """<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
\t<gesmes:subject>Reference rates</gesmes:subject>
\t<gesmes:Sender>
\t\t<gesmes:name>European Central Bank</gesmes:name>
\t</gesmes:Sender>
\t<Cube>
\t\t<Cube time='{day}'>
{cubes}
\t\t</Cube>
\t</Cube>
</gesmes:Envelope>
"""


class FakeEcb:
    def __init__(self, day: str, rates: dict[str, str], body: str | None = None) -> None:
        self.day, self.rates, self.body = day, rates, body

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/stats/eurofxref/eurofxref-daily.xml", self._daily, methods=["GET"])]
        )

    async def _daily(self, _request: Request) -> Response:
        cubes = "\n".join(
            f"\t\t\t<Cube currency='{code}' rate='{rate}'/>" for code, rate in self.rates.items()
        )
        body = self.body if self.body is not None else ECB_DAILY.format(day=self.day, cubes=cubes)
        return Response(body, media_type="text/xml")


class FakeOpenExchangeRates:
    def __init__(self, app_id: str, timestamp: int, rates: dict[str, Any]) -> None:
        self.app_id, self.timestamp, self.rates = app_id, timestamp, rates

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/latest.json", self._latest, methods=["GET"])])

    async def _latest(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Token {self.app_id}":
            return JSONResponse(
                {
                    "error": True,
                    "status": 401,
                    "message": "invalid_app_id",
                    "description": "Invalid App ID provided.",
                },
                status_code=401,
            )
        return JSONResponse(
            {
                "disclaimer": "Usage subject to terms: https://openexchangerates.org/terms",
                "license": "https://openexchangerates.org/license",
                "timestamp": self.timestamp,
                "base": "USD",
                "rates": self.rates,
            }
        )
