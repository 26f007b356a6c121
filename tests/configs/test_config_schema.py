"""Legacy and shipped configs load, with the values their files say; schema helpers the engine uses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gridctl import configs
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import dump_resolved, load_strategy, load_venue, retarget_strategy, shipped_names
from gridctl.configs.schema import Bracket, MarginSection, StrategyConfig, VenueConfig, instrument_to_ccxt

LEGACY_STRATEGIES = ["hedge_grid_v1.yaml", "hedge_grid_v1_production.yaml", "hedge_grid_v1_testnet.yaml"]
LEGACY_VENUES = ["binance_futures.yaml", "binance_futures_testnet.yaml"]


@pytest.mark.parametrize("name", LEGACY_STRATEGIES)
def test_every_legacy_strategy_loads_unchanged(legacy_configs: Path, name: str) -> None:
    cfg = load_strategy(legacy_configs / name)
    assert cfg.ccxt_symbol == "BTC/USDT:USDT"
    # risk_management and backtest are absent from every legacy file: legacy defaults apply.
    assert cfg.risk_management.max_errors_per_minute == 10
    assert cfg.risk_management.circuit_breaker_cooldown_seconds == 300
    assert cfg.backtest.initial_balance == 10000.0
    assert cfg.gates_disabled() == []


def test_legacy_strategy_values_are_what_the_files_say(legacy_configs: Path) -> None:
    research = load_strategy(legacy_configs / "hedge_grid_v1.yaml")
    assert research.grid.grid_step_bps == 50.0 and research.exit.sl_steps == 5
    assert research.regime.ema_fast == 10 and research.regime.ema_slow == 30
    assert research.position.max_position_pct == 0.75
    # hedge_grid_v1.yaml does not set these: the legacy defaults fill them.
    assert research.execution.optimization_mode is False
    assert research.execution.retry_max_price_deviation_bps == 100.0
    assert research.regime.adx_threshold == 20.0 and research.policy.throttle == 1.0

    production = load_strategy(legacy_configs / "hedge_grid_v1_production.yaml")
    assert production.grid.grid_levels_long == 10 and production.grid.qty_scale == 1.1
    assert production.execution.retry_attempts == 1

    testnet = load_strategy(legacy_configs / "hedge_grid_v1_testnet.yaml")
    assert testnet.strategy.name == "hedge_grid_v1_testnet"
    assert testnet.position.max_position_pct == 0.95  # not in the file: default
    assert testnet.funding.funding_max_cost_bps == 20.0


@pytest.mark.parametrize("name", LEGACY_VENUES)
def test_every_legacy_venue_loads_unchanged(legacy_configs: Path, name: str) -> None:
    venue = load_venue(legacy_configs / name)
    assert venue.trading.leverage == 10 and venue.risk.max_leverage == 20
    assert venue.symbols == ["BTCUSDT-PERP", "ETHUSDT-PERP"]
    # One precision block for two listed symbols: rules for neither (never one symbol's for another).
    with pytest.raises(GridctlError, match=r"no exchange rules for 'ETH/USDT:USDT': the legacy precision"):
        venue.rules_for("ETH/USDT:USDT")
    # Listing one symbol makes the block that symbol's rules; no tick/step in the legacy files:
    # 10^-price_precision (2) and 10^-quantity_precision (3), min_qty one step, max_qty unlimited.
    one = VenueConfig.model_validate(venue.model_dump() | {"symbols": ["BTCUSDT-PERP"]})
    rules = one.rules_for("BTC/USDT:USDT")
    assert rules.tick_size == pytest.approx(0.01) and rules.step_size == pytest.approx(0.001)
    assert rules.min_qty == pytest.approx(0.001) and math.isinf(rules.max_qty)
    # No fees section: Binance USD-M VIP0, and the config says where the numbers came from.
    assert (venue.fees.maker, venue.fees.taker) == (0.0002, 0.0005)
    assert venue.fees_source == "default Binance USD-M VIP0"
    with pytest.raises(GridctlError, match=r"margin\.brackets has no entry for 'BTC/USDT:USDT'"):
        venue.brackets_for("BTC/USDT:USDT")


def test_legacy_testnet_venue_keeps_its_ws_url_and_null_base_url(legacy_configs: Path) -> None:
    venue = load_venue(legacy_configs / "binance_futures_testnet.yaml")
    assert venue.api.testnet is True
    assert venue.api.base_url is None
    assert venue.api.ws_url == "wss://fstream.binancefuture.com"


def test_shipped_names_are_exactly_the_documented_ones() -> None:
    assert shipped_names("strategy") == ["default", "hedge_grid_v1"]
    assert shipped_names("venue") == ["binance_futures", "binance_futures_testnet"]


def test_default_strategy_has_the_documented_values() -> None:
    cfg = load_strategy("default")
    g = cfg.grid
    assert (g.grid_step_bps, g.grid_levels_long, g.grid_levels_short, g.base_notional, g.qty_scale) == (
        40.0, 5, 5, 150.0, 1.05,
    )  # fmt: skip
    assert g.base_qty is None
    assert (cfg.exit.tp_steps, cfg.exit.sl_steps) == (3, 6)
    assert (cfg.rebalance.recenter_trigger_bps, cfg.rebalance.max_inventory_quote) == (200.0, 10000.0)
    assert (cfg.funding.funding_window_minutes, cfg.funding.funding_max_cost_bps) == (480, 12.0)
    r = cfg.regime
    assert (r.adx_len, r.ema_fast, r.ema_slow, r.atr_len, r.hysteresis_bps, r.adx_threshold) == (
        14, 10, 30, 14, 35.0, 20.0,
    )  # fmt: skip
    p = cfg.position
    assert (p.max_position_size, p.max_position_pct, p.max_leverage_used, p.emergency_liquidation_buffer) == (
        None, 0.75, 5.0, 0.15,
    )  # fmt: skip
    assert (cfg.policy.strategy, cfg.policy.counter_levels, cfg.policy.counter_qty_scale) == (
        "throttled-counter", 4, 0.5,
    )  # fmt: skip
    assert cfg.policy.throttle == 1.0


def test_default_strategy_writes_out_risk_management_and_backtest_in_full() -> None:
    raw = yaml.safe_load((Path(configs.__file__).parent / "strategies" / "default.yaml").read_text())
    assert set(raw["risk_management"]) == set(
        StrategyConfig.model_fields["risk_management"].annotation.model_fields
    )
    assert set(raw["backtest"]) == set(StrategyConfig.model_fields["backtest"].annotation.model_fields)


def test_shipped_hedge_grid_v1_is_the_legacy_research_config_but_its_ladder(legacy_configs: Path) -> None:
    """Every value is the legacy file's except the ladder: 6 + 6 rungs need 12 stops, BTCUSDT allows 10."""
    shipped = dump_resolved(load_strategy("hedge_grid_v1"))
    legacy = dump_resolved(load_strategy(legacy_configs / "hedge_grid_v1.yaml"))
    ladder = ("grid_levels_long", "grid_levels_short")
    assert [legacy["grid"][k] for k in ladder] == [6, 6]
    assert [shipped["grid"][k] for k in ladder] == [5, 5]
    for cfg in (shipped, legacy):
        for k in ladder:
            del cfg["grid"][k]
    assert shipped == legacy


@pytest.mark.parametrize("name", ["binance_futures", "binance_futures_testnet"])
def test_shipped_venue_adds_fees_precision_and_brackets(name: str) -> None:
    venue = load_venue(name)
    assert venue.fees_source == "venue config"
    assert (venue.fees.maker, venue.fees.taker) == (0.0002, 0.0005)
    btc, xrp = venue.rules_for("BTC/USDT:USDT"), venue.rules_for("XRP/USDT:USDT")
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.max_qty) == (0.1, 0.001, 0.001, 1000.0)
    assert (xrp.tick_size, xrp.step_size, xrp.min_qty, xrp.min_notional) == (0.0001, 0.1, 0.1, 5.0)
    assert venue.trading.hedge_mode is True and venue.trading.margin_type == "CROSSED"


@pytest.mark.parametrize("name", ["binance_futures", "binance_futures_testnet"])
@pytest.mark.parametrize("symbol", ["BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"])
def test_shipped_brackets_equal_the_exchange_snapshot(shared_dir: Path, name: str, symbol: str) -> None:
    exchange = json.loads((shared_dir / "data/exchange/binance_usdm_leverage_brackets.json").read_text())
    expected = sorted(exchange[symbol], key=lambda b: b["bracket"])
    got = load_venue(name).brackets_for(symbol)
    assert [b.model_dump() for b in got] == [{k: v for k, v in b.items() if k != "bracket"} for b in expected]


def test_shipped_venues_differ_only_in_api_section() -> None:
    prod = dump_resolved(load_venue("binance_futures"))
    test = dump_resolved(load_venue("binance_futures_testnet"))
    assert prod["api"]["testnet"] is False and test["api"]["testnet"] is True
    assert {k: v for k, v in prod.items() if k != "api"} == {k: v for k, v in test.items() if k != "api"}


@pytest.mark.parametrize(
    ("instrument", "symbol"),
    [
        ("BTCUSDT-PERP.BINANCE", "BTC/USDT:USDT"),
        ("ETHUSDT-PERP.BINANCE", "ETH/USDT:USDT"),
        ("1000PEPEUSDT-PERP.BINANCE", "1000PEPE/USDT:USDT"),
        ("USDCUSDT-PERP.BINANCE", "USDC/USDT:USDT"),
        ("BTCUSDC-PERP.BINANCE", "BTC/USDC:USDC"),
    ],
)
def test_ccxt_symbol_from_instrument_id(instrument: str, symbol: str) -> None:
    cfg = load_strategy("default", [f"strategy.instrument_id={instrument}"])
    assert cfg.ccxt_symbol == symbol


def test_retarget_sets_a_one_symbol_strategys_instrument_and_leaves_baskets_alone() -> None:
    """The one --symbol rule of backtest, live, config validate and a profile's data.symbol."""
    sets = ["grid.grid_step_bps=30"]
    cfg = load_strategy("default", sets)
    xrp = retarget_strategy("default", cfg, "XRP/USDT:USDT", sets)
    assert (xrp.strategy.instrument_id, xrp.grid.grid_step_bps) == ("XRPUSDT-PERP.BINANCE", 30.0)
    sets_given = "--set grid.grid_step_bps=30 --set strategy.instrument_id=XRPUSDT-PERP.BINANCE"
    assert xrp.origin.endswith(sets_given)
    assert retarget_strategy("default", cfg, None, sets) is cfg
    assert retarget_strategy("default", cfg, "BTC/USDT:USDT", sets) is cfg
    basket = load_strategy("default", ['strategy.symbols=["BTC/USDT:USDT", "ETH/USDT:USDT"]'])
    assert retarget_strategy("default", basket, "XRP/USDT:USDT") is basket  # each caller refuses it


@pytest.mark.parametrize(
    "instrument", ["BTCUSDT.BINANCE", "BTCUSDT-PERP.BYBIT", "btcusdt-perp.binance", "BTC-PERP"]
)
def test_unparseable_instrument_id_is_an_error(instrument: str) -> None:
    with pytest.raises(GridctlError, match=r"strategy\.instrument_id"):
        instrument_to_ccxt(instrument)
    with pytest.raises(GridctlError, match=r"strategy\.instrument_id: .*not a Binance USD-M perpetual id"):
        load_strategy("default", [f"strategy.instrument_id={instrument}"])


def test_gates_disabled_lists_switches_set_false() -> None:
    cfg = load_strategy(
        "default",
        ["risk_management.enable_circuit_breaker=false", "risk_management.enable_drawdown_protection=false"],
    )
    assert cfg.gates_disabled() == [
        "risk_management.enable_circuit_breaker",
        "risk_management.enable_drawdown_protection",
    ]
    assert load_strategy("default").gates_disabled() == []


def test_one_symbols_rule_override_leaves_the_other_symbols_alone() -> None:
    venue = load_venue("binance_futures", ["symbol_rules.BTC/USDT:USDT.tick_size=0.5"])
    assert venue.rules_for("BTC/USDT:USDT").tick_size == 0.5
    assert venue.rules_for("ETH/USDT:USDT").tick_size == 0.01


def test_configs_are_frozen() -> None:
    cfg = load_strategy("default")
    with pytest.raises(ValueError, match="frozen"):
        cfg.grid.grid_step_bps = 10.0  # type: ignore[misc]


@pytest.mark.parametrize("name", ["default", "hedge_grid_v1"])
def test_resolved_dump_reloads_to_the_same_strategy(tmp_path: Path, name: str) -> None:
    cfg = load_strategy(name)
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(dump_resolved(cfg)))
    assert load_strategy(path).model_dump() == cfg.model_dump()


def _tiers(caps: list[float], ratios: list[float]) -> list[dict[str, float]]:
    """Contiguous brackets from 0 with Binance's cum rule: cum_i = cum_{i-1} + floor_i*(mmr_i - mmr_{i-1})."""
    tiers, floor, cum, prev_mmr = [], 0.0, 0.0, ratios[0]
    for i, (cap, mmr) in enumerate(zip(caps, ratios, strict=True)):
        cum += floor * (mmr - prev_mmr)
        tiers.append(
            {"notional_floor": floor, "notional_cap": cap, "maint_margin_ratio": mmr, "cum": cum,
             "max_leverage": 125.0 / (i + 1)}
        )  # fmt: skip
        floor, prev_mmr = cap, mmr
    return tiers


bracket_tables = st.integers(min_value=1, max_value=8).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(1, 10_000), min_size=n, max_size=n),
        st.lists(st.integers(1, 50), min_size=n, max_size=n),
    )
)


@given(bracket_tables)
def test_brackets_following_the_exchange_rules_validate(table: tuple[list[int], list[int]]) -> None:
    widths, steps = table
    caps = [1000.0 * sum(widths[: i + 1]) for i in range(len(widths))]
    ratios = [0.001 * sum(steps[: i + 1]) for i in range(len(steps))]
    tiers = _tiers(caps, ratios)
    margin = MarginSection.model_validate({"brackets": {"BTC/USDT:USDT": tiers}})
    assert [b.notional_cap for b in margin.brackets["BTC/USDT:USDT"]] == caps


@given(bracket_tables, st.data())
def test_brackets_with_a_gap_or_a_wrong_cum_are_rejected(
    table: tuple[list[int], list[int]], data: st.DataObject
) -> None:
    widths, steps = table
    caps = [1000.0 * sum(widths[: i + 1]) for i in range(len(widths))]
    ratios = [0.001 * sum(steps[: i + 1]) for i in range(len(steps))]
    tiers = _tiers(caps, ratios)
    i = data.draw(st.integers(0, len(tiers) - 1))
    if data.draw(st.booleans()) and i > 0:
        tiers[i]["notional_floor"] += 1.0  # a gap between bracket i-1 and i
    else:
        tiers[i]["cum"] += 1.0  # a cum that breaks the continuity rule (bracket 1 must have cum 0)
    with pytest.raises(ValueError, match="BTC/USDT:USDT: bracket"):
        MarginSection.model_validate({"brackets": {"BTC/USDT:USDT": tiers}})


def test_bracket_model_rejects_impossible_tiers() -> None:
    with pytest.raises(ValueError, match="maint_margin_ratio"):
        Bracket(notional_floor=0.0, notional_cap=10.0, maint_margin_ratio=1.5, cum=0.0, max_leverage=10.0)


def test_venue_config_built_in_memory_has_no_brackets() -> None:
    venue = VenueConfig.model_validate(
        load_venue("binance_futures").model_dump(exclude={"margin", "api"}) | {"api": {}}
    )
    with pytest.raises(GridctlError, match=r"margin\.brackets .*has: none"):
        venue.brackets_for("ETH/USDT:USDT")


def test_a_fees_section_must_give_both_rates() -> None:
    with pytest.raises(
        GridctlError, match=r"--set fees=\{maker: 0.0001\}: fees.taker: required field is missing"
    ):
        load_venue("binance_futures", ["fees={maker: 0.0001}"])
    venue = load_venue("binance_futures", ["fees={maker: 0.0001, taker: 0.0004}"])
    assert (venue.fees.maker, venue.fees.taker, venue.fees_source) == (0.0001, 0.0004, "venue config")
