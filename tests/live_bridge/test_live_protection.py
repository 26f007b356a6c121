"""The protection invariant of `--live` (DESIGN.md "Protection invariant"), fault by fault, against the
emulator through the real ccxt gateway, with the price moving *inside* each bar: every bar is replayed
from 10 s finer bars (``EmulatorState.advance_step``) and the bridge polls its fills after each of them,
as ``run_loop`` does between bar closes.

After every poll and every bar close each test checks, from the emulator's own positions and orders (not
the bridge's view), that 0 positions lack full stop coverage: the unfilled quantity of resting stops that
close a side is at least that side's position.

Ladder (hand-derived; the same as tests/live_bridge/test_live_bridge_emulator.py): 3 rungs a side, step 40 bps
(s = 0.004), base_qty 0.003, qty_scale 1.5, tp_steps 3, sl_steps 6, BTCUSDT tick 0.1, step 0.001.
Centre 40000 (the first live bar's close):
  long rungs  39840.0 / 39680.0 / 39520.0, qty 0.003 / 0.004 / 0.006
  long SL     floor_tick(e (1 - 0.024)): 38883.8 / 38727.6 / 38571.5
  long TP     ceil_tick(e (1 + 0.012)):  40318.1 / 40156.2 / 39994.3
  short rung 1 40160.0 qty 0.003
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from gridctl.configs.loader import load_strategy
from gridctl.engine.enums import FillKind
from gridctl.engine.records import C_FILLS
from gridctl.engine.state import S_CB_ACTIVE, S_HALTED
from gridctl.live_bridge.orders import parse_client_id

from live_helpers import EMU_ENV, MIN, SYMBOL_ID, T0, emulator_venue, prepare_live_on_emulator

HISTORY = 30  # flat bars at 40000 already closed: the default regime warm-up
SUB_MS = 10_000  # finer bars of 10 s: six per 1m bar
RUNGS = ["grid.grid_levels_long=3", "grid.grid_levels_short=3", "grid.grid_step_bps=40",
         "grid.base_qty=0.003", "grid.qty_scale=1.5"]  # fmt: skip
FAST = ["rate_limits.orders_per_second=20"]  # a whole ladder and its exits go out in one poll
FLAT = (40000.0, 40000.0, 40000.0, 40000.0)
TAIL = 4  # flat bars at the last close after each scenario


def _path(
    *bars: list[tuple[float, float, float, float]] | tuple[float, float, float, float], tail: int = TAIL
) -> pl.DataFrame:
    """10 s finer bars from ``T0``: ``HISTORY`` flat bars, one flat live bar, then ``bars``; each entry is
    one 1m bar, either one (o, h, l, c) for its six finer bars (flat at its close after the first) or a
    list of six finer (o, h, l, c). ``tail`` flat bars at the last close follow."""
    rows: list[tuple[float, float, float, float]] = []
    last = bars[-1] if bars else FLAT
    c = last[-1][3] if isinstance(last, list) else last[3]
    for bar in [FLAT] * (HISTORY + 1) + list(bars) + [(c, c, c, c)] * tail:
        if isinstance(bar, list):
            assert len(bar) == MIN // SUB_MS
            rows.extend(bar)
        else:
            c = bar[3]
            rows.extend([bar] + [(c, c, c, c)] * (MIN // SUB_MS - 1))
    return pl.DataFrame(
        {
            "ts": [T0 + i * SUB_MS for i in range(len(rows))],
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
        }
    )


@pytest.fixture()
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)


def _set_filter(state: Any, kind: str, key: str, value: Any) -> None:
    for m in state.markets:
        for f in m["filters"]:
            if f["filterType"] == kind:
                f[key] = value


def _set_max_algo(state: Any, max_algo: int) -> None:
    _set_filter(state, "MAX_NUM_ALGO_ORDERS", "limit", max_algo)


def _emulator(*bars: Any, partial_fill: float = 1.0, tail: int = TAIL) -> Any:
    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
    from emulator.private import bars_from_path

    path = _path(*bars, tail=tail)
    state = EmulatorState()
    state.account.fill_model.partial_fill = partial_fill
    state.replay(SYMBOL_ID, "1m", bars_from_path(path, "1m"), start_ms=T0 + HISTORY * MIN, path=path)
    state.set_funding(
        SYMBOL_ID,
        pl.DataFrame(
            {
                "funding_time": [T0 - 3_600_000, T0 + 7 * 3_600_000],
                "rate": [0.0001, 0.0001],
                "mark_price": [40000.0, 40000.0],
            }
        ),
    )
    return BinanceUsdmEmulator(state).start()


def _prepare(
    emu: Any, journal: Path, venue_extra: list[str] | None = None, strategy_extra: list[str] | None = None
) -> tuple[Any, Any]:
    strategy = load_strategy("default", RUNGS + (strategy_extra or []))
    return prepare_live_on_emulator(strategy, emulator_venue(emu.url, FAST + (venue_extra or [])), journal)


@pytest.fixture()
def run(creds: None, tmp_path: Path) -> Iterator[Any]:
    """``run(*bars, **emulator knobs)`` -> (emulator, run context), both closed at the end."""
    opened: list[Any] = []

    def start(
        *bars: Any,
        max_algo: int | None = None,
        market_max: float | None = None,
        strategy: list[str] | None = None,
        **kw: Any,
    ) -> tuple[Any, Any]:
        emu = _emulator(*bars, **kw)
        opened.append(emu)
        extra = []
        if market_max is not None:  # MARKET_LOT_SIZE maxQty: the exchange's and the venue file's agree
            _set_filter(emu.state, "MARKET_LOT_SIZE", "maxQty", str(market_max))
            extra = [f"symbol_rules.BTC/USDT:USDT.market_max_qty={market_max}"]
        ready, ctx = _prepare(emu, tmp_path / "j.sqlite", extra, strategy)
        opened.append(ctx)
        ready.require()
        if max_algo is not None:  # the exchange lowers its limit after start-up (readiness compared them)
            _set_max_algo(emu.state, max_algo)
        return emu, ctx

    try:
        yield start
    finally:
        for thing in reversed(opened):
            (thing.close if hasattr(thing, "close") else thing.stop)()


# -- the invariant, from the emulator's side ---------------------------------------------------------------
def uncovered(emu: Any) -> dict[str, float]:
    """Position side -> position not covered by resting closing stops, on the emulator's own books."""
    acct = emu.state.account
    out = {}
    for side, close in (("LONG", "SELL"), ("SHORT", "BUY")):
        held = abs(acct.position(SYMBOL_ID, side)[0])
        cover = sum(
            o.remaining
            for o in acct.open_orders(SYMBOL_ID, algo=True)
            if o.type == "STOP_MARKET" and o.position_side == side and o.side == close
        )
        if held - cover > 1e-9:
            out[side] = round(held - cover, 9)
    return out


def exchange_position(emu: Any) -> tuple[float, float]:
    acct = emu.state.account
    return round(acct.position(SYMBOL_ID, "LONG")[0], 9), round(-acct.position(SYMBOL_ID, "SHORT")[0], 9)


def engine_matches_exchange(emu: Any, ctx: Any) -> None:
    s = ctx.bridge.s
    lq, sq = s.position()
    assert (round(lq, 9), round(sq, 9)) == exchange_position(emu), ctx.bridge.log[-6:]
    assert (round(s.lots_qty(0), 9), round(s.lots_qty(1), 9)) == exchange_position(emu)


def step(emu: Any, ctx: Any, polls: list[dict[str, float]]) -> bool:
    """The exchange trades one finer bar; the bridge then polls its fills (or runs the bar when it closed),
    as ``run_loop`` does. Records the emulator's uncovered positions after it; True at a bar close."""
    closed = emu.state.advance_step(SYMBOL_ID)
    if closed:
        for bar in ctx.feed.poll():
            ctx.bridge.on_bar(bar)
    else:
        ctx.bridge.protect_fills()
        ctx.bridge.publish()  # run_loop publishes after each poll
    polls.append(uncovered(emu))
    return closed


def bar(emu: Any, ctx: Any, polls: list[dict[str, float]]) -> None:
    while not step(emu, ctx, polls):
        pass


def ours(emu: Any, run_id: str, kind: str) -> dict[tuple[int, int], Any]:
    """(side, level) -> our open order of ``kind`` on the emulator."""
    out = {}
    for o in emu.state.account.open_orders(SYMBOL_ID):
        p = parse_client_id(o.client_id)
        if p is not None and p.run_id == run_id and p.kind == kind:
            out[(p.side, p.level)] = o
    return out


def market_closes(emu: Any, run_id: str) -> list[tuple[int, int, str, float, float]]:
    """(side, level, kind, price, qty) of our market orders' trades, oldest first (others' ignored)."""
    acct = emu.state.account
    by_id = {o.order_id: o for o in acct.orders.values()}
    out = []
    for t in acct.trades:
        o = by_id.get(t.order_id)
        if o is None or o.type != "MARKET":
            continue
        p = parse_client_id(o.client_id)
        if p is not None and p.run_id == run_id:
            out.append((p.side, p.level, p.kind, t.price, t.qty))
    return out


def status(ctx: Any) -> dict[str, Any]:
    r = httpx.get(f"{ctx.ops_url}/status", headers={"Authorization": "Bearer tok"}, timeout=5)
    assert r.status_code == 200
    return r.json()


def metrics(ctx: Any) -> str:
    return httpx.get(f"{ctx.ops_url}/metrics", headers={"Authorization": "Bearer tok"}, timeout=5).text


# -- faults ------------------------------------------------------------------------------------------------
def test_a_stop_that_would_trigger_at_once_closes_its_lot_at_market_with_the_reason(run) -> None:
    # First finer bar of the second live bar: 40000 -> 38800, closes at 38800. All three long rungs fill;
    # at the poll the price is below rung 1's stop (38883.8): Binance refuses it (-2021). Rungs 2 and 3's
    # stops (38727.6, 38571.5) are below the price and rest.
    emu, ctx = run((40000.0, 40000.0, 38800.0, 38800.0))
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)  # the flat live bar: the ladder rests
    assert len(ours(emu, run_id, "entry")) == 6
    step(emu, ctx, polls)  # the crash, then the fills poll
    # rung 1's exposure closed at market (the last trade, 38800; slippage 0), booked as its stop fill
    assert market_closes(emu, run_id) == [(0, 1, "sl", 38800.0, 0.003)]
    (close,) = [o for o in emu.state.account.orders.values() if o.type == "MARKET"]
    # on the position side, SELL LONG; hedge mode: reduceOnly not sent (Binance refuses it there)
    assert (close.position_side, close.side, close.reduce_only) == ("LONG", "SELL", False)
    assert exchange_position(emu) == (0.010, 0.0)
    stops = ours(emu, run_id, "sl")
    assert {k: (o.stop_price, o.qty) for k, o in stops.items()} == {
        (0, 2): (38727.6, 0.004),
        (0, 3): (38571.5, 0.006),
    }
    assert (0, 1) not in ours(emu, run_id, "tp")  # the closed lot's take-profit is cancelled
    engine_matches_exchange(emu, ctx)
    last = bridge.s.fills[int(bridge.s.cnt[C_FILLS]) - 1]  # the engine's ledger: rung 1's stop fill
    assert (int(last["kind"]), int(last["level"]), float(last["price"]), float(last["qty"])) == (
        int(FillKind.SL),
        1,
        38800.0,
        0.003,
    )
    # the reason is recorded: the refusal (with Binance's code) and the close
    snap = status(ctx)
    reasons = [e["reason"] for e in snap["protection"]["events"]]
    assert any("-2021" in r and "immediately trigger" in r.lower() for r in reasons), reasons
    assert any("LONG level 1 0.003" in r and "closed at market" in r for r in reasons), reasons
    assert any(line.startswith("protection:") and "-2021" in line for line in bridge.log)
    # one refusal is not a pattern: entries are not paused, the breaker stays closed
    assert bridge.entries_allowed and bridge.s.state[S_CB_ACTIVE] == 0.0
    for _ in range(5):
        step(emu, ctx, polls)
    bar(emu, ctx, polls)
    assert polls and all(p == {} for p in polls), polls  # 0 positions without full stop coverage, ever
    engine_matches_exchange(emu, ctx)


def test_repeated_refusals_open_the_breaker_and_pause_entries(run) -> None:
    # 40000 -> 38500: every long rung fills and the price is below all three stops at the poll: three
    # refusals (PROTECTION_FAIL_LIMIT) in one poll. Each lot is closed at market; the breaker opens.
    emu, ctx = run((40000.0, 40000.0, 38500.0, 38500.0), tail=10)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    step(emu, ctx, polls)
    assert market_closes(emu, run_id) == [
        (0, 1, "sl", 38500.0, 0.003),
        (0, 2, "sl", 38500.0, 0.004),
        (0, 3, "sl", 38500.0, 0.006),
    ]
    assert exchange_position(emu) == (0.0, 0.0)
    engine_matches_exchange(emu, ctx)
    assert bridge.s.state[S_CB_ACTIVE] == 1.0
    assert not bridge.entries_allowed and "protection" in bridge.fail_reasons
    assert ours(emu, run_id, "entry") == {}  # the resting short entries were cancelled at once
    snap = status(ctx)
    assert snap["circuit_breaker_active"] == 1.0 and snap["entries_paused"] == 1.0
    assert any(r.startswith("protection: 3 protection failures") for r in snap["pause_reasons"])
    text = metrics(ctx)
    assert 'gridctl_pause_reason{reason="protection"} 1.0' in text
    assert 'gridctl_entries_paused{reason=""} 1.0' in text
    assert 'gridctl_circuit_breaker_active{reason=""} 1.0' in text
    # while paused no entry goes out, bar closes included; the pause lifts with the breaker's cooldown
    # (circuit_breaker_cooldown_seconds 300: five 1m bars), at the first check without a gap after it
    tripped_at = emu.state.server_time()
    while "protection" in bridge.fail_reasons:
        assert ours(emu, run_id, "entry") == {}
        bar(emu, ctx, polls)
        assert emu.state.server_time() - tripped_at <= 6 * MIN, bridge.fail_reasons
    assert emu.state.server_time() - tripped_at >= 5 * MIN
    assert bridge.entries_allowed
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    assert ours(emu, run_id, "entry"), "the ladder rests again after the cooldown"
    assert status(ctx)["entries_paused"] == 0.0
    assert all(p == {} for p in polls), polls


def test_stops_over_the_exchange_limit_leave_no_lot_unprotected(run) -> None:
    # MAX_NUM_ALGO_ORDERS 1: of the three lots' stops only rung 1's rests; rungs 2 and 3's are refused
    # (-4045) at the poll and on the retry, so their lots are closed at market (39500) at that poll.
    emu, ctx = run((40000.0, 40000.0, 39500.0, 39500.0), max_algo=1)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    step(emu, ctx, polls)
    assert market_closes(emu, run_id) == [(0, 2, "sl", 39500.0, 0.004), (0, 3, "sl", 39500.0, 0.006)]
    assert {k: (o.stop_price, o.qty) for k, o in ours(emu, run_id, "sl").items()} == {
        (0, 1): (38883.8, 0.003)
    }
    assert exchange_position(emu) == (0.003, 0.0)
    engine_matches_exchange(emu, ctx)
    reasons = [e["reason"] for e in status(ctx)["protection"]["events"]]
    assert any("LONG 0.01 of 0.013 without a resting stop" in r for r in reasons), reasons
    assert bridge.errors["place"] >= 4 and "-4045" in " ".join(bridge.log)
    assert all(p == {} for p in polls), polls


def test_partial_fills_get_exits_sized_to_what_filled_and_the_engine_matches_the_exchange(run) -> None:
    # Every limit fill executes half of what is left (floored to the 0.001 step). Second live bar:
    # finer bar 1 dips to 39600: rung 1 fills 0.001 of 0.003 at 39840, rung 2 0.002 of 0.004 at 39680.
    # Finer bar 2 rises to 40200: rung 2's TP (40156.2, 0.002) fills 0.001; the short rung 1 (40160)
    # fills 0.001 of 0.003. Finer bar 3 rises to 40250: the rest of rung 2's TP (0.001) fills.
    dip_rise = [
        (40000.0, 40000.0, 39600.0, 39600.0),
        (39600.0, 40200.0, 39600.0, 40200.0),
        (40200.0, 40250.0, 40200.0, 40250.0),
        *[(40250.0, 40250.0, 40250.0, 40250.0)] * 3,
    ]
    emu, ctx = run(dip_rise, partial_fill=0.5)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    step(emu, ctx, polls)
    # the rest of each partly filled entry is cancelled; each lot is what filled, its exits sized to it
    entries = ours(emu, run_id, "entry")
    assert (0, 1) not in entries and (0, 2) not in entries and (0, 3) in entries
    sl = {k: (o.stop_price, o.remaining) for k, o in ours(emu, run_id, "sl").items()}
    tp = {k: (o.price, o.remaining) for k, o in ours(emu, run_id, "tp").items()}
    assert sl == {(0, 1): (38883.8, 0.001), (0, 2): (38727.6, 0.002)}
    assert tp == {(0, 1): (40318.1, 0.001), (0, 2): (40156.2, 0.002)}
    assert exchange_position(emu) == (0.003, 0.0)
    engine_matches_exchange(emu, ctx)
    step(emu, ctx, polls)
    # rung 2's TP half filled: its lot (0.001 left) and its stop shrink with it; the short lot is 0.001
    assert exchange_position(emu) == (0.002, 0.001)
    engine_matches_exchange(emu, ctx)
    sl = {k: (o.stop_price, o.remaining) for k, o in ours(emu, run_id, "sl").items()}
    assert sl == {(0, 1): (38883.8, 0.001), (0, 2): (38727.6, 0.001), (1, 1): (41123.9, 0.001)}
    assert ours(emu, run_id, "tp")[(0, 2)].remaining == pytest.approx(0.001)
    step(emu, ctx, polls)
    assert exchange_position(emu) == (0.001, 0.001)  # rung 2's lot closed by the rest of its TP
    engine_matches_exchange(emu, ctx)
    assert (0, 2) not in ours(emu, run_id, "sl")
    while not step(emu, ctx, polls):
        engine_matches_exchange(emu, ctx)
    engine_matches_exchange(emu, ctx)
    assert all(p == {} for p in polls), polls
    # every exchange trade of ours booked exactly once
    booked = ctx.journal.db.execute("SELECT COUNT(*), SUM(booked) FROM xfills").fetchone()
    assert booked == (len(emu.state.account.trades), len(emu.state.account.trades))


def test_a_restart_checks_protection_before_the_first_bar(run, tmp_path: Path) -> None:
    # The long rungs fill at 39500 and get their stops. The bridge stops; while it is down rung 1's stop
    # disappears from the exchange and the price falls to 38800, below that stop (38883.8) but above
    # rungs 2 and 3's. The restart's protection check re-places the stop, Binance refuses it (-2021),
    # and the lot is closed at market before the first bar.
    emu, ctx = run(
        (40000.0, 40000.0, 39500.0, 39500.0),
        (39500.0, 39500.0, 38800.0, 38800.0),
        FLAT,
    )
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    assert exchange_position(emu) == (0.013, 0.0)
    assert set(ours(emu, run_id, "sl")) == {(0, 1), (0, 2), (0, 3)}
    ctx.close()  # the bridge is down
    stop = ours(emu, run_id, "sl")[(0, 1)]
    stop.status = "CANCELED"  # gone from the exchange (an operator, a purge): rung 1 is naked
    closed = False
    while not closed:
        closed = emu.state.advance_step(SYMBOL_ID)
    assert uncovered(emu) == {"LONG": 0.003}
    ready, ctx2 = _prepare(emu, tmp_path / "j.sqlite")
    try:
        ready.require()
        # what `gridctl live` does once the reconcile committed, before its first bar (the journal is on
        # hold while reconciling, so the check that may send orders runs right after it)
        ctx2.bridge.resume_after_restart()
        assert uncovered(emu) == {}  # covered before any bar was processed
        assert market_closes(emu, run_id) == [(0, 1, "sl", 38800.0, 0.003)]
        assert exchange_position(emu) == (0.010, 0.0)
        engine_matches_exchange(emu, ctx2)
        row = dict((name, detail) for name, _ok, detail in ready.rows)["reconcile with the exchange"]
        assert "positions agree" in row
        reasons = [e["reason"] for e in ctx2.bridge.protection_events]
        assert any(e["where"] == "stop refused" for e in ctx2.bridge.protection_events), reasons
        assert ctx2.bridge.protect_checks == 1
        bar(emu, ctx2, polls)
        assert all(p == {} for p in polls), polls
    finally:
        ctx2.close()


def test_exposure_the_engine_holds_no_lot_for_is_guarded_with_the_reason(run) -> None:
    # A manual trade on the account (another client id): LONG 0.003 the engine never opened and has no
    # stop for. The next poll guards it as execution.unexplained_position says (the default, protect: a
    # stop for exactly 0.003; tests/live_bridge/test_live_journal.py covers flatten), books none of it and
    # refuses new entries under "reconcile" until the exchange's positions equal the engine's again.
    from test_emulator_private import call

    emu, ctx = run(FLAT)
    bridge, polls = ctx.bridge, []
    bar(emu, ctx, polls)
    manual = {"symbol": "BTCUSDT", "side": "BUY", "positionSide": "LONG", "type": "MARKET"}
    answer = call(emu, "POST", "/fapi/v1/order", manual | {"quantity": 0.003})
    assert answer[0] == 200, answer
    assert uncovered(emu) == {"LONG": 0.003}
    step(emu, ctx, polls)
    assert uncovered(emu) == {}, bridge.log[-12:]  # the guard stop covers the manual position
    assert exchange_position(emu) == (0.003, 0.0) and bridge.s.position() == (0.0, 0.0)
    reasons = [e["reason"] for e in status(ctx)["protection"]["events"]]
    assert "LONG 0.003 held on the exchange without an engine lot: guarded by a stop" in reasons
    assert "reconcile" in bridge.fail_reasons and not bridge.entries_allowed
    assert any(line.startswith("unexplained: LONG 0.003") for line in bridge.log), bridge.log[-8:]
    assert all(p == {} for p in polls), polls


def test_stop_coverage_counts_our_closing_stops_unfilled_quantity_only() -> None:
    from gridctl.live_bridge.gateway import OpenOrder
    from gridctl.live_bridge.orders import encode_client_id, stop_coverage

    def o(cid: str, pside: str, side: str, kind: str, qty: float, filled: float = 0.0) -> OpenOrder:
        return OpenOrder(cid, "1", pside, side, kind, qty, filled, None, 1.0, "open")  # type: ignore[arg-type]

    ours_sl = encode_client_id("r1", 0, 1, "sl", 1)
    orders = [
        o(ours_sl, "LONG", "sell", "stop_market", 0.004, 0.001),  # 0.003 left
        o(encode_client_id("r1", 0, 2, "sl", 2), "LONG", "sell", "stop_market", 0.002),
        o(encode_client_id("r1", 1, 1, "sl", 3), "SHORT", "buy", "stop_market", 0.005),
        o(encode_client_id("r1", 0, 1, "tp", 4), "LONG", "sell", "limit", 0.004),  # a limit: not a stop
        o(encode_client_id("r1", 1, 2, "sl", 5), "SHORT", "sell", "stop_market", 0.007),  # opens: no cover
        o(encode_client_id("r2", 0, 1, "sl", 6), "LONG", "sell", "stop_market", 0.009),  # another run
        o("manual-stop", "LONG", "sell", "stop_market", 0.009),  # not ours
    ]
    got = stop_coverage(orders, "r1")
    assert got == {"LONG": pytest.approx(0.005), "SHORT": pytest.approx(0.005)}


# -- a real market, partial fills throughout ----------------------------------------------------------------
@pytest.mark.parametrize("sl_steps", [6, 1])
def test_real_btc_with_partial_fills_never_leaves_a_position_uncovered(
    creds, tmp_path: Path, real_data, sl_steps: int
) -> None:
    """Real BTCUSDT 1m bars (2025-05-12, 00:00-11:40 UTC) are the price path inside 5m bars; every limit
    fill executes half of what is left. 4 rungs a side 6 bps apart; stops 6 steps away (the default) or
    1 step (6 bps: the market often runs through a stop before the poll that would place it, -2021).
    After every poll and bar close: 0 uncovered positions, and the engine's positions and lots equal the
    exchange's."""
    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
    from emulator.private import bars_from_path

    fine = pl.read_parquet(real_data / "binanceusdm_BTCUSDT_1m_2025-05_2025-06.parquet")
    t0 = 1_747_008_000_000  # 2025-05-12 00:00 UTC
    warm, live = 40, 100  # 5m bars of history (the regime warm-up), then live bars
    fine = fine.filter((pl.col("ts") >= t0) & (pl.col("ts") < t0 + (warm + live) * 5 * MIN))
    assert fine.height == (warm + live) * 5
    state = EmulatorState()
    state.account.fill_model.partial_fill = 0.5
    state.replay(SYMBOL_ID, "5m", bars_from_path(fine, "5m"), start_ms=t0 + warm * 5 * MIN, path=fine)
    state.set_funding(
        SYMBOL_ID,
        pl.DataFrame(
            {
                "funding_time": [t0 - 3_600_000, t0 + 8 * 3_600_000, t0 + 16 * 3_600_000],
                "rate": [0.0001] * 3,
                "mark_price": [104000.0] * 3,
            }
        ),
    )
    # rungs of 0.004 BTC (about 416 USDT): half of one is still 0.002 (the quote-sized default's 0.001 rungs
    # cannot be split at the 0.001 step, so nothing would stay partly filled)
    rungs = [
        "grid.grid_levels_long=4",
        "grid.grid_levels_short=4",
        "grid.grid_step_bps=6",
        "grid.base_qty=0.004",
        f"exit.sl_steps={sl_steps}",
        f"exit.tp_steps={min(3, 3 * sl_steps)}",
    ]
    with BinanceUsdmEmulator(state) as emu:
        strategy = load_strategy("default", rungs)
        venue = emulator_venue(emu.url, FAST)
        ready, ctx = prepare_live_on_emulator(strategy, venue, tmp_path / "j.sqlite", timeframe="5m")
        try:
            ready.require()
            polls: list[dict[str, float]] = []
            for _ in range(live * 5 - 1):  # every finer bar but the very last
                step(emu, ctx, polls)
                assert polls[-1] == {}, (len(polls), polls[-1], ctx.bridge.log[-8:])
                engine_matches_exchange(emu, ctx)
            acct = emu.state.account
            partial = [o for o in acct.orders.values() if 0 < o.filled < o.qty - 1e-12]
            kinds = {parse_client_id(o.client_id).kind for o in acct.orders.values() if o.filled > 0}
            print(
                f"\n{len(polls)} polls, {len(acct.trades)} trades, {len(partial)} orders left partly filled,"
                f" filled kinds {sorted(kinds)}, protection events {len(ctx.bridge.protection_events)}"
            )
            assert len(acct.trades) >= 30 and partial, "the market must trade, partly"  # 37 when written
            assert {"entry", "tp"} <= kinds
            reasons = [e["reason"] for e in ctx.bridge.protection_events]
            if sl_steps == 1:  # stops refused as crossed already, their lots closed at market
                assert any("-2021" in r for r in reasons) and any("closed at market" in r for r in reasons)
            else:  # no false alarm in ordinary trading
                assert reasons == []
            booked = ctx.journal.db.execute("SELECT COUNT(*), SUM(booked) FROM xfills").fetchone()
            assert booked == (len(acct.trades), len(acct.trades))  # every trade booked, exactly once
        finally:
            ctx.close()


def test_the_polling_loop_itself_protects_fills_between_bar_closes(run) -> None:
    """``run_loop`` (the production loop) drives the bridge; the market moves one finer bar right after
    each poll or bar close the loop makes (so the loop's own schedule decides when fills are seen). The
    crash of the first test happens inside a bar: the loop's fills poll closes rung 1 at market."""
    from gridctl.live_bridge.runner import run_loop

    emu, ctx = run((40000.0, 40000.0, 38800.0, 38800.0))
    bridge, polls = ctx.bridge, []
    kinds: list[str] = []
    protect, on_bar = bridge.protect_fills, bridge.on_bar

    def after(kind: str) -> None:
        kinds.append(kind)
        polls.append(uncovered(emu))
        emu.state.advance_step(SYMBOL_ID)  # the market moves on once the bridge has looked

    def polled() -> int:
        n = protect()
        after("poll")
        return n

    def closed(b: Any) -> None:
        on_bar(b)
        after("bar")

    bridge.protect_fills, bridge.on_bar = polled, closed  # type: ignore[method-assign]
    emu.state.advance_step(SYMBOL_ID)
    assert run_loop(ctx, max_bars=3, poll_s=0.01, fills_poll_s=0.001) == 3
    assert kinds.count("bar") == 3 and kinds.count("poll") >= 15  # five polls inside each bar
    assert market_closes(emu, bridge.o.run_id) == [(0, 1, "sl", 38800.0, 0.003)]
    assert any("-2021" in e["reason"] for e in bridge.protection_events)
    assert all(p == {} for p in polls), polls
    engine_matches_exchange(emu, ctx)


# -- exchange filters: MARKET_LOT_SIZE, PERCENT_PRICE, self-trade prevention -------------------------------
AUTH = {"Authorization": "Bearer tok"}
FILLED_LONG = (40000.0, 40000.0, 39500.0, 39500.0)  # all three long rungs fill: 0.013 long at the poll


def flatten_closes(emu: Any, run_id: str) -> list[tuple[float, float]]:
    return [(px, q) for _s, _l, kind, px, q in market_closes(emu, run_id) if kind == "flatten"]


def engine_flatten_rows(bridge: Any) -> list[tuple[float, float]]:
    rows = bridge.s.fills[: int(bridge.s.cnt[C_FILLS])]
    return [
        (float(r["price"]), round(float(r["qty"]), 9)) for r in rows if int(r["kind"]) == FillKind.FLATTEN
    ]


def test_a_flatten_over_the_market_lot_max_goes_out_in_chunks_booked_as_one_close(run) -> None:
    # MARKET_LOT_SIZE maxQty 0.005 on the exchange and in the venue file. 0.013 long (rungs at 39840, 39680,
    # 39520); /flatten closes it with market orders of 0.005, 0.005 and 0.003 (full chunks first, the
    # backtest's split), each at the last trade 39500; the engine closes the side once at their VWAP
    # (39500), its ledger split the same way.
    emu, ctx = run(FILLED_LONG, market_max=0.005)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    assert exchange_position(emu) == (0.013, 0.0)
    assert httpx.post(f"{ctx.ops_url}/flatten", headers=AUTH, timeout=5).status_code == 202
    bridge.apply_commands()
    assert flatten_closes(emu, run_id) == [(39500.0, 0.005), (39500.0, 0.005), (39500.0, 0.003)]
    assert exchange_position(emu) == (0.0, 0.0)
    engine_matches_exchange(emu, ctx)
    assert engine_flatten_rows(bridge) == [(39500.0, 0.005), (39500.0, 0.005), (39500.0, 0.003)]
    assert ours(emu, run_id, "sl") == {} and ours(emu, run_id, "tp") == {}  # the closed lots' exits
    assert ours(emu, run_id, "entry") == {}  # paused by the flatten
    assert all(p == {} for p in polls), polls


def test_a_kill_between_flatten_chunks_resumes_and_closes_exactly_what_is_left(run, tmp_path: Path) -> None:
    # As above, but the process dies right after the first chunk (0.005) went out: nothing after its
    # send is committed. The restart books that chunk's fill as the flatten's, not yet the side's close:
    # positions agree (engine 0.013 - 0.005 pending = exchange 0.008); the /flatten, journaled before its
    # 202, is applied again, reads 0.008 on the exchange and closes it in 0.005 + 0.003: 0.013 in all.
    emu, ctx = run(FILLED_LONG, market_max=0.005)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    assert httpx.post(f"{ctx.ops_url}/flatten", headers=AUTH, timeout=5).status_code == 202

    class Killed(Exception):  # noqa: N818 - stands for SIGKILL
        pass

    place = bridge._place

    def dies_after_the_first_chunk(req: Any, want: Any) -> bool:
        ok = place(req, want)
        if want.kind == "flatten":
            raise Killed  # where killpoint "sent" SIGKILLs: nothing after the send is committed
        return ok

    bridge._place = dies_after_the_first_chunk
    with pytest.raises(Killed):
        bridge.apply_commands()
    ctx.close()
    assert flatten_closes(emu, run_id) == [(39500.0, 0.005)]
    assert exchange_position(emu) == (0.008, 0.0)
    assert uncovered(emu) == {}  # the lots' stops (0.013) still rest over the 0.008 left
    ready, ctx2 = _prepare(emu, tmp_path / "j.sqlite", ["symbol_rules.BTC/USDT:USDT.market_max_qty=0.005"])
    try:
        ready.require()
        detail = {name: d for name, _ok, d in ready.rows}["reconcile with the exchange"]
        assert "positions agree" in detail, detail
        b2 = ctx2.bridge
        b2.resume_after_restart()
        assert b2.operator_paused and not b2.unexplained
        b2.apply_commands()  # the flatten, queued again
        assert flatten_closes(emu, run_id) == [(39500.0, 0.005), (39500.0, 0.005), (39500.0, 0.003)]
        assert exchange_position(emu) == (0.0, 0.0)
        engine_matches_exchange(emu, ctx2)
        assert engine_flatten_rows(b2) == [(39500.0, 0.005), (39500.0, 0.005), (39500.0, 0.003)]
        assert ours(emu, run_id, "sl") == {} and ours(emu, run_id, "tp") == {}
        assert b2.ops is not None and b2.ops.drain() == []  # settled, not queued again
        bar(emu, ctx2, polls)
        assert exchange_position(emu) == (0.0, 0.0) and ours(emu, run_id, "entry") == {}
        assert all(p == {} for p in polls), polls
    finally:
        ctx2.close()


def test_a_stop_close_over_the_market_lot_max_goes_out_in_chunks(run) -> None:
    # 40000 -> 38500 (as test_repeated_refusals_...): every stop is refused -2021 and each lot is closed
    # at market; rung 3's lot (0.006) is over the market lot max 0.005: 0.005 + 0.001, both booked as
    # parts of that lot's stop fill.
    emu, ctx = run((40000.0, 40000.0, 38500.0, 38500.0), market_max=0.005)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    step(emu, ctx, polls)
    assert market_closes(emu, run_id) == [
        (0, 1, "sl", 38500.0, 0.003),
        (0, 2, "sl", 38500.0, 0.004),
        (0, 3, "sl", 38500.0, 0.005),
        (0, 3, "sl", 38500.0, 0.001),
    ]
    assert exchange_position(emu) == (0.0, 0.0)
    engine_matches_exchange(emu, ctx)
    assert all(p == {} for p in polls), polls


def test_a_market_order_over_the_exchange_market_lot_is_refused_and_the_position_keeps_its_stops(run) -> None:
    # The exchange lowers MARKET_LOT_SIZE maxQty to 0.002 after start-up: the flatten's first 0.005 chunk
    # is refused (-4005). Nothing is closed, the lots keep their stops, the flatten stays queued (tried
    # again), entries stay held, and the refusal with Binance's code shows on /status.
    emu, ctx = run(FILLED_LONG, market_max=0.005)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    _set_filter(emu.state, "MARKET_LOT_SIZE", "maxQty", "0.002")
    assert httpx.post(f"{ctx.ops_url}/flatten", headers=AUTH, timeout=5).status_code == 202
    bridge.apply_commands()
    assert flatten_closes(emu, run_id) == []
    assert exchange_position(emu) == (0.013, 0.0) and uncovered(emu) == {}
    engine_matches_exchange(emu, ctx)
    snap = status(ctx)
    last = snap["rejections"][-1]
    assert (last["kind"], last["type"], last["qty"], last["code"]) == ("flatten", "market", 0.005, -4005)
    assert "Quantity greater than max quantity" in last["reason"]
    assert snap["entries_paused"] == 1.0 and "operator pause" in snap["pause_reasons"]
    assert any("not complete, retrying" in line for line in bridge.log)
    assert ours(emu, run_id, "entry") == {}
    assert all(p == {} for p in polls), polls


def test_limits_outside_the_percent_price_band_are_refused_and_placed_once_back_inside(run) -> None:
    # The mark runs 8 % above the last trade (an index lagging a fast drop): after the long rungs fill at
    # 39500 the mark is 42660, the band's floor 0.95 x 42660 = 40527, so every take-profit (SELL limits
    # 40318.1 / 40156.2 / 39994.3) is refused -4024. The stops (not limits) rest: no position without full
    # stop coverage. When the mark is back on the last trade the take-profits go out, once each.
    emu, ctx = run(FILLED_LONG)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    emu.state.account.mark_premium = 0.08
    step(emu, ctx, polls)
    assert exchange_position(emu) == (0.013, 0.0)
    assert ours(emu, run_id, "tp") == {}
    assert {k: o.qty for k, o in ours(emu, run_id, "sl").items()} == {
        (0, 1): 0.003,
        (0, 2): 0.004,
        (0, 3): 0.006,
    }
    rejected = [r for r in status(ctx)["rejections"] if r["kind"] == "tp"]
    assert {(r["price"], r["code"]) for r in rejected} == {
        (40318.1, -4024),
        (40156.2, -4024),
        (39994.3, -4024),
    }
    assert all("Limit price can't be lower than" in r["reason"] for r in rejected)
    emu.state.account.mark_premium = 0.0
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    tps = [o for o in emu.state.account.open_orders(SYMBOL_ID)
           if (p := parse_client_id(o.client_id)) and p.run_id == run_id and p.kind == "tp"]  # fmt: skip
    assert sorted((o.price, o.qty) for o in tps) == [(39994.3, 0.006), (40156.2, 0.004), (40318.1, 0.003)]
    engine_matches_exchange(emu, ctx)
    assert all(p == {} for p in polls), polls


def test_a_market_close_meeting_our_own_resting_limit_expires_the_limit_not_the_close(run) -> None:
    # An order of the account rests at the bid (a manual BUY LONG limit at 39500, the last trade after a
    # down-tick). /flatten's market SELL at 39500 would trade with it: the bridge sends EXPIRE_MAKER, so
    # the resting order is expired (EXPIRED_IN_MATCH) and the close fills whole; no self-trade happens.
    emu, ctx = run(FILLED_LONG)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    from emulator.private import Order

    acct = emu.state.account
    acct.last_up[SYMBOL_ID] = False
    now = emu.state.server_time()
    manual = Order(acct.new_id(), "manual-1", SYMBOL_ID, "BUY", "LONG", "LIMIT", 0.003, 39500.0, 0.0, "GTC",
                   False, now, update_time=now)  # fmt: skip
    acct.orders[manual.order_id] = manual
    trades_before = len(acct.trades)
    assert httpx.post(f"{ctx.ops_url}/flatten", headers=AUTH, timeout=5).status_code == 202
    bridge.apply_commands()
    assert manual.status == "EXPIRED_IN_MATCH" and manual.filled == 0.0
    assert flatten_closes(emu, run_id) == [(39500.0, 0.013)]
    assert len(acct.trades) == trades_before + 1  # the close's trade only: no trade with our own order
    (close,) = [o for o in acct.orders.values() if o.type == "MARKET"]
    assert close.stp == "EXPIRE_MAKER"
    assert exchange_position(emu) == (0.0, 0.0)
    engine_matches_exchange(emu, ctx)
    assert all(p == {} for p in polls), polls


def test_a_drawdown_halt_over_the_market_lot_max_closes_in_chunks_the_engine_does_not_book_again(run) -> None:
    # Rungs of 0.03 / 0.045 / 0.067 (qty_scale 1.5 on the 0.001 step) fill at 39840 / 39680 / 39520 (0.142
    # long); stops 30 steps (12 %) away. The next bar closes at 38000: unrealized loss 0.03 x 1840 +
    # 0.045 x 1680 + 0.067 x 1520 = 232.6 on the 10000 account, 2.3 % > max_drawdown_pct 2: the engine
    # halts and books the flatten at that close; the bridge closes the exchange's 0.142 in market orders of
    # at most 0.05 (0.05, 0.05, 0.042), journaled not-booked: the engine's position stays 0, not below.
    emu, ctx = run(
        FILLED_LONG,
        (39500.0, 39500.0, 38000.0, 38000.0),
        market_max=0.05,
        strategy=["grid.base_qty=0.03", "exit.sl_steps=30", "risk_management.max_drawdown_pct=2"],
    )
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    assert exchange_position(emu) == (0.142, 0.0)
    bar(emu, ctx, polls)
    assert bridge.s.state[S_HALTED] == 1.0
    assert flatten_closes(emu, run_id) == [(38000.0, 0.05), (38000.0, 0.05), (38000.0, 0.042)]
    assert exchange_position(emu) == (0.0, 0.0)
    engine_matches_exchange(emu, ctx)
    assert [q for _px, q in engine_flatten_rows(bridge)] == [0.05, 0.05, 0.042]  # the engine's own split
    assert all(p == {} for p in polls), polls


def test_unexplained_exposure_closed_at_market_goes_out_within_the_market_lot(run) -> None:
    # execution.unexplained_position = flatten, market lot max 0.005: two manual market buys of 0.003
    # (0.006 LONG the engine never opened) are closed by the next poll as 0.005 + 0.001, booked by no lot.
    from test_emulator_private import call

    emu, ctx = run(FLAT, market_max=0.005, strategy=["execution.unexplained_position=flatten"])
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    manual = {"symbol": "BTCUSDT", "side": "BUY", "positionSide": "LONG", "type": "MARKET", "quantity": 0.003}
    assert call(emu, "POST", "/fapi/v1/order", manual)[0] == 200
    assert call(emu, "POST", "/fapi/v1/order", manual)[0] == 200
    step(emu, ctx, polls)
    guards = [(px, q) for _s, _l, kind, px, q in market_closes(emu, run_id) if kind == "guard"]
    assert guards == [(40000.0, 0.005), (40000.0, 0.001)]
    assert exchange_position(emu) == (0.0, 0.0) and bridge.s.position() == (0.0, 0.0)
    assert any("0.006 of 0.006 unexplained: closed at market" in line for line in bridge.log), bridge.log[-8:]


@pytest.mark.parametrize(
    ("market_max", "qty", "chunks"),
    [
        (0.005, 0.013, [0.005, 0.005, 0.003]),  # full chunks first, the rest last (the backtest's split)
        (0.005, 0.010, [0.005, 0.005]),
        (0.005, 0.004, [0.004]),
        (0.0055, 0.012, [0.005, 0.005, 0.002]),  # a maximum off the 0.001 step: its step below
        (120.0, 250.0, [120.0, 120.0, 10.0]),  # BTCUSDT's real MARKET_LOT_SIZE maxQty
    ],
)
def test_market_chunks_stay_within_the_market_lot_on_the_step_grid(
    market_max: float, qty: float, chunks: list[float]
) -> None:
    from gridctl.live_bridge.bridge import Bridge
    from gridctl.live_bridge.runner import bridge_options
    from gridctl.live_bridge.session import EngineSession

    strategy = load_strategy("default", RUNGS)
    venue = emulator_venue("http://127.0.0.1:9", [f"symbol_rules.BTC/USDT:USDT.market_max_qty={market_max}"])
    session = EngineSession(strategy, venue, "BTC/USDT:USDT", "1m")
    bridge = Bridge(session, bridge_options(strategy, "paper", "t1"))
    assert bridge.market_chunks(qty) == chunks


def test_a_market_close_the_exchange_ends_unfilled_is_not_taken_for_done(
    run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault: a bridge sending EXPIRE_TAKER (not what it sends: exchange.STP_MODE is EXPIRE_MAKER). The
    # flatten's market SELL would meet the account's resting BUY at 39500 and the exchange expires it,
    # unfilled (EXPIRED_IN_MATCH). The bridge does not take it for done: the lots keep their stops, the
    # flatten stays queued, and /status shows why. Sent again with EXPIRE_MAKER it closes the position.
    import time

    from emulator.private import Order

    emu, ctx = run(FILLED_LONG)
    bridge, polls = ctx.bridge, []
    run_id = bridge.o.run_id
    bar(emu, ctx, polls)
    bar(emu, ctx, polls)
    acct = emu.state.account
    acct.last_up[SYMBOL_ID] = False
    now = emu.state.server_time()
    manual = Order(acct.new_id(), "manual-1", SYMBOL_ID, "BUY", "LONG", "LIMIT", 0.003, 39500.0, 0.0, "GTC",
                   False, now, update_time=now)  # fmt: skip
    acct.orders[manual.order_id] = manual
    monkeypatch.setattr("gridctl.live_bridge.exchange.STP_MODE", "EXPIRE_TAKER")
    assert httpx.post(f"{ctx.ops_url}/flatten", headers=AUTH, timeout=5).status_code == 202
    bridge.apply_commands()
    (expired,) = [o for o in acct.orders.values() if o.type == "MARKET"]
    assert (expired.status, expired.filled, manual.status) == ("EXPIRED_IN_MATCH", 0.0, "NEW")
    assert exchange_position(emu) == (0.013, 0.0) and uncovered(emu) == {}
    engine_matches_exchange(emu, ctx)
    last = status(ctx)["rejections"][-1]
    assert (last["kind"], last["type"], last["qty"]) == ("flatten", "market", 0.013)
    assert last["reason"] == "order rejected (None): market order expired: 0.0 of 0.013 filled"
    assert bridge.journal is not None and bridge.journal.order(expired.client_id)["status"] == "canceled"
    monkeypatch.setattr("gridctl.live_bridge.exchange.STP_MODE", "EXPIRE_MAKER")
    time.sleep(0.6)  # bridge.FLATTEN_RETRY_S
    bridge.apply_commands()
    assert flatten_closes(emu, run_id) == [(39500.0, 0.013)]
    assert manual.status == "EXPIRED_IN_MATCH"
    assert exchange_position(emu) == (0.0, 0.0)
    engine_matches_exchange(emu, ctx)
    assert all(p == {} for p in polls), polls
