"""Measure the basket batch driver against single-symbol batches on the same bars (CPU seconds).

Not a test (never asserts timings): ``python tests/measure_basket_batch.py --data-dir D --symbols
BTC/USDT:USDT,ETH/USDT:USDT,XRP/USDT:USDT --sets 32`` runs ``engine.batch.run_basket_batch`` (the basket
once per parameter set, one kernel call) and ``engine.batch.run_batch`` on each symbol alone with the
same sets (the shipped default strategy, grid step and stop distance varied), each the best of 3 after a
warm-up, and prints one JSON line: ``basket_vs_singles`` is the basket's CPU over the singles' sum (the
target: a basket of N costs no more than N single runs per set). The machine is shared: CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.overrides import basket_strategies
from gridctl.data.market import load_market
from gridctl.engine.batch import run_basket_batch, run_batch


def best_cpu_s(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best CPU seconds of ``repeats`` calls after one warm-up call (compile or cache load)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--exchange", default="binanceusdm")
    ap.add_argument("--symbols", default="BTC/USDT:USDT,ETH/USDT:USDT,XRP/USDT:USDT")
    ap.add_argument("--timeframe", default="1h")
    ap.add_argument("--start-ms", type=int, default=1_704_067_200_000)  # 2024-01-01
    ap.add_argument("--end-ms", type=int, default=1_764_547_200_000)  # 2025-12-01
    ap.add_argument("--sets", type=int, default=32)
    args = ap.parse_args()
    syms = args.symbols.split(",")
    venue = load_venue("binance_futures")
    basket = load_strategy("default", [f"strategy.symbols={json.dumps(syms)}"])
    own = basket_strategies(basket)
    window = (args.timeframe, args.start_ms, args.end_ms)
    markets = {s: load_market(args.data_dir, args.exchange, s, *window) for s in syms}
    n = args.sets
    step = [20 + 100 * i / max(n - 1, 1) for i in range(n)]
    sets = [{"grid.grid_step_bps": step[i], "exit.sl_steps": 3 + i % 8} for i in range(n)]
    basket_s = best_cpu_s(lambda: run_basket_batch(markets, basket, venue, sets))
    singles = {s: best_cpu_s(lambda s=s: run_batch(markets[s], own[s], venue, sets)) for s in syms}
    total = sum(singles.values())
    bars = sum(len(m.ts) for m in markets.values())
    print(
        json.dumps(
            {
                "symbols": syms,
                "sets": n,
                "symbol_bars": bars,
                "basket_batch_cpu_s": round(basket_s, 3),
                "single_batches_cpu_s": {k: round(v, 3) for k, v in singles.items()},
                "singles_total_cpu_s": round(total, 3),
                "basket_vs_singles": round(basket_s / total, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
