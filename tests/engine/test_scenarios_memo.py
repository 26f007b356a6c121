"""Refusal memo: a refused entry is not sent again while what the refusal depended on is unchanged,
and is validated again once it changes (DESIGN.md "Order-size validation"). Both implementations."""

from __future__ import annotations

import pytest

from gridctl.engine.enums import EventKind, Reason

from market_builders import EIGHT_HOURS, IMPLS, T0, bar_ts, make_market, run, strategy, venue

MINUTE = 60_000


def rejected(led) -> list[tuple[int, int, int, float]]:
    """(ts, reason, side, qty) of every ORDER_REJECTED event."""
    return [
        (e["ts"], e["reason"], e["side"], round(e["qty"], 9))
        for e in led.events
        if e["kind"] == EventKind.ORDER_REJECTED
    ]


def entry_fills(led) -> list[tuple[int, int, float]]:
    return [(f["ts"], f["side"], f["price"]) for f in led.fills if f["kind"] == 0]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fill_tp", [True, False])
def test_equity_refusal_is_sent_again_once_equity_passes(impl, fill_tp):
    # Leverage 2, max_position_pct 0.5, equity 100.5, one rung per side, qty 0.01; C = 10000.
    # Close 0: long 9900: 0.01*9900/2 = 49.5 <= 0.5*100.5 = 50.25 -> placed. Short 10100: 50.5 > 50.25
    # -> SIZE_PCT; it passes once equity >= 50.5/0.5 = 101.
    # Bar 1 dips through 9900: long fills (maker fee 0.0198); close 9950 -> equity 100.5 - 0.0198 + 0.5
    # = 100.9802 < 101: the refusal still holds (no event).
    # Bar 2 closes at 10050 (below the short rung):
    #   fill_tp (tp 1 step, TP 9999 hit): realized 0.99, fee 0.019998 -> equity 101.450202, the long
    #     rung rests again; short: PCT 50.5 <= 50.725, margin (0.01 + 0.01 long resting)*10100/2 = 101
    #     <= 101.45 -> placed.
    #   not fill_tp (tp 3 steps, TP 10197 not hit, no fill on the bar): unrealized 0.01*150 = 1.5 ->
    #     equity 101.9802 >= 101: validated again; margin (0.01 + 0.01 long lot)*10100/2 = 101 <= 101.98
    #     -> placed.
    # Bar 3 trades through 10100: the short fills. The memo keyed on (price, qty, side position) alone
    # would never have sent it (equity is not part of it).
    bars = [
        (10000.0, 10000.0, 10000.0, 10000.0),
        (10000.0, 10000.0, 9850.0, 9950.0),
        (9950.0, 10050.0, 9950.0, 10050.0),
        (10050.0, 10150.0, 10050.0, 10100.0),
    ]
    s = strategy(
        backtest__initial_balance=100.5,
        position__max_position_pct=0.5,
        exit__tp_steps=1 if fill_tp else 3,
        exit__sl_steps=3,
    )
    led = run(impl, make_market(bars), s, venue(trading__leverage=2))
    assert rejected(led) == [(bar_ts(0), Reason.SIZE_PCT, 1, 0.01)]
    assert entry_fills(led) == [(bar_ts(1), 0, 9900.0), (bar_ts(3), 1, 10100.0)]


@pytest.mark.parametrize("impl", IMPLS)
def test_refusals_under_the_funding_guard_on_flat_1m_bars(impl):
    # 1,000 flat 1m bars from T0 at 10000; settlements every 8 h at rate 0.002 (longs pay, 20 bps >
    # 5 bps). Window 60 min. base_qty 0.1, max_position_size 0.05: 0.1 is refused (SIZE_QTY) on both
    # sides. Inside a window the long qty is floor_step(0.1 * L/60) with L = minutes left to the
    # settlement: refused for L = 59..31 (0.098 .. 0.051, 29 distinct sizes), placed for L <= 30.
    # Bar k closes at T0 + (k+1) min, so L = 59 at bar 420 and 31 at bar 448. The long: 0.1 at bar 0,
    # the 29 window sizes at bars 420..448; at bar 479's close (T0 + 8 h) the next settlement is 8 h
    # away and the long wants 0.1 again: the memo keeps the last 8 refusals per rung, so 0.1 is gone
    # and refused again; the same 29 at bars 900..928 and 0.1 again at bar 959 (T0 + 16 h).
    # The short's 0.1 is refused once and held for the whole run.
    # Total 1 + 3 + 2*29 = 62 rejections, in the kernel and the reference alike (a memo that
    # remembered everything would log 1 + 1 + 29 = 31).
    n = 1000
    bars = [(10000.0, 10000.0, 10000.0, 10000.0)] * n
    funding = [(T0 + k * EIGHT_HOURS, 0.002, 10000.0) for k in range(-1, 4)]
    s = strategy(
        grid__base_qty=0.1,
        position__max_position_size=0.05,
        funding__funding_window_minutes=60,
        funding__funding_max_cost_bps=5.0,
    )
    led = run(impl, make_market(bars, timeframe="1m", funding=funding), s, venue())
    rej = rejected(led)
    assert len(rej) == 62
    assert all(r[1] == Reason.SIZE_QTY for r in rej)
    assert [r for r in rej if r[2] == 1] == [(T0, Reason.SIZE_QTY, 1, 0.1)]
    long_ = [r for r in rej if r[2] == 0]
    window = [round(int(0.1 * L / 60 / 0.001 + 1e-9) * 0.001, 9) for L in range(59, 30, -1)]
    assert window[:3] == [0.098, 0.096, 0.095] and window[-1] == 0.051
    assert [r[3] for r in long_] == [0.1, *window, 0.1, *window, 0.1]
    bars_at = [0, *range(420, 449), 479, *range(900, 929), 959]
    assert [r[0] for r in long_] == [T0 + k * MINUTE for k in bars_at]


def test_kernel_and_reference_log_the_same_refusals_on_flat_1m_bars():
    n = 1000
    bars = [(10000.0, 10000.0, 10000.0, 10000.0)] * n
    funding = [(T0 + k * EIGHT_HOURS, 0.002, 10000.0) for k in range(-1, 4)]
    s = strategy(
        grid__base_qty=0.1,
        position__max_position_size=0.05,
        funding__funding_window_minutes=60,
        funding__funding_max_cost_bps=5.0,
    )
    m = make_market(bars, timeframe="1m", funding=funding)
    ref = run("reference", m, s, venue())
    ker = run("kernel", m, s, venue())
    assert rejected(ref) == rejected(ker)
    assert len(rejected(ref)) == 62
