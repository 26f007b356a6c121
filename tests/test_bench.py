"""research.bench / `gridctl bench`: the measurements exist and are positive numbers (never their speed)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import research.bench
from cli import app
from research.bench import TARGETS, batch_overrides, bench_market, run_bench

KEYS = {
    "bars", "sets", "threads", "reference_bars", "kernel_bars_per_s", "batch_bar_evals_per_s",
    "batch_vs_kernel", "reference_bars_per_s", "kernel_vs_reference", "compile_s", "cached_start_s",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny() -> dict:
    # Small enough for the suite: 3,000 bars, 3 sets, 400 reference bars; the start-up probe runs for real.
    return run_bench(bars=3_000, sets=3, reference_bars=400)


def test_bench_reports_every_measurement_as_a_positive_number(tiny: dict) -> None:
    assert set(tiny) == KEYS
    assert (tiny["bars"], tiny["sets"], tiny["reference_bars"]) == (3_000, 3, 400)
    for key in KEYS - {"bars", "sets", "reference_bars", "threads"}:
        assert isinstance(tiny[key], float) and tiny[key] > 0.0, key
    # The ratios are the quotients of the rates they compare.
    assert tiny["batch_vs_kernel"] == pytest.approx(tiny["batch_bar_evals_per_s"] / tiny["kernel_bars_per_s"])
    assert tiny["kernel_vs_reference"] == pytest.approx(
        tiny["kernel_bars_per_s"] / tiny["reference_bars_per_s"]
    )
    assert set(TARGETS) <= KEYS


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


def test_without_the_reference_file_the_reference_rate_is_none(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(research.bench, "REFERENCE_SIM", tmp_path / "missing.py")
    monkeypatch.setattr(research.bench, "startup_times", lambda: {"compile_s": 1.0, "cached_start_s": 0.5})
    out = run_bench(bars=2_000, sets=1, reference_bars=100)
    assert out["reference_bars_per_s"] is None and out["kernel_vs_reference"] is None


def test_cli_bench_json_and_table(monkeypatch) -> None:
    fake = dict.fromkeys(KEYS, 2.0) | {"bars": 2_000, "sets": 2, "threads": 2, "reference_bars": 100}
    monkeypatch.setattr(research.bench, "run_bench", lambda **_kw: fake)
    result = CliRunner().invoke(app, ["bench", "--json", "--bars", "2000", "--sets", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == fake
    table = CliRunner().invoke(app, ["bench", "--bars", "2000", "--sets", "2"])
    assert table.exit_code == 0 and ">= 10,000,000" in table.stdout and "kernel_bars_per_s" in table.stdout
    bad = CliRunner().invoke(app, ["bench", "--sets", "0"])
    assert bad.exit_code == 2 and "--sets" in bad.stderr
