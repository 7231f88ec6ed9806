"""`switchboard bench webhooks`: how many signed webhooks a second the receiver verifies and
commits durably, how fast it acknowledges them, and whether any acknowledged one is lost.

The receiver runs as in the app: in the engine thread, with the inbox's group commit into
SQLite with `synchronous=FULL`. A sender in a separate process posts signed Standard Webhooks
events over many keep-alive connections, first as fast as the answers come (throughput), then
at a steady rate (acknowledgement latency). The reference, in the same run on the same
machine, is what a plain receiver does: verify, then insert and commit each request on its own.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.benchmarks.run_keyring import run_keyring
from app.benchmarks.webhook_sender import SendPlan, SendResult, send
from app.config import resolve_config
from app.domain.inbox import RECEIVED
from app.providers.webhooks import VERIFIERS, Rejected, WebhookRequest, new_standard_webhooks_secret
from app.store.base import utcnow
from app.store.database import Database
from app.store.integration import ProviderConnection, WebhookInboxEntry

VERIFIER = "standard-webhooks"
TARGET_EVENTS_PER_SECOND = 2000.0
TARGET_RATIO = 3.0
TARGET_P99_MS = 50.0


def webhooks(
    seconds: float = 10.0,
    connections: int = 64,
    steady_rate: float = 500.0,
    folder: Path | None = None,
) -> dict[str, Any]:
    """`folder`: where the databases go for the run (the data folder, so the disk measured is
    the one the school's data lives on); None: the system's temporary folder."""
    secret = new_standard_webhooks_secret()
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="bench-", dir=folder) as scratch,
        run_keyring(),
        ProcessPoolExecutor(1, mp_context=spawn) as sender,
    ):

        def run(plan: SendPlan) -> SendResult:
            return sender.submit(send, plan).result(timeout=plan.seconds + 120)

        here = Path(scratch)
        ours = _measure_ours(here / "ours", secret, seconds, connections, steady_rate, run)
        reference = _measure_reference(here / "reference", secret, seconds, connections, run)
    ratio = ours["throughput"]["events_per_second"] / max(
        reference["throughput"]["events_per_second"], 0.01
    )
    met = (
        ours["throughput"]["events_per_second"] >= TARGET_EVENTS_PER_SECOND
        and ratio >= TARGET_RATIO
        and ours["steady"]["p99_ms"] < TARGET_P99_MS
        and ours["lost"] == 0
    )
    return {
        "benchmark": "webhooks",
        "parameters": {
            "seconds": seconds,
            "connections": connections,
            "steady_rate": steady_rate,
            "signature": VERIFIER,
            "database": "SQLite, WAL, synchronous=FULL",
        },
        "receiver": ours,
        "reference": {"approach": "verify, then insert and commit each request", **reference},
        "throughput_ratio": round(ratio, 1),
        "targets": {
            "events_per_second": TARGET_EVENTS_PER_SECOND,
            "ratio": TARGET_RATIO,
            "steady_p99_ms": TARGET_P99_MS,
            "lost": 0,
        },
        "met": met,
    }


def _measure_ours(
    folder: Path,
    secret: str,
    seconds: float,
    connections: int,
    steady_rate: float,
    run: Any,
) -> dict[str, Any]:
    from app.engine import Engine
    from app.services.webhook_intake import SourceLimiter, webhook_url

    engine = Engine(
        resolve_config(str(folder), environ={}), listen=("127.0.0.1", 0), scheduler=False
    )
    engine.start()
    try:
        services = engine.services

        async def prepare() -> tuple[int, str]:
            services.intake.limiter = SourceLimiter(0, 0)  # one sender, by design: no limit
            record = await services.connections.add(
                "sandbox-payments",
                "Bench gateway",
                {},
                {"api_key": "sk_bench", "webhook_secret": secret},
            )
            assert record.webhook_token is not None
            return record.id, record.webhook_token

        connection_id, token = engine.submit(prepare()).result(60)
        assert engine.address is not None
        url = webhook_url(connection_id, token, engine.address.url)
        run(SendPlan(url, secret, VERIFIER, 1.0, connections, prefix="warm"))
        fast = run(SendPlan(url, secret, VERIFIER, seconds, connections, prefix="fast"))
        steady = run(
            SendPlan(url, secret, VERIFIER, seconds, connections, rate=steady_rate, prefix="steady")
        )

        async def stored() -> set[str]:
            await services.inbox.drain()
            return await services.db.read(_event_ids, connection_id)

        kept = engine.submit(stored()).result(60)
    finally:
        engine.stop()
    acknowledged = set(fast.acknowledged) | set(steady.acknowledged)
    return {
        "throughput": _figures(fast),
        "steady": _figures(steady),
        "acknowledged": len(acknowledged),
        "lost": len(acknowledged - kept),
    }


def _measure_reference(
    folder: Path, secret: str, seconds: float, connections: int, run: Any
) -> dict[str, Any]:
    db = Database(resolve_config(str(folder), environ={}).db_url)
    folder.mkdir(parents=True, exist_ok=True)
    db.migrate()

    token = secrets.token_urlsafe(16)

    def add_connection(session: Session) -> int:
        row = ProviderConnection(kind="sandbox-payments", name="Reference", webhook_token=token)
        session.add(row)
        session.flush()
        return row.id

    with db.writing() as session:
        connection_id = add_connection(session)
    verifier = VERIFIERS[VERIFIER]

    async def hook(request: Request) -> PlainTextResponse:
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            verified = verifier.verify(
                WebhookRequest(str(request.url), headers, body, utcnow().timestamp()), [secret]
            )
        except Rejected:
            return PlainTextResponse("signature not valid", 401)

        def insert(session: Session) -> None:
            session.add(
                WebhookInboxEntry(
                    connection_id=connection_id,
                    provider_event_id=verified.event_id,
                    event_type=verified.event_type,
                    headers=headers,
                    body=body,
                    status=RECEIVED,
                )
            )

        await db.write(insert)  # its own transaction and commit: one disk flush per event
        return PlainTextResponse("accepted")

    from app.services.receiver import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hooks/{connection_id}/{token}", hook, methods=["POST"])]),
            lifespan="off",
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="reference-receiver"
    )
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}/hooks/{connection_id}/{token}"
        run(SendPlan(url, secret, VERIFIER, 1.0, connections, prefix="warm"))
        fast = run(SendPlan(url, secret, VERIFIER, seconds, connections, prefix="fast"))
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        with db.reading() as session:
            kept = _event_ids(session, connection_id)
        db.close()
    return {"throughput": _figures(fast), "lost": len(set(fast.acknowledged) - kept)}


def _event_ids(session: Session, connection_id: int) -> set[str]:
    return set(
        session.scalars(
            select(WebhookInboxEntry.provider_event_id).where(
                WebhookInboxEntry.connection_id == connection_id
            )
        )
    )


def _figures(result: SendResult) -> dict[str, Any]:
    latencies: Sequence[float] = result.latencies_ms or [0.0]
    return {
        "accepted": len(result.acknowledged),
        "refused": result.refused,
        "connection_errors": result.errors,
        "events_per_second": round(len(result.acknowledged) / max(result.seconds, 1e-9), 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
    }
