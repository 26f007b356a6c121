"""The emulator's private side answers like Binance USD-M and matches orders on the engine's intrabar path.

Raw signed HTTP requests (no ccxt) check the wire rules; the matching tests derive every expected fill
from DESIGN.md "Intrabar path" by hand (BTCUSDT tick 0.1, step 0.001; maker 0.02 %, taker 0.05 %).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlencode

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridctl.configs.loader import load_strategy, load_venue

from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
from emulator.private import FillModel
from live_helpers import FLAT, MIN, T0, serving
from live_helpers import scenario_state as make_state

DIP_UP = (40050.0, 40100.0, 39990.0, 40000.0)  # path 40050 -> 40100 -> 39990 -> 40000


@pytest.fixture
def emu() -> Iterator[BinanceUsdmEmulator]:
    with serving(make_state((40000.0, 40010.0, 39890.0, 39950.0))) as server:
        yield server


def call(emu: BinanceUsdmEmulator, method: str, path: str, params: dict[str, object] | None = None,
         key: str | None = None, secret: str | None = None, sign: bool = True,
         tamper: str = "") -> tuple[int, object]:  # fmt: skip
    """One request signed the way Binance documents: HMAC-SHA256 of the query string, hex."""
    acct = emu.state.account
    query = urlencode({**(params or {}), "timestamp": int(time.time() * 1000)})
    if sign:
        digest = hmac.new((secret or acct.api_secret).encode(), query.encode(), hashlib.sha256).hexdigest()
        query += tamper + "&signature=" + digest
    body = query.encode() if method == "POST" else None
    url = emu.url + path + ("" if method == "POST" else "?" + query)
    req = urllib.request.Request(url, data=body, method=method, headers={"X-MBX-APIKEY": key or acct.api_key})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def order(emu: BinanceUsdmEmulator, cid: str, side: str, pside: str, price: float, qty: float = 0.01,
          kind: str = "LIMIT", tif: str = "GTX") -> tuple[int, object]:  # fmt: skip
    params: dict[str, object] = {"symbol": "BTCUSDT", "side": side, "positionSide": pside, "quantity": qty}
    if kind == "LIMIT":
        params |= {"type": "LIMIT", "price": price, "timeInForce": tif, "newClientOrderId": cid}
        return call(emu, "POST", "/fapi/v1/order", params)
    params |= {"type": kind, "triggerPrice": price, "algoType": "CONDITIONAL", "clientAlgoId": cid}
    return call(emu, "POST", "/fapi/v1/algoOrder", params)


def trades(emu: BinanceUsdmEmulator) -> list[tuple[str, str, float, bool]]:
    status, rows = call(emu, "GET", "/fapi/v1/userTrades", {"symbol": "BTCUSDT"})
    assert status == 200 and isinstance(rows, list)
    names = {o.actual_order_id or o.order_id: o.client_id for o in emu.state.account.orders.values()}
    return [(names[r["orderId"]], r["side"], float(r["price"]), r["maker"]) for r in rows]


# -- wire rules -----------------------------------------------------------------------------------------
def test_signed_request_with_the_right_key_and_secret(emu: BinanceUsdmEmulator) -> None:
    status, body = call(emu, "GET", "/fapi/v1/positionSide/dual")
    assert (status, body) == (200, {"dualSidePosition": True})


def test_wrong_api_key_is_2014(emu: BinanceUsdmEmulator) -> None:
    assert call(emu, "GET", "/fapi/v1/openOrders", key="other") == (
        401, {"code": -2014, "msg": "API-key format invalid."},
    )  # fmt: skip


def test_signature_with_another_secret_or_over_other_params_is_1022(emu: BinanceUsdmEmulator) -> None:
    assert call(emu, "GET", "/fapi/v1/openOrders", secret="other")[1] == {
        "code": -1022, "msg": "Signature for this request is not valid.",
    }  # fmt: skip
    assert call(emu, "GET", "/fapi/v1/openOrders", tamper="&symbol=ETHUSDT")[1]["code"] == -1022  # type: ignore[index]


def test_unsigned_private_request_is_refused(emu: BinanceUsdmEmulator) -> None:
    status, body = call(emu, "GET", "/fapi/v1/openOrders", sign=False)
    assert status == 400 and body["code"] == -1102  # type: ignore[index]


def test_premium_index_is_public(emu: BinanceUsdmEmulator) -> None:
    with urllib.request.urlopen(emu.url + "/fapi/v1/premiumIndex?symbol=BTCUSDT", timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["markPrice"] == "40000.0" and body["time"] == T0 + 5 * MIN


def test_hedge_mode_rejects_reduce_only_and_a_missing_position_side(emu: BinanceUsdmEmulator) -> None:
    base = {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "price": 40100, "quantity": 0.01,
            "timeInForce": "GTC"}  # fmt: skip
    _, body = call(emu, "POST", "/fapi/v1/order", base | {"positionSide": "LONG", "reduceOnly": "true"})
    assert body["code"] == -1106  # type: ignore[index]
    _, body = call(emu, "POST", "/fapi/v1/order", base)
    assert body["code"] == -4061  # type: ignore[index]


def test_filters_are_enforced(emu: BinanceUsdmEmulator) -> None:
    assert order(emu, "a", "BUY", "LONG", 39900.05)[1]["code"] == -4014  # type: ignore[index]  # off the tick
    assert order(emu, "b", "BUY", "LONG", 39900.0, qty=0.0015)[1]["code"] == -1111  # type: ignore[index]
    assert order(emu, "c", "BUY", "LONG", 39900.0, qty=0.002)[1]["code"] == -4164  # type: ignore[index]  # < 100


def test_duplicate_client_id_is_refused_while_the_first_rests(emu: BinanceUsdmEmulator) -> None:
    assert order(emu, "a", "BUY", "LONG", 39900.0)[0] == 200
    assert order(emu, "a", "BUY", "LONG", 39800.0)[1]["code"] == -4116  # type: ignore[index]


def test_stop_that_would_trigger_at_once_is_2021(emu: BinanceUsdmEmulator) -> None:
    _, body = order(emu, "s", "SELL", "LONG", 40100.0, kind="STOP_MARKET")
    assert body["code"] == -2021  # type: ignore[index]


def test_user_trades_window_is_at_most_seven_days(emu: BinanceUsdmEmulator) -> None:
    params = {"symbol": "BTCUSDT", "startTime": T0, "endTime": T0 + 7 * 86_400_000 + 1}
    assert call(emu, "GET", "/fapi/v1/userTrades", params)[1]["code"] == -4181  # type: ignore[index]


def test_drop_fault_processes_the_order_but_loses_the_answer(emu: BinanceUsdmEmulator) -> None:
    emu.state.inject("drop", "/fapi/v1/order")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        order(emu, "lost", "BUY", "LONG", 39900.0)
    assert [o.client_id for o in emu.state.account.open_orders("BTCUSDT")] == ["lost"]


def test_position_mode_and_margin_type_cannot_change_with_exposure(emu: BinanceUsdmEmulator) -> None:
    order(emu, "a", "BUY", "LONG", 39900.0)
    assert call(emu, "POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "false"})[1]["code"] == -4068  # type: ignore[index]
    assert (
        call(emu, "POST", "/fapi/v1/marginType", {"symbol": "BTCUSDT", "marginType": "ISOLATED"})[1][  # type: ignore[index]
            "code"
        ]
        == -4048
    )
    assert call(emu, "POST", "/fapi/v1/leverage", {"symbol": "BTCUSDT", "leverage": 200})[1]["code"] == -4028  # type: ignore[index]


# -- matching on the intrabar path ----------------------------------------------------------------------
def test_fills_follow_the_path_high_first() -> None:
    # o 40000, h 40010 (10 up) <= l 39890 (110 down): path 40000 -> 40010 -> 39890 -> 39950
    with BinanceUsdmEmulator(make_state((40000.0, 40010.0, 39890.0, 39950.0))) as emu:
        order(emu, "buy", "BUY", "LONG", 39900.0)
        order(emu, "sell", "SELL", "SHORT", 40005.0)
        assert emu.advance_bar("BTCUSDT") == (T0 + 5 * MIN, 40000.0, 40010.0, 39890.0, 39950.0)
        assert emu.state.server_time() == T0 + 6 * MIN  # the bar's close
        assert trades(emu) == [("sell", "SELL", 40005.0, True), ("buy", "BUY", 39900.0, True)]


def test_fills_follow_the_path_low_first() -> None:
    # o 40000, h 40110 (110 up) > l 39990 (10 down): path 40000 -> 39990 -> 40110 -> 40050
    with BinanceUsdmEmulator(make_state((40000.0, 40110.0, 39990.0, 40050.0))) as emu:
        order(emu, "sell", "SELL", "SHORT", 40100.0)
        order(emu, "buy", "BUY", "LONG", 39995.0)
        emu.state.advance_bar("BTCUSDT")
        assert trades(emu) == [("buy", "BUY", 39995.0, True), ("sell", "SELL", 40100.0, True)]


def test_a_limit_needs_the_price_to_trade_through_unless_fill_on_touch() -> None:
    for touch, expected in ((False, []), (True, [("buy", "BUY", 39890.0, True)])):
        with BinanceUsdmEmulator(make_state((40000.0, 40010.0, 39890.0, 39950.0))) as emu:
            emu.state.account.fill_model.fill_on_touch = touch
            order(emu, "buy", "BUY", "LONG", 39890.0)  # exactly the low
            emu.state.advance_bar("BTCUSDT")
            assert trades(emu) == expected


def test_gap_fills_limits_at_their_price_and_stops_at_the_open_with_slippage() -> None:
    # bar 5 builds a long at 39900; bar 6 opens at 39700, below the stop at 39850 and a buy limit at 39800
    with BinanceUsdmEmulator(
        make_state((40000.0, 40010.0, 39890.0, 39950.0), (39700.0, 39750.0, 39650.0, 39700.0))
    ) as emu:
        emu.state.account.fill_model.slippage_bps = 10.0
        order(emu, "entry", "BUY", "LONG", 39900.0)
        emu.state.advance_bar("BTCUSDT")
        order(emu, "stop", "SELL", "LONG", 39850.0, kind="STOP_MARKET")
        order(emu, "entry2", "BUY", "SHORT", 39800.0, tif="GTC")  # a short-side buy with nothing to close
        order(emu, "entry3", "BUY", "LONG", 39800.0)
        emu.state.advance_bar("BTCUSDT")
        got = trades(emu)
    # ties at the open: the stop (SL) first, then the entry; the stop fills at the open moved down 10 bps
    assert got[1] == ("stop", "SELL", pytest.approx(39700.0 * (1 - 0.001)), False)
    assert got[2] == ("entry3", "BUY", 39800.0, True)
    assert len(got) == 3  # the SHORT-side buy closes nothing: it was refused at placement (-2022)


def test_post_only_against_the_next_open_matches_the_backtest() -> None:
    # last close 40000, next open 39890: a buy at 39950 rests on a real book but crosses the next open
    for mode, accepted in (("last", True), ("next_open", False)):
        with BinanceUsdmEmulator(make_state((39890.0, 39900.0, 39800.0, 39850.0))) as emu:
            emu.state.account.fill_model.post_only_against = mode
            status, body = order(emu, "b", "BUY", "LONG", 39950.0)
            assert (status == 200) is accepted, body
            if not accepted:
                assert body["code"] == -5022  # type: ignore[index]


def test_reduce_order_never_fills_beyond_the_position() -> None:
    with BinanceUsdmEmulator(
        make_state((40000.0, 40010.0, 39890.0, 39950.0), (39950.0, 40100.0, 39940.0, 40050.0))
    ) as emu:
        order(emu, "entry", "BUY", "LONG", 39900.0, qty=0.01)
        emu.state.advance_bar("BTCUSDT")
        assert order(emu, "tp", "SELL", "LONG", 40000.0, qty=0.02)[1]["code"] == -2022  # type: ignore[index]
        assert order(emu, "tp", "SELL", "LONG", 40000.0, qty=0.01)[0] == 200
        emu.state.advance_bar("BTCUSDT")
        assert emu.state.account.position("BTCUSDT", "LONG") == [0.0, 0.0]
        assert emu.state.account.wallet == pytest.approx(10_000 - 0.0798 + 1.0 - 0.08)


def test_liquidation_price_is_where_equity_meets_maintenance_margin() -> None:
    state = make_state()
    state.account.wallet = 1000.0
    with BinanceUsdmEmulator(state) as emu:
        order(emu, "x", "BUY", "LONG", 40100.0, qty=0.25, tif="GTC")  # crosses: taker at 40000
        _, rows = call(emu, "GET", "/fapi/v3/positionRisk", {"symbol": "BTCUSDT"})
    long = next(r for r in rows if r["positionSide"] == "LONG")  # type: ignore[union-attr]
    wallet = 1000.0 - 40000 * 0.25 * 0.0005
    # wallet + 0.25 (P - 40000) = 0.004 * 0.25 P
    assert float(long["liquidationPrice"]) == pytest.approx((0.25 * 40000 - wallet) / (0.25 - 0.001))


def test_funding_income_and_filters() -> None:
    state = make_state((40000.0, 40010.0, 39890.0, 39950.0), (39950.0, 39960.0, 39940.0, 39950.0), FLAT[0])
    state.set_funding("BTCUSDT", pl.DataFrame({"funding_time": [T0 + 6 * MIN + 7], "rate": [-0.0002],
                                               "mark_price": [float("nan")]}))  # fmt: skip
    with BinanceUsdmEmulator(state) as emu:
        order(emu, "entry", "BUY", "LONG", 39900.0)
        for _ in range(3):
            emu.state.advance_bar("BTCUSDT")
        _, rows = call(emu, "GET", "/fapi/v1/income", {"symbol": "BTCUSDT", "incomeType": "FUNDING_FEE"})
    # no mark price: the open of the bar that pays it (40000); a long receives a negative rate
    assert [(r["time"], float(r["income"])) for r in rows] == [(T0 + 6 * MIN + 7, pytest.approx(0.08))]  # type: ignore[union-attr]


@settings(max_examples=40, deadline=None)
@given(
    o=st.integers(-200, 200),
    up=st.integers(0, 300),
    down=st.integers(0, 300),
    c_frac=st.floats(0, 1),
    buy=st.integers(-400, -1),
    stop=st.integers(-400, -1),
)
def test_single_order_fill_rule(o: int, up: int, down: int, c_frac: float, buy: int, stop: int) -> None:
    """One buy limit and one long stop below the last close: fill iff the bar trades through."""
    tick = 0.1
    # on the tick grid as real bars are (off it by float noise, a low of 39973.399999999994 trades
    # through a 39973.4 limit)
    op = round(40000.0 + o * tick, 1)
    hi, lo = round(op + up * tick, 1), round(op - down * tick, 1)
    cl = round((lo + (hi - lo) * c_frac) / tick) * tick
    p_buy, p_stop = 40000.0 + buy * tick, 40000.0 + stop * tick
    state = make_state((40000.0, 40000.0, 40000.0, 40000.0), (op, hi, lo, cl))
    state.account.dual_side = True
    acct = state.account
    acct.positions[("BTCUSDT", "LONG")] = [0.01, 40000.0]  # a lot for the stop to close
    with BinanceUsdmEmulator(state) as emu:
        emu.state.advance_bar("BTCUSDT")  # the flat bar: history
        assert order(emu, "b", "BUY", "LONG", round(p_buy, 1))[0] == 200
        assert order(emu, "s", "SELL", "LONG", round(p_stop, 1), kind="STOP_MARKET")[0] == 200
        emu.state.advance_bar("BTCUSDT")
        got = {name: (price, maker) for name, _side, price, maker in trades(emu)}
    assert ("b" in got) == (lo < p_buy - 1e-9)  # trade-through (the open counts as a path point)
    if "b" in got:
        assert got["b"] == (pytest.approx(p_buy), True)
    assert ("s" in got) == (lo <= p_stop + 1e-9)
    if "s" in got:
        assert got["s"] == (pytest.approx(min(op, p_stop)), False)


def test_wall_clock_emulator_applies_the_recv_window() -> None:
    with BinanceUsdmEmulator(EmulatorState()) as emu:  # now_ms None: the wall clock
        assert call(emu, "GET", "/fapi/v1/positionSide/dual")[0] == 200
        stale = {"timestamp": int(time.time() * 1000) - 60_000}
        query = urlencode(stale)
        digest = hmac.new(emu.state.account.api_secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        req = urllib.request.Request(
            f"{emu.url}/fapi/v1/positionSide/dual?{query}&signature={digest}",
            headers={"X-MBX-APIKEY": emu.state.account.api_key},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert json.loads(err.value.read())["code"] == -1021


def test_fill_model_like_backtest_reads_the_configs() -> None:
    strategy = load_strategy("default", ["backtest.slippage_bps=3.5", "backtest.fill_on_touch=true"])
    venue = load_venue("binance_futures", ["fees.maker=0.0001", "fees.taker=0.0004"])
    fm = FillModel.like_backtest(strategy, venue)
    assert (fm.fill_on_touch, fm.slippage_bps, fm.maker_fee, fm.taker_fee, fm.post_only_against) == (
        True, 3.5, 0.0001, 0.0004, "next_open",
    )  # fmt: skip


def test_cancel_all_open_orders_of_both_services(emu: BinanceUsdmEmulator) -> None:
    order(emu, "a", "BUY", "LONG", 39900.0)
    order(emu, "s", "BUY", "SHORT", 41000.0, kind="STOP_MARKET")
    assert call(emu, "DELETE", "/fapi/v1/allOpenOrders", {"symbol": "BTCUSDT"})[0] == 200
    assert call(emu, "GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"})[1] == []
    assert len(call(emu, "GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})[1]) == 1  # type: ignore[arg-type]
    assert call(emu, "DELETE", "/fapi/v1/algoOpenOrders", {"symbol": "BTCUSDT"})[0] == 200
    assert call(emu, "GET", "/fapi/v1/openAlgoOrders", {"symbol": "BTCUSDT"})[1] == []


def test_v2_account_balance_and_position_risk_agree(emu: BinanceUsdmEmulator) -> None:
    order(emu, "x", "BUY", "LONG", 40100.0, tif="GTC")  # crosses: 0.01 long at 40000, taker fee 0.2
    _, account = call(emu, "GET", "/fapi/v2/account")
    _, balance = call(emu, "GET", "/fapi/v2/balance")
    _, risk = call(emu, "GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})
    assert float(account["totalWalletBalance"]) == pytest.approx(10_000 - 0.2)  # type: ignore[index]
    assert balance[0]["balance"] == account["totalWalletBalance"]  # type: ignore[index]
    long = next(r for r in risk if r["positionSide"] == "LONG")  # type: ignore[union-attr]
    assert (float(long["positionAmt"]), float(long["entryPrice"]), long["leverage"]) == (0.01, 40000.0, "20")


def test_account_initial_margin_is_the_positions_and_resting_entries(emu: BinanceUsdmEmulator) -> None:
    order(emu, "x", "BUY", "LONG", 40100.0, tif="GTC")  # crosses: 0.01 long at 40000 (20x: 20 USDT)
    order(emu, "y", "BUY", "LONG", 39000.0)  # rests: 0.01 at 39000 (20x: 19.5 USDT)
    for path in ("/fapi/v2/account", "/fapi/v3/account"):
        _, account = call(emu, "GET", path)
        got = {k: float(account[k]) for k in ("totalPositionInitialMargin", "totalOpenOrderInitialMargin",
                                              "totalInitialMargin", "availableBalance")}  # type: ignore[index]  # fmt: skip
        assert got == pytest.approx(
            {
                "totalPositionInitialMargin": 20.0,
                "totalOpenOrderInitialMargin": 19.5,
                "totalInitialMargin": 39.5,
                "availableBalance": 10_000 - 0.2 - 39.5,  # wallet after the taker fee; mark = entry: no uPnL
            }
        ), path


def test_take_profit_and_stop_may_both_cover_one_lot() -> None:
    with BinanceUsdmEmulator(make_state((40000.0, 40010.0, 39890.0, 39950.0))) as emu:
        order(emu, "entry", "BUY", "LONG", 39900.0)
        emu.advance_bar("BTCUSDT")
        assert order(emu, "sl", "SELL", "LONG", 39000.0, kind="STOP_MARKET")[0] == 200
        assert order(emu, "tp", "SELL", "LONG", 40100.0)[0] == 200


def test_partial_fill_of_a_take_profit_keeps_the_rest_resting() -> None:
    state = make_state((40000.0, 40010.0, 39890.0, 39950.0), (39950.0, 40100.0, 39940.0, 40050.0), DIP_UP)
    with BinanceUsdmEmulator(state) as emu:
        order(emu, "entry", "BUY", "LONG", 39900.0, qty=0.02)
        emu.advance_bar("BTCUSDT")
        order(emu, "tp", "SELL", "LONG", 40000.0, qty=0.02)
        emu.state.account.partial_fills(0.5)
        emu.advance_bar("BTCUSDT")
        assert [(o.client_id, o.filled) for o in emu.state.account.open_orders("BTCUSDT")] == [("tp", 0.01)]
        emu.advance_bar("BTCUSDT")
        assert emu.state.account.open_orders("BTCUSDT") == []
        assert emu.state.account.position("BTCUSDT", "LONG") == [0.0, 0.0]


def test_stop_gapped_by_the_next_open_rests_under_next_open_post_only() -> None:
    # last close 40000; the next bar opens at 39700, below a long stop at 39850: it rests, fills at the open
    state = make_state((40000.0, 40010.0, 39890.0, 40000.0), (39700.0, 39750.0, 39650.0, 39700.0))
    state.account.fill_model.post_only_against = "next_open"
    with BinanceUsdmEmulator(state) as emu:
        order(emu, "entry", "BUY", "LONG", 39900.0)  # next open 40000: rests
        emu.advance_bar("BTCUSDT")
        assert order(emu, "sl", "SELL", "LONG", 39850.0, kind="STOP_MARKET")[0] == 200
        emu.advance_bar("BTCUSDT")
        assert trades(emu)[-1] == ("sl", "SELL", 39700.0, False)


def test_a_take_profit_meets_the_last_price_under_next_open_and_the_gap_fills_it_as_maker() -> None:
    # last close 40000; the next bar opens at 40200, beyond a long's take-profit at 40100. A real book is at
    # 40000 when the TP arrives: it rests, and the open fills it at its limit as maker, as the backtest
    # fills a resting TP the open gaps through. (An entry still meets the next open: see above.)
    state = make_state((40000.0, 40010.0, 39890.0, 40000.0), (40200.0, 40250.0, 40150.0, 40200.0))
    state.account.fill_model.post_only_against = "next_open"
    with BinanceUsdmEmulator(state) as emu:
        order(emu, "entry", "BUY", "LONG", 39900.0)  # next open 40000: rests; the bar's low fills it
        emu.advance_bar("BTCUSDT")
        status, body = order(emu, "tp", "SELL", "LONG", 40100.0, tif="GTC")
        assert status == 200 and body["status"] == "NEW", body  # type: ignore[index]
        emu.advance_bar("BTCUSDT")
        assert trades(emu) == [("entry", "BUY", 39900.0, True), ("tp", "SELL", 40100.0, True)]


# -- exchange filters and self-trade prevention (Binance's codes) ----------------------------------------
def market(emu: BinanceUsdmEmulator, cid: str, side: str, pside: str, qty: float,
           stp: str | None = None) -> tuple[int, object]:  # fmt: skip
    params: dict[str, object] = {"symbol": "BTCUSDT", "side": side, "positionSide": pside, "type": "MARKET",
                                 "quantity": qty, "newClientOrderId": cid}  # fmt: skip
    if stp is not None:
        params["selfTradePreventionMode"] = stp
    return call(emu, "POST", "/fapi/v1/order", params)


def _filter(emu: BinanceUsdmEmulator, kind: str, **values: str) -> None:
    (flt,) = [f for m in emu.state.markets if m["symbol"] == "BTCUSDT" for f in m["filters"]
              if f["filterType"] == kind]  # fmt: skip
    flt.update(values)


def test_percent_price_bounds_limit_prices_around_the_mark(emu: BinanceUsdmEmulator) -> None:
    # mark 40000 (premiumIndex); multiplierUp 1.05 -> a BUY limit above 42000.0 is -4016, multiplierDown
    # 0.95 -> a SELL limit below 38000.0 is -4024; on the bounds they pass (and cross the book: taker fills)
    assert order(emu, "b1", "BUY", "LONG", 42000.1, tif="GTC")[1] == {
        "code": -4016, "msg": "Limit price can't be higher than 42000.00.",
    }  # fmt: skip
    assert order(emu, "s1", "SELL", "SHORT", 37999.9, tif="GTC")[1] == {
        "code": -4024, "msg": "Limit price can't be lower than 38000.00.",
    }  # fmt: skip
    assert order(emu, "b2", "BUY", "LONG", 42000.0, tif="GTC")[0] == 200
    assert order(emu, "s2", "SELL", "SHORT", 38000.0, tif="GTC")[0] == 200
    assert emu.state.account.position("BTCUSDT", "LONG")[0] == 0.01
    assert emu.state.account.position("BTCUSDT", "SHORT")[0] == -0.01


def test_market_lot_size_bounds_market_orders_only(emu: BinanceUsdmEmulator) -> None:
    _filter(emu, "MARKET_LOT_SIZE", maxQty="0.005", minQty="0.003")
    assert market(emu, "m1", "BUY", "LONG", 0.006)[1] == {
        "code": -4005,
        "msg": "Quantity greater than max quantity.",
    }
    assert market(emu, "m2", "BUY", "LONG", 0.002)[1] == {
        "code": -4004,
        "msg": "Quantity less than min quantity.",
    }
    status, body = market(emu, "m3", "BUY", "LONG", 0.005)
    assert status == 200 and body["status"] == "FILLED" and body["executedQty"] == "0.005"  # type: ignore[index]
    assert order(emu, "l1", "BUY", "LONG", 39900.0, qty=0.006)[0] == 200  # a limit: LOT_SIZE (max 1000)


@pytest.mark.parametrize(
    ("stp", "maker_status", "taker_status", "long_q", "short_q"),
    [
        ("EXPIRE_MAKER", "EXPIRED_IN_MATCH", "FILLED", 0.0, -0.01),
        ("EXPIRE_TAKER", "NEW", "EXPIRED_IN_MATCH", 0.0, 0.0),
        ("EXPIRE_BOTH", "EXPIRED_IN_MATCH", "EXPIRED_IN_MATCH", 0.0, 0.0),
        (None, "FILLED", "FILLED", 0.01, -0.01),  # not sent: NONE, the order trades with our own
    ],
)
def test_self_trade_prevention_follows_the_taker_mode(
    emu: BinanceUsdmEmulator, stp: str | None, maker_status: str, taker_status: str, long_q: float,
    short_q: float,
) -> None:  # fmt: skip
    # the last trade (40000) is on the bid after a down-tick: our BUY LONG limit at 40000 rests at the bid;
    # our market SELL SHORT (opening a short) would meet it first
    emu.state.account.last_up["BTCUSDT"] = False
    assert order(emu, "maker", "BUY", "LONG", 40000.0)[0] == 200
    status, body = market(emu, "taker", "SELL", "SHORT", 0.01, stp)
    assert status == 200 and body["status"] == taker_status  # type: ignore[index]
    assert body["selfTradePreventionMode"] == (stp or "NONE")  # type: ignore[index]
    (maker,) = [o for o in emu.state.account.orders.values() if o.client_id == "maker"]
    assert maker.status == maker_status
    assert emu.state.account.position("BTCUSDT", "LONG")[0] == long_q
    assert emu.state.account.position("BTCUSDT", "SHORT")[0] == short_q
    if stp is None:  # each side of the self-trade at the resting order's price: maker and taker
        assert trades(emu) == [("maker", "BUY", 40000.0, True), ("taker", "SELL", 40000.0, False)]


def test_an_unknown_self_trade_prevention_mode_is_refused(emu: BinanceUsdmEmulator) -> None:
    assert market(emu, "t", "SELL", "SHORT", 0.01, "DECREMENT")[1]["code"] == -1100  # type: ignore[index]
