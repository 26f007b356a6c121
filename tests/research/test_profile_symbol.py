"""A profile's ``data.symbol`` is the symbol its trials trade, as ``gridctl backtest --symbol`` makes it:
the base strategy's ``instrument_id`` follows it (the shipped strategies name BTC)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.research.profiles import PROFILES_DIR, load_profile, profile_strategy
from gridctl.research.studies import best_config, load_study


def _profile(tmp_path: Path, symbol: str, **data: str) -> Path:
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="sym", trials=8, batch_size=8)
    tree["data"].update(exchange="binanceusdm", symbol=symbol, **data)
    tree["limits"].update(min_trades=1)
    path = tmp_path / "sym.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_data_symbol_sets_the_strategys_instrument(tmp_path: Path) -> None:
    profile = load_profile(_profile(tmp_path, "XRP/USDT:USDT"))
    strategy = profile_strategy(profile)
    assert strategy.strategy.instrument_id == "XRPUSDT-PERP.BINANCE"
    assert strategy.ccxt_symbol == "XRP/USDT:USDT"
    # the base strategy's own symbol leaves it as it is
    same = profile_strategy(load_profile(_profile(tmp_path, "BTC/USDT:USDT")))
    assert same.strategy.instrument_id == "BTCUSDT-PERP.BINANCE"


def test_a_malformed_data_symbol_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(GridctlError, match=r"sym\.yaml: data\.symbol: .*XRPUSDT"):
        load_profile(_profile(tmp_path, "XRPUSDT"))


def test_an_eth_study_from_the_btc_default_strategy_runs_and_exports_eth(
    real_data: Path, tmp_path: Path
) -> None:
    """Real ETH 1h bars: the study runs (before the fix every trial failed on the instrument check) and
    its export trades ETH."""
    data_dir = tmp_path / "data"
    runner = CliRunner()
    files = [
        str(p)
        for kind in ("1h", "funding", "mark8h")
        for p in real_data.glob(f"binanceusdm_ETHUSDT_{kind}_*")
    ]
    res = runner.invoke(
        app, ["data", "import", *files, "--symbol", "ETH/USDT:USDT", "--data-dir", str(data_dir)]
    )
    assert res.exit_code == 0, res.output
    path = _profile(tmp_path, "ETH/USDT:USDT", timeframe="1h", start="2024-01-01", end="2024-03-01")
    studies = tmp_path / "s"
    res = runner.invoke(
        app,
        [
            "optimize",
            "--profile",
            str(path),
            "--data-dir",
            str(data_dir),
            "--studies-dir",
            str(studies),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n_trials"] == 8
    study = load_study("sym", studies)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert best_config(study).strategy.instrument_id == "ETHUSDT-PERP.BINANCE"
