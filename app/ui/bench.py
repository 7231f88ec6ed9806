"""`switchboard bench ui-stall`: is the window still responsive while the dashboard plots many
connections and the engine is busy?

The real dashboard runs offscreen with `connections` sandbox connections, each holding a full
day of per-second samples, while the engine makes `rate` calls a second through them (so the
request log, live metrics and the event stream all work). A 10 ms heartbeat on the GUI thread
measures how late it fires. For comparison, in the same run, the same heartbeat is measured
while redrawing the selected connection's day the way a naive dashboard would: every
per-second point, ten times a second.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import time
from collections.abc import Awaitable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np

from app.benchmarks.run_keyring import run_keyring
from app.config import resolve_config
from app.providers.webhooks import new_standard_webhooks_secret

T = TypeVar("T")

TARGET_P99_MS = 16.0
TARGET_WORST_MS = 50.0
SANDBOX = {"latency_ms": "20", "latency_p95_ms": "80", "error_rate": "0.01"}


async def _webhook_plan(engine: Any, seconds: float, rate: float) -> Any:
    """A sandbox connection that receives signed webhooks, and the sender's plan for it."""
    if not rate:
        return None
    from app.benchmarks.webhook_sender import SendPlan
    from app.services.webhook_intake import SourceLimiter, webhook_url

    services = engine.services
    services.intake.limiter = SourceLimiter(0, 0)  # one sender, by design: no limit
    secret = new_standard_webhooks_secret()
    record = await services.connections.add(
        "sandbox-payments", "Webhook sender", {}, {"api_key": "sk", "webhook_secret": secret}
    )
    url = webhook_url(record.id, record.webhook_token, engine.address.url)
    return SendPlan(url, secret, "standard-webhooks", seconds, 32, rate=rate, prefix="ui")


def _start_sender(plan: Any) -> Future[Any] | None:
    if plan is None:
        return None
    from app.benchmarks.webhook_sender import send

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(send, plan)
    pool.shutdown(wait=False)  # the process ends with its one job
    return future


def _day_of_samples(now: float, rng: np.random.Generator) -> tuple[Any, ...]:
    t = np.arange(now - 86_400, now, 1.0)
    n = len(t)
    requests = rng.poisson(4, n).astype(np.float64)
    failures = rng.binomial(requests.astype(np.int64), 0.02).astype(np.float64)
    avg = rng.gamma(4.0, 8.0, n)
    p95 = avg * rng.uniform(1.5, 3.0, n)
    return t, requests, failures, avg, p95


def ui_stall(
    seconds: float = 20.0,
    connections: int = 50,
    rate: float = 200.0,
    reference_seconds: float = 5.0,
    webhooks: float = 0.0,
) -> dict[str, Any]:
    """`webhooks`: signed webhooks a second posted to the engine's receiver meanwhile, from
    another process (0: none)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    import qasync
    from PySide6.QtCore import QTimer

    from app.engine import Engine
    from app.services.demo_traffic import DemoTraffic
    from app.ui.application import make_application
    from app.ui.bridge import EngineBridge
    from app.ui.main_window import MainWindow
    from app.ui.shell import settle_heap
    from app.ui.stall import StallMonitor
    from app.ui.theme import ThemeController
    from app.views.dashboard import RANGES, DashboardPage

    app = make_application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    def run(awaitable: Awaitable[T]) -> T:
        return loop.run_until_complete(awaitable)  # type: ignore[arg-type]

    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as folder, run_keyring():
        engine = Engine(
            resolve_config(folder, environ={}),
            scheduler=False,
            listen=("127.0.0.1", 0) if webhooks else None,
        )
        engine.start()
        bridge = EngineBridge(engine)
        services = engine.services
        window = None
        try:

            async def connect() -> list[int]:
                ids = []
                for number in range(connections):
                    record = await services.connections.add(
                        "sandbox-payments",
                        f"Sandbox {number + 1:02d}",
                        SANDBOX,
                        {"api_key": "sk_sandbox_bench"},
                    )
                    ids.append(record.id)
                return ids

            ids = engine.submit(connect()).result(120)
            hook_plan = engine.submit(_webhook_plan(engine, seconds, webhooks)).result(60)
            traffic = DemoTraffic(services.connections, rate=rate / max(connections, 1))

            async def drive() -> None:
                loop = asyncio.get_running_loop()
                due = loop.time()
                while True:  # on the second, however long a tick took
                    await traffic.tick()
                    due += 1.0
                    await asyncio.sleep(max(0.0, due - loop.time()))

            driving = engine.submit(drive())

            page = DashboardPage(bridge)
            window = MainWindow(bridge, ThemeController(app), [page])
            window.resize(1280, 800)
            window.show()
            run(page.settle())
            rng = np.random.default_rng(7)
            now = time.time()
            for connection_id in ids:
                buffer = page.buffer(connection_id)
                buffer.extend(*_day_of_samples(now, rng), span=1.0)
                page._backfilled.add(connection_id)

            # Move about as a person would: another connection every 2 s, another range every 5 s.
            ranges = [seconds_ for _label, seconds_ in RANGES if seconds_ <= 86_400]
            step = {"n": 0}

            def move() -> None:
                step["n"] += 1
                page.choose(ids[step["n"] % len(ids)])
                if step["n"] % 5 == 0:
                    page.set_range(ranges[(step["n"] // 5) % len(ranges)])

            settle_heap()  # as the app does once its window is up
            mover = QTimer()
            mover.timeout.connect(move)
            mover.start(1000)
            written_before = run(bridge.call(services.requests.count_all))
            monitor = StallMonitor()
            sender = _start_sender(hook_plan)
            monitor.start()
            run(asyncio.sleep(seconds))
            monitor.stop()
            hooks = sender.result(timeout=120) if sender is not None else None
            mover.stop()
            dashboard = monitor.lateness()
            run(bridge.call(services.requests.flush))
            written = run(bridge.call(services.requests.count_all)) - written_before

            # The reference: every per-second point of the day, redrawn ten times a second.
            plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
            plot.resize(1200, 400)
            plot.show()
            t, _requests, _failures, avg, p95 = _day_of_samples(time.time(), rng)
            curves = [plot.plot(pen=pg.mkPen(width=1)) for _ in range(2)]

            def naive_frame() -> None:
                curves[0].setData(t, avg)
                curves[1].setData(t, p95)

            naive = QTimer()
            naive.timeout.connect(naive_frame)
            naive.start(100)
            monitor.start()
            run(asyncio.sleep(reference_seconds))
            monitor.stop()
            naive.stop()
            reference = monitor.lateness()
            plot.close()
            driving.cancel()
        finally:
            if window is not None:
                window.hide()
                window.deleteLater()
            bridge.close()
            engine.stop()
    met = dashboard.p99_ms < TARGET_P99_MS and dashboard.worst_ms < TARGET_WORST_MS
    return {
        "benchmark": "ui-stall",
        "parameters": {
            "seconds": seconds,
            "connections": connections,
            "samples_per_connection": 86_400,
            "calls_per_second_asked": rate,
            "reference_seconds": reference_seconds,
        },
        "calls_recorded": written,
        "calls_per_second": round(written / seconds, 1),
        **(
            {
                "webhooks_asked_per_second": webhooks,
                "webhooks_acknowledged_per_second": round(
                    len(hooks.acknowledged) / max(hooks.seconds, 1e-9), 1
                ),
                "webhooks_refused": hooks.refused + hooks.errors,
            }
            if hooks is not None
            else {}
        ),
        "dashboard": dashboard.as_json(),
        "reference": {
            "approach": "every per-second point of a day redrawn 10 times a second",
            **reference.as_json(),
        },
        "p99_ratio_reference_to_dashboard": round(
            reference.p99_ms / max(dashboard.p99_ms, 0.01), 1
        ),
        "targets": {"p99_ms": TARGET_P99_MS, "worst_ms": TARGET_WORST_MS},
        "met": met,
    }
