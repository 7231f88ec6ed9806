"""localstripe, a stateful fake Stripe server (PyPI, GPL, a test-only dependency), run once per
test session in a process of its own; each test starts from an empty Stripe.

localstripe listens on every interface; tests only ever talk to it on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest


@dataclass
class LocalStripe:
    url: str

    def api(self, method: str, path: str, **data: Any) -> dict[str, Any]:
        """A call as a Stripe user would make it (setting up customers and cards)."""
        response = httpx.request(
            method,
            self.url + path,
            data=data or None,
            headers={"Authorization": "Bearer sk_test_setup"},
            timeout=10,
        )
        assert response.status_code < 400, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def saved_card(self, number: str = "4242424242424242") -> tuple[str, str]:
        """A customer with a card saved for later, as (customer id, payment method id)."""
        customer = self.api("POST", "/v1/customers", email="parent@example.org")
        method = self.api(
            "POST",
            "/v1/payment_methods",
            type="card",
            **{
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2030",
                "card[cvc]": "123",
            },
        )
        self.api("POST", f"/v1/payment_methods/{method['id']}/attach", customer=customer["id"])
        return customer["id"], method["id"]

    def send_webhooks_to(self, url: str, secret: str) -> None:
        """localstripe posts every event it makes to `url`, signed with `secret`."""
        response = httpx.post(
            self.url + "/_config/webhooks/switchboard",
            data={"url": url, "secret": secret},
            timeout=10,
        )
        assert response.status_code == 200, response.text

    def flush(self) -> None:
        httpx.delete(self.url + "/_config/data", timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    port = _free_port()
    folder: Path = tmp_path_factory.mktemp("localstripe")
    log = (folder / "localstripe.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = LocalStripe(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/v1/balance", timeout=1).status_code < 500:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"localstripe did not start; see {folder / 'localstripe.log'}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def localstripe(localstripe_server: LocalStripe) -> Iterator[LocalStripe]:
    localstripe_server.flush()
    yield localstripe_server
    localstripe_server.flush()
