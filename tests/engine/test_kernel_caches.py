"""Quiet-bar shortcuts of the kernel: each must give exactly the answer of the direct computation.

* A quiet bar repeats the last decision only while the close stays on the same side of every free
  rung; a close that crosses one re-plans (skip counts, resting orders).
* The funding guard's cached answer equals a fresh evaluation at every close time.
* The margin cache (brackets, liquidation price, buffer-safe band) equals the direct bracket lookup
  and liquidation-price formula at every price, including the band edges and their float neighbours.
* numba's on-disk kernel cache is dropped when any engine module changes, wherever numba keeps it.
"""

from __future__ import annotations

import math
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core.caching import FunctionCache

import gridctl.engine.run
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.engine.funding import funding_guard_nb
from gridctl.engine.margin import (
    B_CAP,
    BAND_RTOL,
    account_maint_margin_nb,
    liquidation_price_nb,
    near_liquidation_nb,
    total_maint_margin_nb,
)
from gridctl.engine.numba_compat import drop_stale_kernel_cache, kernel_cache_dir, kernel_sources_digest
from gridctl.engine.params import P_FUNDING_MAX_COST_BPS, P_FUNDING_WINDOW_MIN, build_params
from gridctl.engine.run import kernels_ready, market_arrays, no_detail, run_single
from gridctl.engine.state import (
    S_LONG_AVG,
    S_LONG_QTY,
    S_SHORT_AVG,
    S_SHORT_QTY,
    S_WALLET,
    init_state,
)
from gridctl.engine.step import run_bars_nb

from market_builders import entries, make_market, run, strategy, venue

ENGINE = Path(run_bars_nb.py_func.__code__.co_filename).parent
MARKET = SimpleNamespace(symbol="BTC/USDT:USDT", bar_ms=60_000, timeframe="1m")
HOUR = 3_600_000


def default_params():
    return build_params(load_strategy("default"), load_venue("binance_futures"), MARKET)


# ------------------------------------------------------------------------------ quiet bars re-plan


def test_skip_count_drops_a_rung_the_close_moved_past() -> None:
    # One rung per side, grid step 1 %, centre 100: long rung floor_tick(99.0) = 99.0, short 101.0.
    # Throttle 0 makes every qty floor_step(0.01 * 0) = 0 < min_qty: each free rung on the right side
    # of the close is a precision skip, and no order ever rests (so nothing fills).
    # bar 0 close 100: long 99 < 100 and short 101 > 100 -> 2 skips
    # bar 1 close 98.5: long 99 is not below the close (wrong side, not counted); short -> 1 skip
    # bar 2 close 100: both again -> 2 skips.  Total 5 (repeating bar 0's decision would give 6).
    bars = [(100.0, 100.0, 100.0, 100.0), (100.0, 100.0, 98.5, 98.5), (98.5, 100.0, 98.5, 100.0)]
    out = run("kernel", make_market(bars), strategy(policy__throttle=0.0), venue())
    assert out.summary["skipped_precision"] == 5
    assert entries(out) == []


def test_resting_entry_is_cancelled_when_the_close_lands_on_its_price() -> None:
    # base_qty 0.1: long 99.0 x 0.1 (9.9 USDT >= 5) and short 101.0 rest after bar 0.
    # bar 1 trades down to 99.0 and closes there: without fill_on_touch a buy limit at 99.0 needs a
    # trade below 99.0, so it does not fill; the close 99.0 is not above the rung, so the rung is no
    # longer wanted and the order is cancelled.  bar 2 trades down to 98.0: nothing rests at 99.0,
    # so there is no fill (an order kept from bar 0 would have filled at 99.0).
    bars = [(100.0, 100.0, 100.0, 100.0), (100.0, 100.0, 99.0, 99.0), (99.0, 99.0, 98.0, 98.0)]
    out = run("kernel", make_market(bars), strategy(grid__base_qty=0.1), venue())
    assert entries(out) == []
    ref = run("reference", make_market(bars), strategy(grid__base_qty=0.1), venue())
    assert entries(ref) == []


# ------------------------------------------------------------------------------ funding guard cache


def direct_funding_guard(close_time, fts, rates, window_min, max_cost):
    """DESIGN.md's funding guard, written out in plain Python (independent of the kernel's cache)."""
    settled = [i for i in range(len(fts)) if fts[i] <= close_time]
    if not settled or math.isnan(rates[settled[-1]]):
        return (False, 1.0, 1.0)  # no known rate: no new entries
    j = settled[-1]
    if j + 1 >= len(fts):
        return (True, 1.0, 1.0)  # no next settlement: the window cannot be measured
    left = fts[j + 1] - close_time
    window = window_min * 60_000.0
    cost_bps = abs(rates[j]) * 1e4
    if left > window or cost_bps <= max_cost:
        return (True, 1.0, 1.0)
    scale = max(0.0, left / window)
    if rates[j] > 0:
        return (True, scale, 1.0)  # longs pay
    if rates[j] < 0:
        return (True, 1.0, scale)  # shorts pay
    return (True, 1.0, 1.0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    rates=st.lists(
        st.sampled_from([math.nan, 0.0, 0.0001, -0.0001, 0.002, -0.002, 0.0075]), min_size=1, max_size=5
    ),
    window_min=st.sampled_from([60, 240, 480, 1440]),
    max_cost=st.sampled_from([0.0, 1.0, 12.0]),
    first=st.integers(-2, 3),
    step_min=st.sampled_from([1, 15, 60, 97]),
)
def test_cached_funding_guard_equals_a_direct_evaluation(rates, window_min, max_cost, first, step_min):
    p = default_params().vector.copy()
    p[P_FUNDING_WINDOW_MIN] = window_min
    p[P_FUNDING_MAX_COST_BPS] = max_cost
    # Settlements every 8 h starting at `first` * 8 h; closes every step_min minutes from 0 to 48 h.
    fts = np.array([(first + i) * 8 * HOUR for i in range(len(rates))], dtype=np.int64)
    frate = np.array(rates, dtype=np.float64)
    cached = init_state(p).state
    for close_time in range(0, 48 * HOUR, step_min * 60_000):
        got = funding_guard_nb(cached, float(close_time), fts, frate, p)
        want = direct_funding_guard(close_time, fts.tolist(), rates, window_min, max_cost)
        assert got == pytest.approx(want, rel=1e-12), close_time


# ------------------------------------------------------------------------------ margin cache


def direct_near_liquidation(br, w, lq, la, sq, sa, c, buffer):
    lp = liquidation_price_nb(br, w, lq, la, sq, sa, c)
    return lp == lp and abs(c - lp) / c < buffer


def probe_prices(br, lq, sq, la, sa, w, buffer):
    """Prices around every boundary the cache relies on: bracket edges, LP/(1 +/- buffer), LP itself."""
    out = []
    for q in (lq, sq):
        if q > 0.0:
            for cap in br[:, B_CAP]:
                out.append(cap / q)
    base = 0.5 * (la + sa) if lq > 0.0 and sq > 0.0 else (la if lq > 0.0 else sa)
    for guess in (base, 0.7 * base, 1.3 * base):
        lp = liquidation_price_nb(br, w, lq, la, sq, sa, guess)
        if lp == lp:
            out += [lp, lp / (1.0 + buffer), lp / (1.0 - buffer) if buffer < 1.0 else 2.0 * lp]
    prices = []
    for x in out:
        for y in (x, x * (1.0 + BAND_RTOL), x * (1.0 - BAND_RTOL), x * (1.0 + 3e-9), x * (1.0 - 3e-9)):
            prices += [np.nextafter(y, -np.inf), y, np.nextafter(y, np.inf)]
    return [x for x in prices if x > 0.0 and math.isfinite(x)]


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    w=st.floats(50.0, 200_000.0),
    lq=st.sampled_from([0.0, 0.001, 0.05, 0.9, 1.0, 12.0, 60.0]),
    sq=st.sampled_from([0.0, 0.002, 0.5, 1.0, 9.0]),
    la=st.floats(20_000.0, 90_000.0),
    sa=st.floats(20_000.0, 90_000.0),
    buffer=st.sampled_from([0.05, 0.15, 0.5, 0.7, 1.0]),
    walk=st.lists(st.floats(-0.3, 0.3), min_size=1, max_size=25),
    seed=st.integers(0, 2**31 - 1),
)
def test_margin_cache_equals_the_direct_computation(w, lq, sq, la, sa, buffer, walk, seed):
    br = default_params().brackets
    st_ = init_state(default_params().vector).state
    st_[S_WALLET] = w
    st_[S_LONG_QTY] = lq
    st_[S_LONG_AVG] = la if lq > 0.0 else 0.0
    st_[S_SHORT_QTY] = sq
    st_[S_SHORT_AVG] = sa if sq > 0.0 else 0.0
    la, sa = st_[S_LONG_AVG], st_[S_SHORT_AVG]
    # A random walk across brackets, then every boundary probe in shuffled order; the account
    # changes once half-way (a different wallet must not reuse the old cache).
    prices = [60_000.0 * math.exp(sum(walk[: i + 1])) for i in range(len(walk))]
    probes = probe_prices(br, lq, sq, la, sa, w, buffer)
    np.random.default_rng(seed).shuffle(probes)
    prices += probes
    for i, c in enumerate(prices):
        if i == len(prices) // 2:
            st_[S_WALLET] = w = w * 0.9
        assert account_maint_margin_nb(st_, br, c) == total_maint_margin_nb(br, lq, sq, c), c
        if lq > 0.0 or sq > 0.0:
            got = near_liquidation_nb(st_, br, c, buffer)
            assert got == direct_near_liquidation(br, w, lq, la, sq, sa, c, buffer), c
        assert account_maint_margin_nb(st_, br, c) == total_maint_margin_nb(br, lq, sq, c), c


# ------------------------------------------------------------------------------ numba's on-disk cache


def _engine_copy(tmp_path: Path) -> Path:
    engine = tmp_path / "engine"
    engine.mkdir()
    for src in sorted(ENGINE.glob("*.py")):
        (engine / src.name).write_bytes(src.read_bytes())
    return engine


def test_any_engine_module_keys_the_kernel_cache_even_a_new_one(tmp_path: Path) -> None:
    engine = _engine_copy(tmp_path)
    cache = engine / "__pycache__"
    cache.mkdir()
    (cache / "step.run_bars_nb-410.py311.nbi").write_text("compiled before")
    assert drop_stale_kernel_cache(engine, cache) is True  # never stamped: dropped
    assert not (cache / "step.run_bars_nb-410.py311.nbi").exists()
    (cache / "step.run_bars_nb-410.py311.nbi").write_text("fresh")
    assert drop_stale_kernel_cache(engine, cache) is False  # nothing changed: the cache stays
    assert (cache / "step.run_bars_nb-410.py311.nbi").exists()
    # A module no list names (added after the guard was written) invalidates the cache too.
    (engine / "slippage.py").write_text("SLIP = 1.0\n")
    assert drop_stale_kernel_cache(engine, cache) is True
    assert not (cache / "step.run_bars_nb-410.py311.nbi").exists()
    (cache / "step.run_bars_nb-410.py311.nbi").write_text("fresh")
    (engine / "state.py").write_text((engine / "state.py").read_text() + "# edited\n")
    assert drop_stale_kernel_cache(engine, cache) is True
    assert drop_stale_kernel_cache(engine, cache) is False


def test_the_guard_checks_the_directory_numba_loads_kernels_from() -> None:
    # The dispatcher's own cache object (built by numba when the module was imported) decides where
    # run_bars_nb is loaded from; the guard must stamp that very directory.
    assert kernel_cache_dir(ENGINE / "step.py") == Path(run_bars_nb._cache._cache_path)


def test_numba_cache_dir_is_guarded_too(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "numba-cache"))
    where = kernel_cache_dir(ENGINE / "step.py")
    assert where is not None and where.parent == tmp_path / "numba-cache"
    assert where == Path(FunctionCache(run_bars_nb.py_func)._cache_path)  # numba's choice, same setting
    (where / "step.run_bars_nb-410.py311.nbc").write_text("compiled from other sources")
    (where / "kernels.sha256").write_text("0" * 64)
    assert drop_stale_kernel_cache(ENGINE) is True
    assert not (where / "step.run_bars_nb-410.py311.nbc").exists()
    assert (where / "kernels.sha256").read_text() == kernel_sources_digest(ENGINE)
    assert drop_stale_kernel_cache(ENGINE) is False


def _tiny_run_inputs():
    bars = [(100.0, 101.0, 99.0, 100.5)] * 5
    market = make_market(bars)
    s, v = strategy(), venue()
    return market, s, v, build_params(s, v, market), market_arrays(market)


def test_kernels_ready_reads_numbas_own_cache_index(tmp_path: Path, monkeypatch) -> None:
    market, s, v, params, arrays = _tiny_run_inputs()
    run_single(market, s, v)  # compiled (or loaded) in this process
    assert kernels_ready(arrays, no_detail(arrays.ts.shape[0]), params, curves=True)
    on_disk = Path(run_bars_nb._cache._cache_path)
    # Forget the in-process copy and point the dispatcher at an empty cache directory: cold.
    monkeypatch.setattr(run_bars_nb, "overloads", {})
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    fresh = FunctionCache(run_bars_nb.py_func)
    monkeypatch.setattr(run_bars_nb, "_cache", fresh)
    assert not kernels_ready(arrays, no_detail(arrays.ts.shape[0]), params, curves=True)
    # The index and machine code numba wrote for this signature, copied into the new directory: warm.
    for f in on_disk.glob("step.run_bars_nb-*.nb[ic]"):
        shutil.copy(f, Path(fresh._cache_path) / f.name)
    assert kernels_ready(arrays, no_detail(arrays.ts.shape[0]), params, curves=True)


def test_compile_notice_is_entered_only_when_the_kernels_are_cold(monkeypatch) -> None:
    market, s, v, _params, _arrays = _tiny_run_inputs()
    entered: list[str] = []

    @contextmanager
    def notice():
        entered.append("in")
        yield
        entered.append("out")

    run_single(market, s, v, compile_notice=notice)
    run_single(market, s, v, compile_notice=notice)
    assert entered == []  # compiled by then: silent
    monkeypatch.setattr(gridctl.engine.run, "kernels_ready", lambda *_a: False)
    out = run_single(market, s, v, compile_notice=notice)
    assert entered == ["in", "out"] and len(out.equity) == 5


def test_market_arrays_are_read_only_whatever_the_source() -> None:
    market, *_ = _tiny_run_inputs()
    assert market.close.flags.writeable  # built from numpy in the test
    arrays = market_arrays(market)
    for name in ("ts", "open", "high", "low", "close", "funding_ts", "funding_rate", "funding_mark"):
        assert not getattr(arrays, name).flags.writeable, name
    assert market.close.flags.writeable  # the caller's array is untouched


def test_hot_kernels_are_marked_for_llvm_to_inline_them() -> None:
    """The hot kernels' compiler marks the lowered function ``alwaysinline``; numba's own does not."""
    from gridctl.engine.numba_compat import AlwaysInlineCompiler

    def body(st, price):
        return st[0] * price + st[1]

    hot = numba.njit(cache=False, pipeline_class=AlwaysInlineCompiler)(body)
    plain = numba.njit(cache=False)(body)
    sig = (numba.typeof(np.zeros(4)), numba.float64)

    def attributes(fn: Any) -> str:
        fn.compile(sig)
        ir = fn.inspect_llvm(sig)
        define = next(line for line in ir.splitlines() if line.startswith("define") and "body" in line)
        groups = re.findall(r"#(\d+)", define.split(")")[-1])
        return (
            " ".join(line for line in ir.splitlines() for g in groups if line.startswith(f"attributes #{g} "))
            + define
        )

    assert "alwaysinline" in attributes(hot)
    assert "alwaysinline" not in attributes(plain)
    assert hot(np.array([2.0, 1.0, 0.0, 0.0]), 3.0) == 7.0  # and it still computes


def test_the_basket_bar_is_compiled_to_be_inlined_into_its_loop() -> None:
    """``basket_bar_nb`` (the live session's kernel too) is inlined by numba into ``run_basket_nb``'s bar
    loop (a real call with its 34 arguments nearly doubled a one-symbol basket's kernel time,
    docs/DESIGN.md "Baskets", **Speed**), never compiled on its own first; the loop itself is an
    ordinary kernel."""
    from gridctl.engine.basket import basket_bar_nb, run_basket_nb
    from gridctl.engine.numba_compat import AlwaysInlineCompiler

    assert basket_bar_nb.targetoptions.get("inline") == "always"
    assert run_basket_nb.targetoptions.get("inline", "never") == "never"
    assert run_basket_nb._compiler.pipeline_class is not AlwaysInlineCompiler
