"""gridctl.research.bench and `gridctl bench`: the measurements exist and are positive (never their speed)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gridctl.engine.batch
import gridctl.engine.run
import gridctl.research.bench
from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.research.bench import (
    STARTUP_KEYS,
    TARGETS,
    batch_overrides,
    bench_market,
    run_bench,
    run_child,
    startup_bench,
)

REFERENCE_SIM = Path(__file__).resolve().parents[1] / "reference_sim.py"

KEYS = {
    "bars", "sets", "threads", "reference_bars", "kernel_bars_per_s", "batch_bar_evals_per_s",
    "batch_vs_kernel", "reference_bars_per_s", "kernel_vs_reference",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny() -> dict:
    # Small enough for the suite: 2,000 bars, 3 sets, 200 reference bars (no start-up processes here).
    return run_bench(bars=2_000, sets=3, reference_bars=200, reference_sim=REFERENCE_SIM)


def test_bench_reports_every_measurement_as_a_positive_number(tiny: dict) -> None:
    assert set(tiny) == KEYS
    assert (tiny["bars"], tiny["sets"], tiny["reference_bars"]) == (2_000, 3, 200)
    for key in KEYS - {"bars", "sets", "reference_bars", "threads"}:
        assert isinstance(tiny[key], float) and tiny[key] > 0.0, key
    assert set(TARGETS) <= KEYS | set(STARTUP_KEYS)


def test_bench_figures_on_a_clock_whose_durations_are_known(monkeypatch, tmp_path: Path) -> None:
    """Each timed call advances a fake clock by a fixed time, so every figure is known by hand.

    A kernel run takes 0.5 s, a batch 1.0 s, a reference run 2.0 s; 2,000 bars, 3 sets, 200 reference
    bars: kernel 2,000 / 0.5 = 4,000 bars/s; batch 2,000 * 3 / 1.0 = 6,000; batch_vs_kernel 1.5;
    reference 200 / 2.0 = 100 bars/s; kernel_vs_reference 40.
    """
    clock = [1000.0]
    monkeypatch.setattr(gridctl.research.bench.time, "perf_counter", lambda: clock[0])

    def taking(seconds: float):
        def call(*_a, **_kw):
            clock[0] += seconds

        return call

    monkeypatch.setattr(gridctl.engine.run, "run_single", taking(0.5))
    monkeypatch.setattr(gridctl.engine.batch, "run_batch", taking(1.0))
    ref = tmp_path / "ref.py"
    ref.write_text(
        "import tests_clock\n"
        "def simulate(market, strategy, venue):\n"
        "    assert len(market.ts) == 200\n"
        "    tests_clock.advance(2.0)\n",
        encoding="utf-8",
    )
    clock_mod = types.ModuleType("tests_clock")
    clock_mod.advance = lambda s: clock.__setitem__(0, clock[0] + s)
    monkeypatch.setitem(sys.modules, "tests_clock", clock_mod)
    out = run_bench(bars=2_000, sets=3, reference_bars=200, reference_sim=ref)
    assert out["kernel_bars_per_s"] == pytest.approx(4_000.0)
    assert out["batch_bar_evals_per_s"] == pytest.approx(6_000.0)
    assert out["batch_vs_kernel"] == pytest.approx(1.5)
    assert out["reference_bars_per_s"] == pytest.approx(100.0)
    assert out["kernel_vs_reference"] == pytest.approx(40.0)


def test_bench_market_has_the_bars_asked_for_and_their_funding() -> None:
    m = bench_market(2_000)
    assert len(m.ts) == 2_000 and m.timeframe == "1m" and m.bar_ms == 60_000
    # Settlements every 8 h from the first bar, through the first one after the last close.
    assert m.funding_ts[0] <= m.ts[0] and m.funding_ts[-1] > m.ts[-1] + 60_000


def test_batch_sets_spread_around_the_strategys_grid_step() -> None:
    steps = [s["grid.grid_step_bps"] for s in batch_overrides(64, 40.0)]
    # 64 distinct steps from 40 * 0.9 = 36 to 40 * 1.1 = 44 bps.
    assert len(set(steps)) == 64
    assert min(steps) == pytest.approx(36.0) and max(steps) == pytest.approx(44.0)


def test_without_a_reference_file_the_reference_rate_is_none_and_a_missing_one_is_refused(tmp_path) -> None:
    out = run_bench(bars=2_000, sets=1, reference_bars=100)
    assert out["reference_bars_per_s"] is None and out["kernel_vs_reference"] is None
    with pytest.raises(GridctlError, match=r"--reference-sim .*missing\.py: not a file"):
        run_bench(bars=2_000, sets=1, reference_bars=100, reference_sim=tmp_path / "missing.py")


def test_run_child_reports_that_childs_own_peak_memory_and_fails_loudly() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    wall, big, cpu = run_child(
        [sys.executable, "-c", "b = bytearray(120_000_000); b[::4096] = b'x' * len(b[::4096])"], env
    )
    _wall, small, _cpu = run_child([sys.executable, "-c", "pass"], env)
    assert wall > 0.0 and cpu > 0.0
    assert big >= 120.0 > small  # MB: the 120 MB buffer shows in the first child only
    with pytest.raises(RuntimeError, match="exited with 3"):
        run_child([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], env)


def test_startup_bench_runs_each_probe_in_fresh_processes_with_its_own_numba_cache(monkeypatch) -> None:
    calls: list[tuple[list[str], str]] = []

    def fake_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
        cache = Path(env["NUMBA_CACHE_DIR"])
        calls.append((cmd, str(cache)))
        if "sample" in cmd:  # what `gridctl data sample --data-dir DIR` leaves behind
            Path(cmd[cmd.index("--data-dir") + 1]).mkdir(parents=True)
        if "backtest" in cmd:  # gridctl refuses a --data-dir folder that does not exist
            assert Path(cmd[cmd.index("--data-dir") + 1]).is_dir(), cmd
        # An empty cache directory means a cold start: report it as slower and bigger.
        cold = not cache.exists() or not any(cache.iterdir())
        cache.mkdir(parents=True, exist_ok=True)
        (cache / f"{len(calls)}.nbi").write_text("filled")
        return (10.0, 400.0, 9.0) if cold else (1.0, 200.0, 0.8)

    monkeypatch.setattr(gridctl.research.bench, "run_child", fake_child)
    out = startup_bench(help_repeats=2)
    assert tuple(out) == STARTUP_KEYS
    help_calls = [c for c in calls if c[0][-1] == "--help"]
    assert len(help_calls) == 2
    # compile_s and backtest_first_* ran on empty caches; cached/second runs reused what those filled.
    assert (out["compile_s"], out["compile_cpu_s"], out["cached_start_s"]) == (10.0, 9.0, 1.0)
    assert (out["backtest_first_s"], out["backtest_first_rss_mb"], out["backtest_first_cpu_s"]) == (
        10.0,
        400.0,
        9.0,
    )
    assert (out["backtest_second_s"], out["backtest_second_rss_mb"], out["backtest_second_cpu_s"]) == (
        1.0,
        200.0,
        0.8,
    )
    probe, backtest = calls[2:4], calls[4:6]
    assert probe[0][1] == probe[1][1] != backtest[0][1] == backtest[1][1]
    assert backtest[0][0][-3:-2] == ["backtest"] and "--data-dir" in backtest[0][0]
    assert not Path(backtest[0][1]).exists()  # temporary: removed afterwards
    # The year-long backtest: a 365-day sample is generated first, then run on the filled cache.
    sample, year = calls[6:8]
    assert sample[0][-6:] == ["data", "sample", "--data-dir", year[0][-1], "--days", "365"]
    assert year[0][-3:-1] == ["backtest", "--data-dir"] and year[1] == backtest[0][1]
    assert (out["backtest_year_s"], out["backtest_year_rss_mb"], out["backtest_year_cpu_s"]) == (
        1.0,
        200.0,
        0.8,
    )
    assert len(calls) == 8


def test_cli_bench_json_and_table(monkeypatch) -> None:
    fake = dict.fromkeys(KEYS, 2.0) | {"bars": 2_000, "sets": 2, "threads": 2, "reference_bars": 100}
    monkeypatch.setattr(gridctl.research.bench, "run_bench", lambda **_kw: fake)
    result = CliRunner().invoke(app, ["bench", "--json", "--bars", "2000", "--sets", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == fake
    table = CliRunner().invoke(app, ["bench", "--bars", "2000", "--sets", "2"])
    assert table.exit_code == 0 and ">= 10,000,000" in table.stdout and "kernel_bars_per_s" in table.stdout
    bad = CliRunner().invoke(app, ["bench", "--sets", "0"])
    assert bad.exit_code == 2 and "--sets" in bad.stderr


def test_cli_bench_startup_json_and_table(monkeypatch) -> None:
    fake = {key: float(i + 1) for i, key in enumerate(STARTUP_KEYS)}
    monkeypatch.setattr(gridctl.research.bench, "startup_bench", lambda **_kw: fake)
    monkeypatch.setattr(
        gridctl.research.bench, "run_bench", lambda **_kw: pytest.fail("--startup runs only start-up")
    )
    result = CliRunner().invoke(app, ["bench", "--startup", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == fake
    table = CliRunner().invoke(app, ["bench", "--startup"])
    assert table.exit_code == 0 and "backtest_first_rss_mb" in table.stdout and "<= 0.3" in table.stdout


def test_basket_bench_reports_its_fields_as_positive_numbers() -> None:
    from gridctl.research.bench import BASKET_KEYS, basket_bench

    out = basket_bench(bars=2_000, symbols=2)
    assert set(out) == set(BASKET_KEYS)
    assert (out["basket_symbols"], out["basket_bars"]) == (2, 2_000)
    assert out["batch_sets"] == 4
    for key in (
        "basket_cpu_s", "singles_cpu_s", "basket_vs_singles", "basket_bars_per_s",
        "batch_basket_cpu_s", "batch_singles_cpu_s", "batch_basket_vs_singles",
    ):  # fmt: skip
        assert isinstance(out[key], float) and out[key] > 0.0, key


def test_basket_bench_figures_on_a_clock_whose_durations_are_known(monkeypatch) -> None:
    """A basket takes 3.0 CPU s and a single run 1.0 s: 2 symbols x 2,000 bars -> singles 2.0 s,
    basket_vs_singles 1.5, 4,000 / 3.0 bars per second. A basket batch takes 5.0 s and a single
    batch 4.0 s: singles 8.0 s, batch_basket_vs_singles 0.625."""
    import gridctl.engine.basket
    from gridctl.research.bench import basket_bench

    clock = [10.0]
    monkeypatch.setattr(gridctl.research.bench.time, "process_time", lambda: clock[0])

    def taking(seconds: float):
        def call(*_a, **_kw):
            clock[0] += seconds

        return call

    monkeypatch.setattr(gridctl.engine.run, "run_single", taking(1.0))
    monkeypatch.setattr(gridctl.engine.basket, "run_basket", taking(3.0))
    monkeypatch.setattr(gridctl.engine.batch, "run_batch", taking(4.0))
    monkeypatch.setattr(gridctl.engine.batch, "run_basket_batch", taking(5.0))
    out = basket_bench(bars=2_000, symbols=2)
    assert out["basket_cpu_s"] == 3.0 and out["singles_cpu_s"] == 2.0
    assert out["basket_vs_singles"] == 1.5
    assert out["batch_basket_cpu_s"] == 5.0 and out["batch_singles_cpu_s"] == 8.0
    assert out["batch_basket_vs_singles"] == 0.625
    assert out["basket_bars_per_s"] == pytest.approx(4_000 / 3.0)


def test_cli_bench_symbols_json_and_table(monkeypatch) -> None:
    from gridctl.research.bench import BASKET_KEYS

    fake = dict.fromkeys(BASKET_KEYS, 2.0) | {"basket_symbols": 4, "basket_bars": 2_000}
    seen = {}
    monkeypatch.setattr(gridctl.research.bench, "basket_bench", lambda **kw: seen.update(kw) or fake)
    monkeypatch.setattr(
        gridctl.research.bench, "run_bench", lambda **_kw: pytest.fail("--symbols runs the basket")
    )
    result = CliRunner().invoke(app, ["bench", "--symbols", "4", "--bars", "2000", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == fake
    assert (seen["symbols"], seen["bars"]) == (4, 2_000)
    table = CliRunner().invoke(app, ["bench", "--symbols", "4", "--bars", "2000"])
    assert table.exit_code == 0 and "basket_vs_singles" in table.stdout and "<= 1.0" in table.stdout
    assert "batch_basket_vs_singles" in table.stdout and "batch 2 sets" in table.stdout
    bad = CliRunner().invoke(app, ["bench", "--symbols", "0"])
    assert bad.exit_code == 2 and "--symbols" in bad.stderr
