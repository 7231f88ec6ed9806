"""PayPal: the connection, its OAuth 2.0 access token, and the check of its webhooks.

PayPal's REST APIs take a bearer token that the app obtains with its client ID and secret
(the client-credentials grant) and that lasts hours; it is fetched on first use, kept in
memory only, renewed a minute before it expires, and fetched again once if PayPal says it is
no longer valid. Every call, the token's included, goes through the resilient HTTP layer.

PayPal signs its webhooks with a private key of its own, so whether a notification is genuine is
a question for PayPal's verify-webhook-signature API, asked with the Webhook ID PayPal gave when
Switchboard's address was added to the app.

Relied on: PayPal's "Get started with PayPal REST APIs" (developer.paypal.com/api/rest/:
authentication, the token endpoint and its answer), "Webhooks API v1" (list webhooks; verify
webhook signature) and "Idempotency" (the PayPal-Request-Id header).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from typing import Any

import httpx

from app.providers.base import Provider
from app.providers.http import CredentialsRefused, ProviderError, ResilientClient
from app.providers.spec import (
    REMOTE_VERIFIER,
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    ResiliencePolicy,
    WebhookSpec,
)
from app.providers.webhooks import (
    Rejected,
    Verified,
    WebhookRequest,
    paypal_check,
    paypal_verdict,
)

ENVIRONMENTS = {
    "sandbox": "https://api-m.sandbox.paypal.com",
    "live": "https://api-m.paypal.com",
}
# Renew this long before PayPal says the token expires, so no call carries one that dies on
# the way.
RENEW_SECONDS = 60.0

# Getting a token changes nothing at PayPal: safe to repeat.
TOKEN = Operation("oauth2-token", "POST", "/v1/oauth2/token", idempotent=True)
# Asking whether a signature is good changes nothing either; the sender waits for the answer.
VERIFY_WEBHOOK = Operation(
    "verify-webhook-signature",
    "POST",
    "/v1/notifications/verify-webhook-signature",
    idempotent=True,
    timeout=10.0,
)


class PayPal(Provider):
    def __init__(
        self,
        spec: ProviderSpec,
        client: ResilientClient,
        config: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> None:
        super().__init__(spec, client, config, secrets)
        self._token = ""
        self._expires_at = 0.0
        self._renewing = asyncio.Lock()

    async def call(self, operation: Operation, **arguments: Any) -> httpx.Response:
        token = await self._access_token()
        response = await self._bearer_call(token, operation, arguments)
        if response.status_code == 401:
            # Revoked, or expired sooner than PayPal said: one new token, one more try.
            self._forget(token)
            response = await self._bearer_call(await self._access_token(), operation, arguments)
        return response

    async def verify_webhook(self, request: WebhookRequest) -> Verified:
        check = paypal_check(request, str(self.config.get("webhook_id") or ""))
        response = await self.call(
            VERIFY_WEBHOOK,
            content=check.request_body,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code in (401, 403):
            raise CredentialsRefused(
                "PayPal refused Switchboard's credentials while checking a webhook; check the "
                "client ID and secret in the connection's settings.",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise Rejected(
                "signature", f"PayPal would not check the signature (HTTP {response.status_code})"
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        return paypal_verdict(check, answer, request.received_at)

    async def _bearer_call(
        self, token: str, operation: Operation, arguments: Mapping[str, Any]
    ) -> httpx.Response:
        headers = {**(arguments.get("headers") or {}), "Authorization": f"Bearer {token}"}
        return await self.client.call(operation, **{**arguments, "headers": headers})

    async def _access_token(self) -> str:
        if self._token and time.monotonic() < self._expires_at:
            return self._token
        # One request for a token however many calls are waiting for one.
        async with self._renewing:
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            self._token, self._expires_at = await self._new_token()
            return self._token

    async def _new_token(self) -> tuple[str, float]:
        credentials = f"{self.config.get('client_id', '')}:{self.secrets.get('client_secret', '')}"
        basic = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        response = await self.client.call(
            TOKEN,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
        )
        if response.status_code in (400, 401, 403):
            # PayPal answers 401 invalid_client for a wrong ID or secret.
            raise CredentialsRefused(
                "PayPal refused the client ID and secret; copy them again from the app in "
                "PayPal's developer dashboard (and check Sandbox or Live).",
                status=response.status_code,
            )
        if response.status_code >= 400:
            raise ProviderError(
                f"PayPal did not give an access token (HTTP {response.status_code}).",
                status=response.status_code,
            )
        try:
            answer = response.json()
            token = str(answer["access_token"])
            lifetime = float(answer.get("expires_in", 0))
        except (ValueError, KeyError, TypeError):
            raise ProviderError("PayPal's access token answer could not be read.") from None
        return token, time.monotonic() + max(lifetime - RENEW_SECONDS, 0.0)

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token, self._expires_at = "", 0.0


def _paypal(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return PayPal(spec, client, config, secrets)


def _base_url(config: Mapping[str, Any]) -> str:
    return str(config.get("api_url") or ENVIRONMENTS[str(config.get("environment", "sandbox"))])


PAYPAL = ProviderSpec(
    key="paypal",
    name="PayPal",
    category=Category.PAYMENTS,
    description=(
        "PayPal's REST APIs, with an app's client ID and secret from PayPal's developer "
        "dashboard (Apps & Credentials)."
    ),
    fields=(
        ConfigField(
            "environment",
            "Environment",
            FieldKind.SELECT,
            required=False,
            default="sandbox",
            choices=tuple(ENVIRONMENTS),
            help="Sandbox uses PayPal's test accounts; Live takes real money.",
        ),
        ConfigField("client_id", "Client ID", help="From the app in Apps & Credentials."),
        ConfigField(
            "client_secret", "Secret", FieldKind.SECRET, help="Shown beside the client ID."
        ),
        ConfigField(
            "webhook_id",
            "Webhook ID",
            required=False,
            help=(
                "Add Switchboard's webhook address to the app in PayPal's dashboard, then paste "
                "the Webhook ID PayPal shows for it here. Until then callbacks are refused."
            ),
        ),
        ConfigField(
            "api_url",
            "API address (advanced)",
            FieldKind.URL,
            required=False,
            help="Leave empty to use PayPal's own address for the environment.",
        ),
    ),
    auth=AuthKind.OAUTH2_CLIENT_CREDENTIALS,
    capabilities=frozenset(),
    health=Operation("webhooks", "GET", "/v1/notifications/webhooks", timeout=10.0),
    base_url=_base_url,
    factory=_paypal,
    policy=ResiliencePolicy(timeout=30.0),
    idempotency_header="PayPal-Request-Id",
    webhook=WebhookSpec(REMOTE_VERIFIER),
)
