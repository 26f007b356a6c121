"""Rate limits as Binance enforces them, through the real ccxt client against the emulator.

The emulator enforces the limits (``ExchangeLimits``: order-count windows, Retry-After blocks, ignored 429s
escalating to 418 bans) and logs every request with its server time; requests are counted there, never
in the bridge. The gateway's pacer runs on the emulator's clock, so Retry-After and bans pass when the
emulator says they do. Scenario: 3 rungs a side on flat bars at 40000 (nothing fills), hand-derived
ladder (tests/live_bridge/test_live_bridge_emulator.py "several rungs per side"): long 39840.0, 39680.0,
39520.0 and short 40160.0, 40320.0, 40480.0; base qty 0.006 here: floor_step(0.006 * 1.5**(i-1)) =
0.006, 0.009, 0.013.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridctl.configs.loader import load_strategy
from gridctl.engine.state import set_throttle
from gridctl.live_bridge.exchange import CcxtGateway
from gridctl.live_bridge.feed import FeedDown
from gridctl.live_bridge.gateway import RateLimited
from gridctl.live_bridge.options import LiveOptions
from gridctl.live_bridge.orders import parse_client_id
from gridctl.live_bridge.pacing import RequestPacer
from gridctl.live_bridge.runner import ExchangeClock, prepare

from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState, ExchangeLimits
from live_helpers import EMU_ENV, MIN, SYMBOL_ID, T0, emulator_venue, scenario_bars

RUNGS = ["grid.grid_levels_long=3", "grid.grid_levels_short=3", "grid.grid_step_bps=40",
         "grid.base_qty=0.006", "grid.qty_scale=1.5"]  # fmt: skip
FLAT = (40000.0, 40000.0, 40000.0, 40000.0)
HISTORY = 30
ORDER = ("POST", "/fapi/v1/order")


@pytest.fixture
def emu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[BinanceUsdmEmulator]:
    """The emulator on the flat history, then ``request.param`` bars (default 12 flat ones)."""
    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    state = EmulatorState()
    bars = getattr(request, "param", [FLAT] * 12)
    state.replay(SYMBOL_ID, "1m", scenario_bars(*[FLAT] * (HISTORY - 5), *bars), start_ms=T0 + HISTORY * MIN)
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
    with BinanceUsdmEmulator(state) as server:
        yield server


@pytest.fixture
def run(emu: BinanceUsdmEmulator, tmp_path: Path) -> Iterator[Any]:
    """A ready ``--live`` run on the emulator; its pacer on the emulator's clock (a wait moves it)."""
    state = emu.state

    def sleep(seconds: float) -> None:
        assert state.now_ms is not None
        state.now_ms += math.ceil(seconds * 1000)

    venue = emulator_venue(emu.url, ["rate_limits.orders_per_second=10"])
    clock = ExchangeClock()
    gateway = CcxtGateway(venue, live=True, clock=lambda: state.server_time() / 1000.0, sleep=sleep)
    ready, ctx = prepare(
        load_strategy("default", RUNGS),
        venue,
        LiveOptions(
            mode="live", symbol="BTC/USDT:USDT", journal=tmp_path / "j.sqlite", ops_port=0, max_skew_ms=10**13
        ),
        os.environ["GRIDCTL_OPS_TOKEN"],
        gateway=gateway,
        clock=clock,
        feed_kw={"sleep": lambda s: None},
    )
    try:
        ready.require()
        yield ctx
    finally:
        ctx.close()


def _bar(emu: BinanceUsdmEmulator, ctx: Any) -> None:
    emu.state.advance_bar(SYMBOL_ID)
    for b in ctx.feed.poll():
        ctx.bridge.on_bar(b)


def _ours(emu: BinanceUsdmEmulator, ctx: Any, kind: str | None = "entry") -> list[Any]:
    """This run's open orders on the emulator (of ``kind``; None: every kind)."""
    return [
        o
        for o in emu.state.account.open_orders(SYMBOL_ID)
        if (p := parse_client_id(o.client_id)) and p.run_id == ctx.bridge.o.run_id and kind in (None, p.kind)
    ]


def _keys(orders: list[Any]) -> Counter[tuple[int, int, str]]:
    keys = [parse_client_id(o.client_id) for o in orders]
    return Counter((p.side, p.level, p.kind) for p in keys if p is not None)


# -- the pacer on its own (hand-made clock) ---------------------------------------------------------------
def test_pacer_reads_the_exchanges_counters_and_waits_for_its_window() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = RequestPacer(100, 10, 1000, max_wait_s=5.0, clock=lambda: now[0], sleep=sleep)
    pacer.acquire(10)
    # the exchange counts 95 (other requests from this IP): 95 + 10 > 100 until that count is 60 s old
    pacer.observe("GET", "/fapi/v1/openOrders", 200, {"X-MBX-USED-WEIGHT-1M": "95"})
    now[0] = 56.0
    pacer.acquire(10)
    assert slept == [pytest.approx(4.0)]  # the count read at t = 0 holds until t = 60
    # orders: 10 x orders_per_second = 100 per 10 s; the exchange says 98 are spent
    pacer.observe("POST", "/fapi/v1/order", 200, {"X-MBX-ORDER-COUNT-10S": "98"})
    assert pacer.orders_available() == 2
    pacer.acquire(1, orders=2)
    with pytest.raises(RateLimited, match=r"10 x rate_limits.orders_per_second: 100 per 10 s"):
        pacer.acquire(1, orders=1)  # 10 s to wait > max_wait_s
    pacer.acquire(1)  # plain requests are not orders


def test_the_last_tenth_of_the_weight_is_kept_for_protection_not_market_data() -> None:
    """Weight 100 a minute: the bar feed and the funding-income report (``essential=False``) stop at 90,
    the last 10 stay for the requests that keep positions covered (fills, positions, orders, stops).
    Found walking issue #16: a basket whose polls had spent the whole minute left a new ETH lot without
    its stop for over 30 s (the stop placement refused like any read); the feed now waits instead."""
    from gridctl.live_bridge.feed import ExchangeFeed

    now = [0.0]
    pacer = RequestPacer(100, 10, 1000, max_wait_s=0.0, clock=lambda: now[0])
    assert pacer.reserve == 10
    for _ in range(18):
        pacer.acquire(5, 0, "klines", essential=False)  # 90: market data's share is spent
    with pytest.raises(RateLimited, match=r"100 per 60 s reached \(90 used, 1 more, the last 10 kept"):
        pacer.acquire(1, 0, "time", essential=False)
    pacer.acquire(5, 0, "fills")  # a fills read and a stop placement still go out
    pacer.acquire(1, 1, "place stop")
    pacer.acquire(4, 0, "positions")  # up to the full 100
    with pytest.raises(RateLimited, match=r"100 per 60 s reached \(100 used, 1 more\)"):
        pacer.acquire(1, 1, "place stop")
    # the feed asks as market data: it is refused at 90 while a protective request is not
    calls: list[tuple[int, int, str, bool]] = []

    class Recorder:
        def acquire(self, weight: int, orders: int, what: str, essential: bool = True) -> None:
            calls.append((weight, orders, what, essential))

    class Client:
        timeout = 1000
        id = "binanceusdm"

        def __init__(self) -> None:
            self.urls: dict[str, Any] = {}

        def fetch_time(self) -> int:
            return 0

    feed = ExchangeFeed(Client(), "BTC/USDT:USDT", "1m", 20, 0, 0)
    feed.pacer = Recorder()
    feed.server_time_ms()
    assert calls == [(1, 0, "time", False)]


def test_a_stop_cancels_only_this_runs_entries_and_waits_for_a_spent_weight_window() -> None:
    """``runner.cancel_entries_at_stop`` (Ctrl-C / SIGTERM): every symbol's resting entries of this run are
    cancelled, its exits and stops and other runs' orders left; with the minute's weight spent it waits
    for the window (at t = 60 here) instead of giving up after the pacer's usual 2 s, and then restores
    the pacer's wait. Found walking issue #16: a stop on a spent budget left ETH's entries resting."""
    from types import SimpleNamespace

    from gridctl.live_bridge.orders import encode_client_id
    from gridctl.live_bridge.runner import cancel_entries_at_stop

    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    pacer = RequestPacer(100, 10, 1000, max_wait_s=2.0, clock=lambda: now[0], sleep=sleep)
    pacer.acquire(100)  # the minute's weight spent at t = 0
    ids = {
        "BTC": [encode_client_id("r1", 0, 1, "entry", 1), encode_client_id("r1", 0, 1, "sl", 2),
                encode_client_id("r1", 1, 2, "entry", 3), encode_client_id("r0", 0, 1, "entry", 4), "manual"],
        "ETH": [encode_client_id("r1", 1, 1, "tp", 5), encode_client_id("r1", 1, 1, "entry", 6)],
    }  # fmt: skip
    cancelled: list[tuple[str, str, float]] = []

    class Gw:
        def __init__(self) -> None:
            self.pacer = pacer

        def open_orders(self, sym: str) -> list[Any]:
            pacer.acquire(2, 0, "open orders")
            return [SimpleNamespace(client_id=c, type="limit") for c in ids[sym]]

        def account(self, sym: str) -> Any:  # flat: nothing left without a stop
            return SimpleNamespace(positions={})

        def cancel(self, sym: str, cid: str) -> None:
            pacer.acquire(1, 0, f"cancel {cid}")
            cancelled.append((sym, cid, now[0]))

    bridges = {s: SimpleNamespace(o=SimpleNamespace(mode="live", run_id="r1"), gw=Gw()) for s in ids}
    text = cancel_entries_at_stop(bridges)  # type: ignore[arg-type]
    assert text == "resting entries cancelled (BTC 2, ETH 1), exits and stops stay"
    assert [(s, c) for s, c, _ in cancelled] == [
        ("BTC", ids["BTC"][0]),
        ("BTC", ids["BTC"][2]),
        ("ETH", ids["ETH"][1]),
    ]
    assert cancelled[0][2] == pytest.approx(60.0)  # waited for the window to free, 60 s > the usual 2 s
    assert pacer.max_wait_s == 2.0
    # paper bridges have nothing on an exchange: nothing to say
    assert cancel_entries_at_stop({"BTC": SimpleNamespace(o=SimpleNamespace(mode="paper"), gw=None)}) == ""  # type: ignore[dict-item]


def test_pacer_keeps_orders_per_minute_and_reads_the_minute_counter() -> None:
    now = [0.0]
    pacer = RequestPacer(1200, 100, 3, max_wait_s=0.0, clock=lambda: now[0])
    for t in (0.0, 20.0, 40.0):
        now[0] = t
        pacer.acquire(1, orders=1)
    with pytest.raises(RateLimited, match=r"rate_limits.orders_per_minute: 3 per 60 s reached") as err:
        pacer.acquire(1, orders=1)
    assert err.value.retry_after_s == pytest.approx(20.0)  # the order at t = 0 leaves the window at 60
    now[0] = 60.0
    pacer.acquire(1, orders=1)
    # the exchange counts 3 in its minute (another session of this account): none left until t = 120
    pacer.observe("POST", "/fapi/v1/order", 200, {"X-MBX-ORDER-COUNT-1M": "3"})
    now[0] = 100.0
    assert pacer.orders_available() == 0
    now[0] = 120.0
    assert pacer.orders_available() == 3


@settings(max_examples=200, deadline=None)
@given(
    per_minute=st.integers(1, 8),
    gaps_ms=st.lists(
        st.sampled_from([0, 1_000, 5_000, 10_000, 20_000, 59_000, 60_000, 61_000, 90_000]),
        min_size=1,
        max_size=40,
    ),
)
def test_one_order_rule_two_clocks_the_engine_and_the_pacer_admit_the_same_sends(
    per_minute: int, gaps_ms: list[int]
) -> None:
    """``rate_limits.orders_per_minute`` is one rule: the engine's entry window (``decide_nb`` on the bar
    clock, ``ord_ring``) and the live pacer's order window (wall clock) admit exactly the same submissions
    of one sequence of times: at most ``per_minute`` in any 60 s, a submission 60 s old out of the window.
    (The engine's own per-close cap and the pacer's 10 s window are set out of the way here. Times are
    whole seconds: the pacer's clock is float seconds, in which a boundary 1 ms past the window is not
    exact: 60.001 - 60 < 0.001, so it may hold a submission one millisecond longer than the kernel.)"""
    from gridctl.engine.params import P_ORDERS_PER_MINUTE, PARAMS
    from gridctl.engine.state import S_ORD_COUNT, STATE
    from gridctl.engine.step import _minute_window_full_nb

    p = np.zeros(PARAMS.size)
    p[P_ORDERS_PER_MINUTE] = per_minute
    st_vec, ring = np.zeros(STATE.size), np.zeros(per_minute)
    now = [0.0]
    pacer = RequestPacer(10**9, 10**6, per_minute, max_wait_s=0.0, clock=lambda: now[0])
    t, engine, live = 0, [], []
    for gap in gaps_ms:
        t += gap
        if not _minute_window_full_nb.py_func(st_vec, ring, float(t), p):  # the kernel's check, as decided
            n = int(st_vec[S_ORD_COUNT])
            ring[n % ring.shape[0]] = float(t)
            st_vec[S_ORD_COUNT] = n + 1
            engine.append(t)
        now[0] = t / 1000.0
        try:
            pacer.acquire(1, orders=1)
            live.append(t)
        except RateLimited:
            pass
    assert engine == live


def test_pacer_blocks_the_429s_kind_and_everything_during_a_418() -> None:
    now = [0.0]
    pacer = RequestPacer(1200, 10, 1000, max_wait_s=0.0, clock=lambda: now[0])
    pacer.observe("POST", "http://x/fapi/v1/order", 429, {"Retry-After": "30"}, '{"code":-1015}')
    with pytest.raises(RateLimited, match="Retry-After 30"):
        pacer.acquire(1, orders=1)
    pacer.acquire(5)  # reads go on: only placements are blocked
    assert pacer.orders_available() == 0
    now[0] = 30.0
    pacer.acquire(1, orders=1)
    pacer.observe("GET", "http://x/fapi/v1/klines", 418, {})  # a ban without Retry-After: 120 s
    assert pacer.ban() is not None and "418" in str(pacer.ban())
    now[0] = 149.0
    with pytest.raises(RateLimited, match="418"):
        pacer.acquire(1)
    now[0] = 150.0
    assert pacer.ban() is None
    pacer.acquire(1)


# -- through the bridge, counted at the emulator ----------------------------------------------------------
def test_an_order_count_429_stops_placements_until_its_retry_after(
    emu: BinanceUsdmEmulator, run: Any
) -> None:
    state = emu.state
    # the exchange allows 2 orders per 10 s: the bar wants 6 entries (the venue file would allow 100)
    state.limits = ExchangeLimits(orders_10s=2)
    state.clear_log()
    _bar(emu, run)
    t_close = state.server_time()
    posts = [r for r in state.requests() if (r.method, r.path) == ORDER]
    # two placed, the third answered 429 / -1015 with Retry-After to the window's end: nothing after it
    assert [r.status for r in posts] == [200, 200, 429]
    after = state.requests()[state.requests().index(posts[-1]) + 1 :]
    assert after, "reads go on after an order-count 429"
    assert all((r.method, r.path) != ORDER for r in after)
    assert len(_ours(emu, run)) == 2 and run.bridge.last_deferred  # the rest wait for a later bar
    assert state.limits.bans == 0 and all(r.status != 418 for r in state.requests())
    # the next bar (60 s later, past the Retry-After): two more go out, then the next 10 s window's 429
    assert state.limits.blocked["orders"] <= t_close + 10_000
    state.clear_log()
    _bar(emu, run)
    assert [r.status for r in state.requests() if (r.method, r.path) == ORDER] == [200, 200, 429]
    assert len(_ours(emu, run)) == 4 and max(_keys(_ours(emu, run)).values(), default=0) == 1


def test_five_429s_with_retry_after_30_on_orders_each_stop_every_request_for_30_s(
    emu: BinanceUsdmEmulator, run: Any
) -> None:
    """The issue's case: five 429s (Binance's -1003 body) with ``Retry-After: 30`` on order placements.
    After each, no request of any kind for 30 s (a -1003 is the IP's weight limit), so never a ban.

    Per 429: that bar's account read after the orders is refused too (margin unknown: fail closed), so
    the next bar pauses entries and reads the account again; the bar after places again. The five 429s
    land on bars 1, 3, 5, 7, 9; bar 10 pauses, bar 11 sends the whole ladder."""
    state = emu.state
    state.limits = ExchangeLimits()  # a request inside a Retry-After would count towards a ban
    state.inject("status", "/fapi/v1/order", status=429, retry_after=30, times=5)
    state.clear_log()
    with_429 = []
    for bar in range(1, 11):
        before = len(state.requests())
        _bar(emu, run)  # one bar a minute
        if any(r.status == 429 for r in state.requests()[before:]):
            with_429.append(bar)
    assert with_429 == [1, 3, 5, 7, 9]
    log = state.requests()
    refused = [r for r in log if r.status == 429]
    assert [(r.method, r.path) for r in refused] == [ORDER] * 5
    for r in refused:  # nothing after it (in the log) until 30 s have passed on the exchange's clock
        after = log[log.index(r) + 1 :]
        assert [q for q in after if q.ts_ms < r.ts_ms + 30_000] == []
    assert state.limits.bans == 0 and _ours(emu, run) == []
    _bar(emu, run)
    assert len(_ours(emu, run)) == 6


def test_a_weight_429_stops_every_request_until_its_retry_after(emu: BinanceUsdmEmulator, run: Any) -> None:
    state = emu.state
    state.limits = ExchangeLimits()  # ignoring a Retry-After would escalate to a ban
    _bar(emu, run)
    assert len(_ours(emu, run)) == 6
    state.inject("status", "/fapi/v1/openOrders", status=429, retry_after=30)
    state.clear_log()
    start = state.server_time()
    run.bridge.refresh_orders()  # answered 429, Retry-After 30 s (weight: every request)
    for _ in range(5):
        run.bridge.protect_fills()  # fills polls during the 30 s: refused before sending
        run.bridge.read_account()
        state.now_ms += 5_000
    assert [(r.path, r.status) for r in state.requests()] == [("/fapi/v1/openOrders", 429)]
    assert state.limits.bans == 0
    state.now_ms = start + 30_000
    assert run.bridge.refresh_orders() and len(run.bridge.open_orders) == 6


def test_a_418_ban_stops_every_request_pauses_entries_with_the_reason_and_resumes(
    emu: BinanceUsdmEmulator, run: Any
) -> None:
    state, bridge = emu.state, run.bridge
    state.limits = ExchangeLimits()
    _bar(emu, run)
    assert len(_ours(emu, run)) == 6
    state.inject("status", "/fapi/v1/klines", status=418, retry_after=120)
    state.clear_log()
    state.advance_bar(SYMBOL_ID)
    ban_start = state.server_time()
    with pytest.raises(FeedDown):
        run.feed.poll()  # the klines request is answered 418: the IP is banned for 120 s
    bridge.check_stale()
    reason = bridge.fail_reasons.get("rate limit", "")
    assert "HTTP 418" in reason and "Retry-After 120 s" in reason and not bridge.entries_allowed
    headers = {"Authorization": "Bearer tok"}
    status = httpx.get(f"{run.ops_url}/status", headers=headers, timeout=5).json()
    assert any(r.startswith("rate limit: IP banned") for r in status["pause_reasons"])
    assert status["rate_limits"]["blocked"]["all"]["why"].startswith("IP banned")
    metrics = httpx.get(f"{run.ops_url}/metrics", timeout=5).text
    assert 'gridctl_pause_reason{reason="rate limit"} 1.0' in metrics
    # a flatten during the ban sends nothing: it stays queued until the exchange answers again
    # (tests/live_bridge/test_live_control.py follows a flatten through an outage to the market orders)
    bridge.ops.enqueue("flatten")
    assert bridge.apply_commands() == []
    # two more bars close during the ban: the loop polls, checks and looks for fills, sending nothing
    for _ in range(2):
        for _ in range(3):
            with pytest.raises(FeedDown):
                run.feed.poll()
            bridge.check_stale()
            bridge.protect_fills()
            bridge.apply_commands()
        if state.server_time() + MIN < ban_start + 120_000:
            state.advance_bar(SYMBOL_ID)
    during = [r for r in state.requests() if ban_start <= r.ts_ms < ban_start + 120_000]
    assert [(r.path, r.status) for r in during] == [("/fapi/v1/time", 200), ("/fapi/v1/klines", 418)]
    # the ban ends with the next bar: the missed bars are run, the pause lifts, entries rest again
    state.advance_bar(SYMBOL_ID)
    assert state.server_time() >= ban_start + 120_000
    for b in run.feed.poll():
        bridge.on_bar(b)
    assert "rate limit" not in bridge.fail_reasons
    bridge._flatten_retry_at = 0.0  # the flatten's retry is due (it waits FLATTEN_RETRY_S on the wall clock)
    (flat,) = bridge.apply_commands()
    assert flat["kind"] == "flatten" and flat["ok"] is True and _ours(emu, run) == []  # flat, entries gone
    bridge.ops.enqueue("resume")
    bridge.apply_commands()
    state.advance_bar(SYMBOL_ID)
    for b in run.feed.poll():
        bridge.on_bar(b)
    assert bridge.entries_allowed, (bridge.fail_reasons, bridge.operator_paused)
    assert len(_ours(emu, run)) == 6  # the ladder rests again


@pytest.mark.parametrize("fault", ["status", "drop"])
def test_failed_cancels_never_leave_a_duplicate_resting_order(
    emu: BinanceUsdmEmulator, run: Any, fault: str
) -> None:
    """Halving the throttle re-sizes every entry (cancel + place). Cancels that fail (500) or whose
    answer is lost (``drop``: done, outcome unknown to the bridge) are not followed by a replacement;
    the emulator's book never holds two orders for one rung."""
    state, bridge = emu.state, run.bridge
    _bar(emu, run)
    before = _ours(emu, run)
    assert sorted(o.qty for o in before) == [0.006, 0.006, 0.009, 0.009, 0.013, 0.013]
    set_throttle(bridge.s.state, 0.5)
    state.inject(fault, "/fapi/v1/order", times=6, status=500)  # DELETE is the first to that path
    state.clear_log()
    _bar(emu, run)
    assert max(_keys(_ours(emu, run)).values(), default=0) <= 1
    if fault == "status":  # the cancels failed: the old entries rest on, alone
        assert sorted(o.qty for o in _ours(emu, run)) == [0.006, 0.006, 0.009, 0.009, 0.013, 0.013]
    else:  # the cancels went through, their answers were lost: nothing rests until the book is read
        assert _ours(emu, run) == []
    assert [r for r in state.requests() if (r.method, r.path) == ORDER] == []  # no replacement sent
    assert any(n.startswith("replacement-held") for n in bridge.log)
    for _ in range(2):  # the faults are used up: the cancels go through, then the replacements
        _bar(emu, run)
        assert max(_keys(_ours(emu, run)).values(), default=0) == 1
    # floor_step(0.5 * q) for q = 0.006, 0.009, 0.0135 (or 0.013): 0.003, 0.004, 0.006
    assert sorted(o.qty for o in _ours(emu, run)) == [0.003, 0.003, 0.004, 0.004, 0.006, 0.006]


def test_signed_requests_follow_the_exchanges_clock_within_the_recv_window(
    emu: BinanceUsdmEmulator, run: Any
) -> None:
    emu.state.limits = ExchangeLimits(strict_recv_window=True)  # the scripted clock is years behind ours
    emu.state.clear_log()
    _bar(emu, run)  # the feed's time read sets the gateway's timestamps on the exchange's clock
    assert len(_ours(emu, run)) == 6
    assert [r.status for r in emu.state.requests() if r.status != 200] == []


@pytest.mark.parametrize("emu", [[FLAT, (40000.0, 40000.0, 39800.0, 39900.0), FLAT, FLAT]], indirect=True)
def test_a_placement_whose_answer_is_lost_is_not_placed_again(emu: BinanceUsdmEmulator, run: Any) -> None:
    """Bar 2 dips to 39800 through long rung 1 (39840.0): between closes the bridge books the fill and
    sends the lot's TP and SL; the SL reaches the exchange but its answer is lost (``drop``). The next
    closes must read the book before sending, not place a second SL."""
    state, bridge = emu.state, run.bridge
    _bar(emu, run)
    assert len(_ours(emu, run)) == 6
    state.inject("drop", "/fapi/v1/algoOrder")
    state.advance_bar(SYMBOL_ID)  # the dip: long rung 1 fills
    assert bridge.protect_fills() == 1
    assert len(_ours(emu, run, "sl")) == 1  # placed, though the bridge never heard back
    for _ in range(2):
        for b in run.feed.poll():
            bridge.on_bar(b)
        assert max(_keys(_ours(emu, run, None)).values()) == 1
        assert len(_ours(emu, run, "sl")) == 1 and len(_ours(emu, run, "tp")) == 1
        state.advance_bar(SYMBOL_ID)
    algo_posts = [r for r in state.requests() if (r.method, r.path) == ("POST", "/fapi/v1/algoOrder")]
    assert len(algo_posts) == 1  # the lost one, never sent again


# -- the emulator's enforcement, through a bare ccxt client that ignores every Retry-After -------------------
@pytest.fixture
def bare(emu: BinanceUsdmEmulator) -> Any:
    """A plain ccxt binanceusdm client on the emulator (no pacer: it ignores every Retry-After)."""
    from gridctl.data.download import make_client

    client = make_client("binanceusdm", emu.url)
    client.enableRateLimit = False
    client.apiKey, client.secret = EMU_ENV["BINANCE_API_KEY"], EMU_ENV["BINANCE_API_SECRET"]
    client.load_markets()
    emu.state.account.dual_side = True
    return client


def _buy(client: Any, n: int) -> Any:
    return client.create_order(
        "BTC/USDT:USDT",
        "LIMIT",
        "buy",
        0.003,
        39000.0 + n,
        {"positionSide": "LONG", "clientOrderId": f"b{n}"},
    )


def test_emulator_counts_orders_in_binances_two_windows_and_reports_them(
    emu: BinanceUsdmEmulator, bare: Any
) -> None:
    state = emu.state
    assert state.server_time() % 60_000 == 0  # the clock sits on a minute (and 10 s) boundary
    for n in range(3):
        _buy(bare, n)
    headers = bare.last_response_headers
    assert (headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1M"]) == ("3", "3")
    bare.fetch_open_orders("BTC/USDT:USDT")  # not an order: counted by weight only
    assert "X-MBX-ORDER-COUNT-10S" not in bare.last_response_headers
    assert int(bare.last_response_headers["X-MBX-USED-WEIGHT-1M"]) > 0
    state.now_ms += 10_000  # the next 10 s window, the same minute
    _buy(bare, 3)
    headers = bare.last_response_headers
    assert (headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1M"]) == ("1", "4")


def test_emulator_escalates_ignored_429s_to_doubling_418_bans(emu: BinanceUsdmEmulator, bare: Any) -> None:
    import ccxt

    state = emu.state
    state.limits = ExchangeLimits(orders_10s=1, ban_after=2)
    t0 = state.server_time()
    _buy(bare, 0)
    with pytest.raises(ccxt.BaseError, match="-1015"):
        _buy(bare, 1)  # over 1 per 10 s: Retry-After to the window's end
    assert bare.last_response_headers["Retry-After"] == "10"
    bare.fetch_open_orders("BTC/USDT:USDT")  # reads are not blocked by an order-count 429
    state.now_ms += 2_000
    with pytest.raises(ccxt.BaseError):
        _buy(bare, 2)  # ignored once: 429 again, Retry-After 8 s
    assert state.requests()[-1].status == 429 and bare.last_response_headers["Retry-After"] == "8"
    with pytest.raises(ccxt.BaseError):
        _buy(bare, 3)  # ignored twice: banned, 2 minutes
    assert state.requests()[-1].status == 418 and bare.last_response_headers["Retry-After"] == "120"
    state.now_ms += 60_000
    with pytest.raises(ccxt.BaseError):
        bare.fetch_time()  # every request, public ones too, during the ban
    assert state.requests()[-1].status == 418 and bare.last_response_headers["Retry-After"] == "60"
    state.now_ms = t0 + 2_000 + 120_000  # the ban is over
    bare.fetch_open_orders("BTC/USDT:USDT")
    _buy(bare, 4)
    with pytest.raises(ccxt.BaseError, match="-1015"):
        _buy(bare, 5)
    for _ in range(2):
        with pytest.raises(ccxt.BaseError):
            _buy(bare, 6)
    assert bare.last_response_headers["Retry-After"] == "240"  # the second ban lasts twice as long
    state.limits.bans = 20
    assert state.limits.ban(state.server_time()).headers["Retry-After"] == "259200"  # at most 3 days


def test_emulator_applies_the_recv_window_on_a_scripted_clock_when_strict(
    emu: BinanceUsdmEmulator, bare: Any
) -> None:
    import time

    import ccxt

    state = emu.state
    bare.fetch_open_orders("BTC/USDT:USDT")  # off by default: the scripted clock is years behind ours
    state.limits = ExchangeLimits(strict_recv_window=True)
    with pytest.raises(ccxt.BaseError, match="-1021"):
        bare.fetch_open_orders("BTC/USDT:USDT")
    ahead = int(time.time() * 1000) - state.server_time()
    bare.options["timeDifference"] = ahead  # timestamps on the exchange's clock: accepted
    bare.fetch_open_orders("BTC/USDT:USDT")
    bare.options["timeDifference"] = ahead + 12_000  # 12 s stale, beyond ccxt's recvWindow of 10 s
    with pytest.raises(ccxt.BaseError, match="-1021"):
        bare.fetch_open_orders("BTC/USDT:USDT")
