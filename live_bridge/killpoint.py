"""Test-only crash points for the chaos test (``tests/live_bridge/test_live_chaos.py``).

``GRIDCTL_KILL_AT=<point>:<n>`` makes the process SIGKILL itself the n-th time it passes
``hit(<point>)``: inside an order send, a cancel, a fills poll or a journal transaction, places a kill
from outside can hit only by luck. Unset (every real run) ``hit`` is a comparison and returns.
Points: ``send`` / ``sent`` (before / after an order request), ``cancel`` / ``canceled``, ``fills``
(fills fetched, before booking), ``booked`` (after one booking), ``bar`` (engine stepped, orders not yet
sent), ``journal`` (inside the checkpoint's transaction, before its commit; in a basket's, after each
symbol's writes), ``member`` (a basket's bar: one symbol's fills booked, the next symbol's not yet),
``chunk`` (a flatten's market order went out and the next one of that side has not).
"""

from __future__ import annotations

import os
import signal

_POINT, _, _N = os.environ.get("GRIDCTL_KILL_AT", "").partition(":")
_left = int(_N) if _POINT and _N.isdigit() else 0


def hit(point: str) -> None:
    """Count a pass through ``point``; SIGKILL this process at the configured pass."""
    global _left
    if _left and point == _POINT:
        _left -= 1
        if _left == 0:
            os.kill(os.getpid(), signal.SIGKILL)
