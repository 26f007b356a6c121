"""Count the request weight a running ``--live`` basket spends in one minute (real ccxt, emulator on
127.0.0.1).

Not a test: ``python tests/measure_basket_weight.py [--seconds 60] [--poll-s 1] [--fills-poll-s 5]`` runs
``runner.run_basket_loop`` (wall clock) on the two-symbol emulator basket (``live_helpers.basket_emulator``:
BTC and ETH on one account) in a thread, closes one bar, then counts every request the emulator received
over the next ``--seconds`` (one more bar closed at its end, counted until the loop ended), weighted as
Binance weighs them (the emulator's ``ROUTE_WEIGHTS``; every other route 1), and prints the weight per
path and in total.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridctl.configs.loader import load_strategy
from gridctl.live_bridge.options import LiveOptions
from gridctl.live_bridge.runner import prepare_basket, run_basket_loop

from emulator.binance_usdm import ROUTE_WEIGHTS
from live_helpers import BTC, EMU_ENV, ETH, IDS, basket_emulator, emulator_venue

SETS = ["grid.grid_step_bps=10", "exit.tp_steps=2", "grid.grid_levels_long=3", "grid.grid_levels_short=3",
        "grid.base_notional=150", "regime.hysteresis_bps=5"]  # fmt: skip


def _close_bar(emu, ctx, n: int) -> None:
    for sym in (BTC, ETH):
        emu.state.advance_bar(IDS[sym])
    while ctx.bridge.session.n < n:
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--poll-s", type=float, default=1.0)
    ap.add_argument("--fills-poll-s", type=float, default=5.0)
    args = ap.parse_args()
    os.environ.update(EMU_ENV)
    emu = basket_emulator(SETS)
    venue = emulator_venue(
        emu.url, ["rate_limits.weight_per_minute=100000", "rate_limits.orders_per_minute=10000"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        opts = LiveOptions(
            mode="live", symbols=(BTC, ETH), journal=Path(tmp) / "j.sqlite", ops_port=0, max_skew_ms=10**13
        )
        strategy = load_strategy("default", [f'strategy.symbols=["{BTC}", "{ETH}"]', *SETS])
        ready, ctx = prepare_basket(strategy, venue, opts, "tok", feed_kw={"sleep": lambda s: None})
        ready.require()
        n0 = ctx.bridge.session.n
        kw = {"max_bars": 2, "poll_s": args.poll_s, "fills_poll_s": args.fills_poll_s}
        loop = threading.Thread(target=run_basket_loop, args=(ctx,), kwargs=kw, daemon=True)
        loop.start()
        _close_bar(emu, ctx, n0 + 1)
        time.sleep(2.0)  # the first bar's reads after the close done (a fills poll may be in them)
        emu.state.clear_log()
        time.sleep(args.seconds)
        _close_bar(emu, ctx, n0 + 2)
        loop.join(30)  # the loop ends after its second bar: that bar's reads are all in the log
        log = emu.state.requests()
        weight = Counter()
        for r in log:
            weight[f"{r.method} {r.path}"] += ROUTE_WEIGHTS.get((r.method, r.path), 1)
        for path, w in weight.most_common():
            print(f"{w:6d}  {path}")
        print(f"{sum(weight.values()):6d}  total over {args.seconds:g} s and one bar, 2 symbols")
        ctx.close()
        emu.stop()


if __name__ == "__main__":
    main()
