"""Order diff: the orders the engine's slot array wants on the exchange vs the orders resting there.

The engine's decisions live in the slot array (``engine/state.py``): a rung with ``SL_ORD_ON`` wants a
resting entry at ``SL_ORD_PRICE`` for ``SL_ORD_QTY``; a rung with ``SL_LOT_ON`` wants its lot's TP
(a reduce-only limit, maker, like the simulated venue fills it) and SL (a reduce-only stop-market).
``desired_orders`` reads that; ``diff_orders`` compares it with the exchange's open orders and returns
cancels and placements, at most as many placements as the run's request pacer lets out now
(``live_bridge.pacing``; the rest wait for the next bar).

Tolerance (``execution.order_price_tolerance_bps`` / ``order_qty_tolerance_pct``): an open order within
that price and quantity distance of the wanted one counts as the same order and is left alone, so
float noise and tick rounding never churn orders.

Client order IDs (``encode_client_id`` / ``parse_client_id``) carry the run id, side, level, kind and a
sequence number, in Binance's ``newClientOrderId`` charset (``[.A-Z:/a-z0-9_-]``, at most 36 chars):
``gc<run>-<L|S><level><E|T|S|F>-<seq>``. After a restart the bridge recognises its own orders by
them; orders without our run id are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridctl.engine.state import (
    SL_LOT_ON,
    SL_LOT_QTY,
    SL_ORD_ON,
    SL_ORD_PRICE,
    SL_ORD_QTY,
    SL_SL,
    SL_TP,
)
from gridctl.engine.validation import same_order_nb

KINDS = ("entry", "tp", "sl", "flatten", "guard")
# guard: protection of an exchange position the engine cannot explain (``Bridge.guard_exposure``)
_KIND_CODE = {"entry": "E", "tp": "T", "sl": "S", "flatten": "F", "guard": "G"}
_CODE_KIND = {v: k for k, v in _KIND_CODE.items()}
_SIDE_CODE = ("L", "S")  # engine side 0 long, 1 short
MAX_CLIENT_ID = 36
BINANCE_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
RUN_ID = re.compile(r"^[a-z0-9]{1,12}$")
_ID = re.compile(
    r"^gc(?P<run>[a-z0-9]{1,12})-(?P<side>[LS])(?P<level>\d{1,3})(?P<kind>[ETSFG])-(?P<seq>[a-z0-9]{1,12})$"
)


@dataclass(frozen=True)
class ClientId:
    """What a client order id says: run, engine side (0 long / 1 short), rung level, kind, sequence."""

    run_id: str
    side: int
    level: int
    kind: str
    seq: int


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if n == 0:
        return "0"
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "".join(reversed(out))


def encode_client_id(run_id: str, side: int, level: int, kind: str, seq: int) -> str:
    """``gc<run>-<L|S><level><kind>-<seq base36>``; raises ValueError on anything it cannot encode."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"run id must be 1-12 chars of [a-z0-9], got {run_id!r}")
    if side not in (0, 1):
        raise ValueError(f"side must be 0 (long) or 1 (short), got {side!r}")
    if not 0 <= level <= 999:
        raise ValueError(f"level must be 0..999, got {level!r}")
    if kind not in _KIND_CODE:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if seq < 0:
        raise ValueError(f"seq must be >= 0, got {seq!r}")
    cid = f"gc{run_id}-{_SIDE_CODE[side]}{level}{_KIND_CODE[kind]}-{_b36(seq)}"
    if len(cid) > MAX_CLIENT_ID:
        raise ValueError(f"client id {cid!r} is longer than {MAX_CLIENT_ID} chars")
    return cid


def parse_client_id(cid: str) -> ClientId | None:
    """The fields of one of our client ids, or None for any other id (never raises)."""
    m = _ID.match(cid or "")
    if m is None:
        return None
    return ClientId(
        run_id=m["run"],
        side=_SIDE_CODE.index(m["side"]),
        level=int(m["level"]),
        kind=_CODE_KIND[m["kind"]],
        seq=int(m["seq"], 36),
    )


@dataclass(frozen=True)
class WantedOrder:
    """One order the engine wants resting: key ``(side, level, kind)`` plus the exchange fields."""

    side: int  # engine side: 0 long, 1 short (the position side)
    level: int
    kind: str  # entry / tp / sl
    order_side: str  # buy / sell
    type: str  # limit / stop_market
    price: float  # limit price, or the stop's trigger price
    qty: float
    post_only: bool
    reduce_only: bool

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.side, self.level, self.kind)


@dataclass(frozen=True)
class RestingOrder:
    """An open order on the exchange as the diff needs it (client id, price or stop price, qty left)."""

    client_id: str
    price: float
    qty: float


@dataclass
class OrderPlan:
    """What to do this bar: cancel these client ids, place these orders, defer the rest."""

    cancels: list[str]
    places: list[WantedOrder]
    deferred: list[WantedOrder]
    kept: int
    foreign: int  # open orders without our run id: left alone


def desired_orders(slots: np.ndarray, maker_only: bool) -> list[WantedOrder]:
    """The orders the slot array wants on the exchange, exits first, then entries nearest rung first."""
    exits: list[WantedOrder] = []
    entries: list[WantedOrder] = []
    for idx in range(slots.shape[1]):
        level = idx + 1
        for side in range(2):
            s = slots[side, idx]
            if s[SL_ORD_ON] != 0.0:
                entries.append(
                    WantedOrder(
                        side,
                        level,
                        "entry",
                        "buy" if side == 0 else "sell",
                        "limit",
                        float(s[SL_ORD_PRICE]),
                        float(s[SL_ORD_QTY]),
                        maker_only,
                        False,
                    )
                )
            if s[SL_LOT_ON] != 0.0:
                close = "sell" if side == 0 else "buy"
                qty = float(s[SL_LOT_QTY])
                if s[SL_TP] == s[SL_TP]:
                    exits.append(
                        WantedOrder(side, level, "tp", close, "limit", float(s[SL_TP]), qty, False, True)
                    )
                if s[SL_SL] == s[SL_SL]:
                    exits.append(
                        WantedOrder(
                            side, level, "sl", close, "stop_market", float(s[SL_SL]), qty, False, True
                        )
                    )
    return exits + entries


def stop_coverage(open_orders: Iterable[Any], run_id: str) -> dict[str, float]:
    """Position side (``LONG`` / ``SHORT``) -> unfilled quantity of our resting stops that close it.

    ``open_orders`` are ``gateway.OpenOrder``s; a stop closes the long when it sells on the LONG side and
    the short when it buys on the SHORT side. Orders of other runs, and opening stops, count for nothing.
    """
    out: dict[str, float] = {}
    for o in open_orders:
        cid = parse_client_id(o.client_id)
        if cid is None or cid.run_id != run_id or o.type != "stop_market":
            continue
        closing = (o.position_side == "LONG" and o.side == "sell") or (
            o.position_side == "SHORT" and o.side == "buy"
        )
        if closing:
            left = float(o.qty) - float(o.filled_qty or 0.0)
            out[o.position_side] = out.get(o.position_side, 0.0) + max(left, 0.0)
    return out


def same_order(want: WantedOrder, have: RestingOrder, price_tol_bps: float, qty_tol_pct: float) -> bool:
    """Price within ``price_tol_bps`` and qty within ``qty_tol_pct`` of the wanted order: the engine's own
    test (``engine.validation.same_order_nb``), so the backtest keeps exactly the orders the bridge keeps."""
    if want.price <= 0.0 or want.qty <= 0.0:
        return False
    return bool(same_order_nb(have.price, have.qty, want.price, want.qty, price_tol_bps, qty_tol_pct))


def diff_orders(
    wanted: Sequence[WantedOrder],
    resting: Iterable[RestingOrder],
    run_id: str,
    price_tol_bps: float,
    qty_tol_pct: float,
    budget: int,
) -> OrderPlan:
    """Cancels and placements that turn ``resting`` into ``wanted``; at most ``budget`` placements.

    An open order of ours whose key is not wanted, or which is outside tolerance, is cancelled (a
    replacement is a cancel plus a placement); a second order with the same key is cancelled too.
    Placements beyond ``budget`` are deferred (exits come first in ``wanted``, so they go first).
    """
    by_key: dict[tuple[int, int, str], list[RestingOrder]] = {}
    foreign = 0
    cancels: list[str] = []
    for order in resting:
        cid = parse_client_id(order.client_id)
        if cid is None or cid.run_id != run_id:
            foreign += 1
            continue
        if cid.kind in ("flatten", "guard"):
            continue  # a flatten's market orders, the guards of unexplained exposure: not the engine's
        by_key.setdefault((cid.side, cid.level, cid.kind), []).append(order)
    places: list[WantedOrder] = []
    deferred: list[WantedOrder] = []
    kept = 0
    seen: set[tuple[int, int, str]] = set()
    for want in wanted:
        seen.add(want.key)
        have = by_key.get(want.key, [])
        match = next((h for h in have if same_order(want, h, price_tol_bps, qty_tol_pct)), None)
        for h in have:
            if h is not match:
                cancels.append(h.client_id)
        if match is not None:
            kept += 1
            continue
        if len(places) < budget:
            places.append(want)
        else:
            deferred.append(want)
    for key, have in by_key.items():
        if key not in seen:
            cancels.extend(h.client_id for h in have)
    return OrderPlan(cancels=cancels, places=places, deferred=deferred, kept=kept, foreign=foreign)
