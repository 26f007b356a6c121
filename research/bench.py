"""`gridctl bench`: how fast the kernel, the batch driver and the reference simulator run, and numba start-up.

Measurements (all on the bundled sample generator's 1m bars, built in memory; default strategy on
venue binance_futures with every risk gate on):
- ``kernel_bars_per_s``: one parameter set through ``engine.run.run_single`` (one core, ledgers but
  no equity curve), after a warm-up run on the same market so compilation is excluded; the best of
  ``REPEATS`` runs, as for the batch.
- ``batch_bar_evals_per_s``: ``engine.batch.run_batch`` over ``sets`` parameter sets (grid step
  within +/-10 % of the strategy's) on all cores: bars * sets / seconds.
- ``reference_bars_per_s``: the pure-Python reference simulator (``tests/reference_sim.py``, loaded by
  file path because it lives with the tests) on the first ``reference_bars`` bars; None when the
  file is not there (an installed package without its tests).
- ``compile_s`` / ``cached_start_s``: a fresh Python process importing the engine and running one
  small backtest, first with an empty numba cache directory, then again with the cache it filled.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba

from configs.loader import load_strategy, load_venue
from configs.schema import StrategyConfig
from data.market import Market, market_from_arrays
from data.sample import SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, generate_sample

REPO = Path(__file__).resolve().parents[1]
REFERENCE_SIM = REPO / "tests" / "reference_sim.py"
BARS_PER_DAY = 1440
FUNDING_INTERVAL_MS = 8 * 3_600_000
#: Kernel and batch timings are the best of this many runs (the machine may carry other load).
REPEATS = 5
GATES_ON = [
    "risk_management.enable_position_validation=true",
    "risk_management.enable_circuit_breaker=true",
    "risk_management.enable_drawdown_protection=true",
]
TARGETS = {
    "kernel_bars_per_s": ">= 10,000,000",
    "batch_vs_kernel": ">= 1.8",
    "kernel_vs_reference": ">= 50",
}

# Runs in a fresh interpreter: import the engine and run one small backtest, print the timings.
_PROBE = """
import json, time
t0 = time.perf_counter()
from research.bench import bench_market, bench_configs
from engine.run import run_single
market = bench_market(2 * 1440)
strategy, venue = bench_configs()
t1 = time.perf_counter()
run_single(market, strategy, venue, curves=True)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_run_s": t2 - t1}))
"""


def bench_market(bars: int, seed: int = 7) -> Market:
    """``bars`` 1m bars of the sample generator (in memory) with the funding settlements they need."""
    days = math.ceil(bars / BARS_PER_DAY)
    candles, _mark, funding = generate_sample(days, seed)
    c = candles.head(bars)
    ts = c["ts"].to_numpy()
    last_close = int(ts[-1]) + 60_000
    f = funding.filter(funding["ts"] <= last_close + FUNDING_INTERVAL_MS)
    return market_from_arrays(
        SAMPLE_SYMBOL,
        SAMPLE_TIMEFRAME,
        ts,
        c["open"].to_numpy(),
        c["high"].to_numpy(),
        c["low"].to_numpy(),
        c["close"].to_numpy(),
        c["volume"].to_numpy(),
        f["ts"].to_numpy(),
        f["rate"].to_numpy(),
        f["mark_price"].to_numpy(),
        source="bench sample",
    )


def bench_configs() -> tuple[StrategyConfig, Any]:
    """The default strategy with every gate on, on the Binance USD-M venue."""
    return load_strategy("default", GATES_ON), load_venue("binance_futures")


def _slice(market: Market, n: int) -> Market:
    last_close = int(market.ts[n - 1]) + market.bar_ms
    keep = market.funding_ts <= last_close + FUNDING_INTERVAL_MS
    return market_from_arrays(
        market.symbol,
        market.timeframe,
        market.ts[:n],
        market.open[:n],
        market.high[:n],
        market.low[:n],
        market.close[:n],
        market.volume[:n],
        market.funding_ts[keep],
        market.funding_rate[keep],
        market.funding_mark[keep],
        source="bench slice",
    )


def _timed(fn: Callable[[], Any], repeats: int = 1) -> float:
    """Best (lowest) wall time of ``repeats`` calls: the least disturbed by other load on the machine."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def load_reference() -> Any | None:
    """The reference simulator module, or None when tests/reference_sim.py is not present."""
    if not REFERENCE_SIM.is_file():
        return None
    spec = importlib.util.spec_from_file_location("gridctl_reference_sim", REFERENCE_SIM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def batch_overrides(sets: int, base_step_bps: float) -> list[dict[str, float]]:
    """``sets`` parameter sets whose grid steps spread evenly over +/-10 % around ``base_step_bps``.

    Staying near the base keeps the work per bar comparable with the single-set measurement.
    """
    span = max(sets - 1, 1)
    return [{"grid.grid_step_bps": base_step_bps * (0.9 + 0.2 * i / span)} for i in range(sets)]


def startup_times() -> dict[str, float]:
    """Compile time (empty numba cache) and cached start time, each in a fresh Python process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="gridctl-numba-cache-") as cache:
        env["NUMBA_CACHE_DIR"] = cache
        runs = []
        for _ in range(2):
            proc = subprocess.run(
                [sys.executable, "-c", _PROBE], env=env, cwd=REPO, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise RuntimeError(f"bench start-up probe failed:\n{proc.stderr[-2000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "compile_s": runs[0]["import_s"] + runs[0]["first_run_s"],
        "cached_start_s": runs[1]["import_s"] + runs[1]["first_run_s"],
    }


def run_bench(
    bars: int = 1_000_000,
    sets: int = 64,
    reference_bars: int = 20_000,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Run every measurement and return them (bars/s and seconds; see the module docstring)."""
    from engine.batch import run_batch
    from engine.run import run_single

    progress(f"generating {bars:,} 1m bars in memory ...")
    market = bench_market(bars)
    strategy, venue = bench_configs()

    # Warm-ups run on the very arrays that are timed, so no compilation (or cache load) of another
    # type signature can fall into a measurement.
    progress("kernel: warm-up (compile), then one set on one core ...")
    run_single(market, strategy, venue, curves=False)
    kernel_s = _timed(lambda: run_single(market, strategy, venue, curves=False), REPEATS)

    progress(f"batch: warm-up, then {sets} sets on {numba.get_num_threads()} threads ...")
    overrides = batch_overrides(sets, strategy.grid.grid_step_bps)
    run_batch(market, strategy, venue, overrides[:1])
    batch_s = _timed(lambda: run_batch(market, strategy, venue, overrides), REPEATS)

    reference = load_reference()
    ref_n = min(reference_bars, bars)
    ref_rate = None
    if reference is not None:
        progress(f"reference simulator: {ref_n:,} bars in pure Python ...")
        ref_market = _slice(market, ref_n)
        ref_rate = ref_n / _timed(lambda: reference.simulate(ref_market, strategy, venue))

    progress("start-up: fresh processes with an empty, then a filled numba cache ...")
    start = startup_times()
    kernel_rate = bars / kernel_s
    return {
        "bars": bars,
        "sets": sets,
        "threads": numba.get_num_threads(),
        "reference_bars": ref_n,
        "kernel_bars_per_s": kernel_rate,
        "batch_bar_evals_per_s": bars * sets / batch_s,
        "batch_vs_kernel": bars * sets / batch_s / kernel_rate,
        "reference_bars_per_s": ref_rate,
        "kernel_vs_reference": kernel_rate / ref_rate if ref_rate else None,
        **start,
    }
