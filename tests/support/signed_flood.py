"""Many concurrent senders posting new signed webhooks (Standard Webhooks) at receivers until
a deadline, while one process is killed with SIGKILL partway: the crash tests' load. An event
counts as acknowledged only when its 200 arrived."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import signal
import subprocess
import time

import httpx

from app.providers.webhooks import VERIFIERS


async def flood_and_kill(
    targets: list[tuple[str, list[str]]],
    secret: str,
    *,
    seconds: float,
    kill_at: float,
    victim: subprocess.Popen[str],
    senders: int,
) -> float:
    """`senders` senders per (url, acknowledged) target post events for `seconds`, each
    acknowledged event id appended to its target's list; at `kill_at` seconds the victim is
    killed. Returns the monotonic time of the kill."""
    verifier = VERIFIERS["standard-webhooks"]
    counter = itertools.count()
    prefix = secrets.token_hex(4)
    deadline = time.monotonic() + seconds
    killed: list[float] = []

    async def sender(client: httpx.AsyncClient, url: str, acknowledged: list[str]) -> None:
        while time.monotonic() < deadline:
            event_id = f"evt_{prefix}_{next(counter)}"
            body = json.dumps({"type": "payment.succeeded", "id": event_id}).encode()
            headers = verifier.sign(
                secret, body, url=url, timestamp=int(time.time()), event_id=event_id
            )
            try:
                response = await client.post(
                    url, content=body, headers={**headers, "content-type": "application/json"}
                )
            except httpx.HTTPError:
                return  # that receiver died: what it did not answer was not acknowledged
            if response.status_code == 200:
                acknowledged.append(event_id)

    async def kill() -> None:
        await asyncio.sleep(kill_at)
        victim.send_signal(signal.SIGKILL)
        killed.append(time.monotonic())

    async with httpx.AsyncClient(timeout=5) as client:
        await asyncio.gather(
            kill(),
            *(sender(client, url, acked) for url, acked in targets for _ in range(senders)),
        )
    return killed[0]
