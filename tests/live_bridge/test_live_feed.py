"""The bar feed (the bridge's only market-data path) and the post-only retry pacing: what the feed reads
and the live-only config fields, A/B against the emulator through the real ccxt client (see
live_bridge/feed.py for how the stream fields map onto the REST polling feed)."""

from __future__ import annotations

import os

import pytest

from gridctl.configs.loader import load_strategy
from gridctl.live_bridge.feed import ExchangeFeed, FeedDown, FeedHealth

from effects import effect
from live_helpers import EMU_ENV, SYMBOL_ID, emulator_venue, emulator_with_sample, running_emulator


@pytest.fixture(scope="module")
def emu():
    with running_emulator() as e:
        yield e


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def _feed(url: str, venue_overrides: list[str], fake: FakeTime) -> ExchangeFeed:
    venue = emulator_venue(url, venue_overrides)
    return ExchangeFeed.for_venue(venue, "BTC/USDT:USDT", "1m", sleep=fake.sleep, clock=fake.clock)


def test_history_and_poll_leave_out_the_bar_still_open() -> None:
    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
    from live_helpers import MIN, T0, scenario_bars

    state = EmulatorState(now_ms=T0 + 3 * MIN + 30_000)  # 30 s into bar 3 of five flat bars
    state.set_klines(SYMBOL_ID, "1m", scenario_bars())
    with BinanceUsdmEmulator(state) as emu:
        feed = _feed(emu.url, [], FakeTime())
        assert [b[0] for b in feed.history(5)] == [T0, T0 + MIN, T0 + 2 * MIN]  # fewer: bar 3 is open
        assert feed.poll() == []  # nothing closed since
        state.now_ms = T0 + 4 * MIN  # bar 3 closes
        assert [(b.ts, b.close) for b in feed.poll()] == [(T0 + 3 * MIN, 40000.0)]


def test_polls_ask_only_for_bars_that_can_have_closed_and_count_binances_klines_weight() -> None:
    """A poll before the next close reads the clock alone (no klines request: no bar can have closed),
    one at a close asks for the bars closed since the last (limit 1: weight 1, not 1000 rows at weight
    5), and the pacer counts each klines request at Binance's weight for its limit. Found walking issue
    #16: a two-symbol basket polled 1000 klines rows per symbol every --poll-s (6 weight a second per
    symbol) and spent the shipped 1200 weight a minute in its first minute, with no bar traded."""
    from gridctl.live_bridge.feed import klines_weight
    from gridctl.live_bridge.pacing import RequestPacer

    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
    from live_helpers import MIN, T0, scenario_bars

    assert [klines_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [1, 1, 2, 2, 5, 5, 10, 10]
    fake = FakeTime()
    state = EmulatorState(now_ms=T0 + 3 * MIN + 30_000)  # 30 s into bar 3 of five flat bars
    state.set_klines(SYMBOL_ID, "1m", scenario_bars())
    with BinanceUsdmEmulator(state) as emu:
        feed = _feed(emu.url, [], fake)
        feed.pacer = pacer = RequestPacer(100_000, 5, 100, clock=fake.clock, sleep=fake.sleep)
        assert len(feed.history(5)) == 3  # time 1 + klines of 5 rows 1
        assert pacer.weight.used(fake.t) == 2
        assert feed.poll() == [] and pacer.weight.used(fake.t) == 3  # the clock read alone
        state.now_ms = T0 + 4 * MIN  # bar 3 closes
        assert [b.ts for b in feed.poll()] == [T0 + 3 * MIN]
        assert pacer.weight.used(fake.t) == 7  # time 1 + klines of 1 row 1 + fundingRate 1 + premiumIndex 1
        assert [r.query["limit"] for r in state.requests("/fapi/v1/klines")] == ["5", "1"]
        state.now_ms = T0 + 7 * MIN + 5_000  # bars 4, 5, 6 closed while the feed was away (5, 6 not served)
        assert [b.ts for b in feed.poll()] == [T0 + 4 * MIN]
        assert [r.query["limit"] for r in state.requests("/fapi/v1/klines")][-1] == "3"


def test_funding_comes_from_the_exchange_and_is_none_when_it_gives_none() -> None:
    import polars as pl

    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
    from live_helpers import MIN, T0, scenario_bars

    now, eight_h = T0 + 5 * MIN, 8 * 3_600_000
    state = EmulatorState(now_ms=now)
    state.set_klines(SYMBOL_ID, "1m", scenario_bars())
    with BinanceUsdmEmulator(state) as emu:
        feed = _feed(emu.url, [], FakeTime())
        assert feed.next_funding_ms() is None  # not 0: the bridge pauses entries for it
        assert feed.funding_settled(None, now) == []
        state.set_funding(
            SYMBOL_ID,
            pl.DataFrame(
                {
                    "funding_time": [T0 - eight_h, T0 + eight_h],
                    "rate": [0.0001, 0.0002],
                    "mark_price": [40001.0, 40002.0],
                }
            ),
        )
        # settled up to now only; the next settlement's time from the premium index, stamped now
        assert feed.funding_settled(T0 - 2 * eight_h, now) == [(T0 - eight_h, 0.0001, 40001.0)]
        assert feed.premium() == (T0 + eight_h, now)


@effect("websocket.ping_interval")
def test_ping_interval_sets_keep_alive_rate(emu) -> None:
    pings = {}
    for interval in (20, 60):
        fake = FakeTime()
        feed = _feed(emu.url, [f"websocket.ping_interval={interval}"], fake)
        emu.state.clear_log()
        for _ in range(240):  # four idle minutes, checked every second
            fake.t += 1.0
            assert feed.keep_alive()
        pings[interval] = len(emu.state.requests("/fapi/v1/time"))
    assert pings == {20: 12, 60: 4}


@effect("websocket.reconnect_timeout")
def test_reconnect_timeout_is_the_wait_between_attempts(emu) -> None:
    waits = {}
    for timeout in (1, 7):
        fake = FakeTime()
        feed = _feed(emu.url, [f"websocket.reconnect_timeout={timeout}"], fake)
        emu.state.inject("status", "/fapi/v1/time", times=2, status=500)
        assert feed.server_time_ms() > 0
        waits[timeout] = fake.slept
    assert waits == {1: [1.0, 1.0], 7: [7.0, 7.0]}


@effect("websocket.max_reconnect_attempts")
def test_max_reconnect_attempts_before_failing_closed(emu) -> None:
    fake = FakeTime()
    feed = _feed(emu.url, ["websocket.max_reconnect_attempts=5"], fake)
    emu.state.inject("status", "/fapi/v1/time", times=3, status=500)
    assert feed.server_time_ms() > 0 and feed.health.up  # 3 failures, 5 allowed: reconnected

    feed = _feed(emu.url, ["websocket.max_reconnect_attempts=2"], fake)
    emu.state.inject("status", "/fapi/v1/time", times=3, status=500)
    with pytest.raises(FeedDown, match="after 3 failed attempts"):
        feed.server_time_ms()
    assert not feed.health.up
    assert feed.server_time_ms() > 0 and feed.health.up  # healthy again with the next good answer


@effect("api.ws_url")
def test_ws_url_is_the_market_data_endpoint(emu) -> None:
    other = emulator_with_sample(seed=99)  # a different market on a second emulator
    try:
        fake = FakeTime()
        via_base = _feed(emu.url, [], fake).history(5)
        via_ws = _feed(emu.url, [f"api.ws_url={other.url}"], fake).history(5)
        assert [b[0] for b in via_base] == [b[0] for b in via_ws]  # same clock and bar times
        assert [b[4] for b in via_base] != [b[4] for b in via_ws]  # closes from the other exchange
        assert other.state.requests("/fapi/v1/klines")
    finally:
        other.stop()


@effect("execution.retry_delay_ms")
def test_retry_delay_spaces_post_only_retries(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gridctl.live_bridge.exchange import CcxtGateway
    from gridctl.live_bridge.options import LiveOptions
    from gridctl.live_bridge.runner import ExchangeClock, prepare

    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    slept = {}
    for delay in (100, 300):
        e = emulator_with_sample()
        try:
            strategy = load_strategy(
                "default",
                [f"execution.retry_delay_ms={delay}", "grid.grid_levels_long=1", "grid.grid_levels_short=1"],
            )
            venue = emulator_venue(e.url)
            clock = ExchangeClock()
            gateway = CcxtGateway(venue, live=True, clock=lambda c=clock: c.now_ms() / 1000.0)
            ready, ctx = prepare(
                strategy,
                venue,
                LiveOptions(
                    mode="live",
                    symbol="BTC/USDT:USDT",
                    journal=tmp_path / f"j{delay}.sqlite",
                    ops_port=0,
                    max_skew_ms=10**13,
                ),
                os.environ["GRIDCTL_OPS_TOKEN"],
                gateway=gateway,
                clock=clock,
            )
            try:
                ready.require()
                waits: list[float] = []
                posts_at_sleep: list[int] = []

                def sleep(s: float, e=e, waits=waits, posts=posts_at_sleep) -> None:
                    waits.append(s)
                    posts.append(len([q for q in e.state.requests("/fapi/v1/order") if q.method == "POST"]))

                ctx.bridge.sleep = sleep
                e.state.clear_log()
                # the first two placements are refused as post-only crossings (Binance -5022)
                e.state.inject(
                    "reject",
                    "/fapi/v1/order",
                    times=2,
                    code=-5022,
                    msg="Order would immediately match and take.",
                )
                e.state.advance_bar(SYMBOL_ID)
                for bar in ctx.feed.poll():
                    ctx.bridge.on_bar(bar)
                slept[delay] = waits
                assert ctx.bridge.errors["post_only"] == 2
                # both rungs' first attempts went out before the first wait (retries never hold back
                # the bar's other orders), then one retry each
                assert posts_at_sleep == [2, 3]
                assert "retries" in ctx.bridge.latency.phases  # timed apart from bar -> orders
            finally:
                ctx.close()
        finally:
            e.stop()
    assert slept == {100: [0.1, 0.1], 300: [0.3, 0.3]}


def test_polls_aim_at_the_next_bar_close() -> None:
    from gridctl.live_bridge.runner import CLOSE_GRACE_S, FAST_POLL_S, FAST_POLL_WINDOW_S, poll_wait_s

    bar = 60_000
    last = 1_000 * bar  # the newest bar delivered opened here; the next one closes at last + 2 bars
    due = last + 2 * bar
    assert poll_wait_s(None, bar, due, 1.0) == 1.0  # nothing delivered yet: the plain period
    assert poll_wait_s(last, bar, due - 30_000, 1.0) == 1.0  # close far away: at most poll_s
    assert poll_wait_s(last, bar, due - 400, 1.0) == pytest.approx(0.4 + CLOSE_GRACE_S)
    assert poll_wait_s(last, bar, due + 10, 1.0) == FAST_POLL_S  # due but not served yet: poll fast
    assert poll_wait_s(last, bar, due + int(FAST_POLL_WINDOW_S * 1000) + 1, 1.0) == 1.0  # then back off
    assert poll_wait_s(last, bar, due + 10, 0.05) == 0.05  # never longer than poll_s


def test_run_loop_waits_at_most_poll_s_between_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    from gridctl.live_bridge import runner as runner_mod
    from gridctl.live_bridge.runner import ExchangeClock, RunContext, run_loop

    class Feed:
        bar_ms, last_ts, polls = 60_000, None, 0
        health = FeedHealth()
        _sleep = None  # the retry wait (the feed worker swaps in its own)

        def poll(self):  # a bar on the third poll
            self.polls += 1
            return ["bar"] if self.polls == 3 else []

        def keep_alive(self) -> bool:
            return True

    class Bridge:
        class o:  # noqa: N801 - stands in for BridgeOptions
            mode = "paper"

        def __init__(self) -> None:
            self.bars: list[str] = []

        def on_bar(self, bar) -> None:
            self.bars.append(bar)

        ops = None

        def set_input_health(self, *a) -> None: ...
        def apply_commands(self) -> None: ...
        def check_stale(self) -> None: ...
        def publish(self) -> None: ...

    slept: list[float] = []
    # the feed worker's wait between polls, recorded instead of waited
    monkeypatch.setattr(runner_mod.FeedWorker, "_idle", lambda self, s: slept.append(s))
    for poll_s in (1.0, 0.05):
        slept.clear()
        ctx = RunContext(bridge=Bridge(), feed=Feed(), clock=ExchangeClock())
        assert run_loop(ctx, max_bars=1, poll_s=poll_s) == 1 and ctx.bridge.bars == ["bar"]
        assert slept[:2] == [poll_s, poll_s]  # no bar delivered yet: the plain period, twice
