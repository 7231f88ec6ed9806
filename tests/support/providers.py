"""A provider kind answered by a test's scripted server (tests/fakes/scripted.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from app.providers import KINDS
from app.providers.base import Provider
from app.providers.breaker import BreakerPolicy
from app.providers.http import ResilientClient
from app.providers.spec import (
    AuthKind,
    Category,
    ConfigField,
    FieldKind,
    Operation,
    ProviderSpec,
    ResiliencePolicy,
    RetryPolicy,
)


def _provider(
    spec: ProviderSpec,
    client: ResilientClient,
    config: Mapping[str, Any],
    secrets: Mapping[str, str],
) -> Provider:
    return Provider(spec, client, config, secrets)


SCRIPTED = ProviderSpec(
    key="scripted",
    name="Scripted test provider",
    category=Category.PAYMENTS,
    description="A provider answered by the test's scripted server.",
    fields=(
        ConfigField("url", "Address", FieldKind.URL),
        ConfigField("token", "Token", FieldKind.SECRET),
    ),
    auth=AuthKind.API_KEY,
    capabilities=frozenset(),
    health=Operation("ping", "GET", "/ping"),
    base_url=lambda config: str(config["url"]),
    factory=_provider,
    policy=ResiliencePolicy(
        timeout=2,
        retry=RetryPolicy(attempts=1),
        # Lenient: tests about statuses and alerts must not have the breaker step in.
        breaker=BreakerPolicy(minimum_calls=1000),
    ),
    headers=lambda _config, secrets: {"Authorization": f"Bearer {secrets['token']}"},
)


@pytest.fixture
def scripted_kind(monkeypatch: pytest.MonkeyPatch) -> ProviderSpec:
    """The scripted kind, known to the app for this test only."""
    monkeypatch.setitem(KINDS, SCRIPTED.key, SCRIPTED)
    return SCRIPTED
