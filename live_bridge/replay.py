"""Replay feed: stored bars and funding delivered one closed bar at a time, as fast as possible.

``ReplayFeed`` yields what a live feed yields at each bar close: the bar, every funding settlement at
or before the close, and the next settlement's time. The bridge steps the engine with it exactly as it
steps a paper session, so ``gridctl live --paper --replay`` writes the ledgers ``gridctl backtest``
writes over the same data and config (tests/live_bridge/test_live_replay.py proves it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.data.market import Market


@dataclass(frozen=True)
class ClosedBar:
    """One closed bar (``ts`` = its open, ms UTC) plus the funding the feed knows at its close."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    settled: list[tuple[int, float, float]]  # settlements revealed at this close: (time, rate, mark)
    next_funding_ms: int | None
    funding_problem: str | None = None  # live feed: why its funding input cannot be trusted (fail closed)


class ReplayFeed:
    """Closed bars of a stored market, with funding revealed up to each bar's close."""

    def __init__(self, market: Market) -> None:
        self.market = market

    def __len__(self) -> int:
        return len(self.market.ts)

    def __iter__(self) -> Iterator[ClosedBar]:
        m = self.market
        fts = np.asarray(m.funding_ts, np.int64)
        close_times = np.asarray(m.ts, np.int64) + m.bar_ms
        visible = np.searchsorted(fts, close_times, side="right")  # settlements with T <= close
        shown = 0
        for k in range(len(m.ts)):
            v = int(visible[k])
            settled = [
                (int(fts[i]), float(m.funding_rate[i]), float(m.funding_mark[i])) for i in range(shown, v)
            ]
            shown = v
            nxt = int(fts[v]) if v < fts.shape[0] else None
            yield ClosedBar(
                int(m.ts[k]),
                float(m.open[k]),
                float(m.high[k]),
                float(m.low[k]),
                float(m.close[k]),
                settled,
                nxt,
            )


def basket_replay(markets: dict[str, Market]) -> Iterator[tuple[int, dict[str, ClosedBar]]]:
    """Closed bars of a basket's stored markets on the union of their timestamps, one aligned close at a
    time: ``(t, {symbol: bar})`` for every symbol, a symbol without a bar at ``t`` with NaN OHLC. Each
    symbol's funding is revealed up to the aligned close, bar or not (its feed polls funding on its own)."""
    ts = np.unique(np.concatenate([np.asarray(m.ts, np.int64) for m in markets.values()]))
    bar_ms = {int(m.bar_ms) for m in markets.values()}
    if len(bar_ms) != 1:
        raise GridctlError(f"a basket replay needs one timeframe, the markets have {sorted(bar_ms)} ms bars")
    close_times = ts + bar_ms.pop()
    state = {}
    for sym, m in markets.items():
        own = np.asarray(m.ts, np.int64)
        fts = np.asarray(m.funding_ts, np.int64)
        at = np.searchsorted(own, ts)
        has = (at < own.shape[0]) & (own[np.minimum(at, own.shape[0] - 1)] == ts)
        state[sym] = (m, at, has, fts, np.searchsorted(fts, close_times, side="right"))
    shown = dict.fromkeys(markets, 0)
    nan = float("nan")
    for k in range(ts.shape[0]):
        out = {}
        for sym, (m, at, has, fts, visible) in state.items():
            v = int(visible[k])
            rate, mark = m.funding_rate, m.funding_mark
            settled = [(int(fts[i]), float(rate[i]), float(mark[i])) for i in range(shown[sym], v)]
            shown[sym] = v
            nxt = int(fts[v]) if v < fts.shape[0] else None
            if has[k]:
                j = int(at[k])
                px = (float(m.open[j]), float(m.high[j]), float(m.low[j]), float(m.close[j]))
            else:
                px = (nan, nan, nan, nan)
            out[sym] = ClosedBar(int(ts[k]), *px, settled, nxt)
        yield int(ts[k]), out


def load_replay_market(
    source: Path,
    data_dir: Path | None,
    exchange: str,
    symbol: str,
    timeframe: str,
    window: tuple[int | None, int | None] = (None, None),
) -> Market:
    """The market to replay: a data directory (with exchange / symbol / timeframe) or one parquet file.

    A parquet file holds candles (``ts open high low close volume``); its funding comes from the data
    directory's funding series for ``exchange`` / ``symbol`` when given, else the file must sit in a
    store layout (``<data-dir>/<exchange>/<SYMBOL>/<timeframe>/<YYYY-MM>.parquet``) the whole market is
    loaded from. ``window`` (start ms, end ms exclusive; ``--start``/``--end``) selects the bars of a data
    directory as `gridctl backtest` does; a partition file is its own window and refuses one.
    """
    from gridctl.data.market import load_market

    if source.is_dir():
        return load_market(source, exchange, symbol, timeframe, *window)
    if window != (None, None):
        raise GridctlError(
            f"--replay {source}: --start/--end select bars of a data directory; a partition file is one "
            "month (give its data directory to choose the window)"
        )
    if source.suffix != ".parquet" or not source.is_file():
        raise GridctlError(f"--replay: {source} is neither a data directory nor a .parquet file")
    # <data-dir>/<exchange>/<SYMBOL>/<timeframe>/<file>.parquet: load that store's market for the month.
    parts = source.resolve().parts
    if len(parts) < 5:
        raise GridctlError(
            f"--replay: {source} is not inside a data directory (<data-dir>/<exchange>/<SYMBOL>/<tf>/)"
        )
    root = Path(*parts[:-4])
    ex, sym_dir, tf = parts[-4], parts[-3], parts[-2]
    from gridctl.data.store import symbol_dir

    wanted_dir = symbol_dir(root, ex, symbol).name if symbol else sym_dir
    if wanted_dir != sym_dir:
        raise GridctlError(f"--replay: {source} holds {sym_dir}, not {symbol}")
    if timeframe and tf != timeframe:
        raise GridctlError(f"--replay: {source} holds {tf} bars, not --timeframe {timeframe}")
    month = source.stem  # YYYY-MM
    try:
        year, mon = (int(x) for x in month.split("-"))
    except ValueError:
        raise GridctlError(f"--replay: {source.name} is not a YYYY-MM.parquet partition") from None
    from datetime import UTC, datetime

    start = int(datetime(year, mon, 1, tzinfo=UTC).timestamp() * 1000)
    end = int(datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC).timestamp() * 1000)
    return load_market(root, ex, symbol, tf, start, end)
