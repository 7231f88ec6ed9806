"""Settings are declared once, validated on the way in, and survive a restart."""

from __future__ import annotations

import pytest

from app.config import SETTINGS, ConfigError
from app.services import Services


def test_every_setting_has_a_label_help_and_a_valid_default() -> None:
    for setting in SETTINGS:
        assert setting.label
        assert setting.help
        assert setting.section
        assert setting.coerce(setting.default_value()) == setting.default_value()


async def test_a_setting_is_validated_stored_and_announced(services: Services) -> None:
    heard: list[dict] = []
    services.events.subscribe(lambda event: heard.append(dict(event.payload)))
    assert await services.settings.set("receiver.port", "9100") == 9100
    assert services.settings.get("receiver.port") == 9100
    assert {"key": "receiver.port", "value": 9100} in heard


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("receiver.port", "70000", "at most 65535"),
        ("receiver.port", "eighty", "whole number"),
        ("school.timezone", "Mars/Olympus", "time zone"),
        ("school.currency", "DOLLARS", "ISO 4217"),
        ("appearance.theme", "purple", "one of"),
        ("school.name", "   ", "cannot be empty"),
        ("no.such.setting", "x", "no setting"),
    ],
)
async def test_bad_values_are_refused_with_a_sentence(
    services: Services, key: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        await services.settings.set(key, value)


async def test_settings_survive_a_restart(services: Services) -> None:
    await services.settings.set("school.name", "Msasa Park Music School")
    reopened = await Services.open(services.config)
    try:
        assert reopened.settings.get("school.name") == "Msasa Park Music School"
    finally:
        await reopened.close()


async def test_the_install_id_is_made_once_and_kept(services: Services) -> None:
    first = await services.settings.install_id()
    assert first == await services.settings.install_id()
    assert len(first) == 32
