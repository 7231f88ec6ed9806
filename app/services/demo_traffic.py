"""Demo traffic: a few calls a second through the demo's sandbox gateways, so the dashboard's
graphs move in a demonstration before any real payment is taken. Only ever sandbox providers."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from typing import Any

from app.providers.http import ProviderError
from app.services.connections import ConnectionService

log = logging.getLogger("switchboard.demo")

CALLS_PER_SECOND = 2.0
MAX_IN_FLIGHT = 200


class DemoTraffic:
    def __init__(self, connections: ConnectionService, rate: float = CALLS_PER_SECOND) -> None:
        self._connections = connections
        self.rate = rate
        self._rng = random.Random()
        self._calls: set[asyncio.Task[Any]] = set()

    async def tick(self) -> int:
        """One second of traffic: for each active sandbox connection, a Poisson-distributed
        number of calls (on average `rate`). The calls run on their own, so a slow simulated
        provider slows nothing else; returns how many were started."""
        started = 0
        for record in await self._connections.connections():
            if not record.spec.sandbox or record.paused:
                continue
            provider = await self._connections.provider(record.id)
            for _ in range(self._poisson(self.rate)):
                if len(self._calls) >= MAX_IN_FLIGHT:
                    return started  # a provider that stopped answering: do not pile up
                task = asyncio.get_running_loop().create_task(
                    provider.client.call(provider.spec.health)
                )
                self._calls.add(task)
                task.add_done_callback(self._finished)
                started += 1
        return started

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._calls.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, ProviderError):
            log.error("demo call failed unexpectedly", exc_info=error)

    async def settle(self) -> None:
        """Wait for the calls started so far (tests)."""
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)

    def _poisson(self, mean: float) -> int:
        # Knuth's method: fine for the small means used here.
        limit, count, product = math.exp(-mean), 0, self._rng.random()
        while product > limit:
            count += 1
            product *= self._rng.random()
        return count
