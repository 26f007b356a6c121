"""The sample market: deterministic, exchange-shaped (tick, lot, grid), realistic structure, stored once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.data.market import load_market
from gridctl.data.sample import (
    SAMPLE_EXCHANGE,
    SAMPLE_START_MS,
    SAMPLE_SYMBOL,
    ensure_sample,
    generate_sample,
    write_sample,
)
from gridctl.data.validate import check_candle_frame

MIN = 60_000
HOUR = 3_600_000


@pytest.fixture(scope="module")
def half_year() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return generate_sample(180, 7)


def test_same_seed_same_market_other_seed_other_market() -> None:
    a = generate_sample(3, 11)
    b = generate_sample(3, 11)
    c = generate_sample(3, 12)
    for x, y in zip(a, b, strict=True):
        assert x.equals(y)
    assert not a[0].equals(c[0])


def test_shape_grid_tick_and_lot(half_year: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    candles, mark, funding = half_year
    assert candles.height == 180 * 1440 and mark.height == 180 * 1440
    ts = candles["ts"].to_numpy()
    assert ts[0] == SAMPLE_START_MS and np.all(np.diff(ts) == MIN)
    assert candles["open"][0] == 60_000.0
    for col in ("open", "high", "low", "close"):
        ticks = candles[col].to_numpy() * 10
        assert np.abs(ticks - np.round(ticks)).max() < 1e-6, col  # multiples of the 0.1 tick
    lots = candles["volume"].to_numpy() * 1000
    assert np.abs(lots - np.round(lots)).max() < 1e-6  # multiples of 0.001
    check_candle_frame(candles, MIN, "sample")  # finite, positive, OHLC consistent, on grid
    check_candle_frame(mark, MIN, "sample mark", kind="mark")
    # 8h funding at 00/08/16 UTC: 3 per day
    assert funding.height == 180 * 3
    assert set((funding["ts"].to_numpy() // HOUR % 24).tolist()) == {0, 8, 16}


def test_mark_tracks_trade_price(half_year: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    candles, mark, funding = half_year
    basis = mark["close"].to_numpy() / candles["close"].to_numpy() - 1.0
    assert np.abs(basis).max() < 0.005  # within 0.5 %
    assert np.abs(basis).mean() > 1e-5  # but not a copy
    f_rows = ((funding["ts"] - SAMPLE_START_MS) // MIN).to_numpy()
    assert np.array_equal(funding["mark_price"].to_numpy(), mark["open"].to_numpy()[f_rows])


def test_realistic_structure(half_year: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]) -> None:
    candles, _, funding = half_year
    close = candles["close"].to_numpy()
    hourly = np.diff(np.log(close[::60]))
    # Volatility clustering: |hourly returns| are autocorrelated (an i.i.d. walk gives ~0).
    a = np.abs(hourly)
    assert np.corrcoef(a[:-1], a[1:])[0, 1] > 0.1
    # Fat tails: excess kurtosis of hourly returns clearly above a normal's 0.
    z = (hourly - hourly.mean()) / hourly.std()
    assert (z**4).mean() - 3.0 > 1.0
    # Funding co-moves with the trend: rate vs trailing 24 h return correlates positively.
    rows = ((funding["ts"] - SAMPLE_START_MS) // MIN).to_numpy()[3:]
    trailing = np.log(candles["open"].to_numpy()[rows] / candles["open"].to_numpy()[rows - 1440])
    assert np.corrcoef(trailing, funding["rate"].to_numpy()[3:])[0, 1] > 0.5
    # Occasional extreme prints of +/-0.3 %, and ordinary rates well below that.
    rate = np.abs(funding["rate"].to_numpy())
    assert 1 <= int((rate == 0.003).sum()) <= 20
    assert np.median(rate) < 0.0005


def test_days_validation() -> None:
    with pytest.raises(GridctlError, match="--days must be an integer from 1 to"):
        generate_sample(0, 7)


def test_write_replaces_and_ensure_writes_once(tmp_path: Path) -> None:
    write_sample(tmp_path, days=3, seed=1)
    with pytest.raises(GridctlError, match=r"stored sample \(4,320 bars.*asked for \(2,880 bars.*--force"):
        write_sample(tmp_path, days=2, seed=1)  # a different market is not written over without --force
    info = write_sample(tmp_path, days=2, seed=1, force=True)  # replaces, does not merge with the 3-day one
    m = load_market(tmp_path, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, "1m")
    assert len(m) == info.bars == 2 * 1440
    assert m.funding_ts[0] == SAMPLE_START_MS  # settlement at the first bar: its rate is known at once
    assert np.isfinite(m.funding_mark).all()
    assert not [p for p in (tmp_path / SAMPLE_EXCHANGE).iterdir() if p.name.startswith(".")]

    partition = tmp_path / SAMPLE_EXCHANGE / "BTC_USDT_USDT" / "1m" / "2024-01.parquet"
    before = partition.stat().st_mtime_ns
    ensure_sample(tmp_path)  # present: untouched (still the 2-day market)
    assert partition.stat().st_mtime_ns == before
    fresh = tmp_path / "fresh"
    ensure_sample(fresh)  # absent: default 180 days, seed 7
    assert len(load_market(fresh, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, "1m")) == 180 * 1440
