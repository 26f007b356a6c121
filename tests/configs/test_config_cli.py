"""``gridctl config show|validate|list`` through the real top-level app (exit codes, stderr, masking)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gridctl import cli

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [
        "BINANCE_API_KEY",
        "BINANCE_API_SECRET",
        "BINANCE_TESTNET_API_KEY",
        "BINANCE_TESTNET_API_SECRET",
    ]:
        monkeypatch.delenv(var, raising=False)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli.app, ["config", *args])
    return result.exit_code, result.stdout, result.stderr


def assert_user_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2, (out, err)
    assert err.startswith("error: ") and "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in err


def test_list_shows_the_shipped_names() -> None:
    code, out, _ = run("list")
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    assert lines[1:3] == ["default", "hedge_grid_v1"]
    assert lines[4:6] == ["binance_futures", "binance_futures_testnet"]


def test_show_defaults_to_the_default_strategy_as_yaml() -> None:
    code, out, _ = run("show")
    assert code == 0
    assert "# risk gates switched off: none" in out
    doc = yaml.safe_load(out)
    assert doc["grid"]["grid_step_bps"] == 40.0 and doc["strategy"]["name"] == "default"
    assert doc["backtest"] == {
        "initial_balance": 10000.0,
        "slippage_bps": 1.0,
        "fill_on_touch": False,
        "intrabar_path": "nearer_first",
        "detail_timeframe": None,
    }


def test_show_json_with_overrides_routed_to_strategy_and_venue() -> None:
    code, out, _ = run(
        "show", "-s", "default", "-v", "binance_futures", "--set", "grid.grid_step_bps=30",
        "--set", "trading.leverage=5", "--set", "risk_management.enable_circuit_breaker=false", "--json",
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["strategy"]["config"]["grid"]["grid_step_bps"] == 30.0
    assert doc["strategy"]["gates_disabled"] == ["risk_management.enable_circuit_breaker"]
    assert doc["venue"]["config"]["trading"]["leverage"] == 5
    assert doc["venue"]["fees_source"] == "venue config"
    assert doc["venue"]["source"].endswith("binance_futures.yaml --set trading.leverage=5")


def test_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "very-secret-key")
    monkeypatch.setenv("BINANCE_API_SECRET", "very-secret-secret")
    for fmt in ([], ["--json"]):
        code, out, _ = run("show", "--venue", "binance_futures", *fmt)
        assert code == 0
        assert "very-secret" not in out
        assert "*** (from env ${BINANCE_API_KEY})" in out


def test_show_bad_override_exits_2_naming_set() -> None:
    code, out, err = run("show", "--set", "grid.max_errors_per_minute=3")
    assert_user_error(
        code, out, err,
        "--set grid.max_errors_per_minute=3: grid.max_errors_per_minute: unknown key here; "
        "it belongs under risk_management",
    )  # fmt: skip


def test_show_unknown_name_exits_2_listing_names() -> None:
    code, out, err = run("show", "--venue", "binance")
    assert_user_error(code, out, err, "shipped venue configs: binance_futures, binance_futures_testnet")


@pytest.mark.parametrize(
    "name",
    [
        "hedge_grid_v1.yaml",
        "hedge_grid_v1_production.yaml",
        "hedge_grid_v1_testnet.yaml",
        "binance_futures.yaml",
    ],
)
def test_validate_accepts_the_legacy_files(legacy_configs: Path, name: str) -> None:
    code, out, _ = run("validate", str(legacy_configs / name))
    assert code == 0 and out.startswith(f"ok: {legacy_configs / name} is a valid ")


def test_validate_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    tree = yaml.safe_load(
        Path(cli.__file__).with_name("configs").joinpath("strategies/default.yaml").read_text()
    )
    tree["grid"]["grid_stepbps"] = tree["grid"].pop("grid_step_bps")
    tree["exit"]["tp_steps"] = 0
    path.write_text(yaml.safe_dump(tree))
    code, out, err = run("validate", str(path))
    assert_user_error(
        code, out, err, f"invalid strategy config {path}: 3 problems",
        "grid.grid_stepbps: unknown key; did you mean 'grid.grid_step_bps'?",
        "grid.grid_step_bps: required field is missing",
        "exit.tp_steps: Input should be greater than or equal to 1 (got 0)",
    )  # fmt: skip


def test_validate_live_refuses_default_credentials(legacy_configs: Path) -> None:
    code, out, err = run("validate", str(legacy_configs / "binance_futures.yaml"), "--live")
    assert_user_error(code, out, err, "api.api_key comes from the default of ${BINANCE_API_KEY}")
    code, out, err = run("validate", "binance_futures_testnet", "--live")
    assert_user_error(code, out, err, "api.api_key is empty; set BINANCE_TESTNET_API_KEY")


def test_validate_live_accepts_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_TESTNET_API_KEY", "k")
    monkeypatch.setenv("BINANCE_TESTNET_API_SECRET", "s")
    code, out, _ = run("validate", "binance_futures_testnet", "--live")
    assert code == 0
    assert "api.api_key: *** (from env ${BINANCE_TESTNET_API_KEY})" in out
    assert out.rstrip().endswith("live credentials: ok")


def test_validate_live_on_a_strategy_is_an_error() -> None:
    code, out, err = run("validate", "default", "--live")
    assert_user_error(code, out, err, "--live checks venue credentials, but this is a strategy config")


def test_validate_with_forced_kind_checks_against_that_schema(legacy_configs: Path) -> None:
    code, out, err = run("validate", str(legacy_configs / "binance_futures.yaml"), "--kind", "strategy")
    assert_user_error(
        code, out, err, "binance_futures.yaml is a venue config (sections ", "not a strategy config"
    )
    assert err.count("\n") == 1  # one line, not one per missing strategy section


def test_validate_undecidable_file_asks_for_kind(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("hello: world\n")
    code, out, err = run("validate", str(path))
    assert_user_error(code, out, err, "pass --kind strategy or --kind venue")


def test_validate_notes_switched_off_gates(tmp_path: Path) -> None:
    tree = yaml.safe_load(
        Path(cli.__file__).with_name("configs").joinpath("strategies/default.yaml").read_text()
    )
    tree["risk_management"]["enable_position_validation"] = False
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tree))
    code, out, _ = run("validate", str(path))
    assert code == 0
    assert "note: risk gates switched off: risk_management.enable_position_validation" in out


def test_real_subprocess_yaml_error_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("strategy:\n  name: [x\n")
    gridctl = Path(sys.executable).with_name("gridctl")
    proc = subprocess.run(
        [str(gridctl), "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {path}: YAML syntax error at line 3")
    assert "Traceback" not in proc.stderr
    ok = subprocess.run(
        [str(gridctl), "config", "show", "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["strategy"]["config"]["exit"]["sl_steps"] == 6


XRP, DOGE, BTC = "XRP/USDT:USDT", "DOGE/USDT:USDT", "BTC/USDT:USDT"


def _btc_sized_strategy(tmp_path: Path) -> Path:
    """The default strategy with rung 1 as 0.002 base units: at or above BTC's min_qty 0.001, below
    XRP's 0.1 and DOGE's 1 (the shipped venue's symbol table, configs/venues/symbols/binance_usdm.yaml)."""
    tree = yaml.safe_load(
        Path(cli.__file__).with_name("configs").joinpath("strategies/default.yaml").read_text()
    )
    tree["grid"].pop("base_notional")
    tree["grid"]["base_qty"] = 0.002
    path = tmp_path / "btc_sized.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_validate_checks_a_strategy_against_another_symbols_rules(tmp_path: Path) -> None:
    path = str(_btc_sized_strategy(tmp_path))
    code, out, err = run("validate", path, "--venue", "binance_futures")
    assert code == 0 and f"fits venue binance_futures for {BTC}" in out, err
    code, out, err = run("validate", path, "--venue", "binance_futures", "--symbol", XRP)
    assert_user_error(code, out, err, f"rung 1 quantity 0.002 is below {XRP}'s minimum quantity 0.1")
    # the venue as FILE, the strategy as the other one: the same check
    code, out, err = run("validate", "binance_futures", "--strategy", path, "--symbol", DOGE)
    assert_user_error(code, out, err, f"rung 1 quantity 0.002 is below {DOGE}'s minimum quantity 1 ")
    # a notional-sized rung (the default's 150 USDT) fits XRP's 5 USDT minimum notional
    code, out, err = run("validate", "default", "--venue", "binance_futures", "--symbol", XRP)
    assert code == 0 and f"fits venue binance_futures for {XRP}" in out, err


def test_validate_checks_a_basket_symbol_by_symbol(tmp_path: Path) -> None:
    path = str(_btc_sized_strategy(tmp_path))
    code, out, err = run("validate", path, "--venue", "binance_futures", "--symbols", f"{BTC},{DOGE}")
    assert_user_error(code, out, err, f"{DOGE}: grid.base_qty: rung 1 quantity 0.002")
    assert f"{BTC}:" not in err  # BTC's rules accept the strategy: only DOGE is named
    code, out, err = run(
        "validate", "default", "--venue", "binance_futures", "--symbols", BTC, "--symbols", XRP, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["checked_symbols"] == [BTC, XRP]


def test_validate_symbol_flags_need_the_pair_and_known_rules() -> None:
    code, out, err = run("validate", "default", "--symbol", XRP)
    assert_user_error(code, out, err, "--symbol/--symbols check a strategy against a venue's rules")
    code, out, err = run("validate", "default", "--venue", "binance_futures", "--symbol", "ADA/USDT:USDT")
    assert_user_error(code, out, err, "no exchange rules for 'ADA/USDT:USDT'")
    code, out, err = run("validate", "default", "--venue", "binance_futures", "--symbols", " , ")
    assert_user_error(code, out, err, "--symbols: ' , ' names no symbol")
    code, out, err = run("validate", "default", "-v", "binance_futures", "--symbols", f"{XRP},{BTC},{XRP}")
    assert_user_error(code, out, err, f"--symbols: {XRP} given more than once")
    code, out, err = run("validate", "default", "-v", "binance_futures", "--symbol", XRP, "--symbols", XRP)
    assert_user_error(code, out, err, "--symbol and --symbols: give one")
