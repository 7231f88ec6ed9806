"""What every configured provider is: its spec, the resilient client it calls through, its
settings and secrets, and a health check. Capabilities (PaymentGateway, CalendarBackend, ...)
build on this."""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from app.providers.http import ProviderError, ResilientClient
from app.providers.spec import Operation, ProviderSpec
from app.providers.webhooks import Rejected, Verified, WebhookRequest


@dataclass(frozen=True)
class HealthResult:
    """One health check: did the provider answer an authenticated call, how fast, and if not,
    what went wrong in a sentence."""

    ok: bool
    latency_ms: float
    detail: str
    error_class: str | None = None


class Provider:
    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        self.spec = spec
        self.client = client
        self.config = dict(config)
        self.secrets = dict(secrets)

    async def call(self, operation: Operation, **arguments: Any) -> httpx.Response:
        """One call through the resilient client (see `ResilientClient.call`). Providers whose
        authentication is more than fixed headers (an OAuth token that expires) add it here."""
        return await self.client.call(operation, **arguments)

    async def verify_webhook(self, request: WebhookRequest) -> Verified:
        """Whether a callback is the provider's own, for providers whose webhook spec says only
        they can tell ("remote"); `Rejected` or a `ProviderError` when it cannot be settled."""
        raise Rejected("signature", f"{self.spec.name} callbacks are not checked by asking it")

    async def check_health(self) -> HealthResult:
        """The spec's cheap authenticated call; any answer below 400 is healthy."""
        started = time.monotonic()
        try:
            response = await self.call(self.spec.health)
        except ProviderError as exc:
            elapsed = (time.monotonic() - started) * 1000
            return HealthResult(False, elapsed, str(exc), exc.error_class)
        elapsed = (time.monotonic() - started) * 1000
        if response.status_code in (401, 403):
            return HealthResult(
                False,
                elapsed,
                f"{self.spec.name} refused the credentials (HTTP {response.status_code}); "
                "check the API key in the connection's settings.",
                "auth",
            )
        if response.status_code >= 400:
            return HealthResult(
                False,
                elapsed,
                f"{self.spec.name} answered HTTP {response.status_code} to a health check.",
                f"http_{response.status_code // 100}xx",
            )
        return HealthResult(True, elapsed, f"{self.spec.name} answered in {elapsed:.0f} ms.")


class BearerProvider(Provider):
    """A provider whose calls carry an access token that expires (OAuth 2.0): one token request
    however many calls wait for it, the token kept until shortly before it ends, and forgotten
    when the provider refuses it so the next call fetches another. Subclasses say how a token
    is had (`_new_token`) and what a refusal means for them (in `call`)."""

    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self._token = ""
        self._expires_at = 0.0  # time.monotonic() when it is no longer to be used
        self._renewing = asyncio.Lock()

    @abstractmethod
    async def _new_token(self) -> tuple[str, float]:
        """A fresh access token and the monotonic time it is to be used until."""

    async def _access_token(self) -> str:
        if self._token and time.monotonic() < self._expires_at:
            return self._token
        # One request for a token however many calls are waiting for one.
        async with self._renewing:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            self._token, self._expires_at = await self._new_token()
            return self._token

    async def _bearer_call(
        self, token: str, operation: Operation, arguments: Mapping[str, Any]
    ) -> httpx.Response:
        headers = {**(arguments.get("headers") or {}), "Authorization": f"Bearer {token}"}
        return await self.client.call(operation, **{**arguments, "headers": headers})

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token, self._expires_at = "", 0.0
