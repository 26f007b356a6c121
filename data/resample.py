"""Build coarser candles from finer ones, aligned to UTC boundaries, never from partial data.

A target bar is built only when every source bar inside it is present: open = first open, high = max,
low = min, close = last close, volume = sum. A target bar with any source bar missing (a gap, or the
partial first/last bar of the series) is dropped and counted, so the caller can say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import polars as pl

from gridctl.configs.errors import GridctlError
from gridctl.data.store import read_candles, write_candles
from gridctl.data.timeframes import timeframe_ms
from gridctl.data.validate import check_candle_frame, coerce_candle_frame


@dataclass(frozen=True)
class ResampleResult:
    """Resampled candles plus how many target bars were built and how many were dropped as incomplete."""

    candles: pl.DataFrame
    built: int
    dropped: int

    def describe(self, source_tf: str, target_tf: str) -> str:
        """One line for the user, stating the dropped (incomplete) bars."""
        return (
            f"resampled {source_tf} -> {target_tf}: {self.built:,} bars built, {self.dropped:,} dropped "
            f"because a {source_tf} bar inside them was missing (never built from partial data)"
        )


def resample_candles(df: pl.DataFrame, source_tf: str, target_tf: str, kind: str = "trade") -> ResampleResult:
    """Resample validated candles from ``source_tf`` to ``target_tf`` (a whole multiple of it)."""
    source_ms, target_ms = timeframe_ms(source_tf), timeframe_ms(target_tf)
    if target_ms <= source_ms or target_ms % source_ms:
        raise GridctlError(
            f"cannot resample {source_tf} to {target_tf}: "
            "the target must be a longer whole multiple of the source"
        )
    per_bar = target_ms // source_ms
    df = coerce_candle_frame(df, f"{source_tf} candles").sort("ts")
    check_candle_frame(df, source_ms, f"{source_tf} candles", kind)
    grouped = (
        df.with_columns((pl.col("ts") // target_ms * target_ms).alias("bucket"))
        .group_by("bucket", maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.len().alias("n"),
        )
    )
    complete = grouped.filter(pl.col("n") == per_bar)
    candles = complete.select(pl.col("bucket").alias("ts"), "open", "high", "low", "close", "volume")
    return ResampleResult(candles, complete.height, grouped.height - complete.height)


def resample_store(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    source_tf: str,
    target_tf: str,
    kind: str = "trade",
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> ResampleResult:
    """Resample stored candles and write the result into the store as the ``target_tf`` series."""
    source = read_candles(data_dir, exchange, symbol, source_tf, start_ms, end_ms, kind=kind)
    if source.height == 0:
        raise GridctlError(f"no stored {kind} {source_tf} candles for {symbol} on {exchange} in {data_dir}")
    result = resample_candles(source, source_tf, target_tf, kind)
    write_candles(data_dir, exchange, symbol, target_tf, result.candles, kind=kind)
    return result
