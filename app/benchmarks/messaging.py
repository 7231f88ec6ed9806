"""`switchboard bench messaging --recipients N --rate R`: a bulk SMS to N guardians through a
Twilio account that allows R messages a second, and how close the send comes to that limit.

The account is the simulated Twilio (`app.providers.sandbox_sms`) in a process of its own on
loopback, as a real provider is elsewhere: it answers 429 (code 20429) beyond its limit and
counts what it accepted per number. The limit is the reference: no sender can go faster, and a
person sending by hand or with a simple loop goes far slower. The send is measured from the
confirmation to its last result written (the database's group commits included); preparing
(resolving the audience, rendering every message) is reported apart. Target: at least 95 % of
the limit, with every recipient receiving exactly one message.

    python -m app.benchmarks.messaging serve --port P --rate R   (the provider, on its own)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.benchmarks.run_keyring import run_keyring
from app.config import resolve_config
from app.domain.errors import SwitchboardError
from app.domain.messages import Channel
from app.services import Services
from app.services.audiences import Audience
from app.store.school import Guardian

TARGET = 0.95
ACCOUNT = "AC" + "be" * 16
TOKEN = "bench-token"  # noqa: S105 - the simulated account's


def messaging_bench(recipients: int, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as folder, run_keyring():
        port = _free_port()
        provider = subprocess.Popen(  # noqa: S603 - our own module, by the running interpreter
            [sys.executable, "-m", "app.benchmarks.messaging", "serve", "--port", str(port),
             "--rate", str(rate)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for(url, provider)
            figures = asyncio.run(_send(Path(folder), url, recipients, rate))
            received = json.loads(_get(f"{url}/_sandbox/received"))
        finally:
            provider.terminate()
            provider.wait(timeout=10)
    share = figures["messages_per_second"] / rate
    exactly_once = (
        received["messages"] == recipients
        and received["numbers"] == recipients
        and received["most_to_one_number"] == 1
    )
    return {
        "benchmark": "messaging",
        "parameters": {"recipients": recipients, "provider_limit_per_second": rate},
        "switchboard": figures,
        "provider": received,
        "share_of_limit": round(share, 4),
        "exactly_once": exactly_once,
        "target_share": TARGET,
        "met": share >= TARGET and exactly_once,
    }


async def _send(data: Path, url: str, recipients: int, rate: float) -> dict[str, Any]:
    services = await Services.open(resolve_config(str(data), environ={}))
    try:
        await services.settings.set("school.locale", "en_ZW")
        await services.db.write(_guardians, recipients)
        await services.connections.add(
            "twilio",
            "Benchmark Twilio",
            {
                "account_sid": ACCOUNT,
                "from_number": "+15005550006",
                "api_url": url,
                "rate_per_second": rate,
            },
            {"auth_token": TOKEN},
        )
        started = time.perf_counter()
        batch = await services.messaging.prepare(
            "Invoice overdue",
            Audience(),
            channel=Channel.SMS,
            data={
                "invoice": {
                    "number": "INV-2026-0117",
                    "amount": "US$120.00",
                    "due_on": "15 December",
                    "pay_link": "https://pay.example.org/i/INV-2026-0117",
                }
            },
        )
        prepared = time.perf_counter() - started
        if batch.waiting != recipients:
            raise SwitchboardError(f"Only {batch.waiting} of {recipients} messages were prepared.")
        started = time.perf_counter()
        done = await services.messaging.send(batch.id)
        seconds = time.perf_counter() - started
        sent = done.total - done.waiting
        return {
            "prepare_seconds": round(prepared, 3),
            "send_seconds": round(seconds, 3),
            "messages": sent,
            "messages_per_second": round(sent / seconds, 2),
            "status": done.status,
            "counts": dict(done.counts),
        }
    finally:
        await services.close()


def _guardians(session: Session, count: int) -> None:
    session.execute(
        insert(Guardian),
        [
            {
                "ref": f"G{n:06d}",
                "first_name": f"Parent{n}",
                "last_name": "Moyo",
                "phone": f"077{1_000_000 + n:07d}",
                "preferred_channel": "sms",
                "language": "en",
            }
            for n in range(count)
        ],
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback http
        return bytes(answer.read())


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise SwitchboardError(f"The simulated provider did not start: {error[-500:]}")
        try:
            _get(f"{url}/_sandbox/received")
            return
        except OSError:
            time.sleep(0.1)
    raise SwitchboardError("The simulated provider did not start within 20 s.")


def _serve(port: int, rate: float) -> None:
    import uvicorn

    from app.providers.sandbox_sms import SimulatedTwilio

    simulated = SimulatedTwilio(account_sid=ACCOUNT, auth_token=TOKEN, rate=rate, callbacks=False)
    uvicorn.run(simulated.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    options = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _serve(options.port, options.rate)
