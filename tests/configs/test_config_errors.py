"""Bad config input fails closed with a message naming the file (or --set), the key path and the reason."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gridctl import configs
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import detect_kind, load_strategy, load_venue, read_yaml
from gridctl.configs.schema import StrategyConfig

SHIPPED = Path(configs.__file__).parent


def shipped_tree(kind: str, name: str) -> dict[str, Any]:
    return yaml.safe_load((SHIPPED / f"{kind}" / f"{name}.yaml").read_text())


def inline_venue_tree() -> dict[str, Any]:
    """The shipped venue with its symbols snapshot written inline (symbol_rules and margin.brackets)."""
    tree = shipped_tree("venues", "binance_futures")
    snap = shipped_tree("venues/symbols", "binance_usdm")
    del tree["symbol_rules_file"]
    tree["symbol_rules"] = snap["symbols"]
    tree["margin"] = {"brackets": snap["brackets"]}
    return tree


def write(tmp_path: Path, tree: dict[str, Any], name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def strategy_error(tmp_path: Path, mutate: Any) -> str:
    tree = shipped_tree("strategies", "default")
    mutate(tree)
    path = write(tmp_path, tree)
    with pytest.raises(GridctlError) as info:
        load_strategy(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_misplaced_key_says_which_section_it_belongs_under(tmp_path: Path) -> None:
    message = strategy_error(tmp_path, lambda t: t["grid"].update(max_errors_per_minute=5))
    assert "grid.max_errors_per_minute: unknown key here; it belongs under risk_management" in message


def test_misspelled_key_suggests_the_closest_valid_key(tmp_path: Path) -> None:
    message = strategy_error(
        tmp_path, lambda t: t["grid"].update(grid_stepbps=t["grid"].pop("grid_step_bps"))
    )
    assert "grid.grid_stepbps: unknown key; did you mean 'grid.grid_step_bps'?" in message
    # Renaming the key also leaves the real one missing; both are reported.
    assert "grid.grid_step_bps: required field is missing" in message


def test_misspelled_section_suggests_the_section(tmp_path: Path) -> None:
    message = strategy_error(tmp_path, lambda t: t.update(risk_managment=t.pop("risk_management")))
    assert "risk_managment: unknown key; did you mean 'risk_management'?" in message


def test_venue_section_in_a_strategy_file_is_named_as_such(tmp_path: Path) -> None:
    message = strategy_error(tmp_path, lambda t: t.update(trading={"leverage": 5}))
    assert "trading: unknown key; 'trading' is a section of a venue config, not a strategy config" in message


def test_unknown_key_with_no_near_match_lists_the_valid_keys(tmp_path: Path) -> None:
    message = strategy_error(tmp_path, lambda t: t["exit"].update(zzz=1))
    assert "exit.zzz: unknown key; valid keys here: tp_steps, sl_steps" in message


def test_all_bad_keys_of_a_file_are_reported_at_once(tmp_path: Path) -> None:
    def mutate(tree: dict[str, Any]) -> None:
        tree["grid"]["max_errors_per_minute"] = 5
        tree["regime"]["ema_fastt"] = 3
        tree["backtest"]["slipage_bps"] = 2
        tree["policy"]["counter_levels"] = 99

    message = strategy_error(tmp_path, mutate)
    assert message.splitlines()[0].endswith(": 4 problems")
    assert "grid.max_errors_per_minute: unknown key here; it belongs under risk_management" in message
    assert "regime.ema_fastt: unknown key; did you mean 'regime.ema_fast'?" in message
    assert "backtest.slipage_bps: unknown key; did you mean 'backtest.slippage_bps'?" in message
    assert "policy.counter_levels: Input should be less than or equal to 20 (got 99)" in message


def test_missing_required_section_and_field(tmp_path: Path) -> None:
    def mutate(tree: dict[str, Any]) -> None:
        del tree["funding"]
        del tree["grid"]["base_notional"]

    message = strategy_error(tmp_path, mutate)
    assert "funding: required field is missing" in message
    assert "grid.base_qty: give exactly one of grid.base_qty (base units) and grid.base_notional" in message


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        ("grid", "grid_step_bps", 4, "greater than or equal to 5"),
        ("grid", "grid_levels_long", 101, "less than or equal to 100"),
        ("grid", "base_qty", 0, "greater than 0"),
        ("grid", "qty_scale", 3.5, "less than or equal to 3"),
        ("rebalance", "recenter_trigger_bps", 0, "greater than 0"),
        ("execution", "retry_attempts", 11, "less than or equal to 10"),
        ("execution", "retry_delay_ms", 6000, "less than or equal to 5000"),
        ("execution", "retry_max_price_deviation_bps", 1001, "less than or equal to 1000"),
        ("funding", "funding_window_minutes", 30, "greater than or equal to 60"),
        ("funding", "funding_max_cost_bps", 101, "less than or equal to 100"),
        ("regime", "adx_len", 4, "greater than or equal to 5"),
        ("regime", "hysteresis_bps", -1, "greater than or equal to 0"),
        ("position", "max_leverage_used", 126, "less than or equal to 125"),
        ("position", "emergency_liquidation_buffer", 0.01, "greater than or equal to 0.05"),
        ("position", "max_position_pct", 0.05, "greater than or equal to 0.1"),
        ("policy", "counter_qty_scale", 1.5, "less than or equal to 1"),
        ("policy", "throttle", 1.2, "less than or equal to 1"),
        ("policy", "strategy", "martingale", "'throttled-counter' or 'core-and-scalp'"),
        ("risk_management", "max_errors_per_minute", 0, "greater than or equal to 1"),
        ("risk_management", "circuit_breaker_cooldown_seconds", 30, "greater than or equal to 60"),
        ("risk_management", "max_drawdown_pct", 60, "less than or equal to 50"),
        ("risk_management", "circuit_breaker_window_seconds", 5, "greater than or equal to 10"),
        ("backtest", "initial_balance", 0, "greater than 0"),
        ("grid", "grid_levels_long", 6.5, "valid integer"),
        ("grid", "grid_levels_long", True, "valid integer"),
        ("grid", "grid_step_bps", "40", "valid number"),
        ("execution", "maker_only", "maybe", "valid boolean"),
    ],
)
def test_out_of_range_or_mistyped_value_names_path_and_reason(
    tmp_path: Path, section: str, key: str, value: Any, reason: str
) -> None:
    message = strategy_error(tmp_path, lambda t: t[section].update({key: value}))
    line = next(line for line in message.splitlines() if f"{section}.{key}:" in line)
    assert reason in line and f"(got {value!r})" in line


def test_tp_beyond_three_stops_is_rejected_on_tp_steps(tmp_path: Path) -> None:
    # sl_steps 6 in default.yaml -> tp_steps may be at most 18.
    message = strategy_error(tmp_path, lambda t: t["exit"].update(tp_steps=19))
    assert "exit.tp_steps: must be <= 3 * sl_steps = 18 (got 19)" in message
    assert load_strategy("default", ["exit.tp_steps=18"]).exit.tp_steps == 18


def test_fast_ema_must_be_below_slow_ema(tmp_path: Path) -> None:
    message = strategy_error(tmp_path, lambda t: t["regime"].update(ema_fast=30))
    assert "regime.ema_fast: must be < ema_slow = 30 (got 30)" in message


BTC = "symbol_rules.BTC/USDT:USDT."


def venue_error(overrides: list[str]) -> str:
    with pytest.raises(GridctlError) as info:
        load_venue("binance_futures", overrides)
    return str(info.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trading.leverage=25", "trading.leverage: must be <= risk.max_leverage = 20 (got 25)"),
        ("trading.leverage=0", "trading.leverage: Input should be greater than or equal to 1 (got 0)"),
        ("trading.margin_type=PORTFOLIO", "trading.margin_type: Input should be 'CROSSED' or 'ISOLATED'"),
        ("venue.venue_type=swap", "venue.venue_type: Input should be 'spot', 'futures' or 'options'"),
        ("venue.account_type=FUTURES", "venue.account_type: Input should be 'CASH', 'MARGIN'"),
        (
            "precision={price_precision: 2, quantity_precision: 3, min_notional: 5}",
            "precision: a venue with symbol_rules (per-symbol exchange rules) must not also have",
        ),
        (f"{BTC}tick_size=0", f"{BTC}tick_size: Input should be greater than 0"),
        (f"{BTC}step_size=-0.001", f"{BTC}step_size: Input should be greater than 0"),
        (f"{BTC}min_qty=2000", f"{BTC}min_qty: must be <= max_qty = 1000.0 (got 2000.0)"),
        (f"{BTC}percent_price_down=1.2", f"{BTC}percent_price_down: Input should be less than 1"),
        (
            f"{BTC}max_num_algo_orders=0",
            f"{BTC}max_num_algo_orders: Input should be greater than or equal to 1",
        ),
        ("risk.min_order_size_usdt=200000", "risk.min_order_size_usdt: must be <= max_order_size_usdt"),
        ("rate_limits.orders_per_second=0", "rate_limits.orders_per_second: Input should be greater than"),
        ("fees.maker=-0.0001", "fees.maker: Input should be greater than or equal to 0"),
        ("symbols=[BTCUSDT]", "symbols: ['BTCUSDT'] are not USD-M perpetual symbols like 'BTCUSDT-PERP'"),
        (
            "websocket.ping_intervall=5",
            "websocket.ping_intervall: unknown key; did you mean 'websocket.ping_interval'?",
        ),
    ],
)
def test_venue_rules_name_the_key_path(override: str, expected: str) -> None:
    message = venue_error([override])
    assert f"--set {override}: {expected}" in message
    assert "configs/venues/binance_futures.yaml" in message.splitlines()[0]


def test_unsorted_brackets_are_rejected_naming_margin_brackets(tmp_path: Path) -> None:
    tree = inline_venue_tree()
    tiers = tree["margin"]["brackets"]["BTC/USDT:USDT"]
    tiers[1], tiers[2] = tiers[2], tiers[1]
    path = write(tmp_path, tree)
    with pytest.raises(GridctlError) as info:
        load_venue(path)
    assert re.search(
        r"margin\.brackets: BTC/USDT:USDT: bracket 2 notional_floor 600000.0 must equal "
        r"bracket 1 notional_cap 50000.0 \(brackets sorted and contiguous\)",
        str(info.value),
    )


def test_brackets_keyed_by_exchange_id_instead_of_ccxt_symbol_are_rejected(tmp_path: Path) -> None:
    tree = inline_venue_tree()
    tree["margin"]["brackets"] = {"BTCUSDT": tree["margin"]["brackets"]["BTC/USDT:USDT"]}
    with pytest.raises(GridctlError, match=r"margin\.brackets: 'BTCUSDT' is not a ccxt USD-M symbol"):
        load_venue(write(tmp_path, tree))


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("strategy:\n  name: x\ngrid:\n  grid_step_bps: [40\n  base_qty: 0.002\n")
    with pytest.raises(GridctlError) as info:
        load_strategy(path)
    # The unclosed flow sequence opened on line 4 is reported where the parser gives up (line 5).
    assert re.match(rf"{re.escape(str(path))}: YAML syntax error at line 5, column \d+: ", str(info.value))


def test_duplicate_keys_are_an_error_not_a_silent_override(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    text = (SHIPPED / "strategies" / "default.yaml").read_text()
    path.write_text(text + "\ngrid:\n  grid_step_bps: 10\n")
    line = len(text.splitlines()) + 2
    with pytest.raises(
        GridctlError, match=rf"dup.yaml: YAML syntax error at line {line}, column 1: duplicate key 'grid'"
    ):
        load_strategy(path)


def _alias_bomb(levels: int) -> str:
    """Each level is a list of nine aliases of the one before: 9**levels strings once expanded."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[a, b]: 1\n", "line 1, column 1: a list cannot be a key"),
        ("grid:\n  ? {a: 1}\n  : 2\n", "line 2, column 5: a mapping cannot be a key"),
        ("? - x\n: 1\n", "a list cannot be a key"),
        ("a: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested more than 32 levels deep"),
        ("a: " + "{b: " * 5_000 + "1" + "}" * 5_000 + "\n", "nested more than 32 levels deep"),
        ("".join(" " * i + f"k{i}:\n" for i in range(40)), "nested more than 32 levels deep"),
        (_alias_bomb(9), "aliases expand to more than 100,000 values"),  # 9**10 ~ 3.5e9 strings
        (_alias_bomb(30), "aliases expand to more than 100,000 values"),
        ("a: &a [x, *a]\n", "recursive alias"),
        ("a: &a {b: *a}\n", "recursive alias"),
        ("a: " + "x" * 1_000_001 + "\n", "a config file is at most 1,000,000"),
    ],
    ids=[
        "list-key",
        "mapping-key",
        "block-list-key",
        "deep-flow-lists",
        "deep-flow-maps",
        "deep-block",
        "alias-bomb",
        "alias-bomb-30",
        "recursive-list",
        "recursive-map",
        "huge-file",
    ],
)
def test_crafted_yaml_is_refused_quickly_with_one_line(tmp_path: Path, content: str, reason: str) -> None:
    """Unhashable keys, deep nesting, alias bombs and oversized files: one line, within a second."""
    path = tmp_path / "crafted.yaml"
    path.write_text(content)
    started = time.perf_counter()
    with pytest.raises(GridctlError) as info:
        load_strategy(path)
    assert time.perf_counter() - started < 2.0
    message = str(info.value)
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message


def test_shallow_aliases_within_the_bounds_still_load(tmp_path: Path) -> None:
    """Aliases are legal YAML: a moderate reuse (9**4 = 6561 values) loads as the expanded tree."""
    path = tmp_path / "ok.yaml"
    path.write_text(_alias_bomb(3))
    tree = read_yaml(path)
    assert len(tree["l3"]) == 9 and tree["l3"][0][0][0] == ["x"] * 9


def test_merge_keys_are_accepted_and_explicit_keys_win(tmp_path: Path) -> None:
    """``<<: *anchor`` merges a mapping; keys written in the mapping itself override merged ones."""
    text = (SHIPPED / "strategies" / "default.yaml").read_text()
    grid = shipped_tree("strategies", "default")["grid"]
    path = tmp_path / "merge.yaml"
    path.write_text(
        "x-grid: &g\n  grid_step_bps: 40\n  qty_scale: 1.5\n"
        + text.replace("grid:\n", "grid:\n  <<: *g\n", 1)
    )
    tree = read_yaml(path)
    assert tree["grid"]["grid_step_bps"] == grid["grid_step_bps"]  # written in grid: wins over the merge
    assert tree["grid"]["qty_scale"] == grid["qty_scale"]
    short = tmp_path / "short.yaml"
    short.write_text("d: &d {x: 1, y: 2}\ne:\n  <<: *d\n  y: 3\n")
    assert read_yaml(short)["e"] == {"x": 1, "y": 3}
    twice = tmp_path / "twice.yaml"
    twice.write_text("d: &d {x: 1}\ne:\n  <<: *d\n  y: 3\n  y: 4\n")
    with pytest.raises(GridctlError, match="line 5, column 3: duplicate key 'y'"):
        read_yaml(twice)


@pytest.mark.parametrize(("content", "reason"), [("", "file is empty"), ("- a\n- b\n", "got list")])
def test_top_level_must_be_a_mapping(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(content)
    with pytest.raises(GridctlError, match=reason):
        read_yaml(path)


def test_unknown_name_lists_the_shipped_names() -> None:
    with pytest.raises(
        GridctlError,
        match=r"no strategy config named 'defualt'; shipped strategy configs: default, hedge_grid_v1",
    ):
        load_strategy("defualt")
    with pytest.raises(
        GridctlError, match=r"shipped venue configs: binance_futures, binance_futures_testnet"
    ):
        load_venue("binance_testnet")  # the audited bot's warm-up looked for this name and fell back


def test_missing_path_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(GridctlError, match=r"strategy config file not found: .*nothere\.yaml"):
        load_strategy(tmp_path / "nothere.yaml")


def test_names_resolve_inside_the_package_and_paths_load_that_file(tmp_path: Path) -> None:
    assert load_strategy("default").origin == str(SHIPPED / "strategies" / "default.yaml")
    tree = shipped_tree("strategies", "default")
    tree["strategy"]["name"] = "copy"
    path = write(tmp_path, tree, "default.yaml")
    assert load_strategy(path).strategy.name == "copy"


def test_overrides_are_typed_by_yaml_scalars() -> None:
    cfg = load_strategy(
        "default",
        [
            "grid.grid_step_bps=30",
            "policy.strategy=core-and-scalp",
            "backtest.fill_on_touch=true",
            "grid.grid_levels_long=3",
        ],
    )
    assert cfg.grid.grid_step_bps == 30.0
    assert cfg.policy.strategy == "core-and-scalp"
    assert cfg.backtest.fill_on_touch is True
    assert cfg.grid.grid_levels_long == 3
    assert cfg.origin.endswith(
        "default.yaml --set grid.grid_step_bps=30 --set policy.strategy=core-and-scalp "
        "--set backtest.fill_on_touch=true --set grid.grid_levels_long=3"
    )


def test_bad_override_key_names_set_as_the_source() -> None:
    with pytest.raises(GridctlError) as info:
        load_strategy("default", ["grid.max_errors_per_minute=3", "gird.grid_step_bps=30"])
    message = str(info.value)
    assert (
        "--set grid.max_errors_per_minute=3: grid.max_errors_per_minute: "
        "unknown key here; it belongs under risk_management" in message
    )
    assert "--set gird.grid_step_bps=30: gird: unknown key; did you mean 'grid'?" in message


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("grid.grid_step_bps", "expected SECTION.KEY=VALUE"),
        ("grid..x=1", "expected SECTION.KEY=VALUE"),
        ("grid.grid_step_bps.x=1", "grid.grid_step_bps is a value, not a section"),
        ("grid.grid_step_bps=[1", "value is not valid YAML"),
        ("grid.grid_levels_long=six", "grid.grid_levels_long: Input should be a valid integer (got 'six')"),
    ],
)
def test_malformed_override_is_an_error_naming_it(override: str, reason: str) -> None:
    with pytest.raises(GridctlError) as info:
        load_strategy("default", [override])
    assert f"--set {override}: " in str(info.value) and reason in str(info.value)


def test_detect_kind_by_sections_and_by_name(tmp_path: Path, legacy_configs: Path) -> None:
    assert detect_kind(legacy_configs / "hedge_grid_v1.yaml") == "strategy"
    assert detect_kind(legacy_configs / "binance_futures.yaml") == "venue"
    assert detect_kind("binance_futures_testnet") == "venue"
    assert detect_kind("default") == "strategy"
    path = tmp_path / "neither.yaml"
    path.write_text("foo: 1\n")
    with pytest.raises(GridctlError, match="cannot tell whether this is a strategy or a venue config"):
        detect_kind(path)
    with pytest.raises(GridctlError, match="no config file or shipped name 'nope'"):
        detect_kind("nope")


# Field names long enough that one deleted character leaves an unambiguous closest match.
_LONG_FIELDS = [
    (section, name)
    for section, field in StrategyConfig.model_fields.items()
    if section != "symbol_overrides"  # the one top-level field that is no section (symbol -> overrides)
    for name in field.annotation.model_fields
    if len(name) >= 8
]


@given(st.sampled_from(_LONG_FIELDS), st.data())
def test_any_single_character_typo_suggests_the_intended_key(
    field: tuple[str, str], data: st.DataObject
) -> None:
    section, name = field
    i = data.draw(st.integers(0, len(name) - 1))
    typo = name[:i] + name[i + 1 :]
    with pytest.raises(GridctlError) as info:
        load_strategy("default", [f"{section}.{typo}=1"])
    assert f"{section}.{typo}: unknown key; did you mean '{section}.{name}'?" in str(info.value)


@given(st.floats(min_value=5, max_value=1000, allow_nan=False))
def test_any_in_range_override_loads_and_out_of_range_fails(step: float) -> None:
    assert load_strategy("default", [f"grid.grid_step_bps={step!r}"]).grid.grid_step_bps == step
    with pytest.raises(
        GridctlError, match=r"grid\.grid_step_bps: Input should be less than or equal to 1000"
    ):
        load_strategy("default", [f"grid.grid_step_bps={step + 1000.5!r}"])


# ----------------------------------------------------------------------------------------------------
# Paths that are not regular files, and files of the other kind
# ----------------------------------------------------------------------------------------------------


def _not_a_file(tmp_path: Path, what: str) -> tuple[str, str]:
    """A path of the given sort and the words the message must use for it."""
    if what == "folder":
        (tmp_path / "cfg.yaml").mkdir()
        return str(tmp_path / "cfg.yaml"), "is a folder"
    if what == "fifo":
        os.mkfifo(tmp_path / "cfg.yaml")
        return str(tmp_path / "cfg.yaml"), "is a FIFO (named pipe)"
    if what == "dev-null":
        return "/dev/null", "is a character device"
    if what == "loop":
        (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
        (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
        return str(tmp_path / "a.yaml"), "is a symlink loop"
    assert what == "dangling"
    (tmp_path / "cfg.yaml").symlink_to(tmp_path / "gone.yaml")
    return str(tmp_path / "cfg.yaml"), "is a symlink to a missing target"


@pytest.mark.parametrize("what", ["folder", "fifo", "dev-null", "loop", "dangling"])
@pytest.mark.parametrize("reader", ["strategy", "venue", "detect", "read_yaml"])
def test_a_path_that_is_no_regular_file_is_named_as_what_it_is(
    tmp_path: Path, what: str, reader: str
) -> None:
    """Never "not found" for something that exists, never a read that blocks on a FIFO (alarm: 10 s)."""
    path, words = _not_a_file(tmp_path, what)
    call = {
        "strategy": lambda: load_strategy(path),
        "venue": lambda: load_venue(path),
        "detect": lambda: detect_kind(path),
        "read_yaml": lambda: read_yaml(Path(path)),
    }[reader]
    signal.alarm(10)
    try:
        with pytest.raises(GridctlError) as info:
            call()
    finally:
        signal.alarm(0)
    message = str(info.value)
    assert path in message and words in message and "\n" not in message, message
    assert "not found" not in message


WRONG_KIND = [
    ("strategies/default.yaml", "venue", "strategy config", "give it as --strategy", "venue"),
    ("venues/binance_futures.yaml", "strategy", "venue config", "give it as --venue", "strategy"),
    ("profiles/narrow.yaml", "strategy", "optimization profile", "gridctl optimize --profile", "strategy"),
    ("profiles/wide.yaml", "venue", "optimization profile", "gridctl optimize --profile", "venue"),
    ("venues/symbols/binance_usdm.yaml", "venue", "symbol-rules snapshot", "symbol_rules_file", "venue"),
    (
        "venues/symbols/binance_usdm.yaml",
        "strategy",
        "symbol-rules snapshot",
        "symbol_rules_file",
        "strategy",
    ),
    ("profiles/narrow.yaml", "validate", "optimization profile", "gridctl optimize --profile", "strategy"),
    # the snapshot's `symbols` is also a venue section, so `config validate` reads it as a venue first
    ("venues/symbols/binance_usdm.yaml", "validate", "symbol-rules snapshot", "symbol_rules_file", "venue"),
]


@pytest.mark.parametrize(("given", "reader", "holds", "hint", "wanted"), WRONG_KIND)
def test_a_file_of_another_kind_is_one_line_saying_what_it_is(
    given: str, reader: str, holds: str, hint: str, wanted: str
) -> None:
    """A strategy given as the venue, a profile as the strategy or venue, the symbol-rules snapshot as a
    venue: one line naming what the file is and where it goes, not a 10-22 line missing-field list."""
    path = SHIPPED / given
    loaders = {"venue": load_venue, "strategy": load_strategy}
    call = loaders.get(reader) or (lambda p: loaders[detect_kind(p)](p))  # validate: detect, then load
    with pytest.raises(GridctlError) as info:
        call(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path} is a"), message
    assert f" {holds} (sections " in message and hint in message, message
    assert f"not a {wanted} config" in message


def test_a_shipped_name_of_the_other_kind_says_so() -> None:
    with pytest.raises(GridctlError, match=r"'default' is a shipped strategy config, not a venue config"):
        load_venue("default")
    with pytest.raises(GridctlError, match=r"'binance_futures' is a shipped venue config, not a strategy"):
        load_strategy("binance_futures")


def test_a_file_with_sections_of_both_kinds_still_lists_its_problems(tmp_path: Path) -> None:
    """The one-line answer is only for a file with none of the expected sections."""
    tree = shipped_tree("strategies", "default")
    tree["trading"] = {"leverage": 5}
    with pytest.raises(GridctlError, match="'trading' is a section of a venue config"):
        load_strategy(write(tmp_path, tree))


@pytest.mark.parametrize(
    ("override", "words"),
    [
        (
            "precision.tick_size=-1",
            "--venue-set precision.tick_size=-1: precision.tick_size: Input should be greater",
        ),
        ("precision", "--venue-set precision: expected SECTION.KEY=VALUE"),
        ("precision.tick_size=[1", "--venue-set precision.tick_size=[1: value is not valid YAML"),
        ("trading.leverage.x=1", "--venue-set trading.leverage.x=1: "),
    ],
)
def test_overrides_are_named_by_the_flag_they_came_from(override: str, words: str) -> None:
    """The live bridge's --venue-set used to be reported as --set."""
    with pytest.raises(GridctlError) as info:
        load_venue("binance_futures", [override], option="--venue-set")
    assert words in str(info.value) and "--set " not in str(info.value).replace("--venue-set ", "")
    assert load_venue("binance_futures", ["trading.leverage=5"], option="--venue-set").origin.endswith(
        " --venue-set trading.leverage=5"
    )
