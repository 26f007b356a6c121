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
        SAMPLE_SYMBOL, "1m", candles["ts"].to_numpy(), candles["open"].to_numpy(), candles["high"].to_numpy(),
        candles["low"].to_numpy(), candles["close"].to_numpy(), candles["volume"].to_numpy(),
        funding["ts"].to_numpy(), funding["rate"].to_numpy(), funding["mark_price"].to_numpy(),
    )  # fmt: skip


def sample_bars(days: int = 1, seed: int = 7) -> list[ClosedBar]:
    return list(ReplayFeed(sample_market(days, seed)))


def paper_bridge(overrides: list[str] | None = None, ops: OpsState | None = None, now_ms: Any = None) -> Bridge:
    strategy = load_strategy("default", overrides or [])
    venue = load_venue("binance_futures")
    session = EngineSession(strategy, venue, SAMPLE_SYMBOL, "1m")
    kw = {"now_ms": now_ms} if now_ms is not None else {}
    return Bridge(session, _options(strategy, "paper", "t1"), ops=ops, **kw)
