"""Waiting for a state that no event announces (a widget's text, a page, a row on disk)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(condition: Callable[[], Any], limit: float = 10.0) -> Any:
    """Poll every 10 ms; the condition's first true value, or AssertionError after `limit` s."""
    deadline = time.monotonic() + limit
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("the condition never came true")
        await asyncio.sleep(0.01)
    return value


def wait_for(condition: Callable[[], Any], limit: float = 5.0) -> Any:
    """The same, blocking the calling thread (for code outside any event loop)."""
    deadline = time.monotonic() + limit
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("the condition never came true")
        time.sleep(0.01)
    return value
