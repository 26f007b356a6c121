"""`--live` on a two-symbol basket against the emulator fills as `run_basket` does on the same bars.

One account on the emulator trades BTCUSDT (tick 0.1) and ETHUSDT (tick 0.01) through one ccxt gateway
(one request pacer): ``live_bridge.basket.BasketBridge`` with a ``Bridge`` per symbol over a
``BasketSession`` (the engine's ``basket_bar_nb`` without its simulated venue after the exchange's fills
were booked). The backtest is ``engine.basket.run_basket`` over the same bars, funding and configs.
Alignment as in test_live_parity.py: both symbols hold ``W + 1`` flat bars at their first price (the
regime warm-up, then the first live decision), the venue's ``orders_per_second`` is above the rung
count, and the scenario keeps exits out of their entry's bar (asserted). Compared per symbol, in order:
bar, side, kind, level, price, quantity, maker/taker and fee, on the exchange's trades and on the live
engine's ledger; then the final positions and the account's equity at every live bar.

Not compared: a symbol's own equity rows. They hold the account's equity as that symbol's close saw it;
live books every symbol's fills of a bar before the first close, the backtest books a later symbol's
fills in its own step, so the wallet seen by an earlier symbol's close differs within the bar (the
account's row after every symbol stepped is the same).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from gridctl.configs.loader import load_strategy
from gridctl.configs.overrides import basket_strategies
from gridctl.data.market import market_from_arrays
from gridctl.data.sample import generate_sample
from gridctl.engine.basket import BAR_GO, run_basket
from gridctl.engine.enums import FillKind, Liquidity, Side
from gridctl.engine.regime import warmup_bars
from gridctl.live_bridge.basket import BasketBridge, BasketSession
from gridctl.live_bridge.bridge import Bridge
from gridctl.live_bridge.exchange import CcxtGateway
from gridctl.live_bridge.feed import ExchangeFeed
from gridctl.live_bridge.gateway import OrderRejected
from gridctl.live_bridge.journal import Journal
from gridctl.live_bridge.orders import parse_client_id, stop_coverage
from gridctl.live_bridge.readiness import filters_match
from gridctl.live_bridge.runner import ExchangeClock, _follow_both, bridge_options, new_run_id

from live_helpers import EMU_ENV, emulator_venue

MIN = 60_000
HOUR = 3_600_000
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
IDS = {BTC: "BTCUSDT", ETH: "ETHUSDT"}
RULES = {BTC: (0.1, 0.001), ETH: (0.01, 0.001)}  # (tick, step): the emulator's and the venue file's
SCALE = {BTC: (7, 1.0), ETH: (11, 20.0)}  # sample seed, price divisor
_KIND = {"entry": FillKind.ENTRY, "tp": FillKind.TP, "sl": FillKind.SL}
PARITY = ["grid.grid_step_bps=10", "exit.tp_steps=2", "rebalance.recenter_trigger_bps=60",
          "grid.grid_levels_long=4", "grid.grid_levels_short=4", "regime.hysteresis_bps=5",
          "grid.base_notional=150"]  # fmt: skip
VENUE = ["rate_limits.orders_per_second=10"]  # above the 8 rungs: each ladder goes out in one decision
Fill = tuple[
    int, int, int, int, int, int, int, float
]  # ts, side, kind, level, price ticks, qty steps, liq, fee


def _frames(symbol: str, n: int, flat: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``flat`` bars at the first open, then ``n`` sample bars (on the symbol's tick); a settlement 8 h
    before the first sample bar, then the sample's own."""
    seed, scale = SCALE[symbol]
    tick = RULES[symbol][0]
    candles, _mark, funding = generate_sample(1, seed=seed)
    prices = ("open", "high", "low", "close")
    bars = candles.head(n).select("ts", *prices, "volume")
    bars = bars.with_columns(((pl.col(c) / scale / tick).round() * tick).round(2) for c in prices)
    t0, p0 = int(bars["ts"][0]), float(bars["open"][0])
    pre = pl.DataFrame(
        {
            "ts": [t0 - (flat - i) * MIN for i in range(flat)],
            **{c: [p0] * flat for c in prices},
            "volume": [1.0] * flat,
        }
    ).cast(bars.schema)
    funding = funding.select("ts", "rate", pl.col("mark_price") / scale)
    first = pl.DataFrame({"ts": [t0 - 8 * HOUR], "rate": [0.0001], "mark_price": [p0]}).cast(funding.schema)
    return pl.concat([pre, bars]), pl.concat([first, funding])


def _exchange_fills(acct: Any, symbol: str) -> list[Fill]:
    """The emulator's trades of our orders on ``symbol``, in execution order, named by the client ids."""
    tick, step = RULES[symbol]
    by_exec_id = {(o.actual_order_id or o.order_id): o for o in acct.orders.values()}
    out = []
    for t in acct.trades:
        o = by_exec_id[t.order_id]
        if o.symbol != IDS[symbol]:
            continue
        cid = parse_client_id(o.client_id)
        assert cid is not None and cid.kind in _KIND, (t, cid)
        liq = Liquidity.MAKER if t.maker else Liquidity.TAKER
        out.append((t.time, cid.side, _KIND[cid.kind], cid.level, round(t.price / tick), round(t.qty / step),
                    liq, t.commission))  # fmt: skip
    return out


def _ledger_fills(rows: np.ndarray, symbol: str) -> list[Fill]:
    tick, step = RULES[symbol]
    return [
        (int(r["ts"]), int(r["side"]), int(r["kind"]), int(r["level"]), round(float(r["price"]) / tick),
         round(float(r["qty"]) / step), int(r["liquidity"]), float(r["fee"]))
        for r in rows
    ]  # fmt: skip


def _same(got: list[Fill], want: list[Fill], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} fills, the backtest {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g[:7] == w[:7], f"{what} fill {i}: {g} vs backtest {w}"
        assert g[7] == pytest.approx(w[7], rel=1e-9, abs=0.0), f"{what} fill {i}: {g} vs backtest {w}"


def _exits_in_entry_bar(fills: np.ndarray) -> list[tuple[int, int, int]]:
    opened: dict[tuple[int, int], int] = {}
    out = []
    for r in fills:
        key = (int(r["side"]), int(r["level"]))
        if r["kind"] == FillKind.ENTRY:
            opened[key] = int(r["ts"])
        elif opened.get(key) == int(r["ts"]):
            out.append((int(r["ts"]), *key))
    return out


@dataclass
class LiveBasket:
    """What a live basket run left: per symbol its exchange trades and engine ledger (as ``Fill``s), its
    exchange position (long, short), its bridge; the account's basket output; the bars run live."""

    got: dict[str, tuple[list[Fill], list[Fill]]]
    positions: dict[str, tuple[float, float]]
    bridges: dict[str, Bridge]
    out: Any
    steps: int
    account_latency: list[float]  # the BasketBridge's samples, one per bar


def _setup() -> tuple[Any, dict[str, Any], int, dict[str, tuple[pl.DataFrame, pl.DataFrame]]]:
    strategy = load_strategy("default", [f'strategy.symbols=["{BTC}", "{ETH}"]', *PARITY])
    r = strategy.regime
    start = warmup_bars(r.adx_len, r.ema_slow, r.atr_len)
    frames = {sym: _frames(sym, 200, start + 1) for sym in (BTC, ETH)}
    btc_ts = frames[BTC][0]["ts"].to_numpy()
    assert all(np.array_equal(f["ts"].to_numpy(), btc_ts) for f, _ in frames.values())  # aligned bars
    return strategy, basket_strategies(strategy), start, frames


def _live_basket(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    place: Callable[[Callable[..., Any], str, Any], Any] | None = None,
    after_bar: Callable[[dict[str, Bridge]], None] | None = None,
) -> LiveBasket:
    """``--live`` of the basket through the emulator: bars before the warm-up end are history, then every
    bar of both symbols is traded by the emulator, polled by each symbol's feed and run by the
    ``BasketBridge``. ``place(real_place, symbol, request)`` stands between the bridges and the gateway's
    order placement; ``after_bar(bridges)`` runs after every bar."""
    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
    from emulator.private import FillModel

    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    strategy, strategies, start, frames = _setup()
    height = frames[BTC][0].height
    state = EmulatorState()
    for sym, (frame, funding) in frames.items():
        state.set_funding(IDS[sym], funding.rename({"ts": "funding_time"}))
        state.replay(IDS[sym], "1m", frame, start_ms=int(frame["ts"][start]))
    state.account.wallet = strategy.backtest.initial_balance
    with BinanceUsdmEmulator(state) as emu:
        venue = emulator_venue(emu.url, VENUE)
        state.account.fill_model = FillModel.like_backtest(strategy, venue)
        clock = ExchangeClock()
        gateway = CcxtGateway(venue, live=True, clock=lambda: clock.now_ms() / 1000.0)
        if place is not None:
            real = gateway.place
            monkeypatch.setattr(gateway, "place", lambda symbol, req: place(real, symbol, req))
        gateway.follow_time(int(frames[BTC][0]["ts"][start]))
        gateway.set_hedge_mode(True)  # what readiness does for a single symbol (runner._account_checks)
        for sym in (BTC, ETH):
            gateway.set_leverage(sym, venue.trading.leverage)
            gateway.set_margin_type(sym, venue.trading.margin_type)
        session = BasketSession(strategies, venue, "1m")
        run_id = new_run_id()  # the account's run: one client-id prefix, orders told apart by symbol
        feeds, bridges = {}, {}
        for sym in (BTC, ETH):
            feed = ExchangeFeed.for_venue(venue, sym, "1m", None)
            feed.on_server_time = _follow_both(clock, gateway)
            feed.pacer = gateway.pacer  # one pacer for every request of the account
            gateway.pacer.watch(feed.client)
            filters_match(venue, feed.load_rules())  # the readiness check, per symbol: its own tick and lot
            member = session.sessions[sym]
            hist = np.array(feed.history(member.warmup_needed), dtype=np.float64)
            assert len(hist) == start
            member.warm(hist[:, 0], hist[:, 2], hist[:, 3], hist[:, 4], hist[:, 1])
            now = feed.server_time_ms()
            session.set_funding(sym, feed.funding_settled(now - 3 * 86_400_000, now), feed.next_funding_ms())
            options = bridge_options(strategies[sym], "live", run_id)
            journal = Journal(tmp_path / f"{IDS[sym]}.sqlite")  # the bridge books exchange fills through it
            bridge = Bridge(member, options, journal=journal, gateway=gateway, now_ms=clock.now_ms)
            bridge.read_account()
            assert bridge.refresh_orders()
            feeds[sym], bridges[sym] = feed, bridge
        live = BasketBridge(session, bridges)
        steps = 0
        while state.account.replays[IDS[BTC]].cursor < height:
            for sym in (BTC, ETH):
                state.advance_bar(IDS[sym])
            polled = {sym: feeds[sym].poll() for sym in (BTC, ETH)}
            assert [len(v) for v in polled.values()] == [1, 1], polled
            t = polled[BTC][0].ts
            assert live.on_bars(t, {sym: bars[0] for sym, bars in polled.items()}) == BAR_GO
            steps += 1
            if after_bar is not None:
                after_bar(bridges)
        acct = state.account
        out = session.output()
        got = {
            sym: (_exchange_fills(acct, sym), _ledger_fills(out.per_symbol[sym].fills, sym))
            for sym in (BTC, ETH)
        }
        positions = {
            sym: (acct.position(IDS[sym], "LONG")[0], -acct.position(IDS[sym], "SHORT")[0])
            for sym in (BTC, ETH)
        }
    assert steps == height - start == session.n
    return LiveBasket(got, positions, bridges, out, steps, list(live.latency.samples_ms))


def test_live_basket_fills_and_account_equity_equal_the_basket_backtest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _live_basket(tmp_path, monkeypatch)
    _strategy, strategies, start, frames = _setup()
    got, positions, out = run.got, run.positions, run.out
    for b in run.bridges.values():  # nothing unexplained, no protection failure on either symbol
        assert b.unexplained == [] and b.protection_events == [], (b.s.symbol, b.log[-5:])
    deferred = sum(b.deferred for b in run.bridges.values())
    markets = {
        sym: market_from_arrays(
            sym, "1m", *(frame[c].to_numpy() for c in ("ts", "open", "high", "low", "close", "volume")),
            *(funding[c].to_numpy() for c in ("ts", "rate", "mark_price")),
        )
        for sym, (frame, funding) in frames.items()
    }  # fmt: skip
    bt = run_basket(markets, strategies, emulator_venue("http://127.0.0.1:9", VENUE))
    assert deferred == 0
    first_live = int(frames[BTC][0]["ts"][start])
    for sym in (BTC, ETH):
        fills = bt.per_symbol[sym].fills
        # alignment and the known difference: nothing before the first live bar, no exit in its entry's bar
        assert len(fills) >= 10 and fills["ts"].min() > first_live, sym
        assert _exits_in_entry_bar(fills) == [], sym
        kinds = {(int(x["side"]), int(x["kind"])) for x in fills}
        assert {(Side.LONG, FillKind.ENTRY), (Side.SHORT, FillKind.ENTRY)} <= kinds, (sym, kinds)
        want = _ledger_fills(fills, sym)
        _same(got[sym][0], want, f"{sym} exchange")
        _same(got[sym][1], want, f"{sym} live engine")
        step = RULES[sym][1]
        last = bt.per_symbol[sym].summary
        assert tuple(round(q / step) for q in positions[sym]) == (
            round(last["long_qty"] / step),
            round(last["short_qty"] / step),
        ), sym
    # the account: its equity, wallet and unrealized PnL at every live bar are the backtest's
    rows = bt.account_equity[bt.account_equity["ts"] >= int(frames[BTC][0]["ts"][start])]
    live_rows = out.account_equity
    np.testing.assert_array_equal(live_rows["ts"], rows["ts"])
    for name in ("equity", "wallet_balance", "unrealized_pnl"):
        np.testing.assert_allclose(live_rows[name], rows[name], rtol=1e-12, atol=1e-9, err_msg=name)
    # latency: each symbol's bar -> its orders sent, and one per account bar: bar -> the last symbol's sent
    btc, eth = (run.bridges[s].latency.samples_ms for s in (BTC, ETH))
    assert len(btc) == len(eth) == len(run.account_latency) == run.steps
    assert run.account_latency == [max(a, b) for a, b in zip(btc, eth, strict=True)]
    counts = {s: len(got[s][0]) for s in got}
    print(f"\n{counts} fills equal per symbol; final account equity {rows['equity'][-1]:.4f}")


def _uncovered(bridge: Bridge) -> dict[str, float]:
    """Position side -> quantity of ``bridge``'s symbol held on the exchange without our resting stops,
    read from the exchange now (positions and open orders)."""
    sym = bridge.s.symbol
    acct = bridge.gw.account(sym)
    covered = stop_coverage(bridge.gw.open_orders(sym), bridge.o.run_id)
    half = RULES[sym][1] / 2.0
    out = {}
    for pos in ("LONG", "SHORT"):
        p = acct.positions.get(pos)
        gap = (p.qty if p is not None else 0.0) - covered.get(pos, 0.0)
        if gap > half:
            out[pos] = gap
    return out


def test_a_refused_stop_on_one_symbol_leaves_the_other_protected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange refuses ETH's first stop (-2021, as when the price already crossed it). ETH's bridge
    closes that lot at market with the reason; BTC's lots keep their stops; after every bar, on both
    symbols, every position has stops for its whole size on the exchange."""
    refused: list[str] = []

    def place(real: Callable[..., Any], symbol: str, req: Any) -> Any:
        if symbol == ETH and req.type == "stop_market" and not refused:
            refused.append(req.client_id)
            raise OrderRejected(-2021, "Order would immediately trigger.")
        return real(symbol, req)

    gaps: list[dict[str, dict[str, float]]] = []
    run = _live_basket(tmp_path, monkeypatch, place, lambda bridges: gaps.append(
        {sym: _uncovered(b) for sym, b in bridges.items()}))  # fmt: skip

    assert len(refused) == 1 and parse_client_id(refused[0]).kind == "sl"
    lot = parse_client_id(refused[0])
    eth, btc = run.bridges[ETH], run.bridges[BTC]
    reasons = [e["reason"] for e in eth.protection_events]
    assert any("-2021" in r for r in reasons), reasons
    side = ("LONG", "SHORT")[lot.side]
    assert any(f"{side} level {lot.level}" in r and "closed at market" in r for r in reasons), reasons
    # the closing market order went out on ETH only, booked by ETH's engine as that lot's stop fill
    eth_fills = run.out.per_symbol[ETH].fills
    assert any(
        int(f["kind"]) == FillKind.SL and int(f["level"]) == lot.level and int(f["side"]) == lot.side
        and int(f["liquidity"]) == Liquidity.TAKER
        for f in eth_fills
    )  # fmt: skip
    assert btc.protection_events == [] and btc.unexplained == []
    # the invariant, per symbol, at every bar: no position without full stop coverage on the exchange
    bad = [g for g in gaps if any(g.values())]
    assert len(gaps) == run.steps and bad == [], bad
    # both symbols traded and held positions under their stops meanwhile (the check meant something)
    for sym in (BTC, ETH):
        assert len(run.got[sym][0]) >= 10, sym
    # one refusal is not a pattern: no breaker, entries allowed on both
    assert eth.entries_allowed and btc.entries_allowed
