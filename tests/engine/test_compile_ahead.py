"""engine.compile_ahead: a cold run compiles the fill path in a helper process and reuses it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from numba.core import types

import gridctl.engine.run
from gridctl.engine import compile_ahead
from gridctl.engine.compile_ahead import HELPER_KERNELS, LOCAL_KERNELS, step_call_signatures
from gridctl.engine.params import build_params
from gridctl.engine.run import _probe_args, detail_arrays, market_arrays

from market_builders import make_market, strategy, venue

ROOT = Path(__file__).resolve().parents[2]
#: 120 hourly bars swinging 2 % around 40,000: enough to fill a few rungs of the default ladder.
BARS = [(c, c * 1.004, c * 0.996, c) for c in [40000.0, 39600.0, 39200.0, 39800.0, 40400.0, 40000.0] * 20]


def _args() -> tuple:
    market = make_market(BARS[:4])
    params = build_params(strategy(), venue(), market)
    return _probe_args(market_arrays(market), detail_arrays(market, None), params, True)


def test_every_kernel_of_both_groups_gets_the_signature_the_bar_step_calls_it_with() -> None:
    sigs = step_call_signatures(_args())
    for _, name in HELPER_KERNELS + LOCAL_KERNELS:
        assert name in sigs, name
    # Spot checks by hand against bar_path_nb's source: path_nb(sim, rec, k, o, h, lw, c, t), the
    # groups typed as the run's Sim and Records (engine/contexts.py).
    path = sigs["path_nb"]
    assert [type(g).__name__ for g in path[:2]] == ["NamedTuple", "NamedTuple"]
    assert path[0].instance_class.__name__ == "Sim" and path[1].instance_class.__name__ == "Records"
    assert path[2] == types.int64 and path[3:7] == (types.float64,) * 4 and path[7] == types.int64
    # ... and against path_nb's: _path_nb(sim.st, sim.slots, sim.errs, k, o, h, lo, c, ts, sim.p,
    # sim.br, rec.fills, rec.ev, rec.cnt), each field typed as the group's (st 1-D, slots 3-D float64).
    sim, rec = path[0], path[1]
    inner = sigs["_path_nb"]
    assert inner[:3] == (sim.types[2], sim.types[3], sim.types[4])
    assert inner[0].ndim == 1 and inner[1].ndim == 3 and inner[1].dtype == types.float64
    assert inner[3:9] == path[2:8]
    assert inner[9:] == (sim.types[0], sim.types[1], rec.types[0], rec.types[2], rec.types[4])
    # bar_close_nb(k, t, h, lw, c, reg, funding, allow, sim, rec): the funding times are the run's
    # read-only int64 array, allow the step's boolean.
    close = sigs["bar_close_nb"]
    assert close[:2] == (types.int64, types.int64) and close[2:5] == (types.float64,) * 3
    assert close[6].instance_class.__name__ == "Funding"
    assert close[6].types[0].dtype == types.int64 and not close[6].types[0].mutable
    assert close[7] == types.boolean


def test_turned_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GRIDCTL_COMPILE_AHEAD", "0")
    assert compile_ahead.start(_args()) is None


COLD_RUN = textwrap.dedent(
    """
    import json, sys
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
    from market_builders import make_market, strategy, venue
    from gridctl.engine.fills import _detail_path_nb, _path_nb, _points_margin_check_nb, path_nb
    from gridctl.engine.step import bar_path_nb
    from gridctl.engine.step import bar_close_nb, bar_open_nb
    from gridctl.engine import compile_ahead
    from gridctl.engine.run import run_single
    seen = {}
    finish = compile_ahead.CompileAhead.finish
    def spy(self):
        seen.update(finish(self))
        return seen
    compile_ahead.CompileAhead.finish = spy
    bars = [(c, c * 1.004, c * 0.996, c) for c in [40000.0, 39600.0, 39200.0, 39800.0, 40400.0, 40000.0] * 20]
    out = run_single(make_market(bars), strategy(), venue())
    facts = {
        d.py_func.__name__: {"overloads": len(d.overloads), "hits": sum(d.stats.cache_hits.values()),
                             "misses": sum(d.stats.cache_misses.values())}
        for d in (_detail_path_nb, _path_nb, _points_margin_check_nb, bar_open_nb, bar_close_nb, bar_path_nb,
                  path_nb)
    }
    print(json.dumps({"ahead": seen, "kernels": facts, "fills": int(out.fills.shape[0]),
                      "equity": float(out.summary["final_equity"])}))
    """
)


def test_a_cold_run_loads_the_helpers_fill_path_and_compiles_nothing_twice(
    tmp_path: Path,
) -> None:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("GRIDCTL_COMPILE_AHEAD", None)
    proc = subprocess.run(
        [sys.executable, "-c", COLD_RUN, str(ROOT)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ahead"]["helper_exit"] == 0
    assert set(got["ahead"]["helper"]) == {"_detail_path_nb", "_path_nb", "_points_margin_check_nb"}
    for name in got["ahead"]["helper"]:
        # Loaded from the cache the helper wrote, never compiled here.
        assert got["kernels"][name] == {"overloads": 1, "hits": 1, "misses": 0}, name
    for name in ("bar_open_nb", "bar_close_nb"):
        # Compiled here once, for the signature the bar loop then used (a wrong guess compiles twice).
        assert got["kernels"][name]["overloads"] == 1, (name, got["kernels"][name])
    for name in ("bar_path_nb", "path_nb"):
        # Inlined into the bar step (inline_kernel): never compiled on their own, nor loaded.
        assert got["kernels"][name] == {"overloads": 0, "hits": 0, "misses": 0}, name
    # The same run on the warm kernels of this process gives the same ledgers.
    from gridctl.engine.run import run_single

    warm = run_single(make_market(BARS), strategy(), venue())
    assert warm.fills.shape[0] > 0  # the comparison below compares something
    assert got["fills"] == warm.fills.shape[0]
    assert got["equity"] == float(warm.summary["final_equity"])


def test_a_helper_started_early_is_taken_over_by_the_run_not_started_twice(monkeypatch) -> None:
    launched: list[list[str]] = []

    class FakeHelper:
        def __init__(self, cmd: list[str], **_: object) -> None:
            launched.append(cmd)
            self.stdin = io.BytesIO()
            self.stdin.close = lambda: None  # keep what was written readable

        def poll(self) -> int:
            return 0

    monkeypatch.setattr(compile_ahead.subprocess, "Popen", FakeHelper)
    monkeypatch.delenv("GRIDCTL_COMPILE_AHEAD", raising=False)
    monkeypatch.setattr(gridctl.engine.run, "kernels_ready", lambda *a: False)  # as on a cold cache
    market = make_market(BARS[:4])
    gridctl.engine.run.compile_early(strategy(), venue(), market.symbol, market.bar_ms)
    assert len(launched) == 1
    gridctl.engine.run.compile_early(strategy(), venue(), market.symbol, market.bar_ms)
    assert len(launched) == 1  # already running for this signature
    # The run over the real market (same types as the one-bar stand-in) takes that helper over.
    ahead = compile_ahead.start(_args())
    assert ahead is not None and len(launched) == 1
    assert compile_ahead._EARLY == {}
    assert [n for _, n, _ in ahead.remote] == ["_detail_path_nb", "_path_nb", "_points_margin_check_nb"]
    # With detail bars the early start stays out of the way (their arrays have their own types).
    gridctl.engine.run.compile_early(
        strategy(backtest__detail_timeframe="1m"), venue(), market.symbol, market.bar_ms
    )
    assert compile_ahead._EARLY == {}
