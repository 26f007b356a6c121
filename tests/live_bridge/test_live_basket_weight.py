"""A live basket reads the account's account-wide facts once per poll and per bar, not once per symbol.

The request weight is the account's (one IP, one pacer): before this, every symbol's bridge read
``/fapi/v3/account`` (weight 5) and ``/fapi/v3/positionRisk`` (weight 5, every symbol's rows in one
answer: ccxt sends no ``symbol``) on its own, at every fills poll and every bar close, so N symbols cost
N times the account reads. Counted on the emulator's request log (the exchange's view), through the real
ccxt client: a two-symbol basket (``live_helpers.basket_emulator``: BTC and ETH on one account).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridctl.configs.loader import load_strategy
from gridctl.live_bridge.options import LiveOptions
from gridctl.live_bridge.runner import _between_bars, prepare_basket

from live_helpers import BTC, EMU_ENV, ETH, IDS, basket_emulator, emulator_venue

SETS = ["grid.grid_step_bps=10", "exit.tp_steps=2", "grid.grid_levels_long=3", "grid.grid_levels_short=3",
        "grid.base_notional=150", "regime.hysteresis_bps=5"]  # fmt: skip
ACCOUNT, POSITIONS, INCOME = "/fapi/v3/account", "/fapi/v3/positionRisk", "/fapi/v1/income"


@pytest.fixture
def basket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    emu = basket_emulator(SETS)
    venue = emulator_venue(
        emu.url,
        ["rate_limits.weight_per_minute=100000", "rate_limits.orders_per_minute=10000",
         "rate_limits.orders_per_second=100"],
    )  # fmt: skip
    strategy = load_strategy("default", [f'strategy.symbols=["{BTC}", "{ETH}"]', *SETS])
    opts = LiveOptions(
        mode="live", symbols=(BTC, ETH), journal=tmp_path / "j.sqlite", ops_port=0, max_skew_ms=10**13
    )
    ready, ctx = prepare_basket(
        strategy, venue, opts, os.environ["GRIDCTL_OPS_TOKEN"], feed_kw={"sleep": lambda s: None}
    )
    try:
        ready.require()
        yield emu, ctx
    finally:
        ctx.close()
        emu.stop()


def _count(emu: Any, step: Any) -> Counter[str]:
    """The requests to the account endpoints the emulator saw while ``step`` ran."""
    emu.state.clear_log()
    step()
    return Counter(r.path for r in emu.state.requests() if r.path in (ACCOUNT, POSITIONS, INCOME))


def _bar(emu: Any, ctx: Any) -> None:
    ts = {emu.state.advance_bar(IDS[sym])[0] for sym in (BTC, ETH)}
    assert len(ts) == 1
    bars = {}
    for sym, feed in ctx.feeds.items():
        (bar,) = feed.poll()
        bars[sym] = bar
    ctx.bridge.on_bars(ts.pop(), bars)


def test_a_basket_reads_the_account_once_per_poll_and_per_bar(basket: tuple[Any, Any]) -> None:
    emu, ctx = basket
    bridges = list(ctx.bridge.bridges.values())
    poll = getattr(ctx.bridge, "shared_read", None)  # (older code: no shared read)

    def between() -> float:
        return _between_bars(bridges, 0.0, 5.0, poll) if poll else _between_bars(bridges, 0.0, 5.0)

    for _ in range(3):
        # a bar close: every symbol books, the account closes the bar, every symbol sends and reads
        # the account for the next bar: one account, one positions and one funding income read for both
        assert _count(emu, lambda: _bar(emu, ctx)) == {ACCOUNT: 1, POSITIONS: 1, INCOME: 1}
        # a fills poll between bars (fills due), as run_basket_loop makes it: every symbol's protection
        # check on one read
        assert _count(emu, between) == {ACCOUNT: 1, POSITIONS: 1}
    for sym, b in ctx.bridge.bridges.items():
        assert b.account is not None  # every member holds the account read this poll
        assert "margin" not in b.fail_reasons, (sym, b.fail_reasons)


def test_one_read_gives_each_symbol_its_own_positions_and_the_accounts_totals(
    basket: tuple[Any, Any],
) -> None:
    """``CcxtGateway.accounts`` against ``account(symbol)`` on hand-set positions: BTC long 0.003 at
    40000, ETH short 0.05 at 2000 (the emulator's books, set directly)."""
    emu, ctx = basket
    acct = emu.state.account
    acct.position(IDS[BTC], "LONG")[:] = [0.003, 40000.0]
    acct.position(IDS[ETH], "SHORT")[:] = [0.05, 2000.0]
    gw = ctx.gateway
    emu.state.clear_log()
    both = gw.accounts((BTC, ETH))
    assert Counter(r.path for r in emu.state.requests()) == {ACCOUNT: 1, POSITIONS: 1}
    qty = {sym: {side: p.qty for side, p in both[sym].positions.items()} for sym in both}
    assert qty == {BTC: {"LONG": 0.003, "SHORT": 0.0}, ETH: {"LONG": 0.0, "SHORT": 0.05}}
    assert both[BTC].positions["LONG"].entry_price == 40000.0
    assert both[ETH].positions["SHORT"].entry_price == 2000.0
    for sym in (BTC, ETH):
        one = gw.account(sym)  # the per-symbol read: the same figures
        assert both[sym].positions == one.positions
        assert (both[sym].wallet_balance, both[sym].margin_ratio) == (one.wallet_balance, one.margin_ratio)


def test_an_unreadable_account_pauses_entries_on_every_symbol(basket: tuple[Any, Any]) -> None:
    """The one read fails (a 503 on the account, once): every symbol's margin input is unreadable and its
    entries pause - not only the first symbol's, and no symbol keeps an older view. Each protection check
    then reads its own positions again (a check without positions is no check), so the bar costs the
    failed read plus one per symbol; the next bar's read clears the pause on both."""
    emu, ctx = basket
    _bar(emu, ctx)
    emu.state.inject("status", ACCOUNT, status=503)
    got = _count(emu, lambda: _bar(emu, ctx))
    # 1 shared (failed) + 2 protection re-reads; positions 0 + 2; no income (read after an account only)
    assert got == {ACCOUNT: 3, POSITIONS: 2}
    for sym, b in ctx.bridge.bridges.items():
        assert "account unreadable" in b.fail_reasons.get("margin", ""), (sym, b.fail_reasons)
        assert not b.entries_allowed
    assert _count(emu, lambda: _bar(emu, ctx)) == {ACCOUNT: 1, POSITIONS: 1, INCOME: 1}
    for sym, b in ctx.bridge.bridges.items():
        assert "margin" not in b.fail_reasons, (sym, b.fail_reasons)


class _Gw:
    """``accounts`` answering from a dict (or raising ``err``), counting its calls."""

    def __init__(self, views: dict[str, Any], err: Exception | None = None) -> None:
        self.views, self.err, self.calls = views, err, 0

    def accounts(self, symbols: tuple[str, ...]) -> dict[str, Any]:
        self.calls += 1
        if self.err is not None:
            raise self.err
        return {s: self.views[s] for s in symbols if s in self.views}


def test_a_shared_read_serves_each_symbol_once_within_its_block() -> None:
    from gridctl.live_bridge.basket import SharedAccountRead
    from gridctl.live_bridge.gateway import ExchangeUnavailable

    read = SharedAccountRead(_Gw({"A": "a", "B": "b"}), ("A", "B"))
    assert read.take("A") is None  # outside a block: every symbol reads its own
    with read.shared():
        assert read.take("A") == "a" and read.take("B") == "b"
        assert read.take("A") is None  # a re-read (a repair's) goes to the exchange
    with read.shared():
        assert read.take("B") == "b"
    assert read.take("A") is None  # the block's unused view dropped with it
    short = SharedAccountRead(_Gw({"A": "a"}), ("A", "B"))
    with short.shared():
        assert short.take("B") is None  # no view: B reads its own, never an empty default
    down = SharedAccountRead(_Gw({}, ExchangeUnavailable("account: 503")), ("A", "B"))
    with down.shared():
        for sym in ("A", "B"):
            with pytest.raises(ExchangeUnavailable, match="503"):
                down.take(sym)
        assert down.take("A") is None  # the failure told once per symbol; a re-read is its own


def test_one_income_read_books_each_symbol_its_own_funding(basket: tuple[Any, Any]) -> None:
    """Funding income rows set on the emulator after every cursor: BTC -1.25 and +0.5, ETH +2.0, and
    one of a symbol outside the basket (SOLUSDT, +9.0, ignored). One income read at the bar; BTC books
    -0.75, ETH +2.0; the next bar's read books nothing again (each cursor past its rows)."""
    emu, ctx = basket
    _bar(emu, ctx)
    acct = emu.state.account
    t = max(b._income_cursor for b in ctx.bridge.bridges.values())
    before = {sym: b.funding_income for sym, b in ctx.bridge.bridges.items()}
    for sym, amount, dt in (
        ("BTCUSDT", -1.25, 1),
        ("ETHUSDT", 2.0, 2),
        ("SOLUSDT", 9.0, 3),
        ("BTCUSDT", 0.5, 4),
    ):
        row = {"symbol": sym, "incomeType": "FUNDING_FEE", "income": f"{amount:.8f}", "asset": "USDT"}
        acct.income.append(
            {**row, "info": "FUNDING_FEE", "time": t + dt, "tranId": acct.new_id(), "tradeId": ""}
        )
    assert _count(emu, lambda: _bar(emu, ctx))[INCOME] == 1
    got = {sym: b.funding_income - before[sym] for sym, b in ctx.bridge.bridges.items()}
    assert got == {BTC: pytest.approx(-0.75), ETH: pytest.approx(2.0)}
    assert all(b.income_problem is None for b in ctx.bridge.bridges.values())
    _bar(emu, ctx)
    assert {sym: b.funding_income - before[sym] for sym, b in ctx.bridge.bridges.items()} == got


def test_a_symbol_paid_no_funding_does_not_hold_the_shared_income_read_at_the_runs_start(
    basket: tuple[Any, Any],
) -> None:
    """The one income read starts at the basket's earliest cursor. ETH (flat, paid nothing) kept its
    cursor at the run's start, so every bar's read asked for BTC's whole history since then (30 weight a
    page, one more page every 1000 rows). A read that saw rows up to time T moves every symbol's cursor
    to T (rows AT T still taken: a symbol's row of that settlement may come a moment later): BTC's row
    at t+1 gives BTC t+2 and ETH t+1, so the next bar asks from t+1."""
    emu, ctx = basket
    _bar(emu, ctx)
    acct = emu.state.account
    t = max(b._income_cursor for b in ctx.bridge.bridges.values())
    row = {"symbol": "BTCUSDT", "incomeType": "FUNDING_FEE", "income": "-1.25000000", "asset": "USDT"}
    acct.income.append({**row, "info": "FUNDING_FEE", "time": t + 1, "tranId": acct.new_id(), "tradeId": ""})
    _bar(emu, ctx)
    cursors = {sym: b._income_cursor for sym, b in ctx.bridge.bridges.items()}
    assert cursors == {BTC: t + 2, ETH: t + 1}
    emu.state.clear_log()
    _bar(emu, ctx)
    (asked,) = [r.query for r in emu.state.requests() if r.path == INCOME]
    assert int(asked["startTime"]) == t + 1
    assert ctx.bridge.bridges[BTC].funding_income == pytest.approx(-1.25)  # booked once


def test_a_stop_says_so_when_an_entry_filled_since_the_last_poll_has_no_stop(basket: tuple[Any, Any]) -> None:
    """Ctrl-C right after ETH's highest long entry filled (no fills poll since): the cancel of the other
    entries leaves that long without a stop until a restart books it. The stop line said "exits and stops
    stay"; it must name the uncovered position (ETH LONG, the order's quantity)."""
    from gridctl.live_bridge.runner import cancel_entries_at_stop

    from emulator.private import _execute

    emu, ctx = basket
    _bar(emu, ctx)
    acct, eth = emu.state.account, IDS[ETH]
    entries = [
        o
        for o in acct.open_orders(eth)
        if o.type == "LIMIT" and o.position_side == "LONG" and o.side == "BUY" and not o.reduce_only
    ]
    order = max(entries, key=lambda o: o.price)
    qty = order.qty
    _execute(emu.state, order, order.price, True, emu.state.server_time(), 10**9)
    assert abs(acct.position(eth, "LONG")[0]) == pytest.approx(qty)
    text = cancel_entries_at_stop(ctx.bridge.bridges)
    assert f"POSITION WITHOUT A STOP ({ETH} LONG {round(qty, 12)})" in text, text
    assert not [o for o in acct.open_orders(eth) if o.type == "LIMIT" and not o.reduce_only]
