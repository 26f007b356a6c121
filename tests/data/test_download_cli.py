"""`gridctl data download`: the real CLI in a subprocess against the emulator, and option errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.data import store
from gridctl.data.download_cli import parse_date_ms

from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
from emulator.datasets import funding_settlements, mark_from_trade, random_walk_bars

REPO = Path(__file__).resolve().parents[2]
MIN = 60_000
JAN1 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
JAN3 = JAN1 + 2 * 86_400_000


@pytest.fixture
def emu() -> Iterator[BinanceUsdmEmulator]:
    # 2 days of closed 1m bars (2880) plus the open one; the clock is 30 s into 2024-01-03 00:00.
    bars = random_walk_bars(JAN1, 2881, MIN)
    state = EmulatorState(now_ms=JAN3 + 30_000)
    state.set_klines("BTCUSDT", "1m", bars)
    state.set_klines("BTCUSDT", "1m", mark_from_trade(bars), kind="mark")
    state.set_funding("BTCUSDT", funding_settlements(JAN1, JAN3 + MIN))
    with BinanceUsdmEmulator(state) as server:
        yield server


def gridctl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the gridctl CLI as a user would, in a fresh interpreter."""
    cmd = [sys.executable, "-c", "from gridctl.cli import app; app()", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_cli_downloads_into_the_store_and_rerun_is_a_no_op(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    args = [
        "data", "download", "--exchange", "binanceusdm", "--symbol", "BTC/USDT:USDT", "--timeframe", "1m",
        "--start", "2024-01-01", "--end", "2024-02-01", "--data-dir", str(tmp_path),
        "--api-url", emu.url, "--json",
    ]  # fmt: skip
    done = gridctl(*args)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    # Through the clock (2024-01-03 00:00:30): 2880 closed bars of each kind; funding at 00/08/16 on
    # Jan 1 and Jan 2 plus Jan 3 00:00 = 7 settlements.
    assert summary["kinds"]["candles"]["rows"] == 2880 and summary["kinds"]["mark"]["rows"] == 2880
    assert summary["kinds"]["funding"]["rows"] == 7
    assert summary["kinds"]["candles"]["requests"] == 3  # pages of 1000, 1000, 880
    stored = store.read_candles(tmp_path, "binanceusdm", "BTC/USDT:USDT", "1m")
    assert stored.equals(random_walk_bars(JAN1, 2881, MIN).head(2880))

    emu.state.clear_log()
    again = gridctl(*args)
    assert again.returncode == 0, again.stderr
    assert {k: v["rows"] for k, v in json.loads(again.stdout)["kinds"].items()} == {
        "candles": 0,
        "mark": 0,
        "funding": 0,
    }
    assert {r.path for r in emu.state.requests()} == {"/fapi/v1/exchangeInfo", "/fapi/v1/time"}


def test_cli_text_summary_and_kinds(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["data", "download", "--symbol", "BTC/USDT:USDT", "--start", "2024-01-02",
         "--end", "2024-01-02T06:00", "--kinds", "funding", "--data-dir", str(tmp_path),
         "--api-url", emu.url, "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "funding: 1 rows written" in result.output  # only the 2024-01-02 00:00 settlement
    assert store.read_candles(tmp_path, "binanceusdm", "BTC/USDT:USDT", "1m").height == 0
    assert pl.Series(store.read_funding(tmp_path, "binanceusdm", "BTC/USDT:USDT")["ts"]).to_list() == [
        JAN1 + 86_400_000
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--start": "2024-13-01"}, "error: --start: '2024-13-01' is not a date"),
        ({"--end": "soon"}, "error: --end: 'soon' is not a date"),
        ({"--end": "2023-12-01"}, "error: --start/--end: range is empty"),
        (
            {"--symbol": "DOGE/EUR:EUR"},
            "error: --symbol: symbol 'DOGE/EUR:EUR' is not a market on binanceusdm",
        ),
        ({"--timeframe": "7m"}, "error: --timeframe: unknown timeframe '7m'"),
        ({"--kinds": "candles,ticks"}, "error: --kinds:"),
        (
            {"--exchange": "nosuchexchange"},
            "error: --exchange: exchange 'nosuchexchange' is not a ccxt exchange",
        ),
        ({"--api-url": "127.0.0.1"}, "error: --api-url:"),
        ({"--symbol": " , "}, "error: --symbol: no symbol given"),
    ],
)
def test_cli_bad_options_exit_2_naming_the_option(
    emu: BinanceUsdmEmulator, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    options = {
        "--symbol": "BTC/USDT:USDT",
        "--start": "2024-01-01",
        "--end": "2024-01-02",
        "--data-dir": str(tmp_path),
        "--api-url": emu.url,
    } | change
    args = ["data", "download", "--no-progress"] + [x for kv in options.items() for x in kv]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_parse_date_ms_is_utc() -> None:
    # 2024-01-01 is 19723 days after 1970-01-01: 19723 * 86_400_000 = 1_704_067_200_000.
    assert parse_date_ms("2024-01-01", "--start") == 1_704_067_200_000
    assert parse_date_ms("2024-01-01T01:30", "--start") == 1_704_067_200_000 + 90 * MIN
    assert parse_date_ms("2024-01-01T02:00+01:00", "--start") == 1_704_067_200_000 + 60 * MIN


@pytest.fixture
def emu2() -> Iterator[BinanceUsdmEmulator]:
    # BTCUSDT and ETHUSDT, one day of closed 1h bars each (24) plus the open one; clock 30 s past it.
    state = EmulatorState(now_ms=JAN1 + 86_400_000 + 30_000)
    for sid, seed in (("BTCUSDT", 1), ("ETHUSDT", 2)):
        bars = random_walk_bars(JAN1, 25, 60 * MIN, seed=seed)
        state.set_klines(sid, "1h", bars)
        state.set_klines(sid, "1h", mark_from_trade(bars), kind="mark")
        state.set_funding(sid, funding_settlements(JAN1, JAN1 + 86_400_000 + MIN))
    with BinanceUsdmEmulator(state) as server:
        yield server


def test_several_symbols_download_each_with_a_progress_line(
    emu2: BinanceUsdmEmulator, tmp_path: Path
) -> None:
    # A comma list and a repeated option together; ETH named twice is downloaded once.
    result = CliRunner().invoke(
        app,
        ["data", "download", "--symbols", "BTC/USDT:USDT,ETH/USDT:USDT", "--symbol", "ETH/USDT:USDT",
         "--timeframe", "1h", "--start", "2024-01-01", "--end", "2024-01-03", "--data-dir", str(tmp_path),
         "--api-url", emu2.url, "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "[1/2] binanceusdm BTC/USDT:USDT 1h ..." in result.stderr
    assert "[2/2] binanceusdm ETH/USDT:USDT 1h ..." in result.stderr
    assert result.stdout.count("candles: 24 rows written") == 2
    for sid, seed, symbol in (("BTCUSDT", 1, "BTC/USDT:USDT"), ("ETHUSDT", 2, "ETH/USDT:USDT")):
        stored = store.read_candles(tmp_path, "binanceusdm", symbol, "1h")
        assert stored.equals(random_walk_bars(JAN1, 25, 60 * MIN, seed=seed).head(24)), sid
        # Settlements 00/08/16 on Jan 1 and 00:00 Jan 2 (the clock is 00:00:30 Jan 2): 4.
        assert store.read_funding(tmp_path, "binanceusdm", symbol).height == 4
    # Exchange markets were loaded once for both symbols.
    assert len(emu2.state.requests("/fapi/v1/exchangeInfo")) == 1

    again = CliRunner().invoke(
        app,
        ["data", "download", "--symbol", "BTC/USDT:USDT,ETH/USDT:USDT", "--timeframe", "1h",
         "--start", "2024-01-01", "--end", "2024-01-03", "--data-dir", str(tmp_path),
         "--api-url", emu2.url, "--json"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    runs = json.loads(again.stdout)["symbols"]
    assert [r["symbol"] for r in runs] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert all(k["rows"] == 0 for r in runs for k in r["kinds"].values())


def test_bad_symbols_are_named_one_line_each_and_nothing_is_written(
    emu2: BinanceUsdmEmulator, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["data", "download", "--symbol", "BTC/USDT:USDT,DOGE/EUR:EUR", "--symbol", "SOL/USDT:USDT",
         "--timeframe", "1h", "--start", "2024-01-01", "--end", "2024-01-03", "--data-dir", str(tmp_path),
         "--api-url", emu2.url, "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: --symbol: symbol 'DOGE/EUR:EUR' is not a market on binanceusdm (e.g. BTC/USDT:USDT, "
        "ETH/USDT:USDT)",
        "error: --symbol: symbol 'SOL/USDT:USDT' is not a market on binanceusdm (e.g. BTC/USDT:USDT, "
        "ETH/USDT:USDT)",
    ]
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # BTC, the good one, was not fetched either
    assert emu2.state.requests("/fapi/v1/klines") == []
