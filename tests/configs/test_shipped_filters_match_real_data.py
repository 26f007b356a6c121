"""The shipped rules snapshot's tick and lot step against the real bars of the month before its date.

Independent of the snapshot: every trade prints at a multiple of the symbol's tick and every bar's volume
is a sum of multiples of its lot step, so over a month of real 1h bars (../shared/data/real) the shipped
tick must divide (nearly) every price, and ten times the tick must not (else the tick is finer than the
exchange's and the backtest rests orders at prices the exchange refuses); the same for the lot step and
the volumes. "Nearly": an order resting from before a tick change may still print at the old, finer tick
(SOL's 0.001 tick became 0.01 on 2024-10-14; one SOL 1h low of May 2025, 148.462, is such a print).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from gridctl.configs import loader

SNAPSHOT = yaml.safe_load((loader.SHIPPED_DIRS["venue"] / "symbols" / "binance_usdm.yaml").read_text())
DAY_MS = 86_400_000


def share_on_grid(values: np.ndarray, step: float) -> float:
    """Share of ``values`` that are whole multiples of ``step`` (to float rounding of the stored figure)."""
    k = values / step
    return float(np.mean(np.abs(k - np.round(k)) <= 1e-6))


@pytest.mark.parametrize("symbol", list(SNAPSHOT["symbols"]))
def test_tick_and_lot_are_the_coarsest_steps_the_months_bars_lie_on(symbol: str, real_data: Path) -> None:
    end = int(dt.datetime.fromisoformat(SNAPSHOT["snapshot_date"]).replace(tzinfo=dt.UTC).timestamp() * 1000)
    (path,) = real_data.glob(f"binanceusdm_{symbol.split('/')[0]}USDT_1h_*.parquet")
    bars = pl.read_parquet(path).filter(pl.col("ts").is_between(end - 30 * DAY_MS, end - 1))
    assert bars.height == 720  # 30 days of 1h bars, no gap in any of the six files there
    prices = np.concatenate([bars[c].to_numpy() for c in ("open", "high", "low", "close")])
    volumes = bars["volume"].to_numpy()
    rules = SNAPSHOT["symbols"][symbol]
    for name, values, step in (
        ("tick_size", prices, float(rules["tick_size"])),
        ("step_size", volumes, float(rules["step_size"])),
    ):
        assert share_on_grid(values, step) >= 0.999, (symbol, name, step)
        assert share_on_grid(values, 10 * step) < 0.5, f"{symbol} {name} {step}: the bars lie on {10 * step}"
