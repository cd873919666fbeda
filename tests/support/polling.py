"""Polling: wait for a condition another process or thread brings about."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not yet
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
