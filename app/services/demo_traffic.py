"""Demo traffic: a few calls a second through the demo's sandbox gateways, so the dashboard's
graphs move in a demonstration before any real payment is taken. Only ever sandbox providers."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Coroutine
from typing import Any

import httpx

from app.providers.http import ProviderError
from app.services.connections import ConnectionService

log = logging.getLogger("switchboard.demo")

CALLS_PER_SECOND = 2.0


class DemoTraffic:
    def __init__(self, connections: ConnectionService, rate: float = CALLS_PER_SECOND) -> None:
        self._connections = connections
        self.rate = rate
        self._rng = random.Random()

    async def tick(self) -> int:
        """One second of traffic: for each active sandbox connection, a Poisson-distributed
        number of calls (on average `rate`), made at once. Returns how many were made."""
        calls: list[Coroutine[Any, Any, httpx.Response]] = []
        for record in await self._connections.connections():
            if not record.spec.sandbox or record.paused:
                continue
            provider = await self._connections.provider(record.id)
            count = self._poisson(self.rate)
            calls.extend(provider.client.call(provider.spec.health) for _ in range(count))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, ProviderError):
                log.error("demo call failed unexpectedly", exc_info=result)
        return len(calls)

    def _poisson(self, mean: float) -> int:
        # Knuth's method: fine for the small means used here.
        limit, count, product = math.exp(-mean), 0, self._rng.random()
        while product > limit:
            count += 1
            product *= self._rng.random()
        return count
