"""Every shipped config runs: each strategy fits each shipped venue that holds its symbols, backtests on
the sample market with fills, and each optimization profile completes a short study from the CLI.

The lists come from the folders (configs/strategies, configs/venues, configs/profiles), so a config added
there is checked without touching this file. The `basket` profile trades BTC, ETH and XRP 1h bars over
2024-01..2025-11: it needs the real data in ../shared/data/real (imported here); every other profile runs
on the generated sample market.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gridctl import configs
from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.schema import VenueConfig

runner = CliRunner()
SHIPPED = Path(configs.__file__).parent
STRATEGIES = sorted((SHIPPED / "strategies").glob("*.yaml"))
VENUES = sorted((SHIPPED / "venues").glob("*.yaml"))
PROFILES = sorted((SHIPPED / "profiles").glob("*.yaml"))
SAMPLE_SYMBOL = "BTC/USDT:USDT"  # the one symbol `gridctl data sample` generates
# The fine profile's walk-forward needs train + test = 90 days; the backtests run one week of it.
SAMPLE_DAYS = 90


def _holds(venue: VenueConfig, symbol: str) -> bool:
    """Does the venue have exchange rules for ``symbol`` (so a strategy trading it can be checked there)?"""
    try:
        venue.rules_for(symbol)
    except GridctlError:
        return False
    return True


def _pairs() -> list[tuple[Path, Path]]:
    """(strategy, venue) for every shipped venue holding every symbol the strategy trades."""
    pairs = []
    for strategy in STRATEGIES:
        symbols = load_strategy(strategy).basket_symbols
        pairs += [(strategy, v) for v in VENUES if all(_holds(load_venue(v), s) for s in symbols)]
    return pairs


def test_the_folders_hold_the_shipped_configs_and_every_strategy_has_a_venue() -> None:
    assert [p.stem for p in STRATEGIES] == ["default", "hedge_grid_v1"]
    assert [p.stem for p in VENUES] == ["binance_futures", "binance_futures_testnet"]
    assert [p.stem for p in PROFILES] == ["basket", "fine", "narrow", "pareto", "wide"]
    checked = {strategy for strategy, _ in _pairs()}
    assert checked == set(STRATEGIES), "a shipped strategy trades a symbol no shipped venue has rules for"


@pytest.mark.parametrize(("strategy", "venue"), _pairs(), ids=lambda p: p.stem)
def test_every_shipped_strategy_validates_against_every_shipped_venue_holding_its_symbol(
    strategy: Path, venue: Path
) -> None:
    result = runner.invoke(app, ["config", "validate", str(strategy), "--venue", str(venue)])
    assert result.exit_code == 0, result.output
    assert f"ok: it fits venue {venue} for " in result.stdout


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated sample market, long enough for every sample profile."""
    data = tmp_path_factory.mktemp("sample")
    result = runner.invoke(app, ["data", "sample", "--days", str(SAMPLE_DAYS), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    return data


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda p: p.stem)
def test_every_shipped_strategy_backtests_on_the_sample_market_with_fills(
    sample_dir: Path, strategy: Path
) -> None:
    assert load_strategy(strategy).basket_symbols == (SAMPLE_SYMBOL,), "the sample market has BTC only"
    week = ["--data-dir", str(sample_dir), "--start", "2024-01-01", "--end", "2024-01-08"]
    result = runner.invoke(app, ["backtest", "-s", str(strategy), *week, "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["bars_run"] == 7 * 1440
    assert stats["n_fills"] >= 1 and stats["n_entries"] >= 1


def _real_data_dir(real_data: Path, data: dict, target: Path) -> Path:
    """Import the real candles, funding and 8h mark of the profile's symbols and timeframe into ``target``."""
    symbols = data.get("symbols") or [data["symbol"]]
    files = []
    for symbol in symbols:
        name = symbol.split(":")[0].replace("/", "")
        for kind in (data["timeframe"], "funding", "mark8h"):
            (found,) = real_data.glob(f"{data['exchange']}_{name}_{kind}_*.parquet")
            files.append(str(found))
    result = runner.invoke(app, ["data", "import", *files, "--data-dir", str(target)])
    assert result.exit_code == 0, result.output
    return target


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_shipped_profile_runs_a_short_study(
    sample_dir: Path, real_data: Path, tmp_path: Path, profile: Path
) -> None:
    data = yaml.safe_load(profile.read_text())["data"]
    if data["exchange"] == "sample":
        data_dir = sample_dir
    else:
        data_dir = _real_data_dir(real_data, data, tmp_path / "data")
    dirs = ["--data-dir", str(data_dir), "--studies-dir", str(tmp_path / "studies")]
    result = runner.invoke(app, ["optimize", "--profile", profile.stem, "--trials", "2", *dirs, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["study_name"], summary["n_trials"], summary["told_here"]) == (profile.stem, 2, 2)
    assert summary["interrupted"] is False
