"""A tiny hand-built market whose round trips are derived by hand (tests of the backtest report).

Numbers (market_builders.ISOLATED, three long rungs): centre C = 10000 (close of bar 0), step 1 %,
tick 0.1, qty 0.01, maker fee 0.0002 of the notional, TP one step away, no slippage, 1h bars.
- bar 1 (10000, 10090, 9790, 10000): path down first (90 <= 210): long rungs 9900 and 9800 fill; on the
  way back up their TPs ceil_tick(9800*1.01) = 9898 then ceil_tick(9900*1.01) = 9999 fill.
- bar 2 (10000, 10150, 10000, 10100): path low first; the short rung 10100 fills on the way up.
- bar 3 (10100, 10100, 9950, 9960): the short TP floor_tick(10100*0.99) = 9999 fills.
- bar 4 (9960, 9960, 9890, 9950): long rung 9900 fills; its TP 9999 is not reached: open at the end.
"""

from __future__ import annotations

from market_builders import bar_ts, flat, make_market, strategy

BARS = [
    *flat(10000, 1),
    (10000, 10090, 9790, 10000),
    (10000, 10150, 10000, 10100),
    (10100, 10100, 9950, 9960),
    (9960, 9960, 9890, 9950),
]


def round_trip_market():
    """(market, strategy) of the module docstring."""
    return make_market(BARS), strategy(grid__grid_levels_long=3)


#: (side, entry ts, entry price, exit ts, exit price, exit kind, qty, pnl, fees, bars held), by hand.
EXPECTED_TRIPS = [
    # lot 2: 0.01 * (9898 - 9800) = 0.98, fees 9800 * 0.01 * 0.0002 = 0.0196 and 0.019796
    ("long", bar_ts(1), 9800.0, bar_ts(1), 9898.0, "tp", 0.01, 0.940604, 0.039396, 0),
    # lot 1: 0.01 * (9999 - 9900) = 0.99, fees 0.0198 and 0.019998
    ("long", bar_ts(1), 9900.0, bar_ts(1), 9999.0, "tp", 0.01, 0.950202, 0.039798, 0),
    # short: 0.01 * (10100 - 9999) = 1.01, fees 0.0202 and 0.019998; entered bar 2, out bar 3
    ("short", bar_ts(2), 10100.0, bar_ts(3), 9999.0, "tp", 0.01, 0.969802, 0.040198, 1),
    # the last long entry: only its entry fee so far
    ("long", bar_ts(4), 9900.0, None, None, "open", 0.01, None, 0.0198, None),
]
