"""CcxtGateway: the real ccxt binanceusdm client over HTTP against the emulator on 127.0.0.1.

Scenario numbers are derived by hand from the bars below (BTCUSDT: tick 0.1, step 0.001, min notional
100; maker 0.02 %, taker 0.05 %): five flat history bars at 40000, then the scenario bars.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ccxt
import polars as pl
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_venue
from gridctl.configs.schema import VenueConfig
from gridctl.live_bridge.exchange import CcxtGateway, make_exchange_client
from gridctl.live_bridge.gateway import (
    AuthError,
    ExchangeUnavailable,
    Gateway,
    GatewayError,
    OrderRejected,
    OrderRequest,
    PostOnlyRejected,
    RateLimited,
)

from effects import effect
from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
from live_helpers import MIN, T0, serving
from live_helpers import scenario_bars as bars
from live_helpers import scenario_state as new_state

SYM = "BTCUSDT-PERP"
KEY_ENV, SECRET_ENV = "BINANCE_TESTNET_API_KEY", "BINANCE_TESTNET_API_SECRET"


# bar 5: path 40000 -> 40010 -> 39890 -> 39950 (high first: 10 <= 110)
DIP = (40000.0, 40010.0, 39890.0, 39950.0)
# bar 6: path 39950 -> 39940 -> 40000 -> 39990 (low first: 50 > 10)
RISE = (39950.0, 40000.0, 39940.0, 39990.0)
# bar 6': path 39950 -> 39960 -> 39800 -> 39850
DROP = (39950.0, 39960.0, 39800.0, 39850.0)


def venue_for(url: str, monkeypatch: pytest.MonkeyPatch, *overrides: str, api_key: str | None = None,
              api_secret: str | None = None) -> VenueConfig:  # fmt: skip
    """The testnet venue aimed at ``url``; ``api_key``/``api_secret``: what its ${ENV} fields resolve to."""
    state = EmulatorState()
    monkeypatch.setenv(KEY_ENV, api_key if api_key is not None else state.account.api_key)
    monkeypatch.setenv(SECRET_ENV, api_secret if api_secret is not None else state.account.api_secret)
    return load_venue("binance_futures_testnet", [f"api.base_url={url}", *overrides])


@pytest.fixture
def state() -> EmulatorState:
    return new_state(DIP, RISE, DROP)


@pytest.fixture
def emu(state: EmulatorState) -> Iterator[BinanceUsdmEmulator]:
    with serving(state) as server:
        yield server


@pytest.fixture
def gw(emu: BinanceUsdmEmulator, monkeypatch: pytest.MonkeyPatch) -> CcxtGateway:
    return CcxtGateway(venue_for(emu.url, monkeypatch), timeout_ms=2_000)


def entry(cid: str = "e1", price: float = 39900.0, qty: float = 0.01, **kw: object) -> OrderRequest:
    return OrderRequest(cid, "LONG", "buy", "limit", qty, price, post_only=True, **kw)  # type: ignore[arg-type]


# -- contract and public data ------------------------------------------------------------------------
def test_gateway_satisfies_the_protocol(gw: CcxtGateway) -> None:
    assert isinstance(gw, Gateway)


def test_market_rules_come_from_the_exchange_not_the_venue_file(
    emu: BinanceUsdmEmulator, state: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    eth = next(m for m in state.markets if m["symbol"] == "ETHUSDT")
    gw = CcxtGateway(venue_for(emu.url, monkeypatch))
    rules = gw.market_rules("ETHUSDT-PERP")
    assert (rules.symbol, rules.tick_size, rules.step_size, rules.min_notional) == (
        "ETHUSDT",
        0.01,
        0.001,
        20.0,
    )
    got = (rules.min_qty, rules.max_qty, rules.price_precision, rules.qty_precision)
    assert got == (0.001, 10000.0, 2, 3)
    assert gw.market_rules("BTC/USDT:USDT").tick_size == 0.1  # the venue file says 0.1 too; ETH proves source
    assert eth["filters"][0]["tickSize"] == "0.01"
    # every other filter the bridge uses, as the emulator advertises them (Binance's BTCUSDT/ETHUSDT values)
    assert (rules.market_min_qty, rules.market_max_qty, rules.percent_price_up, rules.percent_price_down) == (
        0.001, 2000.0, 1.05, 0.95,
    )  # fmt: skip
    assert (rules.max_num_orders, rules.max_num_algo_orders) == (200, 10)
    for f in gw._market("ETHUSDT-PERP")["info"]["filters"]:  # the markets as the client loaded them
        if f["filterType"] == "MARKET_LOT_SIZE":
            del f["maxQty"]
    with pytest.raises(
        GatewayError, match=r"'ETHUSDT': exchangeInfo filters incomplete \(no market_max_qty\)"
    ):
        gw.market_rules("ETHUSDT-PERP")


def test_server_time_is_the_exchanges(gw: CcxtGateway, state: EmulatorState) -> None:
    assert gw.server_time_ms() == T0 + 5 * MIN
    state.advance_bar("BTCUSDT")
    assert gw.server_time_ms() == T0 + 6 * MIN


# -- orders, fills, account ---------------------------------------------------------------------------
def test_entry_fill_then_take_profit_round_trip(gw: CcxtGateway, state: EmulatorState) -> None:
    placed = gw.place(SYM, entry())
    assert (placed.client_id, placed.position_side, placed.side, placed.type, placed.price) == (
        "e1", "LONG", "buy", "limit", 39900.0,
    )  # fmt: skip
    assert [o.client_id for o in gw.open_orders(SYM)] == ["e1"]
    state.advance_bar("BTCUSDT")  # DIP trades through 39900
    acct = gw.account(SYM)
    long = acct.positions["LONG"]
    assert (long.qty, long.entry_price) == (0.01, 39900.0)
    assert acct.positions["SHORT"].qty == 0.0
    assert acct.wallet_balance == pytest.approx(10_000 - 0.0798)  # maker fee 39900 * 0.01 * 0.0002
    assert long.unrealized_pnl == pytest.approx(0.5)  # mark 39950
    gw.place(SYM, OrderRequest("t1", "LONG", "sell", "limit", 0.01, 39980.0, post_only=True))
    state.advance_bar("BTCUSDT")  # RISE: 39940 -> 40000 trades through 39980
    fills = gw.fills_since(SYM, T0)
    assert [(f.client_id, f.side, f.price, f.qty, f.liquidity) for f in fills] == [
        ("e1", "buy", 39900.0, 0.01, "maker"),
        ("t1", "sell", 39980.0, 0.01, "maker"),
    ]
    assert fills[0].ts_ms == T0 + 5 * MIN and fills[1].fee == pytest.approx(0.07996)
    assert gw.fills_since(SYM, T0 + 6 * MIN)[0].client_id == "t1"
    # with the caller's clock: the same trades, without asking the exchange for its time first;
    # a clock behind the trade leaves it for the next call
    state.clear_log()
    assert gw.fills_since(SYM, T0, now_ms=T0 + 8 * MIN) == fills
    assert state.requests("/fapi/v1/time") == [] and len(state.requests("/fapi/v1/userTrades")) == 1
    assert [f.client_id for f in gw.fills_since(SYM, T0, now_ms=T0 + 6 * MIN - 1)] == ["e1"]
    acct = gw.account(SYM)
    assert acct.wallet_balance == pytest.approx(10_000 - 0.0798 + 0.8 - 0.07996)
    assert acct.positions["LONG"].qty == 0.0 and gw.open_orders(SYM) == []


def test_stop_market_goes_through_the_algo_service_and_fills_as_taker(
    gw: CcxtGateway, state: EmulatorState
) -> None:
    state.replay("BTCUSDT", "1m", bars(DIP, DROP), start_ms=T0 + 5 * MIN)
    gw.place(SYM, entry())
    state.advance_bar("BTCUSDT")
    stop = gw.place(SYM, OrderRequest("s1", "LONG", "sell", "stop_market", 0.01, stop_price=39850.0))
    assert (stop.type, stop.stop_price, stop.price) == ("stop_market", 39850.0, None)
    assert state.requests("/fapi/v1/algoOrder")[-1].query["triggerPrice"] == "39850"
    assert [(o.client_id, o.type) for o in gw.open_orders(SYM)] == [("s1", "stop_market")]
    state.advance_bar("BTCUSDT")  # DROP: 39960 -> 39800 passes 39850
    last = gw.fills_since(SYM, T0 + 6 * MIN)
    assert [(f.client_id, f.price, f.liquidity) for f in last] == [("s1", 39850.0, "taker")]
    assert last[0].fee == pytest.approx(39850 * 0.01 * 0.0005)
    assert gw.account(SYM).wallet_balance == pytest.approx(10_000 - 0.0798 - 0.5 - 0.19925)
    assert gw.open_orders(SYM) == []


def test_post_only_that_would_take_is_rejected(gw: CcxtGateway) -> None:
    with pytest.raises(PostOnlyRejected, match="-5022"):
        gw.place(SYM, entry(price=40000.1))  # book: bid 40000 (the last trade), ask 40000.1: a buy takes
    assert gw.open_orders(SYM) == []


def test_crossing_limit_without_post_only_fills_at_once_as_taker(gw: CcxtGateway) -> None:
    gw.place(SYM, OrderRequest("x1", "LONG", "buy", "limit", 0.01, 40100.0))
    (fill,) = gw.fills_since(SYM, T0)
    assert (fill.price, fill.liquidity) == (
        40000.0,
        "taker",
    )  # never worse than the market, never above limit


def test_post_only_rejection_storm_then_acceptance(gw: CcxtGateway, state: EmulatorState) -> None:
    state.inject("reject", "/fapi/v1/order", times=3, code=-5022, msg="Post Only order will be rejected.")
    for _ in range(3):
        with pytest.raises(PostOnlyRejected):
            gw.place(SYM, entry())
    assert gw.place(SYM, entry()).client_id == "e1"


def test_partial_fill_leaves_the_rest_resting(gw: CcxtGateway, state: EmulatorState) -> None:
    state.account.partial_fills(0.5, times=1)
    gw.place(SYM, entry(qty=0.02))
    state.advance_bar("BTCUSDT")
    (order,) = gw.open_orders(SYM)
    assert (order.qty, order.filled_qty, order.status) == (0.02, 0.01, "open")
    assert gw.account(SYM).positions["LONG"].qty == 0.01
    state.replay("BTCUSDT", "1m", bars(DIP, DIP), start_ms=T0 + 6 * MIN)
    state.advance_bar("BTCUSDT")  # another dip through 39900 fills the remainder
    assert gw.open_orders(SYM) == []
    assert [f.qty for f in gw.fills_since(SYM, T0)] == [0.01, 0.01]


def test_hedge_mode_closing_orders_are_reduce_only_without_the_flag(
    gw: CcxtGateway, state: EmulatorState
) -> None:
    with pytest.raises(OrderRejected) as err:  # nothing to close yet: the exchange refuses (-2022)
        gw.place(SYM, OrderRequest("c1", "LONG", "sell", "limit", 0.01, 40100.0, reduce_only=True))
    assert err.value.code == -2022
    assert all("reduceOnly" not in r.query for r in state.requests("/fapi/v1/order"))
    sent = len(state.requests("/fapi/v1/order"))
    with pytest.raises(OrderRejected, match="would open"):  # a reduce-only buy on LONG opens: refused here
        gw.place(SYM, OrderRequest("c2", "LONG", "buy", "limit", 0.01, 39000.0, reduce_only=True))
    assert len(state.requests("/fapi/v1/order")) == sent


def test_one_way_mode_sends_reduce_only(emu: BinanceUsdmEmulator, state: EmulatorState,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    state.account.dual_side = False
    gw = CcxtGateway(venue_for(emu.url, monkeypatch))
    assert gw.hedge_mode() is False
    with pytest.raises(OrderRejected):
        gw.place(SYM, OrderRequest("c1", "LONG", "sell", "limit", 0.01, 40100.0, reduce_only=True))
    sent = state.requests("/fapi/v1/order")[-1].query
    assert sent["reduceOnly"] == "true" and "positionSide" not in sent


def test_cancel_by_client_id_and_unknown_ids_are_not_errors(gw: CcxtGateway, state: EmulatorState) -> None:
    gw.place(SYM, entry())
    gw.place(SYM, OrderRequest("s1", "SHORT", "buy", "stop_market", 0.01, stop_price=41000.0))
    gw.cancel(SYM, "e1")
    gw.cancel(SYM, "s1")
    gw.cancel(SYM, "never-placed")
    assert gw.open_orders(SYM) == []
    assert {o.status for o in state.account.orders.values()} == {"CANCELED"}


def test_cancel_finds_a_conditional_order_placed_by_an_earlier_process(
    emu: BinanceUsdmEmulator, gw: CcxtGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw.place(SYM, OrderRequest("s1", "SHORT", "buy", "stop_market", 0.01, stop_price=41000.0))
    fresh = CcxtGateway(venue_for(emu.url, monkeypatch))  # knows nothing about s1
    fresh.cancel(SYM, "s1")
    assert fresh.open_orders(SYM) == []


def test_funding_payments(gw: CcxtGateway, state: EmulatorState) -> None:
    settle = T0 + 6 * MIN + 5
    state.set_funding(
        "BTCUSDT", pl.DataFrame({"funding_time": [settle], "rate": [0.0001], "mark_price": [40000.0]})
    )
    gw.place(SYM, entry())
    state.advance_bar("BTCUSDT")  # long 0.01 from bar 5
    state.advance_bar("BTCUSDT")  # bar 6 closes after the settlement (paid at bar 7's open)
    state.advance_bar("BTCUSDT")
    assert gw.funding_payments_since(SYM, T0) == [(settle, pytest.approx(-0.04))]  # -0.01 * 40000 * 0.0001
    assert gw.funding_payments_since(SYM, settle + 1) == []


def test_account_settings(gw: CcxtGateway, state: EmulatorState) -> None:
    assert gw.hedge_mode() is True
    gw.set_hedge_mode(True)  # already on: no error
    gw.set_hedge_mode(False)
    assert state.account.dual_side is False and gw.hedge_mode() is False
    gw.set_leverage(SYM, 7)
    assert state.account.leverage["BTCUSDT"] == 7
    gw.set_margin_type(SYM, "ISOLATED")
    gw.set_margin_type(SYM, "ISOLATED")  # "No need to change margin type." is not an error
    assert state.account.margin_type["BTCUSDT"] == "ISOLATED"


def test_margin_type_change_with_an_open_order_is_refused(gw: CcxtGateway) -> None:
    gw.place(SYM, entry())
    with pytest.raises(GatewayError, match="-4048"):
        gw.set_margin_type(SYM, "ISOLATED")


# -- faults ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "retry_after"), [(429, 7), (418, None)])
def test_rate_limit_answers_raise_rate_limited(gw: CcxtGateway, state: EmulatorState, status: int,
                                               retry_after: int | None) -> None:  # fmt: skip
    state.inject("status", "/fapi/v1/openOrders", status=status, retry_after=retry_after)
    with pytest.raises(RateLimited) as err:
        gw.open_orders(SYM)
    assert err.value.retry_after_s == pytest.approx(7.0 if retry_after else 120.0, abs=0.5)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_raise_exchange_unavailable(gw: CcxtGateway, state: EmulatorState, status: int) -> None:
    state.inject("status", "/fapi/v3/account", status=status)
    with pytest.raises(ExchangeUnavailable):
        gw.account(SYM)
    assert gw.account(SYM).wallet_balance == 10_000.0  # the next request goes through


def test_timeout_raises_exchange_unavailable(emu: BinanceUsdmEmulator, state: EmulatorState,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    gw = CcxtGateway(venue_for(emu.url, monkeypatch), timeout_ms=300)
    gw.market_rules(SYM)
    state.inject("timeout", "/fapi/v1/time", delay_s=1.0)
    with pytest.raises(ExchangeUnavailable):
        gw.server_time_ms()


def test_dropped_connection_after_the_order_was_taken(gw: CcxtGateway, state: EmulatorState) -> None:
    gw.market_rules(SYM)
    gw.hedge_mode()
    state.inject("drop", "/fapi/v1/order")
    with pytest.raises(ExchangeUnavailable):
        gw.place(SYM, entry())
    assert [o.client_id for o in gw.open_orders(SYM)] == ["e1"]  # outcome unknown -> ask the exchange


def test_truncated_json_raises_exchange_unavailable(gw: CcxtGateway, state: EmulatorState) -> None:
    gw.market_rules(SYM)
    state.inject("bad_json", "/fapi/v1/openOrders")
    with pytest.raises(ExchangeUnavailable):
        gw.open_orders(SYM)


def test_insufficient_margin_is_an_order_rejection(gw: CcxtGateway) -> None:
    with pytest.raises(OrderRejected) as err:
        gw.place(SYM, entry(qty=10.0))  # 399000 USDT notional at 20x needs 19950 > 10000
    assert err.value.code == -2019


# -- config fields ----------------------------------------------------------------------------------------
@effect("api.api_key")
def test_api_key_signs_requests(emu: BinanceUsdmEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    good = CcxtGateway(venue_for(emu.url, monkeypatch))
    assert good.account(SYM).wallet_balance == 10_000.0
    bad = CcxtGateway(venue_for(emu.url, monkeypatch, api_key="someone-else"))
    with pytest.raises(AuthError, match="-2014"):
        bad.account(SYM)


@effect("api.api_secret")
def test_api_secret_signs_requests(emu: BinanceUsdmEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CcxtGateway(venue_for(emu.url, monkeypatch)).open_orders(SYM) == []
    bad = CcxtGateway(venue_for(emu.url, monkeypatch, api_secret="not-the-secret"))
    with pytest.raises(AuthError, match="-1022"):
        bad.open_orders(SYM)


def test_live_refuses_credentials_from_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("BINANCE_API_SECRET", raising=False)
    venue = load_venue("binance_futures")  # ${BINANCE_API_KEY:-BACKTEST_MODE}
    with pytest.raises(GridctlError, match="backtests only"):
        make_exchange_client(venue, live=True)
    assert make_exchange_client(venue, live=False).apiKey in (None, "")


@effect("api.base_url")
def test_base_url_chooses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = new_state(), new_state()
    with BinanceUsdmEmulator(a) as emu_a, BinanceUsdmEmulator(b) as emu_b:
        CcxtGateway(venue_for(emu_a.url, monkeypatch)).server_time_ms()
        assert len(a.requests("/fapi/v1/time")) == 1 and b.requests() == []
        CcxtGateway(venue_for(emu_b.url, monkeypatch)).server_time_ms()
        assert len(b.requests("/fapi/v1/time")) == 1 and len(a.requests("/fapi/v1/time")) == 1


@effect("api.testnet")
def test_testnet_selects_demo_hosts_and_guards_the_production_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k")
    monkeypatch.setenv(SECRET_ENV, "s")

    def client_url(*overrides: str) -> str:
        venue = load_venue("binance_futures_testnet", ["api.base_url=null", *overrides])
        return str(make_exchange_client(venue).urls["api"]["fapiPrivate"])

    assert client_url("api.testnet=true").startswith("https://demo-fapi.binance.com/")
    assert client_url("api.testnet=false").startswith("https://fapi.binance.com/")
    prod = load_venue("binance_futures_testnet", ["api.base_url=https://fapi.binance.com"])
    with pytest.raises(GridctlError, match=r"api.base_url.*production host"):
        make_exchange_client(prod)
    ok = load_venue("binance_futures_testnet", ["api.base_url=https://fapi.binance.com", "api.testnet=false"])
    assert make_exchange_client(ok).urls["api"]["fapiPrivate"].startswith("https://fapi.binance.com/")


@effect("venue.name")
def test_venue_name_selects_the_exchange_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k")
    monkeypatch.setenv(SECRET_ENV, "s")
    assert make_exchange_client(load_venue("binance_futures_testnet")).id == "binanceusdm"
    with pytest.raises(GridctlError, match=r"venue.name.*'KRAKEN'"):
        make_exchange_client(load_venue("binance_futures_testnet", ["venue.name=KRAKEN"]))


@effect("rate_limits.weight_per_minute")
def test_weight_budget_refuses_requests_beyond_it(emu: BinanceUsdmEmulator, state: EmulatorState,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    clock = [0.0]

    def gateway(weight: int) -> CcxtGateway:
        venue = venue_for(emu.url, monkeypatch, f"rate_limits.weight_per_minute={weight}")
        return CcxtGateway(venue, max_wait_s=0.0, clock=lambda: clock[0])

    roomy = gateway(1200)
    for _ in range(4):
        roomy.account(SYM)  # 5 (account) + 5 (positions) each, markets and brackets once
    tight = gateway(12)
    state.weight_used = 0  # a new server minute: X-MBX-USED-WEIGHT-1M starts over
    tight.account(SYM)
    state.clear_log()
    with pytest.raises(RateLimited, match=r"weight_per_minute: 12 per 60 s reached"):
        tight.account(SYM)
    assert state.requests() == []  # refused before sending
    clock[0] = 61.0  # the window slid past the spent weight
    state.weight_used = 0  # and the exchange's minute turned over
    assert tight.account(SYM).wallet_balance == 10_000.0


@effect("risk.max_leverage")
def test_max_leverage_caps_set_leverage(emu: BinanceUsdmEmulator, state: EmulatorState,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    CcxtGateway(venue_for(emu.url, monkeypatch, "risk.max_leverage=20")).set_leverage(SYM, 15)
    assert state.account.leverage["BTCUSDT"] == 15
    capped = CcxtGateway(venue_for(emu.url, monkeypatch, "risk.max_leverage=12"))
    state.clear_log()
    with pytest.raises(OrderRejected, match=r"risk.max_leverage = 12"):
        capped.set_leverage(SYM, 15)
    assert state.account.leverage["BTCUSDT"] == 15 and state.requests("/fapi/v1/leverage") == []


def test_ccxt_client_is_the_real_binanceusdm(gw: CcxtGateway) -> None:
    assert isinstance(gw.client, ccxt.binanceusdm) and gw.client.enableRateLimit is False


def test_a_burst_of_429_answers_then_recovery(
    emu: BinanceUsdmEmulator, state: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # waiting moves the exchange's (scripted) clock
        slept.append(seconds)
        state.now_ms = (state.now_ms or 0) + round(seconds * 1000)

    gw = CcxtGateway(venue_for(emu.url, monkeypatch), clock=lambda: state.server_time() / 1000.0, sleep=sleep)
    gw.place(SYM, entry())
    state.inject("status", "/fapi/v1/openOrders", status=429, times=3, retry_after=2)
    for _ in range(3):
        with pytest.raises(RateLimited):
            gw.open_orders(SYM)
    assert [o.client_id for o in gw.open_orders(SYM)] == ["e1"]
    # every request after a 429 waited out its Retry-After (2 s, within max_wait_s) before it was sent
    assert slept == [2.0, 2.0, 2.0]


def test_clock_skew_beyond_the_recv_window_is_exchange_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with BinanceUsdmEmulator(EmulatorState()) as emu:  # wall clock: the recvWindow rule applies
        gw = CcxtGateway(venue_for(emu.url, monkeypatch))
        gw.client.options["timeDifference"] = 60_000  # our clock 60 s behind what we believe
        with pytest.raises(ExchangeUnavailable, match="-1021"):
            gw.open_orders(SYM)


def test_off_grid_size_or_price_is_refused_not_truncated(gw: CcxtGateway, state: EmulatorState) -> None:
    gw.market_rules(SYM)
    gw.hedge_mode()
    state.clear_log()
    with pytest.raises(OrderRejected, match=r"quantity 0\.0125 is not a multiple"):
        gw.place(SYM, entry(qty=0.0125))  # ccxt would send 0.012
    with pytest.raises(OrderRejected, match=r"price 39900\.05 is not a multiple"):
        gw.place(SYM, entry(price=39900.05))
    assert state.requests() == []
    placed = gw.place(SYM, entry(qty=0.1 + 0.2 - 0.29))  # 0.010000000000000009: float noise only
    assert placed.qty == 0.01


def test_exchange_side_weight_limit_is_rate_limited_with_its_retry_after(
    emu: BinanceUsdmEmulator, state: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the gateway's pacer runs on the exchange's (scripted) clock: it honours Retry-After on it
    gw = CcxtGateway(venue_for(emu.url, monkeypatch), clock=lambda: state.server_time() / 1000.0)
    gw.market_rules(SYM)
    state.weight_limit = 12  # the exchange's own limit, below the venue's rate_limits the pacer keeps
    gw.account(SYM)  # 5 + 1 (brackets) + 5 after the markets request of this minute
    with pytest.raises(RateLimited) as err:
        gw.account(SYM)
    assert err.value.retry_after_s == 60.0  # the clock sits on a minute boundary: a full minute to wait
    state.clear_log()
    with pytest.raises(RateLimited, match="not sent"):
        gw.account(SYM)  # Retry-After still in force: refused before sending
    assert state.requests() == []
    state.advance_bar("BTCUSDT")  # next minute
    assert gw.account(SYM).wallet_balance == 10_000.0
    assert state.requests("/fapi/v3/account")[-1].status == 200


def test_well_formed_answer_of_the_wrong_shape_is_exchange_unavailable(
    gw: CcxtGateway, state: EmulatorState
) -> None:
    gw.account(SYM)
    state.inject("payload", "/fapi/v3/account", body={"unexpected": True})
    with pytest.raises(ExchangeUnavailable, match="malformed"):
        gw.account(SYM)


def test_funding_payments_all_pages_never_drop_rows_settled_at_a_page_boundary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A basket's one income history: every symbol settles at the same instants, so a full page can end
    inside one settlement's rows. The next page must start AT that settlement (the rows already seen
    dropped by id), not after it: two symbols' rows at 08:00 were never booked."""
    import threading
    from types import SimpleNamespace

    from gridctl.live_bridge import exchange

    monkeypatch.setattr(exchange, "PAGE", 4)
    t1, t2 = 1_000, 2_000
    unified = {"BTCUSDT": "BTC/USDT:USDT", "ETHUSDT": "ETH/USDT:USDT", "SOLUSDT": "SOL/USDT:USDT"}
    history = [
        {"id": f"{u}-{t}", "symbol": u, "timestamp": t, "amount": amount}
        for t, amount in ((t1, -1.0), (t2, -2.0))
        for u in unified.values()
    ]

    def fetch_funding_history(symbol: Any, since: int, limit: int) -> list[dict[str, Any]]:
        assert symbol is None
        return [r for r in history if r["timestamp"] >= since][:limit]  # oldest first, as Binance

    gw = CcxtGateway.__new__(CcxtGateway)
    gw.pacer = SimpleNamespace(acquire=lambda *a, **k: None)
    gw._lock = threading.Lock()
    gw.client = SimpleNamespace(fetch_funding_history=fetch_funding_history, last_http_response=None)
    gw._unified = unified.__getitem__  # type: ignore[method-assign]
    got = gw.funding_payments_all(tuple(unified), 0)
    # page 1: BTC t1, ETH t1, SOL t1, BTC t2 (full); then every row at t2 and after
    assert got == {sym: [(t1, -1.0), (t2, -2.0)] for sym in unified}
