"""Order diff, tolerance, rate limits and client order ids (live_bridge.orders)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridctl.engine.state import (
    N_SLOT,
    SL_LOT_ON,
    SL_LOT_QTY,
    SL_ORD_ON,
    SL_ORD_PRICE,
    SL_ORD_QTY,
    SL_SL,
    SL_TP,
)
from gridctl.live_bridge.orders import (
    BINANCE_CLIENT_ID,
    MAX_CLIENT_ID,
    RestingOrder,
    desired_orders,
    diff_orders,
    encode_client_id,
    parse_client_id,
)

from effects import effect

RUN = "a1b2c3d4"


@given(
    run=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
    side=st.integers(0, 1),
    level=st.integers(0, 999),
    kind=st.sampled_from(["entry", "tp", "sl", "flatten"]),
    seq=st.integers(0, 36**8 - 1),
)
def test_client_id_round_trip(run: str, side: int, level: int, kind: str, seq: int) -> None:
    cid = encode_client_id(run, side, level, kind, seq)
    assert len(cid) <= MAX_CLIENT_ID
    assert BINANCE_CLIENT_ID.match(cid)
    back = parse_client_id(cid)
    assert back is not None
    assert (back.run_id, back.side, back.level, back.kind, back.seq) == (run, side, level, kind, seq)


@given(st.text(max_size=40))
def test_foreign_ids_parse_to_none_or_valid(text: str) -> None:
    parsed = parse_client_id(text)
    if parsed is not None:  # only our own grammar parses, and then it encodes back to the same text
        assert encode_client_id(parsed.run_id, parsed.side, parsed.level, parsed.kind, parsed.seq) == text


def test_client_id_examples_and_refusals() -> None:
    assert encode_client_id(RUN, 0, 3, "entry", 35) == "gca1b2c3d4-L3E-z"
    assert parse_client_id("web_abcdef") is None
    assert parse_client_id("gcRUN-L3E-1") is None  # upper case run id is not ours
    for bad in (
        ("A", 0, 1, "entry", 1),
        (RUN, 2, 1, "entry", 1),
        (RUN, 0, 1000, "entry", 1),
        (RUN, 0, 1, "stop", 1),
    ):
        with pytest.raises(ValueError):
            encode_client_id(*bad)


def _slots(levels: int = 3) -> np.ndarray:
    s = np.full((2, levels, N_SLOT), np.nan)
    s[:, :, SL_ORD_ON] = 0.0
    s[:, :, SL_LOT_ON] = 0.0
    return s


def test_desired_orders_from_slots() -> None:
    s = _slots()
    s[0, 0, [SL_ORD_ON, SL_ORD_PRICE, SL_ORD_QTY]] = (1.0, 99.0, 0.5)  # long entry rung 1
    s[1, 1, [SL_LOT_ON, SL_LOT_QTY, SL_TP, SL_SL]] = (1.0, 0.25, 95.0, 110.0)  # short lot rung 2
    want = desired_orders(s, maker_only=True)
    got = [
        (w.kind, w.side, w.level, w.order_side, w.type, w.price, w.qty, w.post_only, w.reduce_only)
        for w in want
    ]
    assert got == [
        ("tp", 1, 2, "buy", "limit", 95.0, 0.25, False, True),
        ("sl", 1, 2, "buy", "stop_market", 110.0, 0.25, False, True),
        ("entry", 0, 1, "buy", "limit", 99.0, 0.5, True, False),
    ]


def _want_entry(price: float, qty: float) -> list:
    s = _slots()
    s[0, 0, [SL_ORD_ON, SL_ORD_PRICE, SL_ORD_QTY]] = (1.0, price, qty)
    return desired_orders(s, True)


def test_diff_keeps_within_tolerance_and_replaces_outside() -> None:
    cid = encode_client_id(RUN, 0, 1, "entry", 7)
    want = _want_entry(100.0, 1.0)
    # 0.5 bps and 0.5 % away: the same order
    plan = diff_orders(want, [RestingOrder(cid, 100.005, 0.995)], RUN, 1.0, 1.0, budget=10)
    assert (plan.cancels, plan.places, plan.kept) == ([], [], 1)
    # 2 bps away: cancel + place
    plan = diff_orders(want, [RestingOrder(cid, 100.02, 1.0)], RUN, 1.0, 1.0, budget=10)
    assert plan.cancels == [cid] and [p.price for p in plan.places] == [100.0]
    # 2 % smaller: cancel + place
    plan = diff_orders(want, [RestingOrder(cid, 100.0, 0.98)], RUN, 1.0, 1.0, budget=10)
    assert plan.cancels == [cid] and len(plan.places) == 1


@effect("execution.order_price_tolerance_bps")
def test_price_tolerance_field_changes_churn() -> None:
    from gridctl.configs.loader import load_strategy

    cid = encode_client_id(RUN, 0, 1, "entry", 1)
    want = _want_entry(100.0, 1.0)
    have = [RestingOrder(cid, 100.03, 1.0)]  # 3 bps away
    plans = {}
    for tol in (1.0, 5.0):
        cfg = load_strategy("default", [f"execution.order_price_tolerance_bps={tol}"])
        ex = cfg.execution
        plans[tol] = diff_orders(
            want, have, RUN, ex.order_price_tolerance_bps, ex.order_qty_tolerance_pct, 10
        )
    assert plans[1.0].cancels == [cid] and len(plans[1.0].places) == 1
    assert plans[5.0].cancels == [] and plans[5.0].kept == 1


@effect("execution.order_qty_tolerance_pct")
def test_qty_tolerance_field_changes_churn() -> None:
    from gridctl.configs.loader import load_strategy

    cid = encode_client_id(RUN, 0, 1, "entry", 1)
    want = _want_entry(100.0, 1.0)
    have = [RestingOrder(cid, 100.0, 0.97)]  # 3 % smaller
    kept = {}
    for tol in (1.0, 5.0):
        ex = load_strategy("default", [f"execution.order_qty_tolerance_pct={tol}"]).execution
        kept[tol] = diff_orders(
            want, have, RUN, ex.order_price_tolerance_bps, ex.order_qty_tolerance_pct, 10
        ).kept
    assert kept == {1.0: 0, 5.0: 1}


def test_diff_cancels_unwanted_and_duplicates_leaves_foreign() -> None:
    want = _want_entry(100.0, 1.0)
    a = encode_client_id(RUN, 0, 1, "entry", 1)
    b = encode_client_id(RUN, 0, 1, "entry", 2)  # duplicate of the same rung
    c = encode_client_id(RUN, 1, 2, "tp", 3)  # no lot there any more
    other_run = encode_client_id("zzz", 0, 1, "entry", 4)
    manual = "web_123"
    resting = [RestingOrder(x, 100.0, 1.0) for x in (a, b, c, other_run, manual)]
    plan = diff_orders(want, resting, RUN, 1.0, 1.0, budget=10)
    assert (
        plan.kept == 1 and sorted(plan.cancels) == sorted([b, c]) and plan.foreign == 2 and plan.places == []
    )


def test_diff_budget_defers_entries_after_exits() -> None:
    s = _slots()
    for i in range(3):
        s[0, i, [SL_ORD_ON, SL_ORD_PRICE, SL_ORD_QTY]] = (1.0, 99.0 - i, 0.1)
    s[1, 0, [SL_LOT_ON, SL_LOT_QTY, SL_TP, SL_SL]] = (1.0, 0.1, 95.0, 110.0)
    plan = diff_orders(desired_orders(s, True), [], RUN, 1.0, 1.0, budget=3)
    assert [(p.kind, p.level) for p in plan.places] == [("tp", 1), ("sl", 1), ("entry", 1)]
    assert [(p.kind, p.level) for p in plan.deferred] == [("entry", 2), ("entry", 3)]
