"""Deterministic market data for the emulator: random-walk candles on the tick grid, jittered funding."""

from __future__ import annotations

import numpy as np
import polars as pl

HOUR_MS = 3_600_000
FUNDING_INTERVAL_MS = 8 * HOUR_MS


def random_walk_bars(
    start_ms: int, n: int, bar_ms: int, seed: int = 7, price: float = 42_000.0
) -> pl.DataFrame:
    """``n`` consistent OHLCV bars from ``start_ms``: prices on the 0.1 tick, volumes on the 0.001 step.

    Built in integer ticks so every served string parses back to exactly the float stored here.
    """
    rng = np.random.default_rng(seed)
    close_t = np.round(price * 10) + np.cumsum(rng.integers(-40, 41, n))
    open_t = np.concatenate([[close_t[0] - rng.integers(-40, 41)], close_t[:-1]])
    high_t = np.maximum(open_t, close_t) + rng.integers(0, 30, n)
    low_t = np.minimum(open_t, close_t) - rng.integers(0, 30, n)
    return pl.DataFrame(
        {
            "ts": start_ms + np.arange(n, dtype=np.int64) * bar_ms,
            "open": open_t / 10.0,
            "high": high_t / 10.0,
            "low": low_t / 10.0,
            "close": close_t / 10.0,
            "volume": rng.integers(0, 5_000_000, n) / 1000.0,
        }
    )


def mark_from_trade(bars: pl.DataFrame, offset: float = 1.5) -> pl.DataFrame:
    """Mark-price bars: the trade bars shifted by ``offset`` USDT, no volume (mark klines have none)."""
    return bars.select(
        "ts", *[(pl.col(c) + offset).alias(c) for c in ("open", "high", "low", "close")]
    ).with_columns(pl.lit(0.0).alias("volume"))


def funding_settlements(
    start_ms: int, end_ms: int, seed: int = 11, interval_ms: int = FUNDING_INTERVAL_MS
) -> pl.DataFrame:
    """Settlements every ``interval_ms`` in ``[start_ms, end_ms)``, with 1..47 ms of fundingTime jitter."""
    first = -(-start_ms // interval_ms) * interval_ms
    scheduled = np.arange(first, end_ms, interval_ms, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "ts": scheduled,
            "funding_time": scheduled + rng.integers(1, 48, len(scheduled)),
            "rate": rng.integers(-300, 700, len(scheduled)) / 1e7,
            "mark_price": np.round(42_000.0 + rng.normal(0, 500, len(scheduled)), 1),
        }
    )
