"""Start-up readiness checklist: every item is checked, every failure is listed, nothing is sent before.

``Checklist`` collects (item, ok, detail) rows; ``require`` raises one GridctlError naming every
failed item (exit 2 through cli.py). The items the ``live`` command runs are in ``runner.prepare``:
config valid; exchange reachable and clock skew small; symbol and filters loaded and matching the
venue file; for --live: real credentials, testnet venue only with --testnet and production only
without, hedge mode / leverage / margin type as configured (set when not), balance above the
minimum, every risk gate enabled unless explicitly allowed off, an ops token; warm-up complete;
ops and metrics endpoints bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gridctl.configs.errors import GridctlError
from gridctl.live_bridge.gateway import filter_values

#: Start-up checks against the exchange get their own short budget, not the bar feed's reconnect policy
#: (``websocket.reconnect_timeout`` x ``max_reconnect_attempts``, minutes with the shipped venue files):
#: each request may take READY_TIMEOUT_S, a failed one is retried READY_RETRIES times READY_RETRY_WAIT_S
#: apart. An unreachable exchange fails the checklist in (1 + 1) x 3 s + 0.5 s at most.
READY_TIMEOUT_S = 3.0
READY_RETRIES = 1
READY_RETRY_WAIT_S = 0.5


@dataclass
class Checklist:
    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, item: str, ok: bool, detail: str = "") -> bool:
        self.rows.append((item, bool(ok), detail))
        return bool(ok)

    def run(self, item: str, check: Callable[[], str | None]) -> Any:
        """Run ``check``: it returns a detail string when fine, raises (any error) when not."""
        try:
            detail = check()
        except Exception as err:  # every failure is listed, whatever raised it
            self.add(item, False, str(err) or type(err).__name__)
            return False
        self.add(item, True, detail or "")
        return True

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(item, detail) for item, ok, detail in self.rows if not ok]

    def require(self) -> None:
        fails = self.failures
        if fails:
            listed = "; ".join(f"[{item}] {detail}" for item, detail in fails)
            raise GridctlError(
                f"not ready to start, {len(fails)} check(s) failed (no order was sent): {listed}"
            )

    def as_json(self) -> list[dict[str, Any]]:
        return [{"item": i, "ok": ok, "detail": d} for i, ok, d in self.rows]


def filters_match(venue: Any, market: dict[str, Any]) -> str:
    """Compare the venue's rules for this market's symbol with the exchange's filters; raise on mismatch.

    Every rule must equal the exchange's, except ``min_notional``, which may be stricter (higher).
    """
    symbol = str(market.get("symbol", ""))
    rules = venue.rules_for(symbol)
    got = filter_values(market)  # every filter the bridge uses (gateway.FILTER_FIELDS)
    where = venue.rules_source(symbol)
    bad = []
    for key, value in got.items():
        want = float(getattr(rules, key))
        if not math.isfinite(value):
            bad.append(f"exchange gives no {key}")
        elif key == "min_notional":
            if want < value * (1 - 1e-9):
                bad.append(f"min_notional {want:g} is below the exchange's {value:g}")
        elif abs(value - want) > 1e-12 * max(1.0, abs(value)):
            bad.append(f"{key} is {want:g} but the exchange says {value:g}")
    if bad:
        raise GridctlError(f"{where}: {symbol} rules differ from the exchange's: " + "; ".join(bad))
    return f"{symbol}: " + ", ".join(f"{k} {v:g}" for k, v in got.items())
