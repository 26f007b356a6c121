"""Library-level checks behind the CLI's refusals, one class of bad input per test, several members each:
config encodings, YAML 1.2 numbers, unusable paths, stored-range clipping, funding beyond any cap,
strategy/venue pairs that cannot trade, partial sample stores, and flags rendered as flags in --help."""

from __future__ import annotations

import math
import os
import re
import typing
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.crosscheck import check_notional_in_range, check_strategy_on_venue, pair_problems
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import SHIPPED_DIRS, load_strategy, load_venue, read_yaml
from gridctl.data.market import load_market, market_from_arrays
from gridctl.data.paths import require_existing_dir, require_writable_dir
from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, ensure_sample, sample_present, write_sample
from gridctl.data.store import candle_dir, funding_dir, write_candles, write_funding
from gridctl.data.validate import MAX_ABS_FUNDING_RATE, check_funding

SYM = "BTC/USDT:USDT"
EX = "binanceusdm"
HOUR = 3_600_000
JAN1 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
STRATEGY_TEXT = (SHIPPED_DIRS["strategy"] / "default.yaml").read_text()


# ----------------------------------------------------------------------------------------------------
# Config files that are not UTF-8
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "offset", "line", "column"),
    [
        (b"\xff\xfe" + "grid:".encode("utf-16-le"), 0, 1, 1),  # UTF-16 with BOM
        (b"grid:\n  # caf\xe9\n", 13, 2, 8),  # one Latin-1 byte in a comment
        (b"a: 1\nb: 2\nc: \x80\x81\n", 13, 3, 4),  # stray continuation bytes
        ("strategy: é\n".encode() + b"x: \xc3\n", 16, 2, 4),  # valid UTF-8, then a truncated sequence
    ],
)
def test_non_utf8_config_names_file_offset_line_and_column(
    tmp_path: Path, payload: bytes, offset: int, line: int, column: int
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(payload)
    with pytest.raises(GridctlError) as err:
        read_yaml(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not UTF-8")
    assert f"offset {offset} (line {line}, column {column})" in message and "\n" not in message


def test_an_unreadable_config_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(GridctlError, match=r"is a folder, not a regular file"):
        read_yaml(tmp_path)


# ----------------------------------------------------------------------------------------------------
# YAML 1.2 numbers
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "value"),
    [("1e4", 1e4), ("1E4", 1e4), ("2.5e3", 2500.0), ("+1e4", 1e4), ("1e+4", 1e4), (".5e4", 5000.0),
     ("12500", 12500), ("1.25e+4", 12500.0)],
)  # fmt: skip
def test_yaml_12_floats_load_in_files_and_overrides(tmp_path: Path, written: str, value: float) -> None:
    text = STRATEGY_TEXT.replace("max_inventory_quote: 10000.0", f"max_inventory_quote: {written}")
    assert text != STRATEGY_TEXT
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert load_strategy(path).rebalance.max_inventory_quote == value
    assert (
        load_strategy("default", [f"rebalance.max_inventory_quote={written}"]).rebalance.max_inventory_quote
        == value
    )


@pytest.mark.parametrize("text", ["e5", "1e", "1e5x", "1.2.3", "0x1e"])
def test_strings_that_only_look_numeric_stay_strings(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"a: {text}\n")
    assert read_yaml(path) == {"a": yaml.safe_load(f"a: {text}")["a"]}


# ----------------------------------------------------------------------------------------------------
# Paths that cannot be used
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda t: t / "file", ["is a regular file, not a folder"]),
        (lambda t: t / "file" / "sub", ["is a file, not a folder"]),
        (lambda t: t / "file" / "a" / "b", ["is a file, not a folder"]),
        (lambda t: Path("/proc") / f"gridctl-{os.getpid()}", ["/proc does not accept"]),
        (lambda t: Path("/sys") / f"gridctl-{os.getpid()}" / "x", ["/sys does not accept"]),
    ],
)
def test_unwritable_folders_are_refused_and_nothing_is_created(tmp_path: Path, make, words) -> None:
    (tmp_path / "file").write_text("x")
    target = make(tmp_path)
    with pytest.raises(GridctlError) as err:
        require_writable_dir(target, "--out")
    assert str(err.value).startswith("--out: ") and all(w in str(err.value) for w in words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "x"
    assert target == tmp_path / "file" or not os.path.lexists(target)


def test_a_writable_folder_is_accepted_and_left_as_it_was(tmp_path: Path) -> None:
    assert require_writable_dir(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the probe
    assert require_existing_dir(tmp_path, "--data") == tmp_path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda t: t / "nope", ["does not exist"]),
        (lambda t: t / "file", ["is a regular file, not a folder"]),
        (lambda t: t / "file" / "x", ["does not exist", "is a file"]),
        (lambda t: t / "fifo", ["is a FIFO (named pipe), not a folder"]),
        (lambda t: Path("/dev/null"), ["is a character device, not a folder"]),
        (lambda t: t / "loop", ["is a symlink loop, not a folder"]),
        (lambda t: t / "dangling", ["is a symlink to a missing target"]),
    ],
)
def test_folders_to_read_must_exist(tmp_path: Path, make, words) -> None:
    """A path that exists but is no folder is named as what it is, never "does not exist"."""
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(GridctlError) as err:
        require_existing_dir(make(tmp_path), "--data")
    assert all(w in str(err.value) for w in words)


# ----------------------------------------------------------------------------------------------------
# The stored range versus the requested one
# ----------------------------------------------------------------------------------------------------


def _hour_store(tmp_path: Path, hours: int = 48) -> Path:
    idx = np.arange(hours)
    close = 100.0 + idx
    bars = pl.DataFrame(
        {"ts": JAN1 + idx * HOUR, "open": close, "high": close + 1, "low": close - 1, "close": close,
         "volume": np.ones(hours)}
    )  # fmt: skip
    write_candles(tmp_path, EX, SYM, "1h", bars)
    fts = list(range(JAN1 - 8 * HOUR, JAN1 + (hours + 8) * HOUR, 8 * HOUR))
    write_funding(
        tmp_path,
        EX,
        SYM,
        pl.DataFrame({"ts": fts, "rate": [1e-4] * len(fts), "mark_price": [1e2] * len(fts)}),
    )
    return tmp_path


@pytest.mark.parametrize(
    ("start", "end", "warned"),
    [
        (JAN1 - 24 * HOUR, None, ["requested start 2023-12-31 00:00:00 UTC", "in range (2024-01-01 00:00"]),
        (None, JAN1 + 72 * HOUR, ["requested end 2024-01-04 00:00:00 UTC", "in range (2024-01-02 23:00"]),
        (JAN1 - HOUR, JAN1 + 49 * HOUR, ["requested start", "requested end"]),
        (JAN1, JAN1 + 48 * HOUR, []),  # exactly the stored range: nothing to say
        (JAN1 + 5 * HOUR, JAN1 + 10 * HOUR, []),
        (JAN1 - 30 * 60_000, None, []),  # start inside the hour before the first bar: that bar opens first
    ],
)  # fmt: skip
def test_a_range_beyond_the_stored_bars_is_said_in_the_warnings(tmp_path: Path, start, end, warned) -> None:
    market = load_market(_hour_store(tmp_path), EX, SYM, "1h", start, end)
    clip = [w for w in market.report.warnings if "requested" in w]
    assert len(clip) == sum(1 for w in ("requested start", "requested end") if any(w in x for x in warned))
    for text in warned:
        assert any(text in w for w in clip), (text, clip)


def test_a_zero_row_partition_is_named_as_damaged(tmp_path: Path) -> None:
    _hour_store(tmp_path)
    path = candle_dir(tmp_path, EX, SYM, "1h") / "2024-01.parquet"
    pl.read_parquet(path).head(0).write_parquet(path)
    with pytest.raises(GridctlError) as err:
        load_market(tmp_path, EX, SYM, "1h")
    assert str(err.value).startswith(f"{path}: the file holds 0 rows")
    assert "no 1h candles" not in str(err.value)  # not the contradictory "none stored" message


# ----------------------------------------------------------------------------------------------------
# Funding rates beyond any exchange cap
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [5.0, -5.0, 0.0501, -0.06, 1.0, 0.75])
def test_funding_rates_beyond_the_cap_are_refused_naming_the_row(rate: float) -> None:
    ts = np.arange(4, dtype=np.int64) * 8 * HOUR + JAN1
    rates = np.array([1e-4, -2e-4, rate, 1e-4])
    with pytest.raises(GridctlError, match=r"^funding: row 2 \(.*column 'rate' is"):
        check_funding(ts, rates, np.full(4, np.nan), "funding")


@pytest.mark.parametrize("rate", [0.0, 0.003, -0.0075, 0.03, -0.03, MAX_ABS_FUNDING_RATE])
def test_rates_within_every_published_cap_are_accepted(rate: float) -> None:
    ts = np.arange(2, dtype=np.int64) * 8 * HOUR + JAN1
    check_funding(ts, np.array([rate, -rate]), np.full(2, np.nan), "funding")


def test_real_btc_funding_is_far_inside_the_cap(real_data: Path) -> None:
    rates = pl.read_parquet(real_data / "binanceusdm_BTCUSDT_funding_2019-09_2025-12.parquet")["rate"]
    assert float(rates.abs().max()) < MAX_ABS_FUNDING_RATE


@pytest.mark.parametrize("via", ["store", "arrays"])
def test_every_entry_point_refuses_a_500pct_rate(tmp_path: Path, via: str) -> None:
    fts = [JAN1, JAN1 + 8 * HOUR]
    if via == "store":
        with pytest.raises(GridctlError, match="row 1"):
            write_funding(
                tmp_path, EX, SYM, pl.DataFrame({"ts": fts, "rate": [1e-4, 5.0], "mark_price": [1.0, 1.0]})
            )
        assert not funding_dir(tmp_path, EX, SYM).exists()
    else:
        one = np.array([100.0])
        with pytest.raises(GridctlError, match="row 1"):
            market_from_arrays(
                SYM, "1h", np.array([JAN1]), one, one, one, one, one, np.array(fts), np.array([1e-4, 5.0])
            )


# ----------------------------------------------------------------------------------------------------
# A strategy checked against its venue
# ----------------------------------------------------------------------------------------------------

BTC = "symbol_rules.BTC/USDT:USDT."  # override prefix of BTC's own exchange rules


@pytest.mark.parametrize(
    ("strategy_sets", "venue_sets", "words"),
    [
        (["grid.base_qty=1e12"], [], ["grid.base_qty", "above", "BTC/USDT:USDT's maximum", "(max_qty)"]),
        (["grid.base_qty=2000"], [], ["grid.base_qty", "1000"]),
        (["grid.base_qty=0.0004"], [], ["grid.base_qty", "below", "BTC/USDT:USDT's minimum", "(min_qty)"]),
        (["grid.base_qty=600", "grid.qty_scale=2"], [], ["grid.qty_scale (rung 2 of 5)", "1200", "1000"]),
        (["grid.base_qty=500", "grid.qty_scale=2"], [], ["grid.qty_scale (rung 3 of 5)", "2000"]),
        (["grid.base_qty=5e11", "grid.qty_scale=3"], [f"{BTC}max_qty=1e12"], ["rung 2 of 5", "1.5e+12"]),
        (["grid.base_qty=0.01"], [f"{BTC}max_qty=0.005", f"{BTC}min_qty=0.001"], ["grid.base_qty", "0.005"]),
        (["grid.base_qty=0.01"], [f"{BTC}min_qty=0.05"], ["grid.base_qty", "0.05"]),
        # quote sizing: rung 1's 50 USDT is below BTC's minimum notional of 100 (XRP's is 5)
        (["grid.base_notional=50"], [], ["grid.base_notional 50 USDT", "BTC/USDT:USDT's minimum", "100"]),
    ],
)
def test_quantities_outside_the_venue_filters_are_refused(strategy_sets, venue_sets, words) -> None:
    unit = (
        [] if any(s.startswith("grid.base_notional") for s in strategy_sets) else ["grid.base_notional=null"]
    )
    strategy = load_strategy("default", [*unit, *strategy_sets])
    venue = load_venue("binance_futures", venue_sets)
    with pytest.raises(GridctlError) as err:
        check_strategy_on_venue(strategy, venue)
    message = str(err.value)
    assert "\n" not in message and strategy.origin in message and venue.origin in message
    assert all(w in message for w in words), message


def _brackets_at_most(max_leverage: float) -> list[str]:
    """--set values replacing the BTC brackets by one tier allowing ``max_leverage``."""
    tier = (
        "{notional_floor: 0, notional_cap: 1.0e9, maint_margin_ratio: 0.01, cum: 0, "
        f"max_leverage: {max_leverage}}}"
    )
    return [f'margin.brackets={{"BTC/USDT:USDT": [{tier}]}}']


@pytest.mark.parametrize(
    ("top", "venue_sets", "strategy_sets", "words"),
    [
        (5, ["trading.leverage=10"], [], ["trading.leverage 10", "(5, margin.brackets)"]),
        (20, ["trading.leverage=21", "risk.max_leverage=25"], [], ["trading.leverage 21"]),
        (10, ["trading.leverage=5"], ["position.max_leverage_used=12"], ["position.max_leverage_used 12"]),
    ],
)
def test_leverage_beyond_every_bracket_is_refused(top, venue_sets, strategy_sets, words) -> None:
    venue = load_venue("binance_futures", [*_brackets_at_most(top), *venue_sets])
    strategy = load_strategy("default", strategy_sets)
    problems = pair_problems(strategy, venue)
    assert len(problems) == 1 and all(w in problems[0] for w in words), problems


def test_shipped_pairs_and_leverage_at_the_bracket_limit_pass(legacy_configs: Path) -> None:
    legacy = load_strategy(legacy_configs / "hedge_grid_v1.yaml")
    for venue in ("binance_futures", "binance_futures_testnet"):
        assert pair_problems(load_strategy("default"), load_venue(venue)) == []
        assert pair_problems(load_strategy("hedge_grid_v1"), load_venue(venue)) == []
        # The audited bot's own research file wants 6 + 6 stops where BTCUSDT allows 10 algo orders.
        (problem,) = pair_problems(legacy, load_venue(venue))
        assert "= 12: a lot on every rung needs 12 stop orders but BTC/USDT:USDT allows 10" in problem
    at_limit = load_venue("binance_futures", [*_brackets_at_most(10), "trading.leverage=10"])
    assert pair_problems(load_strategy("default"), at_limit) == []


# A base-unit ladder: 6 rungs of 0.002 * 1.05**(i-1) BTC, i.e. 0.002 .. 0.0025526 (0.002 * 1.05**5).
BASE_LADDER = [
    "grid.base_notional=null",
    "grid.base_qty=0.002",
    "grid.grid_levels_long=6",
    "grid.grid_levels_short=6",
]


@pytest.mark.parametrize(
    ("venue_sets", "low", "high", "words"),
    [
        # 0.0025526 * 60,000 = 153 USDT < 200: no rung reaches the minimum order anywhere.
        (["risk.min_order_size_usdt=200"], 50_000.0, 60_000.0, ["below", "200 USDT", "0.00255"]),
        ([f"{BTC}min_notional=500", "risk.min_order_size_usdt=5"], 50_000.0, 60_000.0, ["below", "500"]),
        # 0.002 * 50,000 = 100 USDT > 90: every rung is above the maximum order even at the low.
        (["risk.max_order_size_usdt=90"], 50_000.0, 60_000.0, ["above", "90 USDT", "0.002 x 50,000"]),
    ],
)
def test_a_ladder_outside_the_order_notional_limits_is_refused(venue_sets, low, high, words) -> None:
    venue = load_venue("binance_futures", venue_sets)
    with pytest.raises(GridctlError) as err:
        check_notional_in_range(load_strategy("default", BASE_LADDER), venue, low, high, "sample BTC 1m")
    message = str(err.value)
    assert "grid.base_qty" in message and "sample BTC 1m" in message and "\n" not in message
    assert all(w in message for w in words), message


@pytest.mark.parametrize(
    ("venue_sets", "low", "high"),
    [
        (["risk.min_order_size_usdt=150"], 50_000.0, 60_000.0),  # the top rung reaches 153 at 60,000
        (["risk.max_order_size_usdt=100"], 50_000.0, 60_000.0),  # rung 1 is exactly 100 at 50,000
        ([], 60_000.0, 60_000.0),
    ],
)
def test_a_ladder_with_one_placeable_rung_passes(venue_sets, low, high) -> None:
    check_notional_in_range(
        load_strategy("default", BASE_LADDER), load_venue("binance_futures", venue_sets), low, high, "m"
    )


def test_a_quote_sized_ladder_is_checked_by_its_notional_at_any_price() -> None:
    # default: rungs of 150 * 1.05**(i-1) USDT = 150 .. 182.33 (150 * 1.05**4) whatever the price.
    venue = load_venue("binance_futures", ["risk.min_order_size_usdt=183"])
    with pytest.raises(
        GridctlError, match=r"grid.base_notional 150: .*at most 182.326 USDT at prices 50,000-60,000 of m"
    ):
        check_notional_in_range(load_strategy("default"), venue, 50_000.0, 60_000.0, "m")
    check_notional_in_range(
        load_strategy("default"),
        load_venue("binance_futures", ["risk.min_order_size_usdt=182"]),
        50_000.0,
        60_000.0,
        "m",
    )


# Cheapest order: default rung 1 is 150 USDT; BASE_LADDER rung 1 is 0.002 BTC = 100 USDT at the 50,000
# low. At the shipped trading.leverage of 10 their margins are 15 and 10 USDT.
@pytest.mark.parametrize(
    ("strategy_sets", "venue_sets", "balance", "margin"),
    [
        ([], [], "0.001", "15"),
        ([], [], "5e-324", "15"),
        ([], [], "14.99", "15"),
        ([], ["trading.leverage=2"], "74", "75"),
        (BASE_LADDER, [], "9.99", "10"),
        # min_order_size_usdt 120 lifts the cheapest BASE_LADDER order to 120 USDT (rung 1 at 60,000).
        (BASE_LADDER, ["risk.min_order_size_usdt=120"], "11.9", "12"),
    ],
)
def test_a_balance_below_one_orders_margin_is_refused(strategy_sets, venue_sets, balance, margin) -> None:
    """A wallet that cannot margin the cheapest order ran to the end with zero fills (a silent zero-trade
    run, the circuit breaker tripping on the refusals)."""
    strategy = load_strategy("default", [*strategy_sets, f"backtest.initial_balance={balance}"])
    venue = load_venue("binance_futures", venue_sets)
    with pytest.raises(GridctlError) as err:
        check_notional_in_range(strategy, venue, 50_000.0, 60_000.0, "m")
    message = str(err.value)
    assert "\n" not in message and "backtest.initial_balance" in message and "trade nothing" in message
    assert f"= {margin} USDT of margin" in message, message
    enough = load_strategy("default", [*strategy_sets, f"backtest.initial_balance={margin}"])
    check_notional_in_range(enough, venue, 50_000.0, 60_000.0, "m")


# default grid: 40 bps steps; at a low of 50,000 one step is 200 USDT.
@pytest.mark.parametrize(
    ("venue_sets", "strategy_sets", "words"),
    [
        ([f"{BTC}tick_size=1e6"], [], ["tick_size 1e+06", "wider than one grid step", "200"]),
        ([f"{BTC}tick_size=200.5"], [], ["tick_size 200.5"]),
        ([f"{BTC}tick_size=30"], ["grid.grid_step_bps=5"], ["5 bps", "= 25"]),
    ],
)
def test_a_tick_wider_than_a_grid_step_is_refused(venue_sets, strategy_sets, words) -> None:
    """A tick above one grid step rounds every rung onto the same price: a silent zero-trade run."""
    strategy = load_strategy("default", strategy_sets)
    venue = load_venue("binance_futures", venue_sets)
    with pytest.raises(GridctlError) as err:
        check_notional_in_range(strategy, venue, 50_000.0, 60_000.0, "sample BTC 1m")
    message = str(err.value)
    assert "\n" not in message and "sample BTC 1m" in message and "trade nothing" in message
    assert all(w in message for w in words), message


def test_a_tick_of_exactly_one_grid_step_passes() -> None:
    check_notional_in_range(
        load_strategy("default"),
        load_venue("binance_futures", [f"{BTC}tick_size=200"]),
        50_000.0,
        6e4,
        "m",
    )


@pytest.mark.parametrize(("step", "refused"), [(1.0, True), (0.0021, True), (0.002, False), (0.001, False)])
def test_a_quantity_step_above_the_base_qty_is_refused(step: float, refused: bool) -> None:
    """min_qty below the step lets base_qty 0.002 pass the minimum, yet it rounds to zero at a larger step."""
    venue = load_venue("binance_futures", [f"{BTC}step_size={step}", f"{BTC}min_qty=0.0001"])
    problems = pair_problems(load_strategy("default", ["grid.base_qty=0.002"]), venue)
    assert bool(problems) is refused, problems
    if refused:
        assert "step_size" in problems[0] and "round to zero" in problems[0]


def test_a_symbol_the_venue_has_no_brackets_for_is_named(tmp_path: Path) -> None:
    # The shipped snapshot has brackets for all its symbols: a copy without DOGE's keeps DOGE's rules only.
    snap = read_yaml(SHIPPED_DIRS["venue"] / "symbols" / "binance_usdm.yaml")
    del snap["brackets"]["DOGE/USDT:USDT"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(snap))
    tree = read_yaml(SHIPPED_DIRS["venue"] / "binance_futures.yaml")
    tree["symbol_rules_file"] = "rules.yaml"
    (tmp_path / "venue.yaml").write_text(yaml.safe_dump(tree))
    venue = load_venue(tmp_path / "venue.yaml")
    assert venue.rules_for("DOGE/USDT:USDT").tick_size == 0.00001
    with pytest.raises(GridctlError, match=r"margin.brackets has no entry for 'DOGE/USDT:USDT'"):
        check_strategy_on_venue(load_strategy("default"), venue, "DOGE/USDT:USDT")
    check_strategy_on_venue(load_strategy("default"), load_venue("binance_futures"), "DOGE/USDT:USDT")


# ----------------------------------------------------------------------------------------------------
# The sample store: generated only when absent, never regenerated over a partial one
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("remove", ["trade", "mark", "funding", "trade+mark"])
def test_a_partial_sample_store_is_an_error_and_left_untouched(tmp_path: Path, remove: str) -> None:
    write_sample(tmp_path, days=3)
    dirs = {
        "trade": candle_dir(tmp_path, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, "1m"),
        "mark": candle_dir(tmp_path, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, "1m", kind="mark"),
        "funding": funding_dir(tmp_path, SAMPLE_EXCHANGE, SAMPLE_SYMBOL),
    }
    for name in remove.split("+"):
        for path in dirs[name].iterdir():
            path.unlink()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    with pytest.raises(GridctlError) as err:
        ensure_sample(tmp_path)
    assert "incomplete" in str(err.value) and "not regenerated" in str(err.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before


def test_ensure_sample_generates_only_into_an_empty_store(tmp_path: Path) -> None:
    ensure_sample(tmp_path / "fresh")
    assert sample_present(tmp_path / "fresh")
    with pytest.raises(GridctlError, match="--data: cannot write"):
        ensure_sample(Path("/proc") / f"gridctl-{os.getpid()}", "--data")


def test_a_failed_swap_keeps_the_previous_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_sample(tmp_path, days=2)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    real_rename = Path.rename
    calls = {"n": 0}

    def rename_failing_second(self: Path, target: Path) -> Path:
        calls["n"] += 1  # 1: old sample aside, 2: new one in (fails), 3: old one back
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_failing_second)
    with pytest.raises(OSError, match="disk full"):
        write_sample(tmp_path, days=3, force=True)
    monkeypatch.undo()
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.parquet")} == before


# ----------------------------------------------------------------------------------------------------
# --help renders on/off flags as flags, in every command
# ----------------------------------------------------------------------------------------------------


def _command_paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # get_command (not .commands) so that lazily mounted groups (cli.LAZY_GROUPS) are loaded and walked.
    paths = [prefix]
    for name in list(getattr(command, "commands", {})):
        sub = command.get_command(typer.Context(command), name)  # type: ignore[attr-defined]
        paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(typer.main.get_command(app))


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "gridctl" for p in COMMANDS])
def test_help_shows_flags_without_a_value_type(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "--help" in result.output
    command = typer.main.get_command(app)
    for name in path:
        command = command.get_command(typer.Context(command), name)  # type: ignore[attr-defined]
    for param in command.params:
        if getattr(param, "is_flag", False):
            line = next(ln for ln in result.output.splitlines() if param.opts[0] in ln)
            assert "<" not in line.split(param.opts[0], 1)[1].split("  ")[0], line


def test_the_commands_with_flags_are_all_checked() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"backtest", "bench", "config show", "config validate", "data download", "data info"} <= names
    assert not math.isnan(len(names))


# ----------------------------------------------------------------------------------------------------
# Numeric flags have ranges (shown in --help), and --help reads as words, not Python type tags
# ----------------------------------------------------------------------------------------------------


def _numeric_options(path: tuple[str, ...]) -> list[typer.core.TyperOption]:
    command = typer.main.get_command(app)
    for name in path:
        command = command.get_command(typer.Context(command), name)  # type: ignore[attr-defined]
    found = []
    for param in command.params:
        desc = getattr(param, "type_descriptor", None)
        kinds = [a for a in typing.get_args(desc.annotation) if a is not type(None)] if desc else []
        if desc is not None and (desc.annotation in (int, float) or kinds in ([int], [float])):
            found.append(param)
    return found


# Every command: data, config, backtest, bench, optimize, study and live.
RANGED_COMMANDS = [p for p in COMMANDS if p]


@pytest.mark.parametrize("path", RANGED_COMMANDS, ids=[" ".join(p) for p in RANGED_COMMANDS])
def test_every_numeric_flag_has_a_range_shown_in_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    for param in _numeric_options(path):
        assert param.min is not None and param.max is not None, param.opts
        lines = result.output.splitlines()
        at = next(i for i, ln in enumerate(lines) if param.opts[0] in ln)
        row = [lines[at]]  # the option's row and its wrapped continuation lines (no option of their own)
        row += [ln for ln in lines[at + 1 : at + 4] if not ln.lstrip("│ ").startswith("-")][:2]
        assert f"[{param.min}<=x<={param.max}]" in " ".join(ln.strip("│ ") for ln in row), row


def test_the_ranged_commands_hold_the_numeric_flags_of_the_issue() -> None:
    flags = {(" ".join(p), o.opts[0]) for p in RANGED_COMMANDS for o in _numeric_options(p)}
    assert {("data sample", "--seed"), ("data sample", "--days"), ("data download", "--timeout")} <= flags
    assert {("bench", "--sets"), ("bench", "--bars")} <= flags
    assert {("optimize", "--trials"), ("optimize", "--jobs"), ("optimize", "--heartbeat")} <= flags
    assert {("study show", "--top"), ("study export", "--trial"), ("study report", "--top")} <= flags
    assert {
        ("live", o) for o in ("--ops-port", "--min-balance", "--max-bars", "--poll-s", "--fills-poll-s")
    } <= flags


RANGED_OPTIONS = [(p, o) for p in RANGED_COMMANDS for o in _numeric_options(p)]


def _outside(param: typer.core.TyperOption) -> list[str]:
    """Values just outside the option's range, far outside it, and (floats) not a number at all."""
    lo, hi = param.min, param.max
    if isinstance(lo, float) or isinstance(hi, float):
        return [repr(lo - 1.0), repr(hi * 2.0), "inf", "-inf", "nan", "1e308"]
    return [str(lo - 1), str(hi + 1), str(2**64)]


@pytest.mark.parametrize(
    ("path", "param"), RANGED_OPTIONS, ids=[f"{' '.join(p)} {o.opts[0]}" for p, o in RANGED_OPTIONS]
)
def test_every_numeric_flag_refuses_out_of_range_values_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: tuple[str, ...], param: typer.core.TyperOption
) -> None:
    """The class: any command, any numeric flag, a value outside its range -> exit 2, one line naming the
    flag, the range --help shows and the value given; nothing written, nothing on stdout."""
    monkeypatch.chdir(tmp_path)
    flag = param.opts[0]
    for value in _outside(param):
        for args in ([*path, flag, value], [*path, f"{flag}={value}"]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2 and result.stdout == "", (args, result.output)
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {flag} takes "), (args, result.stderr)
            shown = re.fullmatch(
                r"error: \S+ takes (?:an integer|a number) in (\S+)\.\.(\S+), got (\S+)", lines[0]
            )
            assert shown is not None, lines[0]
            assert (float(shown[1]), float(shown[2]), shown[3]) == (param.min, param.max, value), lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "line"),
    [
        ("data sample --seed -1", "--seed takes an integer in 0..4294967295, got -1"),
        ("optimize --profile p --trials 0", "--trials takes an integer in 1..1000000, got 0"),
        ("optimize --profile p --heartbeat 0", "--heartbeat takes an integer in 1..3600, got 0"),
        ("study show s --top 0", "--top takes an integer in 1..1000, got 0"),
        ("study export s --out x --trial -1", "--trial takes an integer in 0..1000000000, got -1"),
        ("live --live --ops-port 70000", "--ops-port takes an integer in 0..65535, got 70000"),
        ("live --paper --max-bars -1", "--max-bars takes an integer in 1..1000000000, got -1"),
        ("live --paper --min-balance 1e309", "--min-balance takes a number in 0..1e+09, got 1e309"),
        ("live --paper --poll-s 0", "--poll-s takes a number in 0.01..3600, got 0"),
        ("live --paper --fills-poll-s inf", "--fills-poll-s takes a number in 0.01..3600, got inf"),
    ],
)  # fmt: skip
def test_the_issues_numeric_flags_are_answered_in_words(tmp_path: Path, command: str, line: str) -> None:
    args = command.split()
    result = CliRunner().invoke(app, [*args, *(["--data-dir", str(tmp_path)] if args[0] == "data" else [])])
    assert (result.exit_code, result.stderr, result.stdout) == (2, f"error: {line}\n", "")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["data", "sample", "--seed", "-1"], "--seed"),
        (["data", "sample", "--seed", str(2**32)], "--seed"),
        (["data", "sample", "--days", "0"], "--days"),
        (["data", "sample", "--days", "3651"], "--days"),
        (
            [
                "data",
                "download",
                "--symbol",
                "BTC/USDT:USDT",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-02",
                "--timeout",
                "inf",
            ],
            "--timeout",
        ),
        (
            [
                "data",
                "download",
                "--symbol",
                "BTC/USDT:USDT",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-02",
                "--timeout",
                "1e308",
            ],
            "--timeout",
        ),
        (
            [
                "data",
                "download",
                "--symbol",
                "BTC/USDT:USDT",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-02",
                "--timeout",
                "nan",
            ],
            "--timeout",
        ),
        (["bench", "--sets", "1000000000"], "--sets"),
        (["bench", "--sets", "0"], "--sets"),
        (["bench", "--bars", "1999"], "--bars"),
        (["bench", "--bars", "999999999"], "--bars"),
    ],
)
def test_out_of_range_numbers_exit_2_before_any_work(tmp_path: Path, args: list[str], option: str) -> None:
    result = CliRunner().invoke(app, [*args, *(["--data-dir", str(tmp_path)] if args[0] == "data" else [])])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {option} takes "), result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "gridctl" for p in COMMANDS])
def test_help_names_values_in_words_not_type_tags(path: tuple[str, ...]) -> None:
    """``<str>``, ``<list[str]>``, ``<int range>``, ``<path>`` and ``{file}`` read as code."""
    output = CliRunner().invoke(app, [*path, "--help"], terminal_width=200).output
    assert re.findall(r"<[a-z][^>]*>|\{[a-z_]+\}", output) == [], output


# ----------------------------------------------------------------------------------------------------
# Output paths: refused before any work, never a traceback after the run
# ----------------------------------------------------------------------------------------------------


def _output(tmp_path: Path, sort: str) -> tuple[Path, str]:
    """An output path of the given sort and the words its refusal must use."""
    if sort == "symlink-to-folder":
        (tmp_path / "real").mkdir()
        (tmp_path / "out").symlink_to(tmp_path / "real")
        return tmp_path / "out", "is a symlink (to "
    if sort == "dangling-symlink":
        (tmp_path / "out").symlink_to(tmp_path / "gone")
        return tmp_path / "out", "is a symlink (to "
    if sort == "name-236-bytes":
        return tmp_path / ("r" * 236), "is 236 bytes; at most 235"
    if sort == "name-250-bytes-utf8":
        return tmp_path / ("é" * 125), "is 250 bytes; at most 235"
    if sort == "under-proc":
        return Path("/proc") / f"gridctl-{os.getpid()}" / "out", "/proc does not accept new files"
    # Over 255 bytes every look at the path failed with ENAMETOOLONG: a traceback, not a refusal.
    if sort == "name-256-bytes":
        return tmp_path / ("r" * 256), "is 256 bytes; at most 235"
    if sort == "folder-name-300-bytes":
        return tmp_path / ("p" * 300) / "out", "the folder name ppp"
    if sort == "path-5000-bytes":
        return tmp_path.joinpath(*["d" * 200] * 25), "bytes; at most 4,095"
    assert sort == "under-a-file"
    (tmp_path / "f").write_text("x")
    return tmp_path / "f" / "out", "is a file, not a folder"


OUTPUT_SORTS = [
    "symlink-to-folder",
    "dangling-symlink",
    "name-236-bytes",
    "name-250-bytes-utf8",
    "under-proc",
    "under-a-file",
    "name-256-bytes",
    "folder-name-300-bytes",
    "path-5000-bytes",
]


@pytest.mark.parametrize("sort", OUTPUT_SORTS)
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_unusable_output_paths_are_refused(tmp_path: Path, sort: str, kind: str) -> None:
    from gridctl.data.paths import require_output_dir, require_output_file

    path, words = _output(tmp_path, sort)
    check = require_output_dir if kind == "folder" else require_output_file
    with pytest.raises(GridctlError) as err:
        check(path, "--out")
    message = str(err.value)
    assert message.startswith("--out: ") and words in message and "\n" not in message, message


def test_an_output_name_of_235_bytes_is_accepted(tmp_path: Path) -> None:
    from gridctl.data.paths import require_output_dir, require_output_file

    assert require_output_dir(tmp_path / ("r" * 235), "--out").name == "r" * 235
    assert require_output_file(tmp_path / ("r" * 235), "--out").name == "r" * 235
    (tmp_path / "d").mkdir()
    with pytest.raises(GridctlError, match="is a folder, not a file gridctl can write"):
        require_output_file(tmp_path / "d", "--out")


@pytest.mark.parametrize("sort", OUTPUT_SORTS)
@pytest.mark.parametrize(
    "command",
    [["backtest", "--config", "nonexistent-so-no-run"], ["study", "export", "s"], ["study", "report", "s"]],
    ids=["backtest", "study-export", "study-report"],
)
def test_commands_refuse_an_unusable_out_before_any_work(
    tmp_path: Path, sort: str, command: list[str]
) -> None:
    """The refusal names --out, so the path was checked before the config or the study was read."""
    path, words = _output(tmp_path, sort)
    studies = ["--studies-dir", str(tmp_path / "studies")] if command[0] == "study" else []
    result = CliRunner().invoke(app, [*command, "--out", str(path), *studies])
    assert result.exit_code == 2 and result.stderr.startswith("error: --out: "), result.output
    assert words in result.stderr
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize("sort", ["file", "fifo", "dev-null", "under-a-file"])
@pytest.mark.parametrize(
    "command", [["study", "list"], ["study", "show", "s"], ["optimize", "--profile", "wide"]]
)
def test_a_studies_dir_that_is_no_folder_is_refused_at_once(
    tmp_path: Path, sort: str, command: list[str]
) -> None:
    target = {
        "file": tmp_path / "f",
        "fifo": tmp_path / "p",
        "dev-null": Path("/dev/null"),
        "under-a-file": tmp_path / "f" / "studies",  # could never be created: a traceback in optimize
    }[sort]
    if sort in ("file", "under-a-file"):
        (tmp_path / "f").write_text("x")
    elif sort == "fifo":
        os.mkfifo(target)
    # optimize: one trial at most, in tmp_path, should the check ever fail to stop it before the work.
    extra = ["--trials", "1", "--data-dir", str(tmp_path / "data")] if command[0] == "optimize" else []
    result = CliRunner().invoke(app, [*command, "--studies-dir", str(target), *extra])
    assert result.exit_code == 2, result.output
    assert "--studies-dir: " in result.stderr, result.output
    assert ("is a regular file" if sort == "under-a-file" else "not a folder") in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["data", "info", "--data-dir", "{long}"],
        ["data", "sample", "--data-dir", "{long}"],
        ["backtest", "--data-dir", "{long}/store"],
        ["study", "list", "--studies-dir", "{long}"],
        ["optimize", "--profile", "wide", "--studies-dir", "{long}/s"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_folder_name_over_255_bytes_is_refused_not_a_traceback(tmp_path: Path, command: list[str]) -> None:
    """Every look at such a path raised ENAMETOOLONG (data info, study list: tracebacks)."""
    long = str(tmp_path / ("x" * 300))
    result = CliRunner().invoke(app, [a.replace("{long}", long) for a in command])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "is 300 bytes; names stop at 255 bytes" in result.stderr or "is 300 bytes" in result.stderr


@pytest.mark.parametrize("where", ["/proc/gridctl-studies", "/sys/gridctl-studies"])
def test_optimize_refuses_a_studies_dir_it_cannot_create_before_any_work(tmp_path: Path, where: str) -> None:
    result = CliRunner().invoke(
        app, ["optimize", "--profile", "wide", "--studies-dir", where, "--data-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: --studies-dir: cannot write {where}: "), result.stderr
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "d").exists()
