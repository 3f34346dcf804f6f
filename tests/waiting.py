"""Waiting for a state in tests: poll a condition, never sleep a fixed time before asserting."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_S = 0.05


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout_s: float = 60,
    alive: Callable[[], None] | None = None,
) -> None:
    """Return once `ready()` is true; fail naming `what` after `timeout_s`. `alive` is called on
    every poll to fail early (e.g. the process being waited on has died)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if alive is not None:
            alive()
        assert time.monotonic() < deadline, what
        time.sleep(POLL_S)
