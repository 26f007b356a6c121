"""`gridctl backtest` end to end: sample data, summary, --json, --out, and user errors as exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.data.sample import SAMPLE_EXCHANGE, generate_sample, write_sample
from gridctl.data.store import write_candles, write_funding
from gridctl.research.results import RESULT_FILES

from effects import effect

REPO = Path(__file__).resolve().parents[2]
# Three whole days out of the 10-day sample: 3 * 1440 bars.
WINDOW = ["--start", "2024-01-02", "--end", "2024-01-05"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    write_sample(path, days=10)
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["backtest", *args], catch_exceptions=False)


def run_json(data_dir: Path, *args: str) -> dict:
    result = invoke("--data", str(data_dir), *WINDOW, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # the whole of stdout is one JSON object


def test_json_is_one_object_with_the_run_facts(data_dir: Path) -> None:
    stats = run_json(data_dir)
    assert stats["strategy"] == "default" and stats["symbol"] == "BTC/USDT:USDT"
    assert stats["bars"] == 3 * 1440
    assert stats["data_start"] == "2024-01-02T00:00:00Z" and stats["data_end"] == "2024-01-05T00:00:00Z"
    assert stats["n_fills"] > 0 and stats["assumptions"]["fees_source"] == "venue config"


def test_summary_says_what_ran_and_what_was_assumed(data_dir: Path) -> None:
    result = invoke("--data", str(data_dir), *WINDOW)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for text in ("strategy default", "venue BINANCE", "BTC/USDT:USDT 1m", "4,320 bars", "Results",
                 "Final equity", "Sharpe", "Gates, rejections, events", "What this run assumed",
                 "Gates tripped", "Gates disabled", "Funding mark price", "Intrabar path"):  # fmt: skip
        assert text in out, text
    assert "running default on 4,320 1m bars" in result.stderr  # progress goes to stderr


def test_out_writes_every_result_file(data_dir: Path, tmp_path: Path) -> None:
    result = invoke("--data", str(data_dir), *WINDOW, "--out", str(tmp_path / "res"), "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == sorted(RESULT_FILES)
    stats = json.loads((tmp_path / "res" / "stats.json").read_text())
    assert stats == json.loads(result.stdout)
    assert pl.read_parquet(tmp_path / "res" / "fills.parquet").height == stats["n_fills"]


@effect("backtest.initial_balance")
def test_initial_balance_sets_the_starting_equity(data_dir: Path, tmp_path: Path) -> None:
    base = run_json(data_dir)
    rich = run_json(data_dir, "--set", "backtest.initial_balance=20000", "--out", str(tmp_path / "r"))
    assert (base["initial_balance"], rich["initial_balance"]) == (10000.0, 20000.0)
    # The same rungs trade in both runs (no size gate binds), so equity shifts by the 10,000 difference.
    assert rich["final_equity"] - base["final_equity"] == pytest.approx(10000.0, abs=1.0)
    first = pl.read_parquet(tmp_path / "r" / "equity.parquet")["equity"][0]
    assert first == pytest.approx(20000.0, abs=50.0)


@effect("strategy.instrument_id")
def test_instrument_id_picks_the_market(data_dir: Path) -> None:
    # An ETH-like market in the same store: the sample's first 3 days at 1/20 of the price.
    candles, _, funding = generate_sample(3, seed=11)
    eth = candles.with_columns(*(pl.col(c) / 20 for c in ("open", "high", "low", "close")))
    write_candles(data_dir, SAMPLE_EXCHANGE, "ETH/USDT:USDT", "1m", eth)
    write_funding(data_dir, SAMPLE_EXCHANGE, "ETH/USDT:USDT", funding.with_columns(pl.col("mark_price") / 20))
    args = ["--start", "2024-01-01", "--end", "2024-01-03", "--set", "grid.base_qty=0.05"]
    btc = run_json(data_dir, *args)
    eth_stats = run_json(data_dir, *args, "--set", "strategy.instrument_id=ETHUSDT-PERP.BINANCE")
    assert (btc["symbol"], eth_stats["symbol"]) == ("BTC/USDT:USDT", "ETH/USDT:USDT")
    assert eth_stats["n_fills"] > 0 and eth_stats["n_fills"] != btc["n_fills"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "grid.grid_stepp_bps=30"], "grid.grid_stepp_bps"),
        (["--set", "grid.grid_levels_long=0"], "grid.grid_levels_long"),
        (["--start", "2024-13-01"], "--start"),
        (["--start", "2024-01-05", "--end", "2024-01-02"], "--end"),
        (["--config", "no_such_strategy"], "no_such_strategy"),
        (["--venue", "no_such_venue"], "no_such_venue"),
        (["--timeframe", "7m"], "--timeframe"),
        (["--symbol", "DOGE/USDT:USDT"], "DOGE/USDT:USDT"),
        (["--detail", "15m"], "--detail 15m: detail bars must be finer than the run's --timeframe 1m"),
        (
            ["--set", "backtest.detail_timeframe=1h"],
            "backtest.detail_timeframe 1h: detail bars must be finer",
        ),
        (["--detail", "1m"], "--detail 1m: detail bars must be finer than the run's --timeframe 1m"),
        (["--detail", "7m"], "--detail"),
    ],
)
def test_user_errors_exit_2_naming_the_option_and_write_nothing(
    data_dir: Path, tmp_path: Path, args: list[str], named: str
) -> None:
    out = tmp_path / "res"
    result = CliRunner().invoke(app, ["backtest", "--data", str(data_dir), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    # Progress lines may come first; the error message (possibly several lines) names the culprit.
    error = (
        result.stderr[result.stderr.index("\nerror: ") + 1 :]
        if "\nerror: " in result.stderr
        else result.stderr
    )
    assert error.startswith("error: ") and named in error
    assert "Traceback" not in result.output
    assert not out.exists()


def test_out_must_be_a_directory(data_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    result = invoke("--data", str(data_dir), *WINDOW, "--out", str(target))
    assert result.exit_code == 2 and "--out" in result.stderr and target.read_text() == "keep me"


def test_bad_set_fails_before_generating_the_sample(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    result = CliRunner().invoke(app, ["backtest", "--data", str(tmp_path / "d"), "--set", "grid.nope=1"])
    assert result.exit_code == 2 and "--set" in result.stderr and "grid.nope" in result.stderr
    assert list((tmp_path / "d").iterdir()) == []


def test_no_arguments_generates_the_sample_and_runs_the_default(tmp_path: Path) -> None:
    """A real process: `gridctl backtest` with only the data directory set through the environment."""
    exe = shutil.which("gridctl")
    cmd = [exe, "backtest"] if exe else [sys.executable, "-m", "gridctl.cli", "backtest"]
    env = dict(os.environ, GRIDCTL_DATA_DIR=str(tmp_path / "data"), COLUMNS="160")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "strategy default on venue BINANCE" in proc.stdout and "259,200 bars" in proc.stdout
    assert (tmp_path / "data" / "sample" / "BTC_USDT_USDT" / "1m").is_dir()
    assert "Traceback" not in proc.stderr


def test_json_stdout_is_clean_in_a_real_process(data_dir: Path) -> None:
    cmd = [
        sys.executable,
        "-c",
        "from gridctl.cli import app; app()",
        "backtest",
        "--data",
        str(data_dir),
        *WINDOW,
    ]
    proc = subprocess.run(
        [*cmd, "--json"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert isinstance(stats, dict) and np.isfinite(stats["final_equity"])


@pytest.fixture(scope="module")
def data_15m(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's 1m bars plus 15m bars built from them (same store, so --detail 1m finds them)."""
    path = tmp_path_factory.mktemp("data15")
    shutil.copytree(data_dir, path, dirs_exist_ok=True)
    from gridctl.data.resample import resample_candles
    from gridctl.data.store import read_candles

    one = read_candles(path, SAMPLE_EXCHANGE, "BTC/USDT:USDT", "1m")
    fifteen = resample_candles(one, "1m", "15m").candles
    write_candles(path, SAMPLE_EXCHANGE, "BTC/USDT:USDT", "15m", fifteen)
    return path


def test_every_run_reports_its_path_bracket_and_detail_narrows_it(data_15m: Path) -> None:
    # A tight grid that trades inside the 15m bars (the default grid barely trades in three days).
    tight = ["--set", "grid.grid_step_bps=10", "--set", "exit.tp_steps=1"]
    coarse = run_json(data_15m, "--timeframe", "15m", *tight)
    fine = run_json(data_15m, "--timeframe", "15m", "--detail", "1m", *tight)
    one = run_json(data_15m, "--timeframe", "1m", *tight)
    for stats in (coarse, fine, one):
        b = stats["path_bracket"]
        rules = {"nearer_first", "farther_first", "high_first", "low_first"}
        assert set(b) == {"rule", "configured", "worst", "best", *rules} and b["rule"] == "nearer_first"
        assert b["configured"] == b["nearer_first"]
        returns = [b[r]["total_return_pct"] for r in rules]
        assert b["worst"]["total_return_pct"] == min(returns)
        assert b["best"]["total_return_pct"] == max(returns)
        assert set(b["high_first"]) == {
            "total_return_pct",
            "max_drawdown_daily_close_pct",
            "max_drawdown_bar_close_pct",
            "max_drawdown_intrabar_pct",
            "n_fills",
        }
        assert b["configured"]["total_return_pct"] == pytest.approx(stats["total_return_pct"], abs=1e-9)
        assert isinstance(stats["same_bar_round_trips"], int)
    assert (
        fine["assumptions"]["detail_timeframe"] == "1m" and coarse["assumptions"]["detail_timeframe"] is None
    )

    def width(stats: dict) -> float:
        b = stats["path_bracket"]
        return b["best"]["total_return_pct"] - b["worst"]["total_return_pct"]

    # The 1m detail bars settle most of what 15m bars leave open: the bracket shrinks toward the 1m run's.
    assert width(fine) < width(coarse)
    assert fine["same_bar_round_trips"] < coarse["same_bar_round_trips"]
    assert fine["total_return_pct"] != coarse["total_return_pct"]
    result = invoke("--data", str(data_15m), *WINDOW, "--timeframe", "15m", "--detail", "1m")
    assert result.exit_code == 0, result.stderr
    for text in ("Return, high / low first", "Same-bar round trips", "Detail bars"):
        assert text in result.stdout, text


def test_a_missing_timeframe_names_data_resample_when_finer_bars_are_stored(data_dir: Path) -> None:
    """The sample stores 1m bars: asking for 5m should point at `data resample`, not at data sample."""
    result = invoke("--data-dir", str(data_dir), "--timeframe", "5m", *WINDOW)
    assert result.exit_code == 2
    expected = (
        f"build them from the stored 1m bars with `gridctl data resample --exchange sample --symbol "
        f"BTC/USDT:USDT --from 1m --to 5m --data-dir {data_dir}`"
    )
    assert expected in result.stderr, result.stderr


def test_a_window_in_a_gap_of_the_15m_bars_says_so_and_names_data_resample(
    data_15m: Path, tmp_path: Path
) -> None:
    """15m bars stored for all but 2024-01-04 and 01-05, 1m for every day: a window on 01-04 lies in a
    gap of the 15m bars (not "choose a window inside them"), and the 1m bars can build it."""
    path = tmp_path / "data"
    shutil.copytree(data_15m, path)
    fifteen = path / SAMPLE_EXCHANGE / "BTC_USDT_USDT" / "15m" / "2024-01.parquet"
    bars = pl.read_parquet(fifteen)
    day4, day6 = 1_704_326_400_000, 1_704_499_200_000  # 2024-01-04 and 2024-01-06 00:00 UTC
    bars.filter((pl.col("ts") < day4) | (pl.col("ts") >= day6)).write_parquet(fifteen)
    result = invoke(
        "--data-dir", str(path), "--timeframe", "15m", "--start", "2024-01-04", "--end", "2024-01-05"
    )
    assert result.exit_code == 2, result.output
    error = result.stderr[result.stderr.index("error: ") :]
    assert error == (
        f"error: no 15m candles for BTC/USDT:USDT on sample in the requested range in {path}: the window "
        "falls in a gap of the stored 15m candles (the last bar before it opens 2024-01-03 23:45:00 UTC, "
        "the next one 2024-01-06 00:00:00 UTC); build them from the stored 1m bars with `gridctl data "
        f"resample --exchange sample --symbol BTC/USDT:USDT --from 1m --to 15m --data-dir {path}`\n"
    )


def test_piped_result_tables_keep_each_row_on_one_line(data_dir: Path, tmp_path: Path) -> None:
    """rich assumed 80 columns when piped and wrapped or cut cells; the strategy row holds a long path."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "strategy.yaml"
    deep.parent.mkdir(parents=True)
    shutil.copy(REPO / "configs" / "strategies" / "default.yaml", deep)
    # A real process with its stdout on a pipe (no terminal, no COLUMNS), as `gridctl backtest | less`.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.run(
        [sys.executable, "-m", "gridctl.cli", "backtest", "--data-dir", str(data_dir), "--config", str(deep),
         *WINDOW],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.lstrip().startswith("Strategy "))
    assert f"default ({deep})" in line and len(line) > 120
    assert "…" not in proc.stdout
