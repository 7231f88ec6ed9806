"""The webhook benchmark's sender, run in a process of its own so it does not share the
receiver's interpreter: many keep-alive HTTP/1.1 connections posting signed events.

It speaks HTTP over plain asyncio streams rather than through an HTTP client library: at
thousands of requests a second a full client costs more than the receiver it measures.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.providers.webhooks import VERIFIERS


@dataclass(frozen=True)
class SendPlan:
    url: str  # the connection's webhook address
    secret: str
    verifier: str
    seconds: float
    connections: int
    rate: float | None = None  # events a second in all; None: as fast as answers come
    prefix: str = "evt"


@dataclass
class SendResult:
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def send(plan: SendPlan) -> SendResult:
    """Run the plan (in the sender process) and return what the receiver answered."""
    return asyncio.run(_send(plan))


async def _send(plan: SendPlan) -> SendResult:
    parts = urlsplit(plan.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    verifier = VERIFIERS[plan.verifier]
    result = SendResult()
    numbers = iter(range(10**12))
    started = time.perf_counter()
    deadline = started + plan.seconds
    interval = plan.connections / plan.rate if plan.rate else 0.0

    def request() -> tuple[str, bytes]:
        event_id = f"{plan.prefix}_{next(numbers)}"
        body = json.dumps(
            {"id": event_id, "type": "payment.succeeded", "data": {"amount": 1200}}
        ).encode()
        headers = verifier.sign(
            plan.secret, body, url=plan.url, timestamp=int(time.time()), event_id=event_id
        )
        lines = [
            f"POST {parts.path} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        return event_id, ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def connection(offset: float) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        next_at = started + offset
        try:
            while True:
                if interval:
                    # Open loop: each connection sends on its own schedule, however slow the
                    # answers, so a slow receiver shows as latency rather than as fewer sends.
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                if time.perf_counter() >= deadline:
                    return
                event_id, raw = request()
                sent = time.perf_counter()
                writer.write(raw)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                result.latencies_ms.append((time.perf_counter() - sent) * 1000)
                if status == 200:
                    result.acknowledged.append(event_id)
                else:
                    result.refused += 1
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            result.errors += 1
        finally:
            writer.close()

    await asyncio.gather(
        *(connection(n * interval / plan.connections) for n in range(plan.connections))
    )
    result.seconds = time.perf_counter() - started
    return result
