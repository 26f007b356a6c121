"""`--live` end to end in process: real ccxt gateway and feed against the emulator, bar by bar.

After every bar the exchange's open orders are exactly the engine's wanted orders (within tolerance),
every exchange trade of ours is booked once, and the engine's positions equal the exchange's.
Also measures the bar-to-orders-sent latency (printed; never asserted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy
from gridctl.engine.params import P_INITIAL_BALANCE
from gridctl.live_bridge.orders import RestingOrder, desired_orders, parse_client_id, same_order

from live_helpers import (
    EMU_ENV,
    MIN,
    SYMBOL_ID,
    T0,
    emulator_venue,
    prepare_live_on_emulator,
    running_emulator,
)


@pytest.fixture()
def emu(monkeypatch: pytest.MonkeyPatch):
    with running_emulator(monkeypatch) as e:
        yield e


def _prepare(emu, tmp_path: Path, strategy_overrides: list[str] | None = None, venue_overrides=None):
    strategy = load_strategy("default", strategy_overrides or [])
    return prepare_live_on_emulator(strategy, emulator_venue(emu.url, venue_overrides), tmp_path / "j.sqlite")


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
        rows = {item: (ok, detail) for item, ok, detail in ready.rows}
        # the live kernels ran once on a scratch session (numba cache loaded off the critical path)
        assert rows["engine kernels loaded"][0] and "the fill path too" in rows["engine kernels loaded"][1]
        from gridctl.engine.fills import fill_slot_nb, post_only_reject_nb, retry_price_nb, retry_rests_nb
        from gridctl.engine.step import bar_close_nb

        assert fill_slot_nb.signatures and bar_close_nb.signatures
        assert post_only_reject_nb.signatures and retry_price_nb.signatures and retry_rests_nb.signatures
        assert ctx.bridge.s.n == 0 and ctx.bridge.s.position() == (0.0, 0.0)  # the run's session untouched
        assert rows["open orders read"] == (True, "0 open") and not ctx.bridge._orders_unknown
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
            f"median {lat['median_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms"
        )
        for name, q in lat["phases"].items():
            print(
                f"  {name}: median {q['median_ms']:.2f} ms, p99 {q['p99_ms']:.2f} ms, max {q['max_ms']:.2f}"
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


# -- several rungs per side, hand-derived ----------------------------------------------------------------
# 35 flat bars at 40000 (30 of history = the warm-up of the default regime lengths, all SIDEWAYS: ADX 0),
# then the scenario. Config: 3 rungs per side, step 40 bps (s = 0.004), base_qty 0.003, qty_scale 1.5,
# tp_steps 3, sl_steps 6 (the default's), BTCUSDT tick 0.1, step 0.001.
# Centre C = 40000 (the first live bar's close). Rungs (DESIGN.md "Ladder"):
#   long i  floor_tick(40000*(1 - 0.004 i)) = 39840.0, 39680.0, 39520.0
#   short i ceil_tick(40000*(1 + 0.004 i))  = 40160.0, 40320.0, 40480.0
#   qty     floor_step(0.003 * 1.5**(i-1))  = 0.003, 0.004 (0.0045), 0.006 (0.00675)
LADDER_HISTORY = 30
RUNGS = ["grid.grid_levels_long=3", "grid.grid_levels_short=3", "grid.grid_step_bps=40",
         "grid.base_qty=0.003", "grid.qty_scale=1.5"]  # fmt: skip
FLAT_BAR = (40000.0, 40000.0, 40000.0, 40000.0)
# the dip: path 40000 -> 40000 (high) -> 39600 (low) -> 39700: long rungs 1 and 2 fill at their limits
DIP_TWO = (40000.0, 40000.0, 39600.0, 39700.0)


def _ladder_emulator(
    *scenario: tuple[float, float, float, float], wallet: float = 10_000.0, settle_ms: int | None = None
):
    import polars as pl

    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
    from live_helpers import scenario_bars

    history = [FLAT_BAR] * (LADDER_HISTORY - 5)  # scenario_bars adds 5 flat bars of its own
    frame = scenario_bars(*history, *scenario)
    state = EmulatorState()
    state.account.wallet = wallet
    state.replay(SYMBOL_ID, "1m", frame, start_ms=T0 + LADDER_HISTORY * MIN)
    # one settlement (1 bp: below the guard's 12 bps) before the start, the next 8 h later
    state.set_funding(
        SYMBOL_ID,
        pl.DataFrame(
            {
                "funding_time": [T0 - 3_600_000, *([settle_ms] if settle_ms else []), T0 + 7 * 3_600_000],
                "rate": [0.0001, *([0.0001] if settle_ms else []), 0.0001],
                "mark_price": [40000.0, *([40000.0] if settle_ms else []), 40000.0],
            }
        ),
    )
    return BinanceUsdmEmulator(state).start()


@contextmanager
def _on_emulator(emu, monkeypatch) -> Iterator[Callable[..., tuple]]:
    """Credentials for ``emu`` set; yields ``_prepare`` bound to it. Every run context it opened is closed
    at the end, then the emulator is stopped."""
    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    opened: list = []

    def prep(*args: Any, **kwargs: Any) -> tuple:
        ready, ctx = _prepare(emu, *args, **kwargs)
        opened.append(ctx)
        return ready, ctx

    try:
        yield prep
    finally:
        try:
            for ctx in opened:
                ctx.close()
        finally:
            emu.stop()


def test_a_new_live_run_starts_from_the_account_and_refuses_unknown_positions(
    tmp_path: Path, monkeypatch
) -> None:
    emu = _ladder_emulator(FLAT_BAR, wallet=12_345.0)
    with _on_emulator(emu, monkeypatch) as prep:
        ready, ctx = prep(tmp_path / "a", RUNGS)
        ready.require()
        item = next(r for r in ready.rows if r[0] == "engine sized from the account")
        assert item[1] and "12,345.00" in item[2]
        assert ctx.bridge.s.params.vector[P_INITIAL_BALANCE] == 12_345.0
        ctx.close()
        # a long the engine never opened: a new run must not adopt it
        emu.state.account.position(SYMBOL_ID, "LONG")[:] = [0.01, 40000.0]
        ready, ctx = prep(tmp_path / "b", RUNGS)
        fails = dict(ready.failures)
        assert "LONG" in fails["engine sized from the account"]
        assert "positions" in fails["engine sized from the account"]
        with pytest.raises(GridctlError, match="no order was sent"):
            ready.require()
        assert emu.state.account.open_orders(SYMBOL_ID) == []


def _advance(emu, ctx) -> None:
    """The emulator trades its next bar; the bridge polls it and runs it."""
    emu.state.advance_bar(SYMBOL_ID)
    for b in ctx.feed.poll():
        ctx.bridge.on_bar(b)


def _ours(emu, bridge, kind: str | None = None) -> list:
    """This run's open orders on the emulator (of ``kind`` when given)."""
    return [
        o
        for o in emu.state.account.open_orders(SYMBOL_ID)
        if (p := parse_client_id(o.client_id)) and p.run_id == bridge.o.run_id and kind in (None, p.kind)
    ]


def _placed(emu, run_id: str) -> list[tuple[str, int, str, str, str, float, float, str]]:
    """(kind, level, positionSide, side, type, price or trigger, qty, tif) of each order we sent, in order."""
    out = []
    for q in emu.state.requests():
        if q.method != "POST" or q.path not in ("/fapi/v1/order", "/fapi/v1/algoOrder"):
            continue
        cid = q.query.get("newClientOrderId") or q.query.get("clientAlgoId")
        p = parse_client_id(cid)
        assert p is not None and p.run_id == run_id, cid
        assert ("LONG", "SHORT")[p.side] == q.query["positionSide"], cid
        px = float(q.query.get("price") or q.query.get("triggerPrice"))
        out.append((p.kind, p.level, q.query["positionSide"], q.query["side"], q.query["type"], px,
                    float(q.query["quantity"]), q.query.get("timeInForce", "")))  # fmt: skip
    return out


def test_several_rungs_per_side_send_exactly_the_hand_derived_orders(tmp_path: Path, monkeypatch) -> None:
    emu = _ladder_emulator(FLAT_BAR, DIP_TWO, FLAT_BAR)
    with _on_emulator(emu, monkeypatch) as prep:
        # six entries on the first bar: above the venue file's 5 orders/s, which would defer one
        ready, ctx = prep(tmp_path, RUNGS, ["rate_limits.orders_per_second=10"])
        ready.require()
        bridge, feed = ctx.bridge, ctx.feed
        run_id = bridge.o.run_id
        emu.state.clear_log()

        def bar() -> None:
            emu.state.advance_bar(SYMBOL_ID)
            for b in feed.poll():
                bridge.on_bar(b)

        bar()  # flat bar: the ladder goes out, nearest rung first, long before short
        assert _placed(emu, run_id) == [
            ("entry", 1, "LONG", "BUY", "LIMIT", 39840.0, 0.003, "GTX"),
            ("entry", 1, "SHORT", "SELL", "LIMIT", 40160.0, 0.003, "GTX"),
            ("entry", 2, "LONG", "BUY", "LIMIT", 39680.0, 0.004, "GTX"),
            ("entry", 2, "SHORT", "SELL", "LIMIT", 40320.0, 0.004, "GTX"),
            ("entry", 3, "LONG", "BUY", "LIMIT", 39520.0, 0.006, "GTX"),
            ("entry", 3, "SHORT", "SELL", "LIMIT", 40480.0, 0.006, "GTX"),
        ]
        emu.state.clear_log()
        bar()  # the dip fills long rungs 1 and 2 at their limits (maker)
        fills = sorted((t.price, t.qty, t.maker) for t in emu.state.account.trades)
        assert fills == [(39680.0, 0.004, True), (39840.0, 0.003, True)]
        # each lot gets a TP (reduce-only limit, GTC) and an SL (stop-market); no other order moves:
        #   lot 1 e=39840: TP ceil_tick(39840*1.012)=40318.1 (40318.08), SL floor_tick(39840*0.976)=38883.8
        #   lot 2 e=39680: TP ceil_tick(39680*1.012)=40156.2 (40156.16), SL floor_tick(39680*0.976)=38727.6
        assert sorted(_placed(emu, run_id)) == sorted(
            [
                ("tp", 1, "LONG", "SELL", "LIMIT", 40318.1, 0.003, "GTC"),
                ("sl", 1, "LONG", "SELL", "STOP_MARKET", 38883.8, 0.003, ""),
                ("tp", 2, "LONG", "SELL", "LIMIT", 40156.2, 0.004, "GTC"),
                ("sl", 2, "LONG", "SELL", "STOP_MARKET", 38727.6, 0.004, ""),
            ]
        )
        assert [q for q in emu.state.requests() if q.method == "DELETE"] == []  # the rest is kept
        resting = {
            (parse_client_id(o.client_id).kind, parse_client_id(o.client_id).side,
             parse_client_id(o.client_id).level): (o.price or o.stop_price, o.qty)
            for o in emu.state.account.open_orders(SYMBOL_ID)
        }  # fmt: skip
        assert resting == {
            ("entry", 0, 3): (39520.0, 0.006),
            ("entry", 1, 1): (40160.0, 0.003),
            ("entry", 1, 2): (40320.0, 0.004),
            ("entry", 1, 3): (40480.0, 0.006),
            ("tp", 0, 1): (40318.1, 0.003),
            ("sl", 0, 1): (38883.8, 0.003),
            ("tp", 0, 2): (40156.2, 0.004),
            ("sl", 0, 2): (38727.6, 0.004),
        }
        assert bridge.s.position() == (0.007, 0.0)


def test_flatten_through_the_ops_api_closes_everything_on_the_exchange(tmp_path: Path, monkeypatch) -> None:
    import httpx

    emu = _ladder_emulator(FLAT_BAR, DIP_TWO, FLAT_BAR, FLAT_BAR)
    with _on_emulator(emu, monkeypatch) as prep:
        ready, ctx = prep(tmp_path, RUNGS, ["rate_limits.orders_per_second=10"])
        ready.require()
        bridge, feed = ctx.bridge, ctx.feed
        acct = emu.state.account

        def bar() -> None:
            emu.state.advance_bar(SYMBOL_ID)
            for b in feed.poll():
                bridge.on_bar(b)

        bar()
        bar()  # long rungs 1 and 2 filled (see the test above): 0.007 long, 4 entries + 4 exits rest
        assert acct.position(SYMBOL_ID, "LONG")[0] == pytest.approx(0.007)
        books = sorted(o.client_id for o in acct.open_orders(SYMBOL_ID))
        assert len(books) == 8
        emu.state.clear_log()

        wrong = httpx.post(f"{ctx.ops_url}/flatten", headers={"Authorization": "Bearer nope"}, timeout=5)
        missing = httpx.post(f"{ctx.ops_url}/flatten", timeout=5)
        assert (wrong.status_code, missing.status_code) == (401, 401)
        assert bridge.apply_commands() == []  # nothing was queued
        assert acct.position(SYMBOL_ID, "LONG")[0] == pytest.approx(0.007)
        assert sorted(o.client_id for o in acct.open_orders(SYMBOL_ID)) == books
        assert emu.state.requests() == []  # the exchange saw nothing

        ok = httpx.post(f"{ctx.ops_url}/flatten", headers={"Authorization": "Bearer tok"}, timeout=5)
        assert ok.status_code == 202 and ok.json()["kind"] == "flatten"
        assert acct.position(SYMBOL_ID, "LONG")[0] == pytest.approx(0.007)  # queued, not applied yet
        done = bridge.apply_commands()  # the bar loop applies it (between bars)
        assert [(d["kind"], d["ok"]) for d in done] == [("flatten", True)]
        assert acct.position(SYMBOL_ID, "LONG")[0] == 0.0
        assert acct.position(SYMBOL_ID, "SHORT")[0] == 0.0
        assert acct.open_orders(SYMBOL_ID) == []
        markets = [q.query for q in emu.state.requests("/fapi/v1/order") if q.method == "POST"]
        assert [(m["side"], m["positionSide"], m["type"], float(m["quantity"])) for m in markets] == [
            ("SELL", "LONG", "MARKET", 0.007)
        ]
        assert bridge.s.position() == (0.0, 0.0)  # the engine booked the exchange's close
        status = httpx.get(f"{ctx.ops_url}/status", headers={"Authorization": "Bearer tok"}, timeout=5).json()
        assert status["position_long"] == 0.0 and status["open_orders"] == 0
        assert "operator pause" in status["pause_reasons"]
        emu.state.clear_log()
        bar()  # paused after a flatten: nothing new goes out
        assert [q for q in emu.state.requests() if q.method == "POST"] == []
        assert acct.open_orders(SYMBOL_ID) == []


def test_live_status_and_metrics_report_the_exchange_account_not_the_engine_model(
    tmp_path: Path, monkeypatch
) -> None:
    import httpx

    # the exchange account holds 12,345 USDT; backtest.initial_balance says 10,000
    # a settlement (1 bp, mark 40,000) inside the dip bar: paid at the next bar's open
    emu = _ladder_emulator(FLAT_BAR, DIP_TWO, FLAT_BAR, wallet=12_345.0, settle_ms=T0 + 31 * MIN + 5)
    with _on_emulator(emu, monkeypatch) as prep:
        ready, ctx = prep(tmp_path, RUNGS, ["rate_limits.orders_per_second=10"])
        ready.require()
        bridge, feed = ctx.bridge, ctx.feed
        auth = {"Authorization": "Bearer tok"}
        status = httpx.get(f"{ctx.ops_url}/status", headers=auth, timeout=5).json()
        assert status["equity"] == 12_345.0 and status["margin_ratio"] == 0.0  # read at start-up, flat
        # someone else's order on the symbol: not counted as ours, never touched
        from gridctl.live_bridge.gateway import OrderRequest

        foreign = OrderRequest("manual-1", "LONG", "buy", "limit", 0.003, 39000.0, post_only=True)
        bridge.gw.place(SYMBOL_ID + "-PERP", foreign)
        for _ in range(2):
            emu.state.advance_bar(SYMBOL_ID)
            for b in feed.poll():
                bridge.on_bar(b)
        # after the dip: long 0.003 @ 39840 + 0.004 @ 39680 (maker fees 0.023904 + 0.031744), mark 39700
        fees = 39840 * 0.003 * 0.0002 + 39680 * 0.004 * 0.0002
        upnl = 0.003 * (39700 - 39840) + 0.004 * (39700 - 39680)  # -0.34
        maint = 0.007 * 39700 * 0.004  # the emulator's maintenance rate 0.4 %
        status = httpx.get(f"{ctx.ops_url}/status", headers=auth, timeout=5).json()
        assert (status["open_orders"], status["foreign_open_orders"]) == (8, 1)  # 4 entries + 2 lots' TP/SL
        assert "manual-1" not in {o["client_id"] for o in status["orders"]}
        assert any(o.client_id == "manual-1" for o in emu.state.account.open_orders(SYMBOL_ID))
        assert status["wallet_balance"] == pytest.approx(12_345.0 - fees, abs=1e-9)
        assert status["unrealized_pnl"] == pytest.approx(upnl, abs=1e-9)
        assert status["equity"] == pytest.approx(12_345.0 - fees + upnl, abs=1e-9)
        assert status["margin_ratio"] == pytest.approx(maint / (12_345.0 - fees + upnl), rel=1e-12)
        # the engine started from the account's wallet (not backtest.initial_balance = 10,000)
        assert status["engine"]["equity"] == pytest.approx(12_345.0 - fees + upnl, abs=1e-6)
        text = httpx.get(f"{ctx.ops_url}/metrics", timeout=5).text
        line = next(x for x in text.splitlines() if x.startswith("gridctl_equity{"))
        assert float(line.split()[-1]) == pytest.approx(12_345.0 - fees + upnl, abs=1e-6)
        assert status["funding_income"] == 0.0  # no settlement since the start yet
        emu.state.advance_bar(SYMBOL_ID)
        for b in feed.poll():
            bridge.on_bar(b)
        # long 0.007 through the settlement: -0.007 * 40,000 * 0.0001 = -0.028, on the account (income
        # history) and in the engine's own booking alike
        status = httpx.get(f"{ctx.ops_url}/status", headers=auth, timeout=5).json()
        assert status["funding_income"] == pytest.approx(-0.028, abs=1e-12)
        assert status["engine"]["funding_income"] == pytest.approx(-0.028, abs=1e-12)
        text = httpx.get(f"{ctx.ops_url}/metrics", timeout=5).text
        line = next(x for x in text.splitlines() if x.startswith("gridctl_funding_income{"))
        assert float(line.split()[-1]) == pytest.approx(-0.028, abs=1e-12)


def test_a_frozen_premium_index_pauses_entries_until_it_updates(tmp_path: Path, monkeypatch) -> None:
    emu = _ladder_emulator(*[FLAT_BAR] * 8)
    with _on_emulator(emu, monkeypatch) as prep:
        ready, ctx = prep(tmp_path, RUNGS, ["rate_limits.orders_per_second=10"])
        ready.require()
        bridge, feed = ctx.bridge, ctx.feed
        acct = emu.state.account

        def bar() -> None:
            emu.state.advance_bar(SYMBOL_ID)
            for b in feed.poll():
                bridge.on_bar(b)

        def entries() -> int:
            return sum(parse_client_id(o.client_id).kind == "entry" for o in acct.open_orders(SYMBOL_ID))

        bar()
        assert entries() == 6 and bridge.entries_allowed
        acct.freeze_premium()  # premiumIndex stops updating: its time stays at this bar's close
        bar()
        bar()  # 120 s old: at the limit (2 bars), still trusted
        assert bridge.entries_allowed and entries() == 6
        bar()  # 180 s old: stale, entries pause and are cancelled on the exchange
        assert (
            bridge.fail_reasons["funding"] == "premium index stale: its snapshot is 180 s old (limit 120 s)"
        )
        assert entries() == 0
        acct.freeze_premium(False)
        bar()  # updated again: entries come back
        assert "funding" not in bridge.fail_reasons and entries() == 6


def test_a_post_only_rejection_storm_trips_the_breaker_and_it_recovers_after_cooldown(
    tmp_path: Path, monkeypatch
) -> None:
    from gridctl.engine.state import S_CB_ACTIVE

    emu = _ladder_emulator(*[FLAT_BAR] * 14)
    with _on_emulator(emu, monkeypatch) as prep:
        # breaker defaults: 10 errors in 60 s trip it, 300 s cooldown (5 bars of 1m)
        ready, ctx = prep(tmp_path, RUNGS, ["rate_limits.orders_per_second=10"])
        ready.require()
        bridge = ctx.bridge

        def our_entries() -> list:
            return _ours(emu, bridge, "entry")

        # the storm: every new order is refused as post-only (-5022), first attempts and retries alike
        emu.state.inject(
            "reject", "/fapi/v1/order", times=10_000, code=-5022, msg="Post Only order will be rejected."
        )
        _advance(emu, ctx)  # 6 entries x (1 + 3 retries) = 24 rejections
        assert bridge.errors["post_only"] >= 10 and our_entries() == []
        _advance(emu, ctx)  # the gates see >= 10 errors in the window: tripped, entries blocked
        assert bridge.s.state[S_CB_ACTIVE] == 1.0 and bridge.snapshot()["circuit_breaker_active"] == 1.0
        with emu.state.lock:
            emu.state.faults.clear()  # the storm is over
        _advance(emu, ctx)
        assert bridge.s.state[S_CB_ACTIVE] == 1.0 and our_entries() == []  # cooling down: nothing sent
        waited = 0
        while bridge.s.state[S_CB_ACTIVE] == 1.0 and waited < 8:
            _advance(emu, ctx)
            waited += 1
        assert bridge.s.state[S_CB_ACTIVE] == 0.0 and waited <= 5, waited  # back after the cooldown
        _advance(emu, ctx)
        assert len(our_entries()) == 6  # the ladder rests again, once per rung
        _check_books(ctx, emu)


def test_a_connection_lost_in_the_middle_of_a_diff_neither_loses_nor_duplicates_an_order(
    tmp_path: Path, monkeypatch
) -> None:
    emu = _ladder_emulator(*[FLAT_BAR] * 6)
    with _on_emulator(emu, monkeypatch) as prep:
        ready, ctx = prep(tmp_path, RUNGS, ["rate_limits.orders_per_second=10"])
        ready.require()
        bridge = ctx.bridge

        # the third order of the first diff reaches the exchange, the answer is lost (connection dropped)
        emu.state.inject("drop", "/fapi/v1/order", skip=2, times=1)
        _advance(emu, ctx)
        assert bridge.errors, "the lost answer is counted as an error"
        for _ in range(3):
            _advance(emu, ctx)
            _check_books(ctx, emu)  # one order per wanted rung: the dropped one is not sent again
        keys = [(p.side, p.level, p.kind) for p in (parse_client_id(o.client_id) for o in _ours(emu, bridge))]
        assert len(keys) == len(set(keys)) == 6


def test_a_fill_between_bar_closes_gets_its_exits_at_once(emu, tmp_path: Path) -> None:
    """An entry that fills mid-bar has its TP and SL on the exchange after the next fills poll, not
    only at the bar close; nothing else changes (entries are decided at the close)."""
    ready, ctx = _prepare(
        emu, tmp_path, ["grid.grid_levels_long=1", "grid.grid_levels_short=1", "grid.grid_step_bps=15"]
    )
    try:
        ready.require()
        bridge, feed = ctx.bridge, ctx.feed
        acct = emu.state.account

        def our_orders() -> dict[tuple[int, int, str], Any]:
            out = {}
            for o in acct.open_orders(SYMBOL_ID):
                p = parse_client_id(o.client_id)
                if p is not None and p.run_id == bridge.o.run_id:
                    out[(p.side, p.level, p.kind)] = o
            return out

        def cid(trade: Any) -> Any:
            order = acct.orders.get(trade.order_id)  # None: the market order of a triggered stop
            return None if order is None else parse_client_id(order.client_id)

        assert bridge.protect_fills() == 0  # no fills yet: nothing sent
        protected = 0
        for _ in range(240):
            n_trades = len(acct.trades)
            emu.state.advance_bar(SYMBOL_ID)  # the exchange trades through the bar
            new = acct.trades[n_trades:]
            before = our_orders()
            if new and all(cid(t) is not None and cid(t).kind == "entry" for t in new):
                # The bar has not closed for the bridge yet: the fills poll books them and sends exits.
                assert bridge.protect_fills() == len({t.order_id for t in new})
                after = our_orders()
                for t in new:
                    p = cid(t)
                    assert (p.side, p.level, "tp") in after and (p.side, p.level, "sl") in after, after
                    assert (p.side, p.level, "tp") not in before
                # Only exits were added: every other order stayed as it was.
                assert {k for k in after if k[2] == "entry"} == {k for k in before if k[2] == "entry"} - {
                    (cid(t).side, cid(t).level, "entry") for t in new
                }
                assert bridge.s.position() != (0.0, 0.0)
                protected += 1
            for bar in feed.poll():
                bridge.on_bar(bar)
            _check_books(ctx, emu)  # and the close's own diff agrees with what went out early
            if protected:
                break
        assert protected, "the scenario must fill an entry mid-bar"
        booked = ctx.journal.db.execute("SELECT COUNT(*) FROM xfills").fetchone()[0]
        assert booked == len(acct.trades)  # each exchange trade booked once, early or at the close
    finally:
        ctx.close()
