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

Start-up (``startup_bench``, ``gridctl bench --startup``), each in fresh processes with their own
temporary numba cache directory:
- ``help_s``: wall time of ``gridctl --help`` (best of 3).
- ``compile_s`` / ``cached_start_s``: a Python process importing the engine and running one small
  backtest, first with an empty numba cache directory, then again with the cache it filled
  (``compile_cpu_s``: the CPU seconds of the first, steadier than wall time on a loaded machine).
- ``backtest_first_s`` / ``backtest_first_rss_mb`` and ``backtest_second_*``: wall time and peak
  resident memory of the default ``gridctl backtest`` (259,200 bars of the bundled sample market, on
  a temporary data directory), first with an empty numba cache (it compiles), then with it filled;
  ``*_cpu_s`` are their CPU seconds.
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
    "help_s": "<= 0.3",
    "backtest_first_s": "<= 20",
    "backtest_first_rss_mb": "< 500",
    "backtest_second_s": "<= 1.5",
}
#: What ``startup_bench`` (``gridctl bench --startup``) returns.
STARTUP_KEYS = (
    "help_s", "compile_s", "compile_cpu_s", "cached_start_s", "backtest_first_s", "backtest_first_rss_mb",
    "backtest_first_cpu_s", "backtest_second_s", "backtest_second_rss_mb", "backtest_second_cpu_s",
)  # fmt: skip

# Runs in a fresh interpreter: import the engine and run one small backtest with curves.
_PROBE = """
from research.bench import bench_market, bench_configs
from engine.run import run_single
run_single(bench_market(2 * 1440), *bench_configs(), curves=True)
"""

# Starts argv[2:] with posix_spawn, waits for it and writes [wall s, its ru_maxrss in KB, its CPU s]
# to argv[1];
# exits with the child's exit code. Runs with -I -S: a few MB, so it adds nothing to the child's peak.
_LAUNCHER = """
import json, os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(cmd[0], cmd, os.environ)
_pid, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
code = os.waitstatus_to_exitcode(status)
if code == 0:
    with open(out, "w") as f:
        json.dump([wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime], f)
sys.exit(code)
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


def gridctl_command() -> list[str]:
    """``gridctl`` for a fresh process: the installed script beside this Python, else ``python -m cli``."""
    script = Path(sys.executable).with_name("gridctl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cli"]


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, peak resident memory (MB) and CPU seconds of ``cmd`` run in a fresh process.

    CPU seconds (user + system) hardly change with other load on the machine; wall time does.

    The peak is the child's own ``ru_maxrss`` (``os.wait4``). Linux carries the memory high-water
    mark of the process that spawns a child into the child's figure, so ``cmd`` is started by a
    small launcher interpreter (``_LAUNCHER``) rather than by this one, which may hold hundreds of MB.
    """
    with tempfile.TemporaryDirectory(prefix="gridctl-child-") as tmp:
        result = Path(tmp) / "rusage.json"
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(result), *cmd],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=err,
                check=False,
            )
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"bench start-up: {' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
        wall, maxrss_kb, cpu = json.loads(result.read_text())
    return wall, maxrss_kb / 1024.0, cpu


def _child_env(cache_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    return env


def startup_bench(
    help_repeats: int = 3, progress: Callable[[str], None] = lambda _msg: None
) -> dict[str, float]:
    """Start-up figures, each from fresh processes (see STARTUP_KEYS); nothing is shared with this one.

    Every cold measurement gets its own empty temporary ``NUMBA_CACHE_DIR`` (so this machine's own
    cache neither helps nor is touched); each "second"/"cached" run reuses the cache its cold run
    filled. The backtests are the default ``gridctl backtest`` (bundled sample market) on a temporary
    data directory: the first one also generates the sample, as after a fresh install.
    """
    gridctl = gridctl_command()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gridctl-bench-") as tmp:
        root = Path(tmp)
        progress("start-up: gridctl --help ...")
        env = _child_env(root / "numba-help")
        out["help_s"] = min(run_child([*gridctl, "--help"], env)[0] for _ in range(help_repeats))
        progress("start-up: import + small backtest, empty then filled numba cache (compiles) ...")
        env = _child_env(root / "numba-probe")
        out["compile_s"], _rss, out["compile_cpu_s"] = run_child([sys.executable, "-c", _PROBE], env)
        out["cached_start_s"] = run_child([sys.executable, "-c", _PROBE], env)[0]
        progress("start-up: gridctl backtest twice, empty then filled numba cache (compiles) ...")
        env = _child_env(root / "numba-backtest")
        backtest = [*gridctl, "backtest", "--data", str(root / "data")]
        first, second = run_child(backtest, env), run_child(backtest, env)
        out["backtest_first_s"], out["backtest_first_rss_mb"], out["backtest_first_cpu_s"] = first
        out["backtest_second_s"], out["backtest_second_rss_mb"], out["backtest_second_cpu_s"] = second
    return out


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
    }
