"""What the emulator models so the live bridge's fault paths can be reached without hand-built bars:
a price path inside each bar (finer bars traded one step at a time), -2021 against the price inside the
bar, partial fills as a fill-model knob, MAX_NUM_ORDERS / MAX_NUM_ALGO_ORDERS, and post-only against
the best bid / ask. Expected values by hand (BTCUSDT tick 0.1, step 0.001)."""

from __future__ import annotations

from typing import Any

import polars as pl
from test_emulator_private import call, order, trades

from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
from emulator.private import bars_from_path
from live_helpers import MIN, T0
from live_helpers import scenario_state as make_state

SUB = 10_000  # 10 s finer bars


def _path_state(*fine: tuple[float, float, float, float]) -> EmulatorState:
    """Five flat 1m bars at 40000 (history), then one 1m bar made of the six finer bars ``fine``."""
    assert len(fine) == 6
    rows = [(40000.0,) * 4] * 30 + list(fine)
    path = pl.DataFrame(
        {
            "ts": [T0 + i * SUB for i in range(len(rows))],
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
        }
    )
    state = EmulatorState(now_ms=T0 + 5 * MIN)
    state.replay("BTCUSDT", "1m", bars_from_path(path, "1m"), path=path)
    state.account.dual_side = True
    return state


DIP_IN_STEP_2 = (
    (40000.0, 40020.0, 39980.0, 40000.0),
    (40000.0, 40000.0, 39850.0, 39860.0),
    (39860.0, 39870.0, 39700.0, 39700.0),
    (39700.0, 39750.0, 39700.0, 39740.0),
    (39740.0, 39760.0, 39730.0, 39750.0),
    (39750.0, 39800.0, 39750.0, 39790.0),
)


def _closed_klines(emu: BinanceUsdmEmulator) -> list[Any]:
    status, rows = call(emu, "GET", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 10})
    assert status == 200 and isinstance(rows, list)
    return rows


def test_a_bar_trades_along_its_finer_bars_one_step_at_a_time() -> None:
    with BinanceUsdmEmulator(_path_state(*DIP_IN_STEP_2)) as emu:
        state = emu.state
        order(emu, "buy", "BUY", "LONG", 39900.0)
        assert state.advance_step("BTCUSDT") is False  # 40000 -> 40020 -> 39980 -> 40000: no fill
        assert trades(emu) == [] and state.server_time() == T0 + 5 * MIN + SUB
        assert len(_closed_klines(emu)) == 5  # the bar is not closed yet
        assert state.advance_step("BTCUSDT") is False  # down to 39850 through the buy at 39900
        assert trades(emu) == [("buy", "BUY", 39900.0, True)]
        assert state.server_time() == T0 + 5 * MIN + 2 * SUB
        _, prem = call(emu, "GET", "/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"})
        assert prem["markPrice"] == "39860.0"  # type: ignore[index]  # follows the path, not the last close
        closed = [state.advance_step("BTCUSDT") for _ in range(4)]
        assert closed == [False, False, False, True]  # the sixth finer bar closes the bar
        assert state.server_time() == T0 + 6 * MIN
        last = _closed_klines(emu)[-1]
        assert [float(x) for x in last[1:5]] == [40000.0, 40020.0, 39700.0, 39790.0]  # its finer bars'


def test_advance_bar_trades_what_is_left_of_the_bar() -> None:
    with BinanceUsdmEmulator(_path_state(*DIP_IN_STEP_2)) as emu:
        emu.state.advance_step("BTCUSDT")
        order(emu, "buy", "BUY", "LONG", 39800.0)
        assert emu.state.advance_bar("BTCUSDT") == (T0 + 5 * MIN, 40000.0, 40020.0, 39700.0, 39790.0)
        assert trades(emu) == [("buy", "BUY", 39800.0, True)]
        assert emu.state.server_time() == T0 + 6 * MIN


def test_a_stop_the_price_inside_the_bar_already_crossed_is_refused_2021() -> None:
    with BinanceUsdmEmulator(_path_state(*DIP_IN_STEP_2)) as emu:
        order(emu, "buy", "BUY", "LONG", 39900.0)
        assert order(emu, "sl0", "SELL", "LONG", 39800.0, kind="STOP_MARKET")[0] == 200  # last 40000
        emu.state.advance_step("BTCUSDT")
        emu.state.advance_step("BTCUSDT")
        emu.state.advance_step("BTCUSDT")  # the price is 39700 now, the bar's last close was 40000
        status, body = order(emu, "sl", "SELL", "LONG", 39800.0, kind="STOP_MARKET")
        assert status == 400 and body["code"] == -2021, body  # type: ignore[index]
        assert order(emu, "sl2", "SELL", "LONG", 39600.0, kind="STOP_MARKET")[0] == 200


def test_partial_fill_knob_fills_half_of_what_is_left_each_step() -> None:
    # 0.01 at 39900; each bar trades through it: 0.005, then floor(0.0025) = 0.002, then 0.001 ...
    dip = (40000.0, 40000.0, 39800.0, 40000.0)
    state = make_state(dip, dip, dip)
    state.account.fill_model.partial_fill = 0.5
    with BinanceUsdmEmulator(state) as emu:
        order(emu, "buy", "BUY", "LONG", 39900.0)
        filled = []
        for _ in range(3):
            emu.advance_bar("BTCUSDT")
            filled.append(round(emu.state.account.position("BTCUSDT", "LONG")[0], 9))
        assert filled == [0.005, 0.007, 0.008]
        assert [o.remaining for o in emu.state.account.open_orders("BTCUSDT")] == [0.002]


def _set_limit(state: EmulatorState, name: str, limit: int) -> None:
    for m in state.markets:
        for f in m["filters"]:
            if f["filterType"] == name:
                f["limit"] = limit


def test_max_num_orders_and_max_num_algo_orders_are_enforced() -> None:
    state = make_state((40000.0, 40010.0, 39990.0, 40000.0))
    _set_limit(state, "MAX_NUM_ORDERS", 2)
    _set_limit(state, "MAX_NUM_ALGO_ORDERS", 1)
    state.account.position("BTCUSDT", "LONG")[:] = [0.02, 40000.0]
    with BinanceUsdmEmulator(state) as emu:
        assert order(emu, "a", "BUY", "LONG", 39000.0)[0] == 200
        assert order(emu, "b", "BUY", "LONG", 39100.0)[0] == 200
        status, body = order(emu, "c", "BUY", "LONG", 39200.0)
        assert (status, body["code"], body["msg"]) == (400, -2025, "Reach max open order limit.")  # type: ignore[index]
        # a market order never rests: not limited
        market = {"symbol": "BTCUSDT", "side": "SELL", "positionSide": "LONG", "type": "MARKET"}
        assert call(emu, "POST", "/fapi/v1/order", market | {"quantity": 0.001})[0] == 200
        assert (
            call(emu, "DELETE", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "a"})[0] == 200
        )
        assert order(emu, "c", "BUY", "LONG", 39200.0)[0] == 200  # a cancel frees a place
        assert order(emu, "s1", "SELL", "LONG", 39000.0, kind="STOP_MARKET")[0] == 200
        status, body = order(emu, "s2", "SELL", "LONG", 38000.0, kind="STOP_MARKET")
        assert (status, body["code"], body["msg"]) == (400, -4045, "Reach max stop order limit.")  # type: ignore[index]


def test_post_only_meets_the_best_bid_and_ask_not_the_last_trade() -> None:
    # down-tick (40000 -> 39950): the last trade hit the bid, bid 39950.0, ask 39950.1
    down = make_state((40000.0, 40000.0, 39950.0, 39950.0))
    down.advance_bar("BTCUSDT")
    with BinanceUsdmEmulator(down) as emu:
        assert order(emu, "b1", "BUY", "LONG", 39950.0)[0] == 200  # joins the bid: maker
        assert order(emu, "b2", "BUY", "LONG", 39950.1)[1]["code"] == -5022  # type: ignore[index]
        assert order(emu, "s1", "SELL", "SHORT", 39950.0)[1]["code"] == -5022  # type: ignore[index]
        assert order(emu, "s2", "SELL", "SHORT", 39950.1)[0] == 200  # joins the ask
    # up-tick (39950 -> 40000): the last trade lifted the ask, bid 39999.9, ask 40000.0
    up = make_state((39950.0, 40000.0, 39950.0, 40000.0))
    up.advance_bar("BTCUSDT")
    with BinanceUsdmEmulator(up) as emu:
        assert order(emu, "b1", "BUY", "LONG", 40000.0)[1]["code"] == -5022  # type: ignore[index]
        assert order(emu, "b2", "BUY", "LONG", 39999.9)[0] == 200
        assert order(emu, "s1", "SELL", "SHORT", 40000.0)[0] == 200
    # the old rule, still selectable: a buy at the last trade is refused whatever the tick
    last = make_state((40000.0, 40000.0, 39950.0, 39950.0))
    last.account.fill_model.post_only_against = "last"
    last.advance_bar("BTCUSDT")
    with BinanceUsdmEmulator(last) as emu:
        assert order(emu, "b1", "BUY", "LONG", 39950.0)[1]["code"] == -5022  # type: ignore[index]
