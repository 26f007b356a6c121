"""Shared pieces of the live-bridge and emulator tests: hand-written scenario bars and the emulator
serving them, a sample market, a paper bridge."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import Market, market_from_arrays
from gridctl.data.sample import SAMPLE_SYMBOL, generate_sample
from gridctl.live_bridge.bridge import Bridge
from gridctl.live_bridge.ops import OpsState
from gridctl.live_bridge.replay import ClosedBar, ReplayFeed
from gridctl.live_bridge.runner import bridge_options
from gridctl.live_bridge.session import EngineSession


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
    return Bridge(session, bridge_options(strategy, "paper", "t1"), ops=ops, **kw)


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


@contextmanager
def running_emulator(monkeypatch: Any = None) -> Iterator[Any]:
    """``emulator_with_sample()`` for the block, stopped after it; with ``monkeypatch``, the emulator's
    credentials and ops token (``EMU_ENV``) are in the environment too."""
    for k, v in EMU_ENV.items() if monkeypatch is not None else ():
        monkeypatch.setenv(k, v)
    emu = emulator_with_sample()
    try:
        yield emu
    finally:
        emu.stop()


def prepare_live_on_emulator(
    strategy: Any, venue: Any, journal: Any, token: str | None = None, **options: Any
) -> tuple[Any, Any]:
    """``runner.prepare`` of a ``--live`` BTC/USDT:USDT run on the emulator: ops API on a free port, any
    clock skew allowed (the emulator replays the past), and the gateway's request budget on the run's
    clock (the emulator's clock jumps a bar per advance). ``token`` defaults to $GRIDCTL_OPS_TOKEN;
    ``options`` are other ``LiveOptions`` fields (or replace these)."""
    from gridctl.live_bridge.exchange import CcxtGateway
    from gridctl.live_bridge.options import LiveOptions
    from gridctl.live_bridge.runner import ExchangeClock, prepare

    clock = ExchangeClock()
    gateway = CcxtGateway(venue, live=True, clock=lambda: clock.now_ms() / 1000.0)
    fields = {
        "mode": "live",
        "symbol": "BTC/USDT:USDT",
        "journal": journal,
        "ops_port": 0,
        "max_skew_ms": 10**13,
    }
    opts = LiveOptions(**{**fields, **options})
    ops_token = token if token is not None else os.environ["GRIDCTL_OPS_TOKEN"]
    return prepare(strategy, venue, opts, ops_token, gateway=gateway, clock=clock)


def emulator_venue(url: str, extra: list[str] | None = None) -> Any:
    """The production venue file aimed at the emulator; the emulator's BTCUSDT min notional is 100."""
    return load_venue("binance_futures", [f"api.base_url={url}", *(extra or [])])


# -- hand-derived scenarios on the emulator (BTCUSDT: tick 0.1, step 0.001, min notional 100) ----------
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
FLAT = [(40000.0, 40000.0, 40000.0, 40000.0)] * 5  # five flat history bars before every scenario


def scenario_bars(*ohlc: tuple[float, float, float, float]) -> Any:
    """A 1m frame (ts, open, high, low, close, volume): ``FLAT`` then the scenario bars, from ``T0``."""
    import polars as pl

    rows = FLAT + list(ohlc)
    return pl.DataFrame(
        {
            "ts": [T0 + i * MIN for i in range(len(rows))],
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [1.0] * len(rows),
        }
    )


def scenario_state(*ohlc: tuple[float, float, float, float], hedge: bool = True) -> Any:
    """Emulator state replaying ``scenario_bars(*ohlc)`` for BTCUSDT, its clock at the first scenario bar."""
    from emulator.binance_usdm import EmulatorState

    state = EmulatorState(now_ms=T0 + 5 * MIN)
    state.replay("BTCUSDT", "1m", scenario_bars(*ohlc))
    state.account.dual_side = hedge
    return state


@contextmanager
def serving(state: Any) -> Iterator[Any]:
    """The emulator serving ``state`` on 127.0.0.1 for the block (the tests' ``emu`` fixtures)."""
    from emulator.binance_usdm import BinanceUsdmEmulator

    with BinanceUsdmEmulator(state) as server:
        yield server
