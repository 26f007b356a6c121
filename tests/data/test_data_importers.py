"""Importers: Binance USD-M archives (built here in real format) and real freqtrade XRP files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.data.importers import binance_pair_to_symbol, import_path
from gridctl.data.store import read_candles, read_funding

BTC = "BTC/USDT:USDT"
EX = "binanceusdm"
MIN = 60_000
HOUR = 3_600_000
JAN1 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
KLINE_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def kline_rows(n: int, start: int = JAN1, micro: bool = False) -> list[str]:
    """n 1m klines in Binance's column order; bar i: open 42000+i, high +5, low -5, close +1, volume 1.5+i."""
    unit = 1000 if micro else 1
    rows = []
    for i in range(n):
        t = start + i * MIN
        o = 42000.0 + i
        rows.append(
            f"{t * unit},{o:.1f},{o + 5:.1f},{o - 5:.1f},{o + 1:.1f},{1.5 + i:.3f},{(t + MIN - 1) * unit},"
            f"{o * (1.5 + i):.5f},{100 + i},0.700,29400.00000,0"
        )
    return rows


def write_zip(path: Path, lines: list[str], inner: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(inner or f"{path.stem}.csv", "\n".join(lines) + "\n")
    return path


def test_pair_conversion() -> None:
    assert binance_pair_to_symbol("BTCUSDT") == "BTC/USDT:USDT"
    assert binance_pair_to_symbol("ETHUSDC") == "ETH/USDC:USDC"
    with pytest.raises(GridctlError, match="not a linear USD-M contract"):
        binance_pair_to_symbol("BTCUSD")


@pytest.mark.parametrize(("header", "micro"), [(True, False), (False, False), (True, True)])
def test_binance_monthly_klines_zip(tmp_path: Path, header: bool, micro: bool) -> None:
    rows = kline_rows(3, micro=micro)
    archive = write_zip(tmp_path / "in" / "BTCUSDT-1m-2024-01.zip", ([KLINE_HEADER] if header else []) + rows)
    summary = import_path(archive, tmp_path / "store")
    got = read_candles(tmp_path / "store", EX, BTC, "1m")
    assert got["ts"].to_list() == [JAN1, JAN1 + MIN, JAN1 + 2 * MIN]
    # bar 2: open 42002, high 42007, low 41997, close 42003, volume 3.5 (see kline_rows)
    assert got.row(2) == (JAN1 + 2 * MIN, 42002.0, 42007.0, 41997.0, 42003.0, 3.5)
    (series,) = summary.series
    assert (series.symbol, series.kind, series.timeframe, series.rows) == (BTC, "trade", "1m", 3)


def test_mark_klines_by_folder_or_flag(tmp_path: Path) -> None:
    folder = tmp_path / "futures" / "um" / "monthly" / "markPriceKlines" / "BTCUSDT" / "1m"
    write_zip(folder / "BTCUSDT-1m-2024-01.zip", [KLINE_HEADER, *kline_rows(2)])
    import_path(folder, tmp_path / "store")
    assert read_candles(tmp_path / "store", EX, BTC, "1m", kind="mark").height == 2
    assert read_candles(tmp_path / "store", EX, BTC, "1m").height == 0
    plain = write_zip(tmp_path / "x" / "BTCUSDT-1m-2024-01.zip", kline_rows(1))
    import_path(plain, tmp_path / "store2", kind="mark")
    assert read_candles(tmp_path / "store2", EX, BTC, "1m", kind="mark").height == 1


def test_binance_funding_zip(tmp_path: Path) -> None:
    # Published values of BTCUSDT-fundingRate-2024-01:
    # calc_time 1704067200000 -> 0.00037409, 1704096000000 -> 0.00027213.
    lines = [
        "calc_time,funding_interval_hours,last_funding_rate",
        "1704067200000,8,0.00037409",
        "1704096000003,8,0.00027213",
    ]
    archive = write_zip(tmp_path / "BTCUSDT-fundingRate-2024-01.zip", lines)
    summary = import_path(archive, tmp_path / "store")
    got = read_funding(tmp_path / "store", EX, BTC)
    assert got["ts"].to_list() == [JAN1, JAN1 + 8 * HOUR]
    assert got["rate"].to_list() == [0.00037409, 0.00027213]
    assert np.isnan(got["mark_price"].to_numpy()).all()
    assert summary.report.funding_normalised == 1  # the +3 ms row


def test_symbol_mismatch_is_an_error(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "ETHUSDT-1m-2024-01.zip", kline_rows(2))
    with pytest.raises(GridctlError, match=r"holds ETH/USDT:USDT data, but BTC/USDT:USDT was requested"):
        import_path(archive, tmp_path / "store", symbol=BTC)
    renamed = write_zip(tmp_path / "BTCUSDT-1m-2024-02.zip", kline_rows(2), inner="ETHUSDT-1m-2024-02.csv")
    with pytest.raises(GridctlError, match=r"archive holds 'ETHUSDT-1m-2024-02\.csv'"):
        import_path(renamed, tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_bad_file_leaves_store_untouched(tmp_path: Path) -> None:
    store = tmp_path / "store"
    good = tmp_path / "good"
    write_zip(good / "BTCUSDT-1m-2024-01.zip", kline_rows(2))
    import_path(good, store)
    partition = store / EX / "BTC_USDT_USDT" / "1m" / "2024-01.parquet"
    before = partition.read_bytes()
    batch = tmp_path / "batch"
    write_zip(batch / "BTCUSDT-1m-2024-01.zip", kline_rows(5))  # valid, would add 3 bars
    rows = kline_rows(2, start=JAN1 + 31 * 24 * 60 * MIN)
    rows[1] = rows[1].replace(",42006.0,", ",41990.0,", 1)  # high 41990 < open 42001
    write_zip(batch / "BTCUSDT-1m-2024-02.zip", rows)
    with pytest.raises(GridctlError, match=r"BTCUSDT-1m-2024-02.zip: row 1 .*high 41990.0 < max"):
        import_path(batch, store)
    assert partition.read_bytes() == before
    assert sorted(p.name for p in partition.parent.iterdir()) == ["2024-01.parquet"]


def test_non_number_names_the_line(tmp_path: Path) -> None:
    rows = kline_rows(3)
    rows[1] = rows[1].replace("42001.0", "abc", 1)
    archive = write_zip(tmp_path / "BTCUSDT-1m-2024-01.zip", [KLINE_HEADER, *rows])
    with pytest.raises(GridctlError, match=r"line 3: column 'open' is 'abc' \(not a number\)"):
        import_path(archive, tmp_path / "store")


def test_overlapping_files_merge_when_equal_and_fail_when_not(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_zip(folder / "BTCUSDT-1m-2024-01.zip", kline_rows(3))
    (folder / "BTCUSDT-1m-2024-01-01.csv").write_text(
        "\n".join(kline_rows(2)) + "\n"
    )  # same bars, daily file
    import_path(folder, tmp_path / "store")
    assert read_candles(tmp_path / "store", EX, BTC, "1m").height == 3
    (folder / "BTCUSDT-1m-2024-01-01.csv").write_text("\n".join(kline_rows(2, start=JAN1 + MIN)) + "\n")
    with pytest.raises(GridctlError, match="different values for the same time 2024-01-01 00:01:00 UTC"):
        import_path(folder, tmp_path / "store3")


def test_directory_reports_skipped_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_zip(folder / "BTCUSDT-1m-2024-01.zip", kline_rows(2))
    (folder / "notes.txt").write_text("hello")
    write_zip(folder / "premiumIndexKlines" / "BTCUSDT-1m-2024-01.zip", kline_rows(2))
    summary = import_path(folder, tmp_path / "store")
    reasons = dict(summary.skipped)
    assert set(reasons) == {
        str(folder / "notes.txt"),
        str(folder / "premiumIndexKlines" / "BTCUSDT-1m-2024-01.zip"),
    }
    assert "not stored" in reasons[str(folder / "premiumIndexKlines" / "BTCUSDT-1m-2024-01.zip")]
    with pytest.raises(GridctlError, match="not a Binance archive or freqtrade"):
        import_path(folder / "notes.txt", tmp_path / "store")


def test_real_freqtrade_xrp(tmp_path: Path, real_data: Path) -> None:
    source = real_data / "freqtrade_xrp"
    summary = import_path(source, tmp_path, symbol="XRP/USDT:USDT")
    xrp = "XRP/USDT:USDT"
    candles = read_candles(tmp_path, EX, xrp, "5m")
    # README: 1,999 5m candles, 2021-11-15 00:00 -> 2021-11-21 22:30, no gaps; first bar from the file.
    assert candles.height == 1999
    assert candles["ts"][0] == 1_636_934_400_000 and candles["ts"][-1] == 1_637_533_800_000
    assert candles.row(0) == (1_636_934_400_000, 1.1893, 1.1954, 1.1891, 1.1941, 9289043.5)
    mark = read_candles(tmp_path, EX, xrp, "1h", kind="mark")
    assert mark.height == 100 and np.isnan(mark["volume"].to_numpy()).all()
    fund = read_funding(tmp_path, EX, xrp)
    assert fund.height == 91
    assert (fund["ts"].to_numpy() % HOUR == 0).all()
    extreme = fund.filter(fund["ts"] == 1_638_604_800_000)  # 2021-12-04 08:00 UTC
    assert extreme["rate"].to_list() == pytest.approx([-0.00219334], abs=1e-12)  # the -0.219 % print
    # Expected jitter count, straight from the raw file: rows whose time is not a whole second.
    raw_ms = feather.read_table(source / "XRP_USDT_USDT-8h-funding_rate.feather")["date"].to_numpy()
    jittered = int((raw_ms.astype("datetime64[ms]").astype(np.int64) % 1000 != 0).sum())
    assert jittered > 0 and summary.report.funding_normalised == jittered
    assert {(s.kind, s.timeframe) for s in summary.series} == {
        ("trade", "5m"),
        ("mark", "1h"),
        ("funding", None),
    }


# ----------------------------------------------------------------------------------------------------
# Archives and files that used to crash the import, and imports that would change stored rows
# ----------------------------------------------------------------------------------------------------


def _patch_zip(
    path: Path, *, method: int | None = None, flags: int | None = None, flip: bool = False
) -> Path:
    """Rewrite a zip's local and central headers (compression method, flag bits) or scramble its data."""
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")
    if method is not None:
        data[8:10] = method.to_bytes(2, "little")
        data[central + 10 : central + 12] = method.to_bytes(2, "little")
    if flags is not None:
        data[6:8] = flags.to_bytes(2, "little")
        data[central + 8 : central + 10] = flags.to_bytes(2, "little")
    if flip:
        name_len = int.from_bytes(data[26:28], "little")
        start = 30 + name_len  # the compressed member data begins after the local header
        for i in range(start, start + 40):
            data[i] ^= 0x55
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda p: _patch_zip(p, method=99), ["compression method 99", "deflate (8) or none (0)"]),
        (lambda p: _patch_zip(p, method=14), ["compression method 14"]),  # LZMA, which zipfile could read
        (lambda p: _patch_zip(p, flags=1), ["is encrypted"]),
        (lambda p: _patch_zip(p, flip=True), ["the archive is damaged and cannot be unpacked"]),
        (lambda p: p.write_bytes(p.read_bytes()[:-30]), ["not a valid zip archive"]),
    ],
    ids=["method-99", "method-lzma", "encrypted", "corrupt-deflate", "truncated"],
)
def test_unusable_archives_are_one_line_and_nothing_is_written(tmp_path: Path, damage, words) -> None:
    archive = write_zip(tmp_path / "in" / "BTCUSDT-1m-2024-01.zip", [KLINE_HEADER, *kline_rows(200)])
    damage(archive)
    with pytest.raises(GridctlError) as err:
        import_path(archive, tmp_path / "store")
    message = str(err.value)
    assert message.startswith(f"{archive}: ") and "\n" not in message
    assert all(w in message for w in words), message
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("rows", [201, 400, 5_000])
def test_an_archive_unpacking_beyond_the_bound_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """A zip bomb (2 GB of one repeated byte) was unpacked whole for a minute before its columns were
    refused. The bound is lowered to the size of 200 rows here: one row more is refused."""
    import gridctl.data.importers as importers

    lines = [KLINE_HEADER, *kline_rows(rows)]
    monkeypatch.setattr(importers, "MAX_ARCHIVE_CSV_BYTES", len("\n".join(lines[:201])) + 1)
    archive = write_zip(tmp_path / "in" / "BTCUSDT-1m-2024-01.zip", lines)
    with pytest.raises(GridctlError) as err:
        import_path(archive, tmp_path / "store")
    assert str(err.value).startswith(f"{archive}: BTCUSDT-1m-2024-01.csv unpacks to more than ")
    assert not (tmp_path / "store").exists()
    fits = write_zip(tmp_path / "ok" / "BTCUSDT-1m-2024-01.zip", lines[:200])
    assert import_path(fits, tmp_path / "store").series[0].rows == 199


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("BTCUSDT-1m-2024-01.csv", KLINE_HEADER + "\n"),
        ("BTCUSDT-fundingRate-2024-01.csv", "calc_time,funding_interval_hours,last_funding_rate\n"),
    ],
)
def test_a_header_only_csv_is_refused(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(GridctlError, match=rf"{path}: no data rows \(only a header line\)"):
        import_path(path, tmp_path / "store")


def _feather(path: Path, **columns: object) -> Path:
    import pyarrow as pa

    base = {
        "date": pa.array(
            np.array([JAN1 + i * MIN for i in range(3)], dtype="datetime64[ms]"), pa.timestamp("ms", "UTC")
        ),
        "open": [1.0] * 3,
        "high": [1.0] * 3,
        "low": [1.0] * 3,
        "close": [1.0] * 3,
        "volume": [1.0] * 3,
    }
    feather.write_feather(pa.table(base | columns), path)
    return path


@pytest.mark.parametrize("column", ["open", "high", "low", "close", "volume"])
def test_a_string_column_in_a_feather_file_is_named(tmp_path: Path, column: str) -> None:
    path = _feather(tmp_path / "BTC_USDT_USDT-1m-futures.feather", **{column: ["a", "b", "c"]})
    with pytest.raises(GridctlError, match=rf"{path}: column '{column}' must be numeric, found String"):
        import_path(path, tmp_path / "store")


def test_importing_other_values_for_stored_rows_needs_force(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = write_zip(tmp_path / "a" / "BTCUSDT-1m-2024-01.zip", [KLINE_HEADER, *kline_rows(5)])
    import_path(first, store)
    again = import_path(first, store)  # the same rows again: no change, no refusal
    assert again.replaced == []
    changed = kline_rows(5)
    changed[3] = changed[3].replace("42004.0", "42004.5", 1)  # bar 3's close (42003 + 1) differs
    second = write_zip(tmp_path / "b" / "BTCUSDT-1m-2024-01.zip", [KLINE_HEADER, *changed])
    before = read_candles(store, EX, BTC, "1m")
    with pytest.raises(GridctlError) as err:
        import_path(second, store)
    message = str(err.value)
    assert (
        "1 stored row(s) would change, first at 2024-01-01 00:03:00 UTC (close 42004 stored, 42004.5 new)"
        in message
    )
    assert "pass --force" in message and "Nothing was written" in message
    assert read_candles(store, EX, BTC, "1m").equals(before)
    summary = import_path(second, store, force=True)
    assert [(c.rows, c.first_ts) for c in summary.replaced] == [(1, JAN1 + 3 * MIN)]
    assert "replaced " in summary.describe() and "1 stored row(s) changed" in summary.describe()
    assert read_candles(store, EX, BTC, "1m")["close"][3] == 42004.5


def test_funding_with_other_rates_for_stored_settlements_needs_force(tmp_path: Path) -> None:
    store = tmp_path / "store"
    header = "calc_time,funding_interval_hours,last_funding_rate"
    rows = [f"{JAN1 + i * 8 * HOUR},8,0.00010000" for i in range(3)]
    import_path(write_zip(tmp_path / "a" / "BTCUSDT-fundingRate-2024-01.zip", [header, *rows]), store)
    rows[1] = rows[1].replace("0.00010000", "0.00020000")
    archive = write_zip(tmp_path / "b" / "BTCUSDT-fundingRate-2024-01.zip", [header, *rows])
    with pytest.raises(
        GridctlError, match=r"2024\.parquet: 1 stored row\(s\) would change.*rate 0\.0001 stored, 0\.0002 new"
    ):
        import_path(archive, store)
    assert read_funding(store, EX, BTC)["rate"].to_list() == [0.0001] * 3


def test_a_fifo_is_refused_as_a_file_and_skipped_in_a_folder(tmp_path: Path) -> None:
    """Reading a FIFO blocks until a writer appears: it is named as a FIFO, never opened (alarm: 20 s)."""
    import os
    import signal

    folder = tmp_path / "in"
    write_zip(folder / "BTCUSDT-1m-2024-01.zip", [KLINE_HEADER, *kline_rows(3)])
    fifo = folder / "BTCUSDT-1m-2024-02.zip"
    os.mkfifo(fifo)
    signal.alarm(20)
    try:
        with pytest.raises(
            GridctlError, match=rf"import {fifo}: is a FIFO \(named pipe\), not a regular file"
        ):
            import_path(fifo, tmp_path / "store")
        summary = import_path(folder, tmp_path / "store")
    finally:
        signal.alarm(0)
    assert summary.skipped == [(str(fifo), "is a FIFO (named pipe), not a regular file")]
    assert summary.series[0].rows == 3
