"""Differential proof for baskets: on random baskets of 2-3 symbols in one wallet, the kernel's basket
driver (``engine.basket.run_basket``) equals the reference simulator's (``run_reference_basket``,
tests/reference_sim.py) row for row: every symbol's fills, funding rows, events and equity rows, the
account's equity rows and its final wallet, floats within 1e-9 relative.

Baskets mix BTC (about 60,000, tick 0.1, lot 0.001), ETH (about 3,000, tick 0.01, lot 0.001) and XRP
(about 0.6, tick 0.0001, lot 0.1), each on its own exchange rules from the shipped venue, sized in quote
notional so one strategy trades all three. Prices share a market factor (symbols fall together, so the
account can liquidate where no symbol alone would) plus their own noise; symbols start later, end
earlier, have data gaps and NaN bars of their own. Some draws drive the account into liquidation, others
into the account's drawdown halt. CI runs the fixed examples of the "differential" profile
(test_differential.py); GRIDCTL_DEEP=1 multiplies the counts and draws fresh examples.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_differential import assert_same_ledger, close, examples

from market_builders import (
    EIGHT_HOURS,
    LIMITS_OFF,
    T0,
    configs,
    detail_markets,
    make_market,
    rows_of,
    strategy,
    tolerances,
    venue,
)
from reference_sim import EVENT_KINDS, LIQUIDATION, run_reference_basket

PROFILE = settings.get_profile("differential")

BTC, ETH, XRP = "BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"
#: Price level and the decimals of each symbol's tick in the shipped venue's rules.
LEVEL = {BTC: (60000.0, 1), ETH: (3000.0, 2), XRP: (0.6, 4)}
BAR_MS = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}
DRAWDOWN_HALT_EVENT = EVENT_KINDS.index("DRAWDOWN_HALT")


# Summary numbers both report: the account's, and each symbol's own counters and cash flows.
ACCOUNT_SUMMARY = (
    "final_equity",
    "wallet_balance",
    "total_return_pct",
    "realized_pnl",
    "fees",
    "n_fills",
    "max_drawdown_bar_close_pct",
)
SYMBOL_SUMMARY = (
    "realized_pnl",
    "fees",
    "orders_deferred",
    "orders_submitted",
    "skipped_precision",
    "skipped_order_limit",
)


@st.composite
def basket_markets(draw, n_min: int = 60, n_max: int = 200, fall: bool = False):
    """2-3 symbols on one timeframe: a shared random walk factor (a downward drift with ``fall``) plus
    each symbol's own noise, jumps, gaps and NaN bars; all but the first may start later or end earlier;
    each with its own 8-hourly funding series (rates sometimes extreme, marks sometimes unknown)."""
    symbols = draw(st.permutations([BTC, ETH, XRP]))[: draw(st.integers(2, 3))]
    timeframe = draw(st.sampled_from(list(BAR_MS)))
    bar_ms = BAR_MS[timeframe]
    n = draw(st.integers(n_min, n_max))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    vol = draw(st.floats(0.003 if fall else 0.0005, 0.015))
    drift = -vol / 3 if fall else 0.0
    factor = rng.normal(drift, vol, size=n)
    start = T0 + draw(st.integers(0, 40)) * bar_ms
    out = {}
    for j, symbol in enumerate(symbols):
        level, decimals = LEVEL[symbol]
        late = 0 if j == 0 else draw(st.sampled_from([0, 0, 3, 17]))
        early = draw(st.sampled_from([0, 0, 0, 9]))
        gap_p = draw(st.sampled_from([0.0, 0.0, 0.02]))
        nan_p = draw(st.sampled_from([0.0, 0.0, 0.01]))
        own = draw(st.floats(0.0, 1.0))  # how much of its move is its own
        price = level * (1 + rng.normal(0, 0.01))
        bars, ts = [], []
        k = late
        while k < n - early:
            o = price
            if rng.random() < 0.01:
                o *= 1 + rng.choice([-1, 1]) * rng.uniform(0.02, 0.06)
            c = o * math.exp(factor[k] * (1 - own) + rng.normal(drift, vol) * own)
            h = max(o, c) * (1 + abs(rng.normal(0, vol / 2)))
            lo = min(o, c) * (1 - abs(rng.normal(0, vol / 2)))
            bar = tuple(round(x, decimals) for x in (o, h, lo, c))
            if ts and rng.random() < nan_p:
                bar = (math.nan,) * 4
            else:
                price = bar[3]
            bars.append(bar)
            ts.append(start + k * bar_ms)
            k += 1 + (int(rng.integers(1, 4)) if rng.random() < gap_p else 0)
        end = start + n * bar_ms
        funding, settle = [], (start // EIGHT_HOURS - 1) * EIGHT_HOURS
        while settle <= end + EIGHT_HOURS:
            u = rng.random()
            rate = float(rng.choice([-0.003, 0.003])) if u < 0.1 else float(rng.normal(1e-4, 4e-4))
            mark = math.nan if rng.random() < 0.3 else price * (1 + rng.normal(0, 0.001))
            funding.append((settle, rate, round(mark, decimals) if math.isfinite(mark) else mark))
            settle += EIGHT_HOURS
        out[symbol] = make_market(bars, timeframe=timeframe, ts=ts, funding=funding, symbol=symbol)
    return out


def quote_sized(s: dict, notional: float) -> dict:
    """Strategy overrides sized in quote notional (one size travels across symbols)."""
    s = dict(s)
    s.pop("grid__base_qty", None)
    s["grid__base_notional"] = notional
    return s


@st.composite
def per_symbol(draw, symbols: list[str]) -> dict[str, dict]:
    """Per-symbol overrides for some symbols: its own step, levels or size (the rest shared)."""
    out: dict[str, dict] = {}
    for symbol in symbols:
        o = draw(
            st.sampled_from(
                [
                    {},
                    {},
                    {"grid__grid_step_bps": 50.0},
                    {"grid__grid_levels_long": 1, "grid__grid_levels_short": 4},
                    {"grid__qty_scale": 1.5},
                ]
            )
        )
        out[symbol] = o
    return out


@st.composite
def basket_configs(draw, symbols: list[str]):
    """``configs()`` sized in quote notional, with per-symbol overrides."""
    s, v = draw(configs())
    s = quote_sized(s, draw(st.sampled_from([25.0, 100.0, 400.0, 2000.0])))
    return s, v, draw(per_symbol(symbols))


@st.composite
def liquidating_basket_configs(draw, symbols: list[str]):
    """Rungs of 2-8x the balance in notional at leverage 20 (what the exchange's margin check lets
    rest), bot limits and halts off: the account runs into its maintenance margin, often where no
    single symbol's loss would take it there."""
    s, v = draw(configs())
    balance = draw(st.sampled_from([100.0, 300.0, 1000.0]))
    s = quote_sized(s, balance * draw(st.sampled_from([2.0, 4.0, 8.0])))
    s.update(
        grid__grid_levels_long=draw(st.integers(1, 3)),
        grid__grid_levels_short=draw(st.integers(1, 2)),
        policy__throttle=1.0,
        policy__counter_qty_scale=1.0,
        grid__grid_step_bps=draw(st.sampled_from([25.0, 50.0, 100.0])),
        grid__qty_scale=1.0,
        exit__sl_steps=draw(st.integers(20, 60)),
        exit__tp_steps=draw(st.integers(1, 5)),
        rebalance__recenter_trigger_bps=draw(st.sampled_from([200.0, 10000.0])),
        backtest__initial_balance=balance,
        **LIMITS_OFF,
    )
    v.update(trading__leverage=20, risk__max_order_size_usdt=100000.0, risk__min_order_size_usdt=1.0)
    return s, v, draw(per_symbol(symbols))


@st.composite
def halting_basket_configs(draw, symbols: list[str]):
    """The account's drawdown halt at 1-5 % on positions a few times the balance."""
    s, v = draw(configs())
    balance = draw(st.sampled_from([1000.0, 10000.0]))
    s = quote_sized(s, balance * draw(st.sampled_from([0.2, 0.5, 1.0])))
    s.update(
        policy__throttle=1.0,
        backtest__initial_balance=balance,
        risk_management__enable_drawdown_protection=True,
        risk_management__max_drawdown_pct=draw(st.sampled_from([1.0, 2.0, 5.0])),
        risk_management__enable_position_validation=False,
        position__max_leverage_used=125.0,
    )
    v.update(trading__leverage=20, risk__max_order_size_usdt=100000.0, risk__min_order_size_usdt=1.0)
    return s, v, draw(per_symbol(symbols))


def instrument(symbol: str) -> str:
    """The strategy's instrument id of a ccxt USD-M symbol (BTC/USDT:USDT -> BTCUSDT-PERP.BINANCE)."""
    return symbol.split(":")[0].replace("/", "") + "-PERP.BINANCE"


def strategies_of(symbols, s: dict, own: dict[str, dict], tol: dict) -> dict:
    """Each symbol's strategy: the shared overrides, then its own, trading that symbol."""
    return {
        symbol: strategy(**{**s, **own[symbol], **tol}, strategy__instrument_id=instrument(symbol))
        for symbol in symbols
    }


def run_kernel(markets, strategies, ven, detail=None):
    from gridctl.engine.basket import run_basket

    return run_basket(markets, strategies, ven, curves=True, detail=detail)


def assert_same_basket(markets, strategies, ven, detail=None) -> None:
    """Every symbol's ledgers, the account's rows and its final wallet agree."""
    ref = run_reference_basket(markets, strategies, ven, detail=detail)
    ker = run_kernel(markets, strategies, ven, detail=detail)
    assert tuple(ker.symbols) == ref.symbols
    for symbol in ref.symbols:
        r, k = ref.per_symbol[symbol], ker.per_symbol[symbol]
        for name in ("fills", "funding", "events", "equity"):
            try:
                assert_same_ledger(name, getattr(r, name), rows_of(getattr(k, name)))
            except AssertionError as err:
                raise AssertionError(f"{symbol}: {err}") from None
    acct = rows_of(ker.account_equity)
    shared = [f for f in ref.account_equity[0] if f in ker.account_equity.dtype.names] if acct else []
    assert {"ts", "equity", "wallet_balance"} <= set(shared) or not acct, ker.account_equity.dtype
    assert_same_ledger(
        "account",
        [{f: row[f] for f in shared} for row in ref.account_equity],
        [{f: row[f] for f in shared} for row in acct],
    )
    for key in ACCOUNT_SUMMARY:
        assert close(float(ref.summary[key]), float(ker.summary[key])), (
            key,
            ref.summary[key],
            ker.summary[key],
        )
    for symbol in ref.symbols:
        r, k = ref.per_symbol[symbol].summary, ker.per_symbol[symbol].summary
        for key in SYMBOL_SUMMARY:
            assert close(float(r[key]), float(k[key])), (symbol, key, r[key], k[key])


@settings(PROFILE, max_examples=examples(20))
@given(data=st.data(), tol=tolerances())
def test_basket_kernel_equals_reference(data, tol):
    markets = data.draw(basket_markets())
    s, v, own = data.draw(basket_configs(list(markets)))
    assert_same_basket(markets, strategies_of(markets, s, own, tol), venue(**v))


@settings(PROFILE, max_examples=examples(15))
@given(data=st.data(), tol=tolerances())
def test_basket_kernel_equals_reference_into_liquidation(data, tol):
    markets = data.draw(basket_markets(fall=data.draw(st.sampled_from([True, True, False]))))
    s, v, own = data.draw(liquidating_basket_configs(list(markets)))
    assert_same_basket(markets, strategies_of(markets, s, own, tol), venue(**v))


@settings(PROFILE, max_examples=examples(10))
@given(data=st.data(), tol=tolerances())
def test_basket_kernel_equals_reference_through_drawdown_halts(data, tol):
    markets = data.draw(basket_markets(fall=True))
    s, v, own = data.draw(halting_basket_configs(list(markets)))
    assert_same_basket(markets, strategies_of(markets, s, own, tol), venue(**v))


@st.composite
def detail_baskets(draw):
    """(BTC 5m/15m bars, their 1m detail bars, ETH on the same clock): ETH's bars are BTC's scaled to
    about 5 or 30 (on ETH's tick of 0.01), with bars of its own missing; only BTC walks detail bars."""
    coarse, fine = draw(detail_markets())
    scale = draw(st.sampled_from([0.0005, 0.003]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    late = draw(st.sampled_from([0, 0, 4]))
    bars, ts = [], []
    for k in range(late, len(coarse.ts)):
        if k > late and rng.random() < 0.05:
            continue  # a gap of ETH's own
        cols = (coarse.open[k], coarse.high[k], coarse.low[k], coarse.close[k])
        bars.append(tuple(round(float(x) * scale, 2) for x in cols))
        ts.append(int(coarse.ts[k]))
    eth = make_market(bars, timeframe=coarse.timeframe, ts=ts, symbol=ETH)
    return {BTC: coarse, ETH: eth}, fine


@settings(PROFILE, max_examples=examples(10))
@given(data=st.data(), tol=tolerances())
def test_basket_kernel_equals_reference_with_detail_bars(data, tol):
    markets, fine = data.draw(detail_baskets())
    s, v, own = data.draw(liquidating_basket_configs(list(markets)))
    own[BTC] = {**own[BTC], "backtest__detail_timeframe": "1m"}
    assert_same_basket(markets, strategies_of(markets, s, own, tol), venue(**v), detail={BTC: fine})


def test_basket_generators_reach_what_they_are_for():
    # The reference alone over CI's fixed examples: fills on every symbol kind, account liquidations
    # (some with more than one symbol holding a position), drawdown halts of the whole account, and
    # symbols starting late (otherwise the differential tests above prove little).
    seen: Counter = Counter()
    fixed = settings.get_profile("differential-ci")

    @settings(fixed, max_examples=30)
    @given(data=st.data())
    def liquidation(data):
        markets = data.draw(basket_markets(fall=data.draw(st.sampled_from([True, True, False]))))
        s, v, own = data.draw(liquidating_basket_configs(list(markets)))
        out = run_reference_basket(markets, strategies_of(markets, s, own, {}), venue(**v))
        liq = [sym for sym in out.symbols if any(f["kind"] == LIQUIDATION for f in out.per_symbol[sym].fills)]
        seen["liquidated"] += bool(liq)
        seen["liquidated_together"] += len(liq) > 1
        seen["late_start"] += any(
            len(m.ts) and m.ts[0] > min(x.ts[0] for x in markets.values()) for m in markets.values()
        )
        for sym in out.symbols:
            seen[f"fills {sym}"] += bool(out.per_symbol[sym].fills)

    @settings(fixed, max_examples=10)
    @given(data=st.data())
    def halt(data):
        markets = data.draw(basket_markets(fall=True))
        s, v, own = data.draw(halting_basket_configs(list(markets)))
        out = run_reference_basket(markets, strategies_of(markets, s, own, {}), venue(**v))
        halted = [
            sym
            for sym in out.symbols
            if any(e["kind"] == DRAWDOWN_HALT_EVENT for e in out.per_symbol[sym].events)
        ]
        seen["halted_all"] += bool(halted) and len(halted) == len(out.symbols)

    liquidation()
    halt()
    reached = (
        "liquidated",
        "liquidated_together",
        "halted_all",
        "late_start",
        f"fills {BTC}",
        f"fills {ETH}",
        f"fills {XRP}",
    )
    assert all(seen[k] > 0 for k in reached), seen


def test_refusal_held_on_the_rest_of_the_account_is_validated_again_when_it_changes():
    # Leverage 1, one 1,000 wallet. BTC (steps first) rests 0.004 at 99,000 and 101,000 (800 of
    # notional); ETH's rungs (0.3 at 990 and 1,010) are then refused SIZE_MARGIN: 297 + 800 > 1,000 and
    # (0.3 + 800/1,010) * 1,010 > 1,000. BTC has no bar at hour 1, so its entries are cancelled; ETH's
    # bar is quiet, but the rest of the account it was refused on changed (800 -> 0): both rungs are
    # validated again and placed (297 and 606 of margin), and the long fills at hour 2's dip.
    btc = make_market([(100000.0,) * 4, (math.nan,) * 4, (100000.0,) * 4], symbol=BTC)
    eth = make_market([(1000.0,) * 4, (1000.0,) * 4, (1000.0, 1000.0, 989.0, 995.0)], symbol=ETH)
    strategies = {
        BTC: strategy(
            grid__base_qty=0.004, backtest__initial_balance=1000.0, strategy__instrument_id=instrument(BTC)
        ),
        ETH: strategy(
            grid__base_qty=0.3, backtest__initial_balance=1000.0, strategy__instrument_id=instrument(ETH)
        ),
    }
    ven = venue(trading__leverage=1)
    ref = run_reference_basket({BTC: btc, ETH: eth}, strategies, ven)
    rejected = EVENT_KINDS.index("ORDER_REJECTED")
    eth_events = [(e["ts"], e["kind"], e["side"]) for e in ref.per_symbol[ETH].events]
    assert eth_events == [(T0, rejected, 0), (T0, rejected, 1)]
    fills = [(f["ts"], f["side"], f["price"], f["qty"]) for f in ref.per_symbol[ETH].fills]
    assert fills == [(T0 + 2 * 3_600_000, 0, 990.0, 0.3)]
    assert_same_basket({BTC: btc, ETH: eth}, strategies, ven)
