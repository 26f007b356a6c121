"""Shared pieces of the live-bridge tests: a sample market, a paper bridge, an ops server."""

from __future__ import annotations

from typing import Any

from configs.loader import load_strategy, load_venue
from data.market import Market, market_from_arrays
from data.sample import SAMPLE_SYMBOL, generate_sample
from live_bridge.bridge import Bridge
from live_bridge.cli import _options
from live_bridge.ops import OpsState
from live_bridge.replay import ClosedBar, ReplayFeed
from live_bridge.session import EngineSession


def sample_market(days: int = 1, seed: int = 7) -> Market:
    candles, _mark, funding = generate_sample(days, seed=seed)
    return market_from_arrays(
        SAMPLE_SYMBOL,
        "1m",
        candles["ts"].to_numpy(),
        candles["open"].to_numpy(),
        candles["high"].to_numpy(),
        candles["low"].to_numpy(),
        candles["close"].to_numpy(),
        candles["volume"].to_numpy(),
        funding["ts"].to_numpy(),
        funding["rate"].to_numpy(),
        funding["mark_price"].to_numpy(),
    )


def sample_bars(days: int = 1, seed: int = 7) -> list[ClosedBar]:
    return list(ReplayFeed(sample_market(days, seed)))


def paper_bridge(
    overrides: list[str] | None = None, ops: OpsState | None = None, now_ms: Any = None
) -> Bridge:
    strategy = load_strategy("default", overrides or [])
    venue = load_venue("binance_futures")
    session = EngineSession(strategy, venue, SAMPLE_SYMBOL, "1m")
    kw = {"now_ms": now_ms} if now_ms is not None else {}
    return Bridge(session, _options(strategy, "paper", "t1"), ops=ops, **kw)


SYMBOL_ID = "BTCUSDT"
EMU_ENV = {
    "BINANCE_API_KEY": "emu-api-key",
    "BINANCE_API_SECRET": "emu-api-secret",
    "GRIDCTL_OPS_TOKEN": "tok",
}
HISTORY_BARS = 60


def emulator_with_sample(days: int = 1, seed: int = 7, history: int = HISTORY_BARS) -> Any:
    """A started emulator replaying the sample market: ``history`` bars already closed, funding served."""
    import polars as pl
    from emulator.binance_usdm import BinanceUsdmEmulator

    candles, _mark, funding = generate_sample(days, seed=seed)
    emu = BinanceUsdmEmulator().start()
    emu.state.set_funding(
        SYMBOL_ID, funding.rename({"ts": "funding_time"}).select("funding_time", "rate", "mark_price")
    )
    start = int(candles["ts"][history])
    emu.state.replay(
        SYMBOL_ID,
        "1m",
        candles.select(pl.col("ts"), "open", "high", "low", "close", "volume"),
        start_ms=start,
    )
    return emu


def emulator_venue(url: str, extra: list[str] | None = None) -> Any:
    """The production venue file aimed at the emulator; the emulator's BTCUSDT min notional is 100."""
    return load_venue(
        "binance_futures", [f"api.base_url={url}", "precision.min_notional=100", *(extra or [])]
    )
