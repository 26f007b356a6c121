"""Measure the live bridge's bar -> orders-sent latency against the emulator (real ccxt, 127.0.0.1).

Not a test (never asserts timings): ``python tests/measure_live_latency.py [--bars N] [--levels L]``
prints the median / p99 / max over the bars, where the time went (phases of ``Bridge.on_bar``) and the
slowest bars with the exchange requests they made. Run it on a quiet machine (note ``uptime``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridctl.configs.loader import load_strategy
from gridctl.live_bridge.exchange import CcxtGateway
from gridctl.live_bridge.options import LiveOptions
from gridctl.live_bridge.runner import ExchangeClock, prepare

from live_helpers import EMU_ENV, SYMBOL_ID, emulator_venue, emulator_with_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=240)
    ap.add_argument("--levels", type=int, default=6, help="rungs per side (the default strategy has 6)")
    ap.add_argument("--step-bps", type=float, default=15.0)
    ap.add_argument("--worst", type=int, default=5)
    args = ap.parse_args()
    os.environ.update(EMU_ENV)
    emu = emulator_with_sample(days=1)
    strategy = load_strategy(
        "default",
        [
            f"grid.grid_levels_long={args.levels}",
            f"grid.grid_levels_short={args.levels}",
            f"grid.grid_step_bps={args.step_bps}",
        ],
    )
    venue = emulator_venue(
        emu.url, ["rate_limits.orders_per_second=50", "rate_limits.orders_per_minute=3000"]
    )
    clock = ExchangeClock()
    gateway = CcxtGateway(venue, live=True, clock=lambda: clock.now_ms() / 1000.0)
    with tempfile.TemporaryDirectory() as tmp:
        ready, ctx = prepare(
            strategy,
            venue,
            LiveOptions(
                mode="live",
                symbol="BTC/USDT:USDT",
                journal=Path(tmp) / "j.sqlite",
                ops_port=0,
                max_skew_ms=10**13,
            ),
            "tok",
            gateway=gateway,
            clock=clock,
        )
        try:
            ready.require()
            bridge, feed = ctx.bridge, ctx.feed
            per_bar = []
            for _ in range(args.bars):
                emu.state.advance_bar(SYMBOL_ID)
                emu.state.clear_log()
                for bar in feed.poll():
                    n_before = len(bridge.latency.samples_ms)
                    mark = len(emu.state.requests())
                    bridge.on_bar(bar)
                    if len(bridge.latency.samples_ms) > n_before:
                        reqs = emu.state.requests()[mark:]
                        per_bar.append(
                            (
                                bridge.latency.samples_ms[-1],
                                {k: v[-1] for k, v in bridge.latency.phases.items()},
                                [f"{q.method} {q.path}" for q in reqs],
                            )
                        )
            lat = bridge.latency.summary()
        finally:
            ctx.close()
            emu.stop()
    print(f"uptime: {os.getloadavg()}  at {time.strftime('%H:%M:%S', time.gmtime())} UTC")
    print(f"rungs per side {args.levels}, bars {lat['n']}, orders sent {bridge.sent}")
    print(f"bar -> orders sent: median {lat['median_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, "
          f"max {lat['max_ms']:.2f} ms")  # fmt: skip
    for name, q in lat["phases"].items():
        print(
            f"  {name:7s} median {q['median_ms']:.2f} ms, p99 {q['p99_ms']:.2f} ms, max {q['max_ms']:.2f} ms"
        )
    print(f"slowest {args.worst} bars (ms, phases, requests until the next bar):")
    for total, phases, reqs in sorted(per_bar, key=lambda r: -r[0])[: args.worst]:
        ph = ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
        print(f"  {total:.1f}: {ph}; {len(reqs)} requests: {', '.join(sorted(set(reqs)))}")


if __name__ == "__main__":
    main()
