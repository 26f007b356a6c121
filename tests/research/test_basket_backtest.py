"""`gridctl backtest --symbols`: a basket in one wallet, end to end on synthetic stored data.

Two symbols are stored under the exchange name ``synth``: BTC/USDT:USDT (the sample generator's
path near 60,000) and ETH/USDT:USDT (another seed's path divided by 20, on ETH's 0.01 tick, starting
four hours later). Expected values are derived from the written ledgers, never taken from the stats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.loader import PACKAGE_DIR
from gridctl.data.resample import resample_store
from gridctl.data.sample import generate_sample
from gridctl.data.store import write_candles, write_funding
from gridctl.data.timeframes import timeframe_ms
from gridctl.research.results import BASKET_RESULT_FILES
from gridctl.research.stats import BRACKET_RULES

from effects import effect
from market_builders import flat, make_market, strategy, venue

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
ETH_LATE_BARS = 240  # ETH's first bar is 4 h after BTC's


def store_basket(root: Path, days: int = 4) -> None:
    for symbol, seed, scale, tick, skip in ((BTC, 7, 1.0, 0.1, 0), (ETH, 11, 20.0, 0.01, ETH_LATE_BARS)):
        candles, _mark, funding = generate_sample(days=days, seed=seed)
        prices = ("open", "high", "low", "close")
        candles = candles.with_columns(((pl.col(c) / scale / tick).round() * tick).round(2) for c in prices)
        write_candles(root, "synth", symbol, "1m", candles.slice(skip))
        write_funding(root, "synth", symbol, funding.with_columns(pl.col("mark_price") / scale))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("basket-data")
    store_basket(path)
    return path


def invoke(data_dir: Path, *args: str):
    return CliRunner().invoke(
        app, ["backtest", "--data-dir", str(data_dir), "--exchange", "synth", *args], catch_exceptions=False
    )


def run_json(data_dir: Path, *args: str) -> dict:
    result = invoke(data_dir, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def basket_out(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("res") / "basket"
    stats = run_json(data_dir, "--symbols", f"{BTC},{ETH}", "--out", str(out))
    return out, stats


def test_the_account_is_the_initial_balance_plus_every_symbols_ledgers(basket_out: tuple[Path, dict]) -> None:
    out, stats = basket_out
    assert sorted(p.name for p in out.iterdir()) == sorted(BASKET_RESULT_FILES)
    assert json.loads((out / "stats.json").read_text()) == stats
    fills = pl.read_parquet(out / "fills.parquet")
    funding = pl.read_parquet(out / "funding.parquet")
    equity = pl.read_parquet(out / "equity.parquet")
    account = stats["account"]
    initial = account["initial_balance"]
    assert initial == 10_000.0 and stats["basket"] == [BTC, ETH]
    contributions = {}
    for symbol in (BTC, ETH):
        f = fills.filter(pl.col("symbol") == symbol)
        cash = f["realized_pnl"].sum() - f["fee"].sum()
        cash += funding.filter(pl.col("symbol") == symbol)["amount"].sum()
        unrealized = equity.filter(pl.col("symbol") == symbol)["unrealized_pnl"][-1]
        contributions[symbol] = cash + unrealized
        s = stats["symbols"][symbol]
        assert s["n_fills"] == f.height > 0
        assert s["fees_paid"] == pytest.approx(f["fee"].sum(), abs=1e-9)
        assert s["pnl"] == pytest.approx(contributions[symbol], abs=1e-6)
        assert s["final_equity"] == pytest.approx(initial + contributions[symbol], abs=1e-6)
    # One wallet: the account ends at the initial balance plus what every symbol added.
    assert account["final_equity"] == pytest.approx(initial + sum(contributions.values()), abs=1e-6)
    acc_rows = pl.read_parquet(out / "account_equity.parquet")
    assert acc_rows["equity"][-1] == pytest.approx(account["final_equity"], abs=1e-9)
    assert account["total_return_pct"] == pytest.approx((account["final_equity"] / initial - 1) * 100)
    # The account's bar-close drawdown, by hand from its equity rows (the peak starts at the balance).
    worst, peak = 0.0, initial
    for value in acc_rows["equity"].to_list():
        peak = max(peak, value)
        worst = max(worst, (peak - value) / peak * 100)
    assert account["max_drawdown_bar_close_pct"] == pytest.approx(worst, abs=1e-9) and worst > 0
    # Counts add up over the symbols.
    assert account["n_fills"] == fills.height
    assert account["fees_paid"] == pytest.approx(fills["fee"].sum(), abs=1e-9)
    assert account["funding_payments"] == funding.height
    assert account["realized_pnl"] == pytest.approx(
        fills.filter(pl.col("kind") != "entry")["realized_pnl"].sum(), abs=1e-9
    )


def test_bars_align_by_time_and_the_late_symbol_says_it_had_no_bar(basket_out: tuple[Path, dict]) -> None:
    out, stats = basket_out
    account, eth, btc = stats["account"], stats["symbols"][ETH], stats["symbols"][BTC]
    assert (btc["bars"], eth["bars"]) == (4 * 1440, 4 * 1440 - ETH_LATE_BARS)
    assert account["bars"] == 4 * 1440  # the union of both symbols' bar times
    assert eth["data_start"] == "2024-01-01T04:00:00Z" and account["data_start"] == "2024-01-01T00:00:00Z"
    assert eth["events"].get("input_missing", 0) >= 1 and "input_missing" not in btc["events"]
    eth_fills = pl.read_parquet(out / "fills.parquet").filter(pl.col("symbol") == ETH)
    assert eth_fills["ts"].min() >= 1_704_067_200_000 + ETH_LATE_BARS * 60_000
    # ETH trades on its own tick (0.01) and BTC on its own (0.1): every price is a whole number of ticks.
    fills = pl.read_parquet(out / "fills.parquet")
    for symbol, tick in ((BTC, 0.1), (ETH, 0.01)):
        prices = fills.filter((pl.col("symbol") == symbol) & (pl.col("kind") == "entry"))["price"]
        assert ((prices / tick - (prices / tick).round()).abs() < 1e-6).all(), symbol


def test_the_account_has_a_path_bracket_and_the_report_has_every_section(
    basket_out: tuple[Path, dict],
) -> None:
    out, stats = basket_out
    bracket = stats["account"]["path_bracket"]
    assert bracket["rule"] == "nearer_first"
    assert set(bracket) >= {"high_first", "low_first", "farther_first", "worst", "best", "configured"}
    assert bracket["configured"]["total_return_pct"] == pytest.approx(stats["account"]["total_return_pct"])
    assert bracket["worst"]["total_return_pct"] <= bracket["best"]["total_return_pct"]
    page = (out / "report.html").read_text()
    for text in ('id="account"', f'id="symbol-{BTC}"', f'id="symbol-{ETH}"', "Round trips", "Per symbol"):
        assert text in page, text


def check_symbol_brackets(out: Path, stats: dict) -> None:
    """Each symbol's path bracket in stats.json agrees with its own numbers, with the account's bracket
    (the symbols' PnL adds up to the account's PnL in every rule's run) and with path_bracket.parquet."""
    initial = stats["account"]["initial_balance"]
    account = stats["account"]["path_bracket"]
    table = pl.read_parquet(out / "path_bracket.parquet")
    assert table["scope"].unique(maintain_order=True).to_list() == ["account", *stats["basket"]]
    for symbol in stats["basket"]:
        s, b = stats["symbols"][symbol], stats["symbols"][symbol]["path_bracket"]
        assert set(b) == {"meaning", "rule", "configured", "worst", "best", *BRACKET_RULES}
        assert set(b["worst"]) == set(b["best"]) == {"pnl", "total_return_pct", "rules"}
        assert b["configured"] == b[b["rule"]]
        # The configured rule's entry is the run the symbol's stats describe.
        assert b["configured"]["pnl"] == pytest.approx(s["pnl"], abs=1e-6)
        assert b["configured"]["n_fills"] == s["n_fills"]
        pnls = {rule: b[rule]["pnl"] for rule in BRACKET_RULES}
        assert b["worst"]["pnl"] == min(pnls.values()) and b["best"]["pnl"] == max(pnls.values())
        assert all(pnls[r] == b["worst"]["pnl"] for r in b["worst"]["rules"]) and b["worst"]["rules"]
        rows = table.filter(pl.col("scope") == symbol)
        assert rows["rule"].to_list() == list(BRACKET_RULES)
        assert rows["pnl"].to_list() == [pnls[r] for r in BRACKET_RULES]
        assert rows.filter(pl.col("worst"))["rule"].to_list() == b["worst"]["rules"]
    for rule in BRACKET_RULES:
        total = sum(stats["symbols"][symbol]["path_bracket"][rule]["pnl"] for symbol in stats["basket"])
        assert account[rule]["pnl"] == pytest.approx(total, abs=1e-6), rule
        assert account[rule]["total_return_pct"] == pytest.approx(total / initial * 100, abs=1e-9), rule
        assert (
            table.filter((pl.col("scope") == "account") & (pl.col("rule") == rule))["pnl"].item()
            == (account[rule]["pnl"])
        )
    assert set(account["worst"]["return_rules"]) <= set(BRACKET_RULES)


def test_each_symbol_has_a_path_bracket_in_stats_json_and_the_result_folder(
    basket_out: tuple[Path, dict],
) -> None:
    out, stats = basket_out
    check_symbol_brackets(out, stats)
    page = (out / "report.html").read_text()
    for text in (
        "PnL worst path (rules)",
        "PnL best path (rules)",
        "PnL in the account run, worst / best path",
    ):
        assert text in page, text


def test_each_symbol_brackets_its_pnl_within_the_account_run_under_each_rule() -> None:
    """Hand-derived: the symbols' worst rules differ, and the account's worst rule is one symbol's best.

    maker fee 0.0002, step 1 %, one rung a side, TP one step (market_builders.ISOLATED); bar 1 swings
    1.5 % either side of its open, so nearer first = high first and farther first = low first.
    BTC (0.01 at 10000; rungs 9900 / 10100, both TPs 9999.0), bar 1 closes at 10000:
      high first: short 10100 -> TP 9999 (+1.01), long 9900 -> TP 9999 on the way to the close (+0.99):
        4 fills, PnL 2.00 - 0.0002 * 0.01 * (10100 + 9999 + 9900 + 9999) = 2.00 - 0.079996 = 1.920004
      low first: long round trip (+0.99), short 10100 left open at the close 10000 (+1.00):
        3 fills, PnL 1.99 - 0.0002 * 0.01 * (9900 + 9999 + 10100) = 1.99 - 0.059998 = 1.930002
    ETH (0.2 at 1000; rungs 990 / 1010, both TPs 999.9), bar 1 closes at 999.8, below the TPs:
      high first: short round trip (+2.02), long 990 left open at 999.8 (+1.96):
        3 fills, PnL 3.98 - 0.0002 * 0.2 * (1010 + 999.9 + 990) = 3.98 - 0.119996 = 3.860004
      low first: long round trip (+1.98), then the short's TP 999.9 on the way down to 999.8 (+2.02):
        4 fills, PnL 4.00 - 0.0002 * 0.2 * (990 + 999.9 + 1010 + 999.9) = 4.00 - 0.159992 = 3.840008
    So BTC is worst under high first, ETH under low first, and the account (5.780008 vs 5.770010)
    under low first.
    """
    from gridctl.engine.basket import run_basket
    from gridctl.research.basket import basket_stats
    from gridctl.research.report import basket_bracket_note, basket_symbol_rows

    btc = make_market([*flat(10000.0, 1), (10000.0, 10150.0, 9850.0, 10000.0), *flat(10000.0, 1)], symbol=BTC)
    eth = make_market([*flat(1000.0, 1), (1000.0, 1015.0, 985.0, 999.8), *flat(999.8, 1)], symbol=ETH)
    markets = {BTC: btc, ETH: eth}
    strategies = {
        BTC: strategy(strategy__instrument_id="BTCUSDT-PERP.BINANCE"),
        ETH: strategy(strategy__instrument_id="ETHUSDT-PERP.BINANCE", grid__base_qty=0.2),
    }
    v = venue()
    stats = basket_stats(run_basket(markets, strategies, v), markets, strategies, v)
    high, low = ["nearer_first", "high_first"], ["farther_first", "low_first"]
    expected = {
        BTC: {"high": (1.920004, 4), "low": (1.930002, 3)},
        ETH: {"high": (3.860004, 3), "low": (3.840008, 4)},
    }
    for symbol, by in expected.items():
        b = stats["symbols"][symbol]["path_bracket"]
        assert b["rule"] == "nearer_first" and b["configured"] == b["nearer_first"]
        for rules, (pnl, fills) in ((high, by["high"]), (low, by["low"])):
            for rule in rules:
                assert b[rule]["pnl"] == pytest.approx(pnl, abs=1e-9), (symbol, rule)
                assert b[rule]["total_return_pct"] == pytest.approx(pnl / 10_000 * 100, abs=1e-11)
                assert b[rule]["n_fills"] == fills, (symbol, rule)
    btc_b, eth_b = stats["symbols"][BTC]["path_bracket"], stats["symbols"][ETH]["path_bracket"]
    assert (btc_b["worst"]["rules"], btc_b["best"]["rules"]) == (high, low)
    assert (eth_b["worst"]["rules"], eth_b["best"]["rules"]) == (low, high)
    assert btc_b["worst"]["pnl"] == pytest.approx(1.920004, abs=1e-9)
    assert eth_b["worst"]["pnl"] == pytest.approx(3.840008, abs=1e-9)
    account = stats["account"]["path_bracket"]
    assert account["worst"]["return_rules"] == low and account["best"]["return_rules"] == high
    assert account["low_first"]["pnl"] == pytest.approx(5.770010, abs=1e-9)
    assert account["high_first"]["pnl"] == pytest.approx(5.780008, abs=1e-9)
    assert account["low_first"]["total_return_pct"] == pytest.approx(5.770010 / 10_000 * 100, abs=1e-11)
    assert account["high_first"]["total_return_pct"] == pytest.approx(5.780008 / 10_000 * 100, abs=1e-11)
    # The per-symbol table (CLI summary and report) names each symbol's own worst and best rules.
    header, btc_row, eth_row = basket_symbol_rows(stats)
    worst_col, best_col = header.index("PnL worst path (rules)"), header.index("PnL best path (rules)")
    assert btc_row[worst_col] == "1.92 (nearer_first, high_first)"
    assert btc_row[best_col] == "1.93 (farther_first, low_first)"
    assert eth_row[worst_col] == "3.84 (farther_first, low_first)"
    assert eth_row[best_col] == "3.86 (nearer_first, high_first)"
    note = basket_bracket_note(stats)
    assert "need not be each symbol's worst" in note and "worst under farther_first, low_first" in note
    # No rule's run halted or liquidated the account; the note names the rules whose run did.
    assert all(account[r]["halted_at"] is None and account[r]["liquidated_at"] is None for r in BRACKET_RULES)
    assert "stopped every symbol" not in note
    account["high_first"]["halted_at"] = "2024-01-01T02:00:00Z"
    assert basket_bracket_note(stats).endswith(
        "The account stopped every symbol under high_first: drawdown halt at 2024-01-01T02:00:00Z."
    )


def test_the_accounts_one_drawdown_halt_acted_once_though_every_symbol_records_it() -> None:
    """Hand-derived (tests/engine/test_basket_scenarios.py, the account's drawdown halt): initial 10000,
    max drawdown 2 %; bar 1 fills BTC 1.0 @ 9900 and ETH 10 @ 990 (maker fees 1.98 + 1.98), bar 2
    closes BTC 9800 / ETH 980: account equity 9996.04 - 100 - 100 = 9796.04, a 2.0396 % drawdown. The
    account halts once, at bar 2: both symbols flatten (taker 4.9 each) and each ledger records one
    DRAWDOWN_HALT. The gate row says the halt acted once; the event row counts the 2 ledger rows."""
    from gridctl.engine.basket import run_basket
    from gridctl.research.basket import basket_stats
    from gridctl.research.report import gate_rows

    dd = dict(risk_management__max_drawdown_pct=2.0, exit__sl_steps=50)
    btc = make_market(
        [*flat(10000, 1), (10000, 10000, 9890, 9900), (9900, 9900, 9800, 9800), *flat(9800, 1)], symbol=BTC
    )
    eth = make_market(
        [*flat(1000, 1), (1000, 1000, 989, 990), (990, 990, 980, 980), (980, 1200, 900, 980)], symbol=ETH
    )
    markets = {BTC: btc, ETH: eth}
    strategies = {
        BTC: strategy(strategy__instrument_id="BTCUSDT-PERP.BINANCE", grid__base_qty=1.0, **dd),
        ETH: strategy(strategy__instrument_id="ETHUSDT-PERP.BINANCE", grid__base_qty=10.0, **dd),
    }
    v = venue()
    account = basket_stats(run_basket(markets, strategies, v), markets, strategies, v)["account"]
    assert account["halted_at"] == "2024-01-01T02:00:00Z"
    assert account["final_equity"] == pytest.approx(10_000 - 3.96 - 200 - 9.8, abs=1e-9)
    rows = dict(gate_rows(account))
    assert rows["gate: Drawdown halt"] == "acted once"
    assert rows["event: drawdown_halt"] == "2"
    assert rows["gate: Liquidation (the exchange's)"] == "acted 0 times"


def test_the_summary_shows_the_account_and_a_row_per_symbol(data_dir: Path) -> None:
    result = invoke(data_dir, "--symbols", BTC, "--symbols", ETH)
    assert result.exit_code == 0, result.stderr
    for text in ("basket of 2 (BTC/USDT:USDT, ETH/USDT:USDT)", "Account", "Final equity", "Per symbol"):
        assert text in result.stdout, text
    assert "running default on a basket of 2 symbols" in result.stderr


def write_strategy(tmp_path: Path, symbols: list[str] | None, overrides: dict | None = None) -> Path:
    tree = yaml.safe_load((PACKAGE_DIR / "strategies" / "default.yaml").read_text())
    if symbols is not None:
        tree["strategy"]["symbols"] = symbols
    if overrides is not None:
        tree["symbol_overrides"] = overrides
    path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@effect("strategy.symbols")
def test_the_strategy_field_makes_a_basket(data_dir: Path, tmp_path: Path) -> None:
    basket = run_json(data_dir, "--config", str(write_strategy(tmp_path, [BTC, ETH])))
    single = run_json(data_dir, "--config", str(write_strategy(tmp_path, None)))
    assert basket["basket"] == [BTC, ETH] and set(basket["symbols"]) == {BTC, ETH}
    assert "account" not in single and single["symbol"] == BTC
    # --symbol (one symbol) does not silently drop the strategy's basket.
    result = invoke(data_dir, "--config", str(write_strategy(tmp_path, [BTC, ETH])), "--symbol", ETH)
    assert result.exit_code == 2 and "trades the basket ['BTC/USDT:USDT', 'ETH/USDT:USDT']" in result.stderr
    # --symbols picks a sub-basket; the file's overrides of the symbols left out are dropped with them.
    config = write_strategy(tmp_path, [BTC, ETH], {BTC: {"grid.base_notional": 200}})
    alone = run_json(data_dir, "--config", str(config), "--symbols", ETH)
    assert alone["basket"] == [ETH] and "--set symbol_overrides={}" in alone["account"]["strategy_source"]
    # --symbols gives the same basket as the field.
    via_option = run_json(data_dir, "--symbols", f"{BTC},{ETH}")
    for name in ("final_equity", "n_fills", "max_drawdown_bar_close_pct"):
        assert via_option["account"][name] == basket["account"][name], name


@effect("symbol_overrides")
def test_a_symbol_override_changes_that_symbol_only(data_dir: Path, tmp_path: Path) -> None:
    base_out, big_out = tmp_path / "base", tmp_path / "big"
    run_json(data_dir, "--symbols", f"{BTC},{ETH}", "--out", str(base_out))
    config = write_strategy(tmp_path, [BTC, ETH], {ETH: {"grid.base_notional": 300}})
    run_json(data_dir, "--config", str(config), "--out", str(big_out))
    base = pl.read_parquet(base_out / "fills.parquet")
    big = pl.read_parquet(big_out / "fills.parquet")

    def first_entry(fills: pl.DataFrame, symbol: str) -> dict:
        return fills.filter((pl.col("symbol") == symbol) & (pl.col("kind") == "entry")).row(0, named=True)

    # ETH's rung 1 is 300 USDT instead of the default 150: twice the quantity at the same price
    # (within one 0.001 ETH lot either way of the rounding).
    b, g = first_entry(base, ETH), first_entry(big, ETH)
    assert (b["ts"], b["price"], b["level"]) == (g["ts"], g["price"], g["level"])
    assert g["qty"] == pytest.approx(2 * b["qty"], abs=0.002)
    # BTC's first fill is untouched.
    assert first_entry(base, BTC) == first_entry(big, BTC)
    # The same override as --set symbol_overrides.<SYMBOL>.section.key on --symbols: the same ledger (it
    # was split on every dot into a nested key, refused as "key 'grid' must look like 'section.key'").
    via_set = tmp_path / "via-set"
    overrides = ("--set", f"symbol_overrides.{ETH}.grid.base_notional=300")
    run_json(data_dir, "--symbols", f"{BTC},{ETH}", *overrides, "--out", str(via_set))
    assert pl.read_parquet(via_set / "fills.parquet").equals(big)
    # A symbol outside the basket, an unknown key and an account key are one line each, exit 2.
    for key, message in (
        ("symbol_overrides.XRP/USDT:USDT.grid.base_notional=300", "['XRP/USDT:USDT'] not in the basket"),
        (f"symbol_overrides.{ETH}.grid.base_notionl=300", "did you mean 'grid.base_notional'?"),
        (f"symbol_overrides.{ETH}.backtest.initial_balance=5", "set it for the whole strategy"),
    ):
        result = invoke(data_dir, "--symbols", f"{BTC},{ETH}", "--set", key)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_detail_bars_are_walked_where_they_are_stored(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    store_basket(data, days=3)
    for symbol in (BTC, ETH):
        resample_store(data, "synth", symbol, "1m", "15m")
    # ETH keeps only its 15m bars: its 1m series is removed, so only BTC has detail bars.
    for path in (data / "synth" / "ETH_USDT_USDT" / "1m").iterdir():
        path.unlink()
    # ETH first in the basket: the account still reports the detail BTC walked.
    args = ("--symbols", f"{ETH},{BTC}", "--timeframe", "15m", "--detail", "1m", "--out", str(out))
    stats = run_json(data, *args)
    warnings = stats["account"]["assumptions"]["data_warnings"]
    assert any(w.startswith("synth ETH/USDT:USDT: no 1m bars stored in the window") for w in warnings)
    assert stats["symbols"][BTC]["assumptions"]["detail_timeframe"] == "1m"
    assert stats["symbols"][ETH]["assumptions"]["detail_timeframe"] is None
    assert stats["account"]["assumptions"]["detail_timeframe"] == "1m"
    # Stats, path brackets (the account's and each symbol's), ledgers and the report, with detail bars.
    assert json.loads((out / "stats.json").read_text()) == stats
    assert sorted(p.name for p in out.iterdir()) == sorted(BASKET_RESULT_FILES)
    check_symbol_brackets(out, stats)
    fills = pl.read_parquet(out / "fills.parquet")
    for symbol in (ETH, BTC):
        assert stats["symbols"][symbol]["n_fills"] == fills.filter(pl.col("symbol") == symbol).height > 0
    check_report_in_browser(out, stats)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--symbols", f"{BTC},ADA/USDT:USDT"],
            "error: strategy ",
        ),
        (["--symbols", f"{BTC},XRP/USDT:USDT"], "error: no 1m candles for XRP/USDT:USDT on synth"),
        (["--symbols", BTC, "--symbol", ETH], "error: --symbol and --symbols: give one"),
        (["--symbols", "BTCUSDT"], "'BTCUSDT' is not a ccxt USD-M symbol"),
        (["--symbols", " , "], "error: --symbols: ' , ' names no symbol"),
        # A symbol named twice was silently dropped to a basket of one (the strategy file refuses it).
        (["--symbols", f"{BTC},{BTC}"], f"error: --symbols: {BTC} given more than once"),
        (["--symbols", f"{BTC},{ETH}", "--symbols", ETH], f"error: --symbols: {ETH} given more than once"),
    ],
)
def test_a_bad_basket_is_one_clear_error(data_dir: Path, args: list[str], message: str) -> None:
    result = invoke(data_dir, *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    if "ADA" in args[1]:
        assert "ADA/USDT:USDT: " in result.stderr and "no exchange rules for 'ADA/USDT:USDT'" in result.stderr


def test_every_symbol_whose_data_cannot_run_is_named_one_line_each(data_dir: Path) -> None:
    """The load stopped at the first symbol's problem, so a checker fixed them one run at a time."""
    result = invoke(data_dir, "--symbols", f"{BTC},XRP/USDT:USDT,DOGE/USDT:USDT")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(" in ")[0] for line in lines] == [
        "error: no 1m candles for XRP/USDT:USDT on synth",
        "error: no 1m candles for DOGE/USDT:USDT on synth",
    ]


def test_the_basket_report_renders_offline_in_a_browser(basket_out: tuple[Path, dict]) -> None:
    check_report_in_browser(*basket_out)


def check_report_in_browser(out: Path, stats: dict) -> None:
    """The basket report opens offline without errors: the account chart with the basket's buy-and-hold,
    the per-symbol table with each symbol's path bracket, and per symbol the single report's chart
    (candles, fills, both sides' inventory) refined from its packed data, monthly returns, round trips."""
    from gridctl.research.report import BASKET_BUY_AND_HOLD, BASKET_CHART_ID

    from browser import Browser

    path = out / "report.html"
    plot = f"document.getElementById('{BASKET_CHART_ID}')"
    with Browser() as browser:
        session, log = browser.open_page(path)
        browser.wait_for(session, f"{plot} && {plot}._fullLayout && {plot}.querySelector('.main-svg')")
        names = browser.evaluate(session, f"{plot}._fullData.map(d => d.name)")
        # Its three panels share a UTC date axis: the tick labels were epoch milliseconds ("1.71T").
        axes = browser.evaluate(
            session,
            f"Object.keys({plot}._fullLayout).filter(k => /^xaxis[0-9]*$/.test(k)).sort()"
            f".map(k => {plot}._fullLayout[k].type)",
        )
        ticks = browser.evaluate(
            session, f"[...{plot}.querySelectorAll('.xaxislayer-above text')].map(t => t.textContent)"
        )
        bh = browser.evaluate(
            session,
            f"(t => [...t.x].map((x, i) => [+x, t.y[i]]).filter(p => isFinite(p[1])))({plot}._fullData[1])",
        )
        tables = browser.evaluate(session, "[...document.querySelectorAll('table')].map(t => t.id)")
        grid = browser.evaluate(
            session,
            "[...document.querySelectorAll('table')[3].rows].map(r => [...r.cells].map(c => c.textContent))",
        )
        note = browser.evaluate(session, "document.getElementById('symbol-bracket-note').textContent")
        per_symbol = []
        for i in range(len(stats["basket"])):
            chart = f"document.getElementById('basket-symbol-{i}')"
            # The zoom script decoded this symbol's packed bars (its own data block) and redrew them.
            browser.wait_for(session, f"{chart} && {chart}.getAttribute('data-refine') === 'ready'")
            per_symbol.append(
                browser.evaluate(
                    session,
                    f"{chart}._fullData.map(d => [d.type, d.legendgroup, d._length || 0, d.uid || ''])",
                )
            )
        # Zooming the last symbol's chart to ten bars redraws its candles from its own packed bars at the
        # run's timeframe: the ten bars plus one period before and two after (research.report.candles).
        last = f"document.getElementById('basket-symbol-{len(stats['basket']) - 1}')"
        bar_ms = timeframe_ms(stats["timeframe"])
        lo = int(
            np.datetime64(stats["symbols"][stats["basket"][-1]]["data_start"][:19], "ms").astype(np.int64)
        )
        lo = (lo // bar_ms + 24) * bar_ms
        views = browser.evaluate(session, f"+({last}.getAttribute('data-views') || 0)")
        browser.evaluate(
            session, f"Plotly.relayout({last}, {{'xaxis.range': [{lo}, {lo + 10 * bar_ms}]}}).then(() => 1)"
        )
        browser.wait_for(session, f"+({last}.getAttribute('data-views') || 0) > {views}")
        zoomed = browser.evaluate(
            session, f"{last}._fullData.filter(d => d.type === 'candlestick').map(d => [d.name, d._length])"
        )
        log = browser.more_log(session)  # including the zoom scripts' decoding, after the load
    assert log.requests == [path.resolve().as_uri()] and log.failed == [] and log.errors == []
    # Account equity, the basket's buy-and-hold (its definition is the legend entry), drawdown, then one
    # PnL line per symbol, in basket order.
    assert names == ["account equity", BASKET_BUY_AND_HOLD, "drawdown", *stats["basket"]]
    assert axes == ["date", "date", "date"]
    assert ticks and not any(t.endswith("T") or t.replace(".", "").isdigit() for t in ticks), ticks
    assert "split equally across the symbols" in BASKET_BUY_AND_HOLD
    # It starts at the late symbol's first bar (the first every symbol has), worth the initial balance.
    late = max(stats["basket"], key=lambda s: stats["symbols"][s]["data_start"])
    first_ms = np.datetime64(
        stats["symbols"][late]["data_start"].replace("Z", "").replace("+00:00", ""), "ms"
    )
    assert bh[0][0] == first_ms.astype(np.int64) and len(bh) > 1
    assert bh[0][1] == pytest.approx(stats["account"]["initial_balance"], rel=1e-12)
    # The per-symbol table: a row per symbol with its worst and best PnL and the rules that give them.
    head, *rows = grid
    assert [row[0] for row in rows] == stats["basket"]
    for symbol, row in zip(stats["basket"], rows, strict=True):
        b = stats["symbols"][symbol]["path_bracket"]
        for side in ("worst", "best"):
            cell = row[head.index(f"PnL {side} path (rules)")]
            rules = b[side]["rules"]
            named = "every rule" if len(rules) == len(BRACKET_RULES) else ", ".join(rules)
            assert cell == f"{b[side]['pnl']:,.2f} ({named})", (symbol, side)
    assert "within the whole basket run under each intrabar path rule" in note
    # Account: results, benchmark, gates, per-symbol table, monthly returns, assumptions; per symbol:
    # results, benchmark, gates, assumptions, monthly returns, round trips.
    assert tables[:6] == ["", "benchmark", "", "", "monthly-returns", ""]
    for i in range(len(stats["basket"])):
        assert tables[6 + 6 * i : 12 + 6 * i] == ["", "", "", "", f"monthly-returns-{i}", "round-trips"]
    assert len(tables) == 6 + 6 * len(stats["basket"])
    assert zoomed == [[f"candles {stats['timeframe']}", 13]]
    # Each symbol's chart: candles, every one of its fills (markers by kind), both inventories, its
    # contribution next to buy-and-hold.
    for symbol, traces in zip(stats["basket"], per_symbol, strict=True):
        uids = [t[3] for t in traces]
        candles = [t for t in traces if t[0] == "candlestick"]
        assert len(candles) == 1 and candles[0][2] > 0, symbol
        for uid in ("long_qty", "short_qty", "equity", "buyhold"):
            assert uids.count(uid) == 1, (symbol, uid)
        markers = sum(n for _, group, n, _ in traces if group == "fills")
        assert markers == stats["symbols"][symbol]["n_fills"] > 0, symbol


def test_the_basket_buy_and_hold_splits_the_balance_equally_from_the_first_common_bar() -> None:
    """Two symbols, B starting an hour late and missing its last bar; 1,000 USDT split 500 / 500 at the
    closes of hour 1 (A 110, B 50): hour 2 is 500 * 90 / 110 + 500 * 25 / 50 = 409.0909... + 250, hour 3
    500 * 120 / 110 + 250 (B's last close carried) = 545.4545... + 250; nothing before hour 1."""
    from gridctl.research.report import basket_buy_and_hold

    hour = 3_600_000
    a = make_market([(c, c, c, c) for c in (100.0, 110.0, 90.0, 120.0)], symbol=BTC)
    b = make_market([(c, c, c, c) for c in (50.0, 25.0)], start=int(a.ts[1]), symbol=ETH)
    assert int(b.ts[0]) == int(a.ts[0]) + hour
    got = basket_buy_and_hold(a.ts, [a, b], 1000.0)
    assert np.isnan(got[0])
    assert got[1:].tolist() == pytest.approx(
        [1000.0, 409.0909090909 + 250.0, 545.4545454545 + 250.0], abs=1e-9
    )
    # The order of the symbols does not matter; a basket with no common bar has no line.
    assert basket_buy_and_hold(a.ts, [b, a], 1000.0)[1:].tolist() == pytest.approx(got[1:].tolist())
    c = make_market(flat(10.0, 1), start=int(a.ts[0]), symbol=ETH)
    d = make_market(flat(10.0, 1), start=int(a.ts[3]), symbol=BTC)
    assert np.isnan(basket_buy_and_hold(a.ts, [c, d], 1000.0)).all()


def test_a_symbols_contribution_curve_books_each_fill_and_settlement_in_the_kernels_bar(
    data_dir: Path,
) -> None:
    from gridctl.configs.loader import load_strategy, load_venue
    from gridctl.research.basket import contribution_curve, run_basket_backtest

    # In a one-symbol basket the symbol's wallet is the account's: the curve rebuilt from the ledgers
    # (each fill and funding amount booked in the row of its bar) must be the kernel's, row by row.
    strategy = load_strategy(
        "default", [f'strategy.symbols=["{ETH}"]', "strategy.instrument_id=ETHUSDT-PERP.BINANCE"]
    )
    basket = run_basket_backtest(strategy, load_venue("binance_futures"), data_dir, "synth", "1m", None, None)
    run = basket.output.per_symbol[ETH]
    assert len(run.funding) > 5 and len(run.fills) > 10
    curve = contribution_curve(run, 60_000, 10_000.0)
    np.testing.assert_allclose(curve["wallet_balance"], run.equity["wallet_balance"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(curve["equity"], basket.output.account_equity["equity"], rtol=0, atol=1e-9)


def test_a_symbols_partial_detail_and_its_gaps_are_the_accounts_warnings_and_on_the_summary(
    tmp_path: Path,
) -> None:
    """ETH's 1m bars start 12 h after its 15m bars and it lacks two 15m bars: the account's data warnings
    and the terminal summary say so (the basket summary printed no data warning at all, and the
    account's warnings left out the symbol's detail fallback)."""
    data = tmp_path / "data"
    store_basket(data, days=3)
    for symbol in (BTC, ETH):
        resample_store(data, "synth", symbol, "1m", "15m")
    eth = data / "synth" / "ETH_USDT_USDT"
    (part,) = (eth / "1m").iterdir()
    minutes = pl.read_parquet(part)
    first = int(minutes["ts"][0])
    minutes.filter(pl.col("ts") >= first + 12 * 3_600_000).write_parquet(part)
    (part15,) = (eth / "15m").iterdir()
    quarter = pl.read_parquet(part15)
    gone = (first + 24 * 3_600_000, first + 24 * 3_600_000 + 900_000)  # two 15m bars a day in
    quarter.filter(~pl.col("ts").is_in(gone)).write_parquet(part15)
    args = ("--symbols", f"{BTC},{ETH}", "--timeframe", "15m", "--detail", "1m")
    stats = run_json(data, *args)
    warnings = stats["account"]["assumptions"]["data_warnings"]
    # 12 h of ETH's 15m bars (48) walk their own OHLC; the two missing 15m bars are a gap it does not trade.
    (fallback,) = [w for w in warnings if w.startswith(f"{ETH}: detail 1m: 48 of ")]
    assert "lack complete 1m bars" in fallback
    (gap,) = [w for w in warnings if "ETH/USDT:USDT 15m: 1 gap(s), 2 missing 15m bars" in w]
    assert (stats["symbols"][ETH]["gaps"], stats["symbols"][ETH]["missing_bars"]) == (1, 2)
    # No bar to trade: the 16 15m bars before ETH's first (4 h late) and the 2 missing ones.
    assert stats["symbols"][ETH]["events"]["input_missing"] == ETH_LATE_BARS // 15 + 2
    result = invoke(data, *args)
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())  # rich may wrap a long cell
    assert "ETH/USDT:USDT 1 gaps, 2 missing 15m bars (not traded)" in text
    assert f"Data warning {fallback}" in text and f"Data warning {gap}" in text
