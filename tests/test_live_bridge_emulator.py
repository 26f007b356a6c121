"""`--live` end to end in process: real ccxt gateway and feed against the emulator, bar by bar.

After every bar the exchange's open orders are exactly the engine's wanted orders (within tolerance),
every exchange trade of ours is booked once, and the engine's positions equal the exchange's.
Also measures the bar-to-orders-sent latency (printed; never asserted).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from live_helpers import EMU_ENV, SYMBOL_ID, emulator_venue, emulator_with_sample

from configs.loader import load_strategy
from live_bridge.exchange import CcxtGateway
from live_bridge.orders import RestingOrder, desired_orders, parse_client_id, same_order
from live_bridge.runner import ExchangeClock, prepare


@pytest.fixture()
def emu(monkeypatch: pytest.MonkeyPatch):
    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    e = emulator_with_sample()
    try:
        yield e
    finally:
        e.stop()


def _prepare(emu, tmp_path: Path, strategy_overrides: list[str] | None = None):
    strategy = load_strategy("default", strategy_overrides or [])
    venue = emulator_venue(emu.url)
    # The emulator's clock jumps a bar per advance: the gateway's request budget runs on it too.
    clock = ExchangeClock()
    gateway = CcxtGateway(venue, live=True, clock=lambda: clock.now_ms() / 1000.0)
    return prepare(
        strategy,
        venue,
        "BTC/USDT:USDT",
        "1m",
        "live",
        False,
        None,
        tmp_path / "j.sqlite",
        0,
        os.environ["GRIDCTL_OPS_TOKEN"],
        "GRIDCTL_OPS_TOKEN",
        50.0,
        [],
        10**13,
        gateway=gateway,
        clock=clock,
    )


def _check_books(ctx, emu) -> None:
    bridge = ctx.bridge
    acct = emu.state.account
    ours = [
        o
        for o in acct.open_orders(SYMBOL_ID)
        if (p := parse_client_id(o.client_id)) and p.run_id == bridge.o.run_id
    ]
    wanted = desired_orders(bridge.s.slots, True)
    keys = [
        (
            parse_client_id(o.client_id).side,
            parse_client_id(o.client_id).level,
            parse_client_id(o.client_id).kind,
        )
        for o in ours
    ]
    assert len(keys) == len(set(keys)), f"duplicate orders on the exchange: {keys}"
    by_key = {k: o for k, o in zip(keys, ours, strict=True)}
    deferred = set(bridge.last_deferred)
    for w in wanted:
        o = by_key.get(w.key)
        if o is None and w.key in deferred:
            continue  # over the rate limit this bar: sent at a later bar
        assert o is not None, f"wanted {w} not on the exchange; log: {bridge.log[-5:]}"
        px = o.price if w.type == "limit" else o.stop_price
        assert same_order(w, RestingOrder(o.client_id, px, o.qty), 1.0, 1.0), (w, o)
    assert set(by_key) == {w.key for w in wanted} - (deferred - set(by_key)), bridge.log[-8:]
    lq, sq = bridge.s.position()
    xl = acct.position(SYMBOL_ID, "LONG")[0]
    xs = -acct.position(SYMBOL_ID, "SHORT")[0]
    assert abs(lq - xl) < 1e-9 and abs(sq - xs) < 1e-9, (lq, sq, xl, xs)


def test_live_bridge_keeps_exchange_in_step_with_engine(emu, tmp_path: Path) -> None:
    # One rung per side keeps the books small to compare every bar (written when the emulator still
    # refused a second lot's TP while the first lot's SL rested; it no longer does).
    ready, ctx = _prepare(
        emu, tmp_path, ["grid.grid_levels_long=1", "grid.grid_levels_short=1", "grid.grid_step_bps=15"]
    )
    try:
        ready.require()
        assert emu.state.account.dual_side, "readiness switches hedge mode on"
        bridge, feed = ctx.bridge, ctx.feed
        n_bars = 240
        for _ in range(n_bars):
            emu.state.advance_bar(SYMBOL_ID)
            for bar in feed.poll():
                bridge.on_bar(bar)
            _check_books(ctx, emu)
        acct = emu.state.account
        our_trades = acct.trades  # nothing else trades on the emulator
        assert our_trades, "the scenario must trade on the exchange"
        booked = ctx.journal.db.execute("SELECT COUNT(*) FROM xfills").fetchone()[0]
        assert booked == len(our_trades)
        assert int(bridge.s.cnt[0]) > 0  # engine fills ledger rows
        lat = bridge.latency.summary()
        print(
            f"\nlatency bar->orders sent over {lat['n']} bars: "
            f"median {lat['median_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms"
        )
    finally:
        ctx.close()


def test_unreadable_margin_pauses_entries_on_the_exchange_and_recovers(emu, tmp_path: Path) -> None:
    ready, ctx = _prepare(emu, tmp_path, ["grid.grid_levels_long=2", "grid.grid_levels_short=2"])
    try:
        ready.require()
        bridge, feed = ctx.bridge, ctx.feed
        acct = emu.state.account

        def our_entries() -> list:
            return [
                o
                for o in acct.open_orders(SYMBOL_ID)
                if (p := parse_client_id(o.client_id)) and p.run_id == bridge.o.run_id and p.kind == "entry"
            ]

        for _ in range(3):
            emu.state.advance_bar(SYMBOL_ID)
            for bar in feed.poll():
                bridge.on_bar(bar)
        assert our_entries(), "entries rest while everything is healthy"
        # the account endpoint fails: the margin figure is unreadable after this bar
        emu.state.inject("status", "/fapi/v3/account", times=3, status=500)
        emu.state.advance_bar(SYMBOL_ID)
        for bar in feed.poll():
            bridge.on_bar(bar)
        assert "margin" in bridge.fail_reasons
        emu.state.advance_bar(SYMBOL_ID)
        for bar in feed.poll():
            bridge.on_bar(bar)  # this bar's decision sees the pause: entries cancelled on the exchange
        assert our_entries() == []
        status = (
            ctx.server
            and __import__("httpx")
            .get(f"{ctx.ops_url}/status", headers={"Authorization": "Bearer tok"}, timeout=5)
            .json()
        )
        assert any(r.startswith("margin:") for r in status["pause_reasons"])
        assert status["margin_ratio"] is None and status["unknown"]["margin_ratio"].startswith(
            "account unreadable"
        )
        for _ in range(3):  # the fault is used up: healthy again, entries come back
            emu.state.advance_bar(SYMBOL_ID)
            for bar in feed.poll():
                bridge.on_bar(bar)
        assert "margin" not in bridge.fail_reasons and our_entries()
    finally:
        ctx.close()
