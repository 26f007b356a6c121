"""Count the requests a running ``--live`` loop sends during a 418 ban (real ccxt, emulator on 127.0.0.1).

Not a test: ``python tests/measure_live_rate_limits.py [--ban-s 15]`` runs ``runner.run_loop`` (wall
clock, the gateway's pacer on ``time.monotonic``) in a thread, makes the emulator answer the next request
with 418 and ``Retry-After: ban-s``, and prints the requests the emulator received during the ban and in
the seconds after it, with the pause reasons the bridge showed during the ban.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridctl.configs.loader import load_strategy
from gridctl.live_bridge.options import LiveOptions
from gridctl.live_bridge.runner import prepare, run_loop

from live_helpers import EMU_ENV, emulator_venue, emulator_with_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ban-s", type=int, default=15)
    ap.add_argument("--after-s", type=float, default=5.0)
    args = ap.parse_args()
    os.environ.update(EMU_ENV)
    emu = emulator_with_sample(days=1)
    venue = emulator_venue(emu.url, ["rate_limits.orders_per_second=10"])
    with tempfile.TemporaryDirectory() as tmp:
        ready, ctx = prepare(
            load_strategy("default", []),
            venue,
            LiveOptions(
                mode="live",
                symbol="BTC/USDT:USDT",
                journal=Path(tmp) / "j.sqlite",
                ops_port=0,
                max_skew_ms=10**13,
            ),
            "tok",
            feed_kw={"sleep": lambda s: None},
        )
        ready.require()
        state = emu.state
        loop = threading.Thread(target=run_loop, args=(ctx,), kwargs={"poll_s": 0.2, "fills_poll_s": 1.0})
        loop.daemon = True
        loop.start()
        start = len(state.requests())
        time.sleep(2.0)
        before = len(state.requests()) - start
        state.inject("status", None, status=418, retry_after=args.ban_s)
        while not any(r.status == 418 for r in state.requests()):
            time.sleep(0.01)
        t_ban = time.monotonic()
        n_ban = len(state.requests())
        reasons: set[str] = set()
        while time.monotonic() < t_ban + args.ban_s - 0.05:
            reasons.update(ctx.bridge.pause_reasons())
            time.sleep(0.1)
        during = len(state.requests()) - n_ban
        time.sleep(args.after_s)
        after = len(state.requests()) - n_ban - during
        print(f"requests in the 2 s before the ban: {before}")
        print(f"requests during the {args.ban_s} s ban (after the 418 itself): {during}")
        print(f"requests in the {args.after_s:g} s after it: {after}")
        print(f"pause reasons shown during the ban: {sorted(reasons)}")
        print(f"pause reasons now: {ctx.bridge.pause_reasons()}")
        ctx.close()
        emu.stop()


if __name__ == "__main__":
    main()
