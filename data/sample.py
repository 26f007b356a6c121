"""A deterministic, realistic 1m BTC-like perpetual market for the default backtest and benchmarks.

Model (all vectorised numpy except one short loop over hours):
- regimes alternate between trending (a drift of 5-15 % over the regime) and ranging (mean reversion
  toward the level where the range started), each lasting 1.5-10 days;
- hourly volatility follows GARCH(1,1) fed by the realised hourly shock, so calm and wild periods
  cluster; rare jumps (1.5-4 %) feed the same recursion, so volatility stays high after them;
- minute returns split each hour's return exactly, with fat-tailed (Student-t) minute noise;
- prices on the 0.1 tick, volume in 0.001 lots, higher when volatility is high and during the US session;
- mark price = trade price times (1 + a small basis); funding every 8 h (00/08/16 UTC) co-moves with the
  trailing 24 h return (positive in up-trends), with an occasional extreme print of +/-0.3 %.
Same ``(days, seed)`` gives identical arrays. Nothing here touches the network.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from gridctl.configs.errors import GridctlError
from gridctl.data.atomic import RANDOM_PART, remove_stale, restore_or_remove_stale, tagged
from gridctl.data.paths import require_writable_dir
from gridctl.data.store import (
    candle_partitions,
    funding_partitions,
    read_candles,
    read_funding,
    symbol_dir,
    write_candles,
    write_funding,
)
from gridctl.data.timeframes import HOUR_MS, MINUTE_MS
from gridctl.data.validate import fmt_ts

SAMPLE_EXCHANGE = "sample"
SAMPLE_SYMBOL = "BTC/USDT:USDT"
SAMPLE_TIMEFRAME = "1m"
SAMPLE_START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SAMPLE_START_PRICE = 60_000.0
SAMPLE_TICK = 0.1
SAMPLE_LOT = 0.001
DEFAULT_DAYS = 180
DEFAULT_SEED = 7
MAX_DAYS = 3_650

_HOURLY_VOL = 0.0045  # long-run hourly volatility (about 42 % a year, BTC-like)
_GARCH_ALPHA = 0.08
_GARCH_BETA = 0.90
_REVERSION_PER_HOUR = 0.04
_JUMP_PROB_PER_HOUR = 1.0 / (24 * 12)
_FUNDING_EVERY_MS = 8 * HOUR_MS
_FUNDING_BASE = 0.0001
_FUNDING_TREND_COEF = 0.008
_FUNDING_EXTREME = 0.003
_FUNDING_EXTREME_PROB = 1.0 / 90


@dataclass(frozen=True)
class SampleInfo:
    """What ``write_sample`` stored."""

    path: Path
    days: int
    seed: int
    bars: int
    funding: int
    first_ts: int
    last_ts: int


def _regimes(hours: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-hour drift, ranging flag and regime id; regimes alternate range -> trend -> range ..."""
    lengths = rng.integers(36, 241, size=hours // 36 + 2)
    regime = np.repeat(np.arange(lengths.size), lengths)[:hours]
    ranging_by_regime = np.arange(lengths.size) % 2 == 0
    moves = rng.uniform(0.05, 0.15, size=lengths.size) * rng.choice([-1.0, 1.0], size=lengths.size)
    drift_by_regime = np.where(ranging_by_regime, 0.0, moves / lengths)
    return drift_by_regime[regime], ranging_by_regime[regime], regime


def _hourly_path(
    drift: np.ndarray,
    ranging: np.ndarray,
    regime: np.ndarray,
    z_hour: np.ndarray,
    jumps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """GARCH volatility and deterministic (drift + reversion) return per hour; the one sequential step."""
    hours = drift.size
    omega = _HOURLY_VOL**2 * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
    sigma = np.empty(hours)
    det = np.empty(hours)
    var, shock, x, anchor, current = _HOURLY_VOL**2, 0.0, 0.0, 0.0, -1
    for h in range(hours):
        if regime[h] != current:
            current, anchor = regime[h], x
        var = omega + _GARCH_ALPHA * shock * shock + _GARCH_BETA * var
        sigma[h] = var**0.5
        det[h] = drift[h] - (_REVERSION_PER_HOUR * (x - anchor) if ranging[h] else 0.0)
        shock = sigma[h] * z_hour[h] + jumps[h]
        x += det[h] + shock
    return sigma, det


def generate_sample(
    days: int = DEFAULT_DAYS, seed: int = DEFAULT_SEED
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Generate ``days`` of 1m trade candles, 1m mark candles and 8h funding (``ts, rate, mark_price``)."""
    if isinstance(days, bool) or not isinstance(days, int | np.integer) or not 1 <= days <= MAX_DAYS:
        raise GridctlError(f"--days must be an integer from 1 to {MAX_DAYS}, got {days!r}")
    rng = np.random.default_rng(seed)
    n = int(days) * 1440
    hours = n // 60
    drift, ranging, regime = _regimes(hours, rng)

    dof = 5.0
    z = rng.standard_t(dof, size=n) / np.sqrt(dof / (dof - 2.0))
    z_hour = z.reshape(hours, 60).sum(axis=1) / np.sqrt(60.0)
    jump_hit = rng.random(hours) < _JUMP_PROB_PER_HOUR
    jumps = np.where(jump_hit, rng.uniform(0.015, 0.04, hours) * rng.choice([-1.0, 1.0], hours), 0.0)
    sigma, det = _hourly_path(drift, ranging, regime, z_hour, jumps)

    sigma_m = np.repeat(sigma, 60) / np.sqrt(60.0)
    ret = np.repeat(det, 60) / 60.0 + sigma_m * z
    jump_minute = np.arange(hours) * 60 + rng.integers(0, 60, hours)
    ret[jump_minute] += jumps

    close = np.round(SAMPLE_START_PRICE * np.exp(np.cumsum(ret)) / SAMPLE_TICK) * SAMPLE_TICK
    close = np.round(close, 1)
    open_ = np.concatenate([[SAMPLE_START_PRICE], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.6, size=(2, n))) * sigma_m * close
    high = np.round(np.ceil((np.maximum(open_, close) + wick[0]) / SAMPLE_TICK - 1e-9) * SAMPLE_TICK, 1)
    low = np.round(np.floor((np.minimum(open_, close) - wick[1]) / SAMPLE_TICK + 1e-9) * SAMPLE_TICK, 1)
    high = np.maximum(high, np.maximum(open_, close))
    low = np.maximum(np.minimum(low, np.minimum(open_, close)), SAMPLE_TICK)

    ts = SAMPLE_START_MS + np.arange(n, dtype=np.int64) * MINUTE_MS
    hour_of_day = (ts // HOUR_MS) % 24
    session = 1.0 + 0.5 * np.exp(-0.5 * ((hour_of_day - 15.0) / 3.0) ** 2)
    activity = (sigma_m * np.sqrt(60.0) / _HOURLY_VOL) ** 1.2 * (0.3 + np.abs(z)) * session
    volume = 60.0 * activity * rng.lognormal(0.0, 0.4, size=n)
    volume[jump_minute[jump_hit]] *= 10.0
    volume = np.round(np.round(volume / SAMPLE_LOT) * SAMPLE_LOT, 3)

    basis = np.repeat(rng.normal(0.0, 2e-4, size=hours), 60) + rng.normal(0.0, 5e-5, size=n)
    m_close = np.round(close * (1.0 + basis), 2)
    m_open = np.concatenate([[np.round(SAMPLE_START_PRICE * (1.0 + basis[0]), 2)], m_close[:-1]])
    m_high = np.maximum(np.maximum(m_open, m_close), np.round(high * (1.0 + basis), 2))
    m_low = np.minimum(np.minimum(m_open, m_close), np.round(low * (1.0 + basis), 2))

    f_index = np.arange(0, n, _FUNDING_EVERY_MS // MINUTE_MS)
    past = np.maximum(f_index - 1440, 0)
    trailing = np.log(open_[f_index] / open_[past])
    rate = _FUNDING_BASE + _FUNDING_TREND_COEF * trailing + rng.normal(0.0, 4e-5, size=f_index.size)
    rate = np.clip(rate, -_FUNDING_EXTREME, _FUNDING_EXTREME)
    extreme = rng.random(f_index.size) < _FUNDING_EXTREME_PROB
    rate = np.where(extreme, np.where(trailing < 0, -_FUNDING_EXTREME, _FUNDING_EXTREME), rate)
    rate = np.round(rate, 8)

    candles = pl.DataFrame(
        {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}
    )
    mark = pl.DataFrame(
        {"ts": ts, "open": m_open, "high": m_high, "low": m_low, "close": m_close, "volume": np.zeros(n)}
    )
    funding = pl.DataFrame({"ts": ts[f_index], "rate": rate, "mark_price": m_open[f_index]})
    return candles, mark, funding


def _stored_difference(data_dir: str | os.PathLike[str], candles: pl.DataFrame, funding: pl.DataFrame) -> str:
    """How the stored sample differs from the one about to be written ("" when identical or absent)."""
    if not any(_sample_parts(data_dir).values()):
        return ""
    stored = read_candles(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME)
    if stored.equals(candles) and read_funding(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL).equals(funding):
        return ""
    if stored.height == 0:
        have = "a partial sample"
    else:
        first, last = int(stored["ts"][0]), int(stored["ts"][-1])
        have = f"{stored.height:,} bars, {fmt_ts(first)} -> {fmt_ts(last)}"
    if stored["ts"].equals(candles["ts"]):
        have += ", other prices (another seed)"
    want = f"{candles.height:,} bars, {fmt_ts(int(candles['ts'][0]))} -> {fmt_ts(int(candles['ts'][-1]))}"
    return f"the stored sample ({have}) differs from the one asked for ({want})"


_STAGING = re.compile(rf"^\.staging-(?:(?P<pid>\d+)-)?{RANDOM_PART}$")
_ASIDE = re.compile(rf"^\.old-\.staging-(?:(?P<pid>\d+)-)?{RANDOM_PART}$")


def _clean_interrupted(target: Path) -> None:
    """What a killed ``write_sample`` left beside the sample: its half-built ``.staging-`` folder goes;
    the previous sample moved aside (``.old-.staging-``) comes back if ``target`` is missing."""
    if target.parent.is_dir():
        remove_stale(target.parent, _STAGING, untagged=True)
        restore_or_remove_stale(target.parent, _ASIDE, target)


def write_sample(
    data_dir: str | os.PathLike[str], days: int = DEFAULT_DAYS, seed: int = DEFAULT_SEED, force: bool = False
) -> SampleInfo:
    """Generate the sample and replace the stored sample market with it (built aside, then swapped in).

    A stored sample with other bars or prices is replaced only with ``force``; otherwise a GridctlError
    says how they differ and nothing is written. Writing the same sample again changes nothing.
    """
    candles, mark, funding = generate_sample(days, seed)
    target = symbol_dir(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL)
    _clean_interrupted(target)
    difference = _stored_difference(data_dir, candles, funding)
    if difference and not force:
        raise GridctlError(f"{target}: {difference}; pass --force to replace it (nothing was written)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=tagged(".staging-"), dir=target.parent))
    old = target.parent / f".old-{staging.name}"
    try:
        write_candles(staging, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, candles)
        write_candles(staging, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, mark, kind="mark")
        write_funding(staging, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, funding)
        built = symbol_dir(staging, SAMPLE_EXCHANGE, SAMPLE_SYMBOL)
        if target.exists():
            target.rename(old)
        try:
            built.rename(target)
        except BaseException:
            if old.exists() and not target.exists():
                old.rename(target)  # keep the previous sample rather than lose it
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return SampleInfo(
        path=target,
        days=int(days),
        seed=int(seed),
        bars=candles.height,
        funding=funding.height,
        first_ts=int(candles["ts"][0]),
        last_ts=int(candles["ts"][-1]),
    )


def _sample_parts(data_dir: str | os.PathLike[str]) -> dict[str, bool]:
    return {
        f"trade candles ({SAMPLE_TIMEFRAME})": bool(
            candle_partitions(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME)
        ),
        f"mark-price candles (mark_{SAMPLE_TIMEFRAME})": bool(
            candle_partitions(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, kind="mark")
        ),
        "funding": bool(funding_partitions(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL)),
    }


def sample_present(data_dir: str | os.PathLike[str]) -> bool:
    """True when trade candles, mark candles and funding of the sample market are all stored."""
    return all(_sample_parts(data_dir).values())


def ensure_sample(data_dir: str | os.PathLike[str], option: str = "data dir") -> None:
    """Write the default sample market (180 days, seed 7) into ``data_dir`` when none is stored.

    Only a store with no sample data at all is generated: a partial one (say the funding file was
    deleted) is an error naming what is missing, never silently replaced by a fresh 180-day market.
    ``option`` names ``data_dir`` in messages (``--data-dir``).
    """
    _clean_interrupted(symbol_dir(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL))
    parts = _sample_parts(data_dir)
    if all(parts.values()):
        return
    if any(parts.values()):
        missing = ", ".join(name for name, ok in parts.items() if not ok)
        have = ", ".join(name for name, ok in parts.items() if ok)
        where = symbol_dir(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL)
        raise GridctlError(
            f"{where}: the sample market is incomplete: {missing} missing (has {have}); it is not "
            f"regenerated over stored data. Restore the files, or rebuild it on purpose with "
            f"`gridctl data sample --data-dir {data_dir} --days N`"
        )
    require_writable_dir(data_dir, option)
    write_sample(data_dir, DEFAULT_DAYS, DEFAULT_SEED)
