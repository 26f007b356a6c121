"""Prometheus metrics of a running bridge, read at scrape time from the bar loop's last status snapshot.

Live, equity / wallet balance / unrealized PnL / margin ratio are the exchange account's (read after
every bar); paper and replay report the engine's simulated account. Every gauge carries a ``reason``
label: empty when the value is known, else the reason it is not (``no bar yet``, ``account
unreadable``, ...) with the value NaN. A value the bridge does not know is never exported as 0.
Label values come from fixed sets (``UNKNOWN_LABELS``, ``PAUSE_LABELS``; anything else is ``other``):
the detail, which may quote the exchange's error, is on ``/status`` and in the log, never in a label,
so a new error message never makes a new time series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gridctl.configs.gates import GATES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: (metric name, snapshot key, help). A snapshot value of None is unknown: NaN with the reason from
#: ``snapshot["unknown"][key]``.
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("gridctl_equity", "equity", "Account equity in quote currency (wallet + unrealized PnL)."),
    ("gridctl_wallet_balance", "wallet_balance", "Wallet balance in quote currency."),
    ("gridctl_margin_ratio", "margin_ratio", "Maintenance margin / equity."),
    ("gridctl_realized_pnl", "realized_pnl", "Realized PnL since the session started, quote currency."),
    ("gridctl_unrealized_pnl", "unrealized_pnl", "Unrealized PnL at the last close, quote currency."),
    ("gridctl_funding_rate", "funding_rate", "Last known funding rate (fraction per settlement)."),
    (
        "gridctl_funding_income",
        "funding_income",
        "Funding received (+) / paid (-) since the start, quote currency: the account's income history live.",
    ),
    (
        "gridctl_funding_projected_cost",
        "funding_projected_cost",
        "Funding the positions would pay at the next settlement at the last rate (negative = receive).",
    ),
    (
        "gridctl_open_orders",
        "open_orders",
        "Open orders of this bridge's run on the venue (others' orders excluded; simulated in paper mode).",
    ),
    (
        "gridctl_trading_state",
        "trading_state",
        "Risk state: 0 normal, 1 reducing, 2 cooldown, 3 halted, 4 liquidated.",
    ),
    (
        "gridctl_circuit_breaker_active",
        "circuit_breaker_active",
        "1 while the circuit breaker blocks entries.",
    ),
    ("gridctl_throttle", "throttle", "Entry-size multiplier set through the ops API (0..1)."),
    (
        "gridctl_last_bar_age_seconds",
        "last_bar_age_seconds",
        "Seconds since the last closed bar's close time.",
    ),
    ("gridctl_entries_paused", "entries_paused", "1 while new entries are paused (operator or fail-closed)."),
    (
        "gridctl_unexplained_exposure",
        "unexplained_exposure",
        "1 while the exchange holds positions or trades the engine cannot explain (entries refused).",
    ),
)


#: Every value the ``reason`` label of a gauge takes when the value is unknown.
UNKNOWN_LABELS = frozenset(
    {
        "no bar yet",
        "no account read yet",
        "account unreadable",
        "no margin ratio",
        "income unreadable",
        "no funding rate",
        "funding input stale",
        "other",
    }
)
#: Every value the ``reason`` label of ``gridctl_pause_reason`` takes.
PAUSE_LABELS = frozenset(
    {
        "operator pause",
        "bar feed",
        "bar feed connection",
        "funding",
        "margin",
        "circuit breaker",
        "rate limit",
        "protection",
        "reconcile",
        "other",
    }
    | {g.name for g in GATES if g.holds}  # a gate of the gate table holding entries (configs/gates.py)
)


def _fixed(label: Any, allowed: frozenset[str]) -> str:
    return label if isinstance(label, str) and label in allowed else "other"


def _value(snapshot: dict[str, Any], key: str) -> tuple[float, str]:
    value = snapshot.get(key)
    labels = snapshot.get("unknown_labels", {})
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return math.nan, _fixed(labels.get(key), UNKNOWN_LABELS)
    return float(value), ""


class BridgeCollector:
    """A prometheus collector over ``snapshot()`` (the bar loop's last published status)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot()
        if "symbols" in snap:
            yield from self._collect_basket(snap)
            return
        for name, key, doc in GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["reason"])
            value, reason = _value(snap, key)
            g.add_metric([reason], value)
            yield g
        pos = GaugeMetricFamily(
            "gridctl_position_qty", "Position size per side (base currency).", labels=["side", "reason"]
        )
        for side in ("long", "short"):
            value, reason = _value(snap, f"position_{side}")
            pos.add_metric([side, reason], value)
        yield pos
        errs = CounterMetricFamily(
            "gridctl_errors",
            "Errors counted by the engine's circuit breaker and the bridge.",
            labels=["kind"],
        )
        for kind, n in sorted(snap.get("error_counts", {}).items()):
            errs.add_metric([kind], float(n))
        yield errs
        paused = GaugeMetricFamily(
            "gridctl_pause_reason", "1 for each reason new entries are paused now.", labels=["reason"]
        )
        keys = sorted({_fixed(k, PAUSE_LABELS) for k in snap.get("pause_keys", [])})
        for reason in keys:  # the detail (changing numbers, the exchange's error) is on /status
            paused.add_metric([reason], 1.0)
        yield paused

    def _collect_basket(self, snap: dict[str, Any]) -> Iterator[Any]:
        """A basket (``ops.BasketOps``): every series carries a ``symbol`` label, one of the basket's
        symbols (a set fixed for the run) or ``total`` (the account: ``snap["total"]``, only for the
        gauges ``ops.BasketOps`` totals)."""
        per: dict[str, dict[str, Any]] = snap["symbols"]
        total = snap.get("total", {})
        for name, key, doc in GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["symbol", "reason"])
            for sym, s in per.items():
                value, reason = _value(s, key)
                g.add_metric([sym, reason], value)
            if key in total:
                value, reason = _value(total, key)
                g.add_metric([TOTAL, reason], value)
            yield g
        pos = GaugeMetricFamily(
            "gridctl_position_qty",
            "Position size per side (base currency).",
            labels=["symbol", "side", "reason"],
        )
        for sym, s in per.items():
            for side in ("long", "short"):
                value, reason = _value(s, f"position_{side}")
                pos.add_metric([sym, side, reason], value)
        yield pos
        errs = CounterMetricFamily(
            "gridctl_errors",
            "Errors counted by the engine's circuit breaker and the bridge.",
            labels=["symbol", "kind"],
        )
        for sym, s in per.items():
            for kind, n in sorted(s.get("error_counts", {}).items()):
                errs.add_metric([sym, kind], float(n))
        yield errs
        paused = GaugeMetricFamily(
            "gridctl_pause_reason",
            "1 for each reason new entries are paused now.",
            labels=["symbol", "reason"],
        )
        for sym, s in per.items():
            for reason in sorted({_fixed(k, PAUSE_LABELS) for k in s.get("pause_keys", [])}):
                paused.add_metric([sym, reason], 1.0)
        yield paused


#: The ``symbol`` label of a basket's account-wide series.
TOTAL = "total"


def metrics_registry(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry holding only the bridge's collector (no process/platform defaults)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(BridgeCollector(snapshot))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text exposition format."""
    return generate_latest(registry)
