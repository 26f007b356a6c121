"""`gridctl live --paper --replay` writes the ledgers `gridctl backtest` writes (same data, same config).

The replay is the live bridge's own bar loop (live_bridge.bridge.Bridge.on_bar -> EngineSession
.step_paper -> engine.step.step_nb) fed one closed bar at a time, with funding revealed only up to each
bar's close; the backtest is engine.run.run_single over the whole market. Identical parquet bytes and
equal stats mean the bridge drives the same kernels with the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.data.sample import write_sample

runner = CliRunner()
LEDGERS = ("fills.parquet", "funding.parquet", "events.parquet", "equity.parquet")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay_data")
    write_sample(path, days=4)
    return path


def _run(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        # a tighter ladder, the core-and-scalp policy and a tight drawdown halt exercise more kernel paths
        [
            "--set",
            "grid.grid_step_bps=15",
            "--set",
            "policy.strategy=core-and-scalp",
            "--set",
            "risk_management.max_drawdown_pct=3",
        ],
    ],
    ids=["default", "tight"],
)
def test_replay_ledgers_identical_to_backtest(data_dir: Path, tmp_path: Path, overrides: list[str]) -> None:
    bt, rp = tmp_path / "bt", tmp_path / "rp"
    common = ["--exchange", "sample", "--timeframe", "1m", *overrides, "--json"]
    bt_stats = _run(["backtest", "--data", str(data_dir), *common, "--out", str(bt)])
    rp_stats = _run(["live", "--paper", "--replay", str(data_dir), *common, "--out", str(rp)])
    speed = rp_stats.pop("replay")
    assert speed["bars"] == 4 * 1440 and speed["bars_per_second"] > 0
    assert rp_stats == bt_stats
    assert bt_stats["n_fills"] > 10, "the scenario must trade to mean anything"
    for name in LEDGERS:
        a, b = pl.read_parquet(bt / name), pl.read_parquet(rp / name)
        assert a.equals(b), name
        assert a.height > 0 or name == "funding.parquet", name


def test_replay_window_is_the_backtests_window(data_dir: Path, tmp_path: Path) -> None:
    """--start/--end on a replay select the bars `backtest --start/--end` selects: the sample holds
    2024-01-01..01-04 (4 days of 1m bars); 01-02..01-04 (end exclusive) is 2 days = 2,880 bars."""
    bt, rp = tmp_path / "bt", tmp_path / "rp"
    common = ["--exchange", "sample", "--timeframe", "1m", "--start", "2024-01-02", "--end", "2024-01-04"]
    bt_stats = _run(["backtest", "--data-dir", str(data_dir), *common, "--json", "--out", str(bt)])
    rp_stats = _run(["live", "--paper", "--replay", str(data_dir), *common, "--json", "--out", str(rp)])
    speed = rp_stats.pop("replay")
    assert speed["bars"] == rp_stats["bars"] == 2 * 1440
    assert rp_stats["data_start"].startswith("2024-01-02T00:00")
    assert rp_stats == bt_stats
    assert bt_stats["n_fills"] > 0, "the window must trade to mean anything"
    for name in LEDGERS:
        assert pl.read_parquet(bt / name).equals(pl.read_parquet(rp / name)), name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start", "2024-13-01"], "--start: '2024-13-01' is not a date (expected YYYY-MM-DD)"),
        (["--start", "2024-01-03", "--end", "2024-01-02"], "--end (2024-01-02) must be after --start"),
    ],
)
def test_replay_window_is_checked_as_backtests(data_dir: Path, extra: list[str], message: str) -> None:
    for cmd in (["backtest", "--data-dir", str(data_dir)], ["live", "--paper", "--replay", str(data_dir)]):
        r = runner.invoke(app, [*cmd, "--exchange", "sample", *extra])
        assert r.exit_code == 2 and message in r.output, (cmd[0], r.output)


def test_replay_window_refused_without_a_data_directory(data_dir: Path) -> None:
    part = next((data_dir / "sample" / "BTC_USDT_USDT" / "1m").glob("*.parquet"))
    r = runner.invoke(app, ["live", "--paper", "--replay", str(part), "--start", "2024-01-02"])
    assert r.exit_code == 2 and "a partition file is one month" in r.output
    r = runner.invoke(app, ["live", "--paper", "--start", "2024-01-02"])
    assert r.exit_code == 2 and "--start/--end select a --replay's window" in r.output


def test_replay_of_a_parquet_partition(data_dir: Path, tmp_path: Path) -> None:
    part = next((data_dir / "sample" / "BTC_USDT_USDT" / "1m").glob("*.parquet"))
    out = _run(["live", "--paper", "--replay", str(part), "--json"])
    assert out["replay"]["bars"] == out["bars"] > 0


def test_replay_refuses_live_and_missing_path(tmp_path: Path) -> None:
    r = runner.invoke(app, ["live", "--live", "--replay", str(tmp_path)])
    assert r.exit_code == 2 and "--paper only" in r.output
    r = runner.invoke(app, ["live", "--paper", "--replay", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["live", "--replay", str(tmp_path)])
    assert r.exit_code == 2 and "exactly one of --paper and --live" in r.output


def test_paper_session_calls_the_kernels_with_the_backtests_signatures(monkeypatch) -> None:
    """The session passes read-only views like the backtest, so a live start compiles nothing new."""
    from numba import typeof

    from gridctl.configs.loader import load_strategy, load_venue
    from gridctl.engine.params import build_params
    from gridctl.engine.records import EQUITY_DTYPE, EVENT_DTYPE, FILL_DTYPE, FUNDING_DTYPE, new_counters
    from gridctl.engine.regime import new_regime_state
    from gridctl.engine.run import _run_bars_args, market_arrays, no_detail, regime_series
    from gridctl.engine.state import init_state
    from gridctl.live_bridge import session as sess

    from market_builders import make_market

    seen: dict[str, tuple] = {}
    real_step, real_regime = sess.step_nb, sess.regime_fill_nb

    def step(*args):
        seen["step"] = tuple(typeof(a) for a in args)
        return real_step(*args)

    def regime(*args):
        seen["regime"] = tuple(typeof(a) for a in args)
        return real_regime(*args)

    monkeypatch.setattr(sess, "step_nb", step)
    monkeypatch.setattr(sess, "regime_fill_nb", regime)
    s, v = load_strategy("default"), load_venue("binance_futures")
    session = sess.EngineSession(s, v, "BTC/USDT:USDT", "1m")
    session.set_funding([(1_704_067_200_000 - 3_600_000, 0.0001, 100.0)], 1_704_067_200_000 + 7 * 3_600_000)
    session.step_paper(1_704_067_200_000, 100.0, 101.0, 99.0, 100.5)

    market = make_market([(100.0, 101.0, 99.0, 100.5)] * 3)
    arrays, params = market_arrays(market), build_params(s, v, market)
    buffers = tuple(np.empty(4, d) for d in (FILL_DTYPE, FUNDING_DTYPE, EVENT_DTYPE, EQUITY_DTYPE))
    reg = regime_series(arrays, params.vector)
    args = _run_bars_args(arrays, no_detail(3), params, reg, init_state(params.vector), buffers,
                          new_counters(record=True, curves=True), 3)  # fmt: skip
    # run_bars_nb(start, stop, ...) calls step_nb(k, ...) with the rest of its arguments unchanged
    assert seen["step"][1:] == tuple(typeof(a) for a in args[2:])
    expected = (typeof(np.empty(3, np.int8)), typeof(new_regime_state()), *(typeof(arrays.open),) * 4)
    assert seen["regime"][:6] == expected
