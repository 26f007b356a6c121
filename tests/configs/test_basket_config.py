"""Basket fields of a strategy: ``strategy.symbols`` and ``symbol_overrides`` (loaded, validated, applied)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import PACKAGE_DIR, load_strategy, refuse_inert_symbol_overrides
from gridctl.configs.overrides import basket_strategies

DEFAULT = yaml.safe_load((PACKAGE_DIR / "strategies" / "default.yaml").read_text())
BASKET = ["BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"]


def write(tmp_path: Path, symbols: list[str] | None, overrides: dict | None, **strategy: str) -> Path:
    tree = yaml.safe_load(yaml.safe_dump(DEFAULT))
    tree["strategy"].update(strategy)
    if symbols is not None:
        tree["strategy"]["symbols"] = symbols
    if overrides is not None:
        tree["symbol_overrides"] = overrides
    path = tmp_path / "basket.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_each_symbol_gets_its_instrument_and_only_its_own_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, BASKET, {"XRP/USDT:USDT": {"grid.base_notional": 20, "grid.grid_step_bps": 60}})
    strategy = load_strategy(path)
    assert strategy.basket_symbols == tuple(BASKET)
    per = basket_strategies(strategy)
    assert list(per) == BASKET  # basket order is the file's order
    assert [s.strategy.instrument_id for s in per.values()] == [
        "BTCUSDT-PERP.BINANCE",
        "ETHUSDT-PERP.BINANCE",
        "XRPUSDT-PERP.BINANCE",
    ]
    # The default file's rung size is 150 USDT at 40 bps; only XRP's are changed.
    assert [s.grid.base_notional for s in per.values()] == [150.0, 150.0, 20.0]
    assert [s.grid.grid_step_bps for s in per.values()] == [40.0, 40.0, 60.0]
    assert per["XRP/USDT:USDT"].origin.endswith("[XRP/USDT:USDT]")


def test_without_symbols_the_basket_is_the_instrument(tmp_path: Path) -> None:
    strategy = load_strategy(write(tmp_path, None, None))
    assert strategy.basket_symbols == ("BTC/USDT:USDT",)
    # Overrides need strategy.symbols: a single-symbol backtest, live run or study trades the strategy
    # itself, so its own symbol's override was accepted and changed nothing (tp_steps stayed 3). Such a
    # run is refused; the loader accepts the file, which runs as a basket (--symbols).
    path = write(tmp_path, None, {"BTC/USDT:USDT": {"exit.tp_steps": 2}})
    single = load_strategy(path)
    with pytest.raises(
        GridctlError, match=r"symbol_overrides: \['BTC/USDT:USDT'\]: per-symbol overrides need"
    ):
        refuse_inert_symbol_overrides(single)
    # As a one-symbol basket the override is that symbol's, also through --symbols' loader.
    (only,) = basket_strategies(load_strategy(path, ['strategy.symbols=["BTC/USDT:USDT"]'])).values()
    assert only.exit.tp_steps == 2
    from gridctl.research.cli import load_basket_strategy

    for symbols in (("BTC/USDT:USDT",), ("BTC/USDT:USDT", "ETH/USDT:USDT")):
        basket = load_basket_strategy(str(path), symbols, [])
        refuse_inert_symbol_overrides(basket)  # a basket: nothing to refuse
        assert basket_strategies(basket)["BTC/USDT:USDT"].exit.tp_steps == 2
    # --set reaches the new fields like any other.
    via_set = load_strategy("default", ["strategy.symbols=[BTC/USDT:USDT, ETH/USDT:USDT]"])
    assert via_set.basket_symbols == ("BTC/USDT:USDT", "ETH/USDT:USDT")


def test_a_size_unit_override_switches_the_unit_for_that_symbol(tmp_path: Path) -> None:
    overrides = {"BTC/USDT:USDT": {"grid.base_qty": 0.002, "risk_management.enable_position_validation": 0}}
    strategy = load_strategy(write(tmp_path, BASKET, overrides))
    per = basket_strategies(strategy)
    # Order validation is a symbol's own switch (the drawdown halt and breaker are the account's).
    assert [s.risk_management.enable_position_validation for s in per.values()] == [False, True, True]
    assert (per["BTC/USDT:USDT"].grid.base_qty, per["BTC/USDT:USDT"].grid.base_notional) == (0.002, None)
    assert (per["ETH/USDT:USDT"].grid.base_qty, per["ETH/USDT:USDT"].grid.base_notional) == (None, 150.0)


@pytest.mark.parametrize(
    ("symbols", "overrides", "message"),
    [
        (
            BASKET,
            {"XRP/USDT:USDT": {"grid.base_notionl": 20}},
            "symbol_overrides.XRP/USDT:USDT.grid.base_notionl: unknown key; "
            "did you mean 'grid.base_notional'?",
        ),
        (
            BASKET,
            {"SOL/USDT:USDT": {"grid.base_notional": 20}},
            "symbol_overrides: ['SOL/USDT:USDT'] not in the basket ['BTC/USDT:USDT', 'ETH/USDT:USDT', "
            "'XRP/USDT:USDT']",
        ),
        (
            BASKET,
            {"XRP/USDT:USDT": {"grid.base_notional": -5}},
            "symbol_overrides.XRP/USDT:USDT: override grid.base_notional=-5: Input should be greater than 0",
        ),
        (
            BASKET,
            {"XRP/USDT:USDT": {"backtest.initial_balance": 5}},
            "symbol_overrides.XRP/USDT:USDT.backtest.initial_balance: backtest is one run",
        ),
        (
            BASKET,
            {"XRP/USDT:USDT": {"risk_management.max_drawdown_pct": 5}},
            "symbol_overrides.XRP/USDT:USDT.risk_management.max_drawdown_pct: the account's gates",
        ),
        (
            BASKET,
            {"XRP/USDT:USDT": {"fees.maker": 0}},
            "symbol_overrides.XRP/USDT:USDT.fees.maker: unknown key; not a strategy setting",
        ),
        (BASKET, {"XRP/USDT:USDT": {"grid": 1}}, "key 'grid' must look like 'section.key'"),
        (["ETH/USDT:USDT", "XRP/USDT:USDT"], None, "strategy.instrument_id: BTCUSDT-PERP.BINANCE"),
        (["BTC/USDT:USDT", "BTC/USDT:USDT"], None, "['BTC/USDT:USDT'] listed more than once"),
        (["BTCUSDT"], None, "['BTCUSDT'] are not ccxt USD-M symbols"),
    ],
)
def test_a_bad_basket_field_names_file_key_and_reason(
    tmp_path: Path, symbols: list[str], overrides: dict | None, message: str
) -> None:
    path = write(tmp_path, symbols, overrides)
    with pytest.raises(GridctlError) as info:
        load_strategy(path)
    text = str(info.value)
    assert text.startswith(f"invalid strategy config {path}: ") and "\n" not in text
    assert message in text


def test_validate_against_a_venue_checks_every_basket_symbol(tmp_path: Path) -> None:
    # A venue whose rules snapshot lacks SOL's leverage brackets (the shipped one has all six symbols');
    # XRP's rung 1 of 3 USDT is below its 5 USDT minimum notional: one line per bad symbol.
    import yaml
    from typer.testing import CliRunner

    from gridctl.cli import app
    from gridctl.configs.loader import SHIPPED_DIRS, read_yaml

    snap = read_yaml(SHIPPED_DIRS["venue"] / "symbols" / "binance_usdm.yaml")
    del snap["brackets"]["SOL/USDT:USDT"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(snap))
    tree = read_yaml(SHIPPED_DIRS["venue"] / "binance_futures.yaml")
    tree["symbol_rules_file"] = "rules.yaml"
    (tmp_path / "venue.yaml").write_text(yaml.safe_dump(tree))
    path = write(
        tmp_path,
        ["BTC/USDT:USDT", "SOL/USDT:USDT", "XRP/USDT:USDT"],
        {"XRP/USDT:USDT": {"grid.base_notional": 3}},
    )
    result = CliRunner().invoke(
        app, ["config", "validate", str(path), "--venue", str(tmp_path / "venue.yaml")]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "SOL/USDT:USDT: " in lines[0] and "margin.brackets has no entry for 'SOL/USDT:USDT'" in lines[0]
    assert lines[1].startswith(
        "error: XRP/USDT:USDT: grid.base_notional 3 USDT is below XRP/USDT:USDT's minimum"
    )
    good = write(tmp_path, ["BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"], None)
    result = CliRunner().invoke(app, ["config", "validate", str(good), "--venue", "binance_futures"])
    assert result.exit_code == 0, result.output
