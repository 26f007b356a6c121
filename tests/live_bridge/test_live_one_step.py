"""One bar step for every driver (issue 14): the live bridge runs the engine's own bar close and its own
post-only retry ladder; ``live_bridge/`` only fetches, sends and journals.

Behaviour: a post-only rejection that ends in the engine's ``RETRY_LIMIT`` (attempts used up, or the
deviation bound) in a backtest - a bar that opens through the resting entry - writes the same ledger
rows in a ``--live`` run whose placements the emulator refuses as post-only (-5022). Before, the live
copy of the ladder wrote no event at all. Structure: no per-bar decision code in ``live_bridge/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_live_bridge_emulator import FLAT_BAR, RUNGS, _advance, _ladder_emulator, _on_emulator, _ours

from gridctl.configs.loader import load_strategy
from gridctl.engine.enums import EventKind, Reason
from gridctl.engine.records import C_EVENTS
from gridctl.engine.run import run_single
from gridctl.engine.state import S_CB_ACTIVE, S_RETRY_LIMITS, SL_ORD_ON

from market_builders import make_market

LIVE = Path(__file__).resolve().parents[2] / "live_bridge"
#: One rung a side, 40 bps apart: from a close of 40,000 the long entry rests at 39,840, the short at
#: 40,160 (tick 0.1 on the emulator's BTCUSDT and in the venue the backtest below uses).
ONE_RUNG = [
    "grid.grid_levels_long=1",
    "grid.grid_levels_short=1",
    "grid.grid_step_bps=40",
    "grid.base_qty=0.003",
]
P0 = 39_840.0
TICK = 0.1


def _ladder_rows(events) -> list[tuple[int, int, int, int, float, float, float]]:
    """(kind, reason, side, level, price, qty, value) of the long side's post-only, retry-limit and
    refusal rows."""
    keep = (EventKind.POST_ONLY_REJECT, EventKind.RETRY_LIMIT, EventKind.ORDER_REJECTED)
    return [
        (int(e["kind"]), int(e["reason"]), int(e["side"]), int(e["level"]), round(float(e["price"]), 6),
         round(float(e["qty"]), 9), round(float(e["value"]), 6))
        for e in events
        if int(e["kind"]) in keep and int(e["side"]) == 0
    ]  # fmt: skip


def _ladder_ts(events) -> list[int]:
    keep = (EventKind.POST_ONLY_REJECT, EventKind.RETRY_LIMIT, EventKind.ORDER_REJECTED)
    return [int(e["ts"]) for e in events if int(e["kind"]) in keep and int(e["side"]) == 0]


# (strategy overrides, venue overrides, the long entry's rows derived by hand from the retry rule: retry
# j one tick further from the market; RETRY_LIMIT after the last attempt (value: the attempts) or beyond
# the deviation bound (price: the retry that would pass it, value: its deviation in bps); a retry
# validate_entry_nb refuses is recorded (value: the side's position) and ends the retries; the live
# run's retry limits, both sides)
CASES = {
    "attempts used up": (
        ["execution.retry_attempts=2", "execution.retry_max_price_deviation_bps=100"],
        [],
        [
            (EventKind.POST_ONLY_REJECT, Reason.POST_ONLY, 0, 1, P0, 0.003, 0.0),
            (EventKind.POST_ONLY_REJECT, Reason.POST_ONLY, 0, 1, P0 - TICK, 0.003, 1.0),
            (EventKind.POST_ONLY_REJECT, Reason.POST_ONLY, 0, 1, P0 - 2 * TICK, 0.003, 2.0),
            (EventKind.RETRY_LIMIT, Reason.RETRY_ATTEMPTS, 0, 1, P0, 0.003, 2.0),
        ],
        2,
    ),
    "deviation bound": (
        # one tick is 0.1 / 39,840 = 0.0251 bps: the first retry is already beyond 0.02 bps
        ["execution.retry_attempts=3", "execution.retry_max_price_deviation_bps=0.02"],
        [],
        [
            (EventKind.POST_ONLY_REJECT, Reason.POST_ONLY, 0, 1, P0, 0.003, 0.0),
            (EventKind.RETRY_LIMIT, Reason.RETRY_DEVIATION, 0, 1, P0 - TICK, 0.003, TICK / P0 * 1e4),
        ],
        2,
    ),
    "retry refused by validation": (
        # 0.003 x 39,840 = 119.52 USDT meets a 119.52 minimum order; the retry's 119.5197 does not
        ["execution.retry_attempts=3", "execution.retry_max_price_deviation_bps=100"],
        ["risk.min_order_size_usdt=119.52"],
        [
            (EventKind.POST_ONLY_REJECT, Reason.POST_ONLY, 0, 1, P0, 0.003, 0.0),
            (EventKind.ORDER_REJECTED, Reason.SIZE_ORDER, 0, 1, P0 - TICK, 0.003, 0.0),
        ],
        1,
    ),
    "retries off": (
        ["execution.use_post_only_retries=false"],
        [],
        [(EventKind.POST_ONLY_REJECT, Reason.POST_ONLY, 0, 1, P0, 0.003, 0.0)],
        0,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_engines_retry_ladder_writes_the_same_rows_live_as_in_the_backtest(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides, venue_overrides, expected, live_limits = CASES[case]
    expected = [(int(k), int(r), s, lv, round(p, 6), q, round(v, 6)) for k, r, s, lv, p, q, v in expected]
    strategy = load_strategy("default", ONE_RUNG + overrides)

    # --- live: every placement of the first bar is refused as post-only by the emulator
    emu = _ladder_emulator(*[FLAT_BAR] * 4)
    with _on_emulator(emu, monkeypatch) as prep:
        ready, ctx = prep(tmp_path, ONE_RUNG + overrides, venue_overrides or None)
        ready.require()
        bridge = ctx.bridge
        bridge.sleep = lambda _s: None
        emu.state.inject("reject", "/fapi/v1/order", times=1_000, code=-5022, msg="Post Only order rejected.")
        _advance(emu, ctx)
        s = bridge.s
        decided_at = int(s.ts[s.n - 1])
        live_events = s.ev[: int(s.cnt[C_EVENTS])].copy()
        venue = s.venue
        # the ladder ended without a resting entry: the engine took it off the slot array, and the
        # exchange holds no entry of ours
        assert s.slots[0, 0, SL_ORD_ON] == 0.0 and s.slots[1, 0, SL_ORD_ON] == 0.0
        assert _ours(emu, bridge, "entry") == []
        with emu.state.lock:
            emu.state.faults.clear()
    live_rows = _ladder_rows(live_events)
    assert live_rows == expected
    # stamped at the open after the deciding close, as the simulated venue stamps its retries
    assert set(_ladder_ts(live_events)) == {decided_at + 60_000}

    # --- backtest: the entry decided at the first close meets an open 40 below it (39,800 <= every retry)
    market = make_market([(40_000.0,) * 4, (39_800.0,) * 4, (39_800.0,) * 4], timeframe="1m")
    out = run_single(market, strategy, venue)
    back_rows = _ladder_rows(out.events)
    assert back_rows == expected
    assert set(_ladder_ts(out.events)) == {int(market.ts[0]) + 60_000}
    # only the long entry met the gapped open in the backtest; live the short one was refused too and,
    # with retries on, ran out of them (every placement refused, each retry within the bounds)
    assert out.summary["retry_limits"] == float(sum(1 for row in expected if row[0] == EventKind.RETRY_LIMIT))
    assert s.state[S_RETRY_LIMITS] == float(live_limits)


def _functions(path: Path) -> dict[str, ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _names(path: Path) -> set[str]:
    """Every name the module's code uses: imported, read or an attribute (comments and strings aside)."""
    out: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.ImportFrom):
            out.update(a.name for a in n.names)
    return out


def _calls(fn: ast.FunctionDef) -> set[str]:
    out = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.Call):
            f = n.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return out


def test_live_bridge_holds_no_bar_step_or_retry_ladder_of_its_own() -> None:
    files = sorted(LIVE.glob("*.py"))
    assert files
    for path in files:
        fns = _functions(path)
        assert "step_live" not in fns, path
        used = _names(path)
        # the per-bar pieces and the ladder's parameters are the engine's business only
        for name in ("decide_nb", "bar_gates_nb", "decision_needed_nb", "record_bar_nb", "mark_to_market_nb",
                     "apply_funding_nb", "P_RETRY_ATTEMPTS", "P_RETRY_MAX_DEV_BPS", "P_TICK"):  # fmt: skip
            assert name not in used, (path.name, name)
    session = _functions(LIVE / "session.py")
    # the live bar close is the engine's bar_open_nb + bar_close_nb, the kernels step_nb composes
    assert {"bar_open_nb", "bar_close_nb"} <= _calls(session["step_close"])
    step = _functions(Path(__file__).resolve().parents[2] / "engine" / "step.py")
    assert {"bar_open_nb", "bar_close_nb", "bar_path_nb"} <= _calls(step["step_nb"])
    assert "path_nb" in _calls(step["bar_path_nb"])  # the simulated venue (or its detail walk)
    assert {"decide_nb", "bar_gates_nb", "record_bar_nb"} <= _calls(step["bar_close_nb"])
    # bridge.py writes no slot: every change goes through the session's kernels (refresh_triggers_nb after)
    for n in ast.walk(ast.parse((LIVE / "bridge.py").read_text())):
        targets = (
            n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AugAssign) else []
        )
        for t in targets:
            assert not (isinstance(t, ast.Subscript) and "slots" in ast.unparse(t.value)), ast.unparse(n)
    # the retry ladder: the bridge only sends, the engine decides each retry and books each answer
    bridge = _functions(LIVE / "bridge.py")
    assert {"retry_price", "retry_rests"} <= _calls(bridge["_retry"])
    assert "post_only_rejected" in _calls(bridge["_post_only_rejected"])
    fills = _functions(Path(__file__).resolve().parents[2] / "engine" / "fills.py")
    # the simulated venue's retry loop runs the very kernels the session's entry points wrap
    assert {"_retry_price_nb", "retry_rests_nb", "_post_only_reject_nb"} <= _calls(fills["_retry_nb"])
    assert "_retry_price_nb" in _calls(fills["retry_price_nb"])
    assert "_post_only_reject_nb" in _calls(fills["post_only_reject_nb"])
    assert {"retry_price_nb", "retry_rests_nb", "post_only_reject_nb"} <= {
        c for name in ("post_only_rejected", "retry_price", "retry_rests") for c in _calls(session[name])
    }


def test_a_rejection_that_trips_the_breaker_stops_the_rest_of_the_ladder_as_in_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's ``post_only_reject_nb`` trips the breaker at the 2nd error (limit 2 a minute) and
    cancels every entry: the four entries the diff had not sent yet stay unsent, no retry runs."""

    emu = _ladder_emulator(*[FLAT_BAR] * 4)
    with _on_emulator(emu, monkeypatch) as prep:
        ready, ctx = prep(tmp_path, [*RUNGS, "risk_management.max_errors_per_minute=2"],
                          ["rate_limits.orders_per_second=10"])  # fmt: skip
        ready.require()
        bridge = ctx.bridge
        bridge.sleep = lambda _s: None
        emu.state.clear_log()
        emu.state.inject("reject", "/fapi/v1/order", times=2, code=-5022, msg="Post Only order rejected.")
        _advance(emu, ctx)
        posts = [q for q in emu.state.requests("/fapi/v1/order") if q.method == "POST"]
        # long 1 and short 1 were sent and refused; the trip took levels 2 and 3 back before they went
        assert len(posts) == 2
        assert bridge.s.state[S_CB_ACTIVE] == 1.0 and _ours(emu, bridge, "entry") == []
        s = bridge.s
        kinds = [int(e["kind"]) for e in s.ev[: int(s.cnt[C_EVENTS])]]
        assert kinds.count(EventKind.POST_ONLY_REJECT) == 2 and EventKind.RETRY_LIMIT not in kinds
        assert kinds.count(EventKind.CIRCUIT_BREAKER_TRIP) == 1
