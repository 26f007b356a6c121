"""``gridctl data import`` of plain Parquet/CSV tables: symbol, kind and timeframe inferred or given."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.data.importers import import_path
from gridctl.data.market import load_market
from gridctl.data.store import read_candles

H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def candles(n: int, step: int = H, volume: bool = True) -> pl.DataFrame:
    cols = {
        "ts": [T0 + i * step for i in range(n)],
        "open": [1.0 + i / 100 for i in range(n)],
        "high": [1.1 + i / 100 for i in range(n)],
        "low": [0.9 + i / 100 for i in range(n)],
        "close": [1.05 + i / 100 for i in range(n)],
    }
    if volume:
        cols["volume"] = [10.0] * n
    return pl.DataFrame(cols)


def test_real_xrp_tables_import_naming_what_was_inferred(shared_dir: Path, tmp_path: Path) -> None:
    real = shared_dir / "data" / "real"
    out = import_path(real / "binanceusdm_XRPUSDT_mark8h_2022-01_2026-05.parquet", tmp_path)
    # No volume column: mark-price candles; "mark8h" in the name: 8h, confirmed by the 8 h spacing.
    name = "binanceusdm_XRPUSDT_mark8h_2022-01_2026-05.parquet"
    assert out.notes == [f"{name}: XRP/USDT:USDT (file name) mark candles 8h (file name)"]
    (series,) = out.series
    assert (series.symbol, series.kind, series.timeframe) == ("XRP/USDT:USDT", "mark", "8h")
    # README: 2022-01-01 00:00 .. 2026-05-06 00:00 = 1,586 days * 3 + 1 = 4,759 klines.
    assert (series.rows, series.first_ts) == (4_759, 1_640_995_200_000)
    funding = import_path(real / "binanceusdm_XRPUSDT_funding_2020-01_2026-05.parquet", tmp_path)
    assert funding.series[0].kind == "funding" and "XRP/USDT:USDT funding (file name" in funding.notes[0]
    # the note names every column read: the mark price is imported too, not only ts and rate
    assert funding.notes[0].endswith("(file name; columns ts, rate, mark_price)")


def test_flags_supply_what_the_name_does_not_say(tmp_path: Path) -> None:
    path = tmp_path / "candles.csv"
    candles(30, step=15 * 60_000).write_csv(path)
    with pytest.raises(GridctlError, match=r"names no USD-M symbol .*give --symbol"):
        import_path(path, tmp_path / "store")
    out = import_path(path, tmp_path / "store", symbol="DOGE/USDT:USDT")
    # No timeframe in the name: the 15-minute spacing tells it.
    assert out.notes == ["candles.csv: DOGE/USDT:USDT (--symbol) trade candles 15m (bar spacing)"]
    pl.DataFrame({"ts": [T0], "rate": [0.0001]}).write_csv(tmp_path / "funding.csv")
    got = import_path(tmp_path / "funding.csv", tmp_path / "store", symbol="DOGE/USDT:USDT")
    assert got.notes == [
        "funding.csv: DOGE/USDT:USDT funding (--symbol; columns ts, rate, no mark_price column: mark unknown)"
    ]
    market = load_market(tmp_path / "store", "binanceusdm", "DOGE/USDT:USDT", "15m")
    assert len(market.ts) == 30 and market.close[1] == pytest.approx(1.06)


def test_a_csv_with_iso_datetime_text_imports_as_utc(tmp_path: Path) -> None:
    """A CSV has no datetime type: its time column is text. That was refused ("holds String"), so the
    commonest plain CSV could not be imported; naive text is UTC, an offset is converted to UTC."""
    hours = ["2024-01-01 00:00:00", "2024-01-01 01:00:00", "2024-01-01 02:00:00"]
    frame = candles(3).drop("ts").insert_column(0, pl.Series("timestamp", hours))
    frame.write_csv(tmp_path / "ETHUSDT_hourly.csv")
    out = import_path(tmp_path / "ETHUSDT_hourly.csv", tmp_path / "store")
    assert out.notes == ["ETHUSDT_hourly.csv: ETH/USDT:USDT (file name) trade candles 1h (bar spacing)"]
    stored = read_candles(tmp_path / "store", "binanceusdm", "ETH/USDT:USDT", "1h")["ts"].to_list()
    assert stored == [1_704_067_200_000, 1_704_070_800_000, 1_704_074_400_000]  # 2024-01-01 UTC
    # 02:00+02:00 is 00:00 UTC: the same three bars.
    shifted = ["2024-01-01T02:00:00+02:00", "2024-01-01T03:00:00+02:00", "2024-01-01T04:00:00+02:00"]
    frame.with_columns(pl.Series("timestamp", shifted)).write_csv(tmp_path / "ETHUSDT_tz.csv")
    import_path(tmp_path / "ETHUSDT_tz.csv", tmp_path / "store2")
    assert read_candles(tmp_path / "store2", "binanceusdm", "ETH/USDT:USDT", "1h")["ts"].to_list() == stored
    # Text that is no date, and an empty cell, are named.
    frame.with_columns(pl.Series("timestamp", ["2024-01-01 00:00:00", "soon", "later"])).write_csv(
        tmp_path / "ETHUSDT_bad.csv"
    )
    with pytest.raises(GridctlError, match=r"ETHUSDT_bad.csv: column 'timestamp' holds text that is not a"):
        import_path(tmp_path / "ETHUSDT_bad.csv", tmp_path / "store3")
    frame.with_columns(pl.Series("timestamp", [hours[0], None, hours[2]])).write_csv(
        tmp_path / "ETHUSDT_gap.csv"
    )
    with pytest.raises(GridctlError, match=r"ETHUSDT_gap.csv: row 1: column 'timestamp' is empty"):
        import_path(tmp_path / "ETHUSDT_gap.csv", tmp_path / "store3")


def test_a_timeframe_that_contradicts_the_data_or_a_symbol_the_name_contradicts_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "SOLUSDT_1h.parquet"
    candles(10, step=H).write_parquet(path)
    with pytest.raises(
        GridctlError,
        match=r"timeframe 4h \(--timeframe\) does not match the data, whose bars are mostly 3,600,000 ms",
    ):
        import_path(path, tmp_path / "store", timeframe="4h")
    with pytest.raises(GridctlError, match=r"the file name says SOL/USDT:USDT, but --symbol BTC/USDT:USDT"):
        import_path(path, tmp_path / "store", symbol="BTC/USDT:USDT")
    assert not (tmp_path / "store").exists()  # nothing half-written


def test_a_table_that_is_neither_candles_nor_funding_is_skipped_with_its_columns(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pl.DataFrame({"ts": [T0], "price": [1.0]}).write_parquet(folder / "BNBUSDT_ticks.parquet")
    candles(5).write_parquet(folder / "BNBUSDT_1h.parquet")
    out = import_path(folder, tmp_path / "store")
    assert [s.timeframe for s in out.series] == ["1h"]
    ((skipped, reason),) = out.skipped
    assert skipped.endswith("BNBUSDT_ticks.parquet") and reason.startswith("columns ts, price are neither")


def test_several_files_and_symbols_at_once_name_what_each_holds(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gridctl.cli import app

    for pair in ("BTCUSDT", "ETHUSDT"):
        candles(30).write_parquet(tmp_path / f"{pair}_1h.parquet")
        pl.DataFrame(
            {"ts": [T0 + i * 8 * H for i in range(4)], "rate": [0.0001, -0.0002, 0.0, 0.0001]}
        ).write_parquet(tmp_path / f"{pair}_funding.parquet")
    files = [str(tmp_path / f"{p}_{k}.parquet") for p in ("BTCUSDT", "ETHUSDT") for k in ("1h", "funding")]
    store = str(tmp_path / "store")
    result = CliRunner().invoke(
        app, ["data", "import", *files, "--data-dir", store, "--symbols", "BTC/USDT:USDT,ETH/USDT:USDT"]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    # What was inferred for each file, then what was stored, one line per series.
    assert "BTCUSDT_1h.parquet: BTC/USDT:USDT (file name) trade candles 1h (file name)" in out
    assert "ETHUSDT_1h.parquet: ETH/USDT:USDT (file name) trade candles 1h (file name)" in out
    for symbol in ("BTC/USDT:USDT", "ETH/USDT:USDT"):
        assert any(line.startswith(f"imported binanceusdm {symbol} trade 1h: 30 rows") for line in out)
        assert any(line.startswith(f"imported binanceusdm {symbol} funding: 4 rows") for line in out)
        assert len(load_market(tmp_path / "store", "binanceusdm", symbol, "1h").ts) == 30


def test_bad_files_among_several_are_each_named_and_nothing_is_written(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gridctl.cli import app

    candles(30).write_parquet(tmp_path / "BTCUSDT_1h.parquet")
    candles(30).write_parquet(tmp_path / "SOLUSDT_1h.parquet")  # not one of the symbols asked for
    candles(10, step=H).write_csv(tmp_path / "prices.csv")  # names no symbol; two were asked for
    bad = candles(5).with_columns(pl.col("high") - 1.0)  # high below low
    bad.write_parquet(tmp_path / "ETHUSDT_1h.parquet")
    args = ["data", "import", *(str(tmp_path / n) for n in (
        "BTCUSDT_1h.parquet", "SOLUSDT_1h.parquet", "prices.csv", "ETHUSDT_1h.parquet"))]  # fmt: skip
    result = CliRunner().invoke(
        app,
        [
            *args,
            "--data-dir",
            str(tmp_path / "store"),
            "--symbol",
            "BTC/USDT:USDT",
            "--symbol",
            "ETH/USDT:USDT",
        ],
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert (
        "SOLUSDT_1h.parquet: holds SOL/USDT:USDT data, but only BTC/USDT:USDT, ETH/USDT:USDT was" in lines[0]
    )
    assert "prices.csv: its name names no USD-M symbol" in lines[1] and "several --symbol" in lines[1]
    assert "ETHUSDT_1h.parquet" in lines[2] and "high" in lines[2], lines[2]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.parquet"))

    # A symbol asked for that no file holds is an error too.
    result = CliRunner().invoke(
        app,
        ["data", "import", str(tmp_path / "BTCUSDT_1h.parquet"), "--data-dir", str(tmp_path / "store"),
         "--symbols", "BTC/USDT:USDT,XRP/USDT:USDT"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --symbol XRP/USDT:USDT: no file given holds XRP/USDT:USDT data"


def test_a_symbol_option_naming_no_symbol_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gridctl.cli import app

    candles(30).write_parquet(tmp_path / "BTCUSDT_1h.parquet")
    args = ["data", "import", str(tmp_path / "BTCUSDT_1h.parquet"), "--data-dir", str(tmp_path / "store")]
    result = CliRunner().invoke(app, [*args, "--symbol", ","])
    assert (
        result.exit_code == 2
        and result.stderr == "error: --symbol: ',' names no symbol (e.g. BTC/USDT:USDT)\n"
    )
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("suffix", "column", "values", "found"),
    [
        ("parquet", "open", lambda n: ["x"] * n, "String (first value 'x')"),
        ("parquet", "close", lambda n: [str(1.0 + i) for i in range(n)], "String (first value '1.0')"),
        ("parquet", "volume", lambda n: [True] * n, "Boolean (first value True)"),
        ("csv", "low", lambda n: ["n/a"] + ["0.9"] * (n - 1), "String (first value 'n/a')"),
        ("parquet", "rate", lambda n: ["0.0001"] * n, "String (first value '0.0001')"),
        ("csv", "mark_price", lambda n: ["abc"] * n, "String (first value 'abc')"),
    ],
)
def test_a_non_numeric_price_volume_or_rate_column_is_named(
    tmp_path: Path, suffix: str, column: str, values, found: str
) -> None:
    """A text or boolean column in a plain table gave a polars traceback (text) or was stored as 0/1
    (booleans); nothing may be written."""
    n = 30
    funding = column in ("rate", "mark_price")
    frame = (
        pl.DataFrame(
            {"ts": [T0 + i * 8 * H for i in range(n)], "rate": [0.0001] * n, "mark_price": [1.0] * n}
        )
        if funding
        else candles(n)
    )
    frame = frame.with_columns(pl.Series(column, values(n)))
    path = tmp_path / f"BTCUSDT-{'funding' if funding else '1h'}.{suffix}"
    frame.write_parquet(path) if suffix == "parquet" else frame.write_csv(path)
    with pytest.raises(GridctlError) as err:
        import_path(path, tmp_path / "store")
    assert str(err.value) == f"{path}: column {column!r} must be numeric, found {found}"
    assert not (tmp_path / "store").exists()
