"""`data.download.download` through the real ccxt client against the Binance USD-M emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.data import store
from gridctl.data.download import FetchOptions, OptionError, download

from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
from emulator.datasets import funding_settlements, mark_from_trade, random_walk_bars
from emulator.harness import ccxt_client_for, temp_files

EX, SYM = "binanceusdm", "BTC/USDT:USDT"
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
JAN30 = 1_706_572_800_000  # 2024-01-30 00:00 UTC
FEB1 = 1_706_745_600_000  # 2024-02-01 00:00 UTC
KLINES, MARK, FUNDING = "/fapi/v1/klines", "/fapi/v1/markPriceKlines", "/fapi/v1/fundingRate"


class Sleeps(list):
    """Records the waits the downloader asks for instead of sleeping (no test waits for real)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def emu() -> Iterator[BinanceUsdmEmulator]:
    with BinanceUsdmEmulator(EmulatorState()) as server:
        yield server


SERVED_BARS = 8 * 1440  # every generated dataset: 8 days of 1m bars from its start


def load_generated(emu: BinanceUsdmEmulator, start: int, n_closed: int) -> pl.DataFrame:
    """Serve 8 days of 1m bars (trade, mark) and funding from ``start``; return the first ``n_closed``.

    The clock stands 30 s into bar ``n_closed``: that bar is still open and later ones do not exist yet.
    Calling it again with a larger ``n_closed`` only moves the clock (same data, same seed).
    """
    bars = random_walk_bars(start, SERVED_BARS, MIN)
    emu.state.now_ms = start + n_closed * MIN + 30_000
    emu.state.set_klines("BTCUSDT", "1m", bars)
    emu.state.set_klines("BTCUSDT", "1m", mark_from_trade(bars), kind="mark")
    emu.state.set_funding("BTCUSDT", funding_settlements(start, start + SERVED_BARS * MIN))
    return bars.head(n_closed)


def run(emu: BinanceUsdmEmulator, data_dir: Path, start: int, end: int, **kw: object):
    kw.setdefault("client", ccxt_client_for(emu))
    kw.setdefault("progress", False)
    return download(EX, SYM, "1m", start, end, data_dir, FetchOptions(**kw))  # type: ignore[arg-type]


def starts(emu: BinanceUsdmEmulator, path: str) -> list[int]:
    return [int(r.query["startTime"]) for r in emu.state.requests(path) if r.status == 200]


def test_real_data_slice_round_trips_exactly(
    emu: BinanceUsdmEmulator, real_data: Path, tmp_path: Path
) -> None:
    """Real BTCUSDT 1m bars and real funding (with the exchange's ms jitter) end up in the store unchanged."""
    start, end = 1_748_649_600_000, 1_748_822_400_000  # 2025-05-31 00:00 .. 2025-06-02 00:00 UTC
    bars = pl.read_parquet(real_data / "binanceusdm_BTCUSDT_1m_2025-05_2025-06.parquet")
    source = bars.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    funding = pl.read_parquet(real_data / "binanceusdm_BTCUSDT_funding_2019-09_2025-12.parquet")
    funding = funding.filter((pl.col("ts") >= start - DAY) & (pl.col("ts") < end + DAY))
    emu.state.now_ms = end + 10 * DAY
    emu.state.set_klines(
        "BTCUSDT", "1m", bars.filter((pl.col("ts") >= start - DAY) & (pl.col("ts") < end + DAY))
    )
    emu.state.set_funding("BTCUSDT", funding.rename({"funding_time_raw": "funding_time"}))

    summary = run(emu, tmp_path, start, end, kinds=("candles", "funding"))

    got = store.read_candles(tmp_path, EX, SYM, "1m")
    assert source.height == 2 * 1440  # two whole days of minutes, no gaps in this slice
    assert got.equals(source)
    # Settlements 00:00, 08:00, 16:00 on both days = 6; raw times like 08:00:00.002 land on the hour.
    want = funding.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).select("ts", "rate", "mark_price")
    assert want.height == 6
    assert store.read_funding(tmp_path, EX, SYM).equals(want)
    raw_off = funding.filter(pl.col("ts").is_in(want["ts"].implode()))
    assert summary.kinds["funding"].funding_snapped == int(
        (raw_off["funding_time_raw"] != raw_off["ts"]).sum()
    )
    assert {Path(f).name for f in summary.kinds["candles"].files} == {"2025-05.parquet", "2025-06.parquet"}


def test_candles_mark_funding_content_and_open_bar_dropped(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 4320)  # 3 days; the clock sits inside bar 4320
    summary = run(emu, tmp_path, JAN30, JAN30 + 10 * DAY)

    trade = store.read_candles(tmp_path, EX, SYM, "1m")
    assert trade.equals(closed)  # bar 4320 (still open) is not stored
    mark = store.read_candles(tmp_path, EX, SYM, "1m", kind="mark")
    want_mark = mark_from_trade(closed)
    assert mark.select("ts", "open", "high", "low", "close").equals(want_mark.drop("volume"))
    assert mark["volume"].is_nan().all()  # mark klines carry no volume
    # Funding: settlements every 8 h from JAN30 00:00 through the clock (3 days + 30 s) = 3*3 + 1 = 10.
    funding = store.read_funding(tmp_path, EX, SYM)
    expected = funding_settlements(JAN30, JAN30 + SERVED_BARS * MIN).head(10)
    assert funding["ts"].to_list() == [JAN30 + k * 8 * HOUR for k in range(10)]
    assert funding.equals(expected.select("ts", "rate", "mark_price"))
    assert summary.kinds["candles"].rows == 4320 and summary.kinds["funding"].rows == 10
    assert summary.kinds["funding"].funding_snapped == 10  # every generated settlement carries 1..47 ms


def test_pagination_follows_last_bar(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 4320)
    run(emu, tmp_path, JAN30, JAN30 + 3 * DAY, kinds=("candles",))
    # 4320 bars at 1000 per page: 4 full pages and one of 320, each starting one bar after the last.
    assert starts(emu, KLINES) == [JAN30 + k * 1000 * MIN for k in range(5)]
    assert {r.query["limit"] for r in emu.state.requests(KLINES)} == {"1000"}
    assert {r.query["endTime"] for r in emu.state.requests(KLINES)} == {str(JAN30 + 3 * DAY - 1)}
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)
    # Months are separate partitions: Jan 30-31 (2880 bars) and Feb 1 (1440 bars).
    heights = [pl.read_parquet(p).height for p in store.candle_partitions(tmp_path, EX, SYM, "1m")]
    assert heights == [2880, 1440]


def test_rerun_fetches_nothing_and_extension_fetches_only_new(
    emu: BinanceUsdmEmulator, tmp_path: Path
) -> None:
    load_generated(emu, JAN30, 3000)
    run(emu, tmp_path, JAN30, JAN30 + 5 * DAY)
    emu.state.clear_log()
    summary = run(emu, tmp_path, JAN30, JAN30 + 5 * DAY)
    # A fresh client loads markets and reads the clock; not one data request is sent.
    assert [r.path for r in emu.state.requests()] == ["/fapi/v1/exchangeInfo", "/fapi/v1/time"]
    assert all(not k.missing_ranges and k.rows == 0 for k in summary.kinds.values())

    # Time passes: 1500 more bars close. Only they are fetched, from the first bar not yet stored.
    closed = load_generated(emu, JAN30, 4500)
    emu.state.clear_log()
    summary = run(emu, tmp_path, JAN30, JAN30 + 5 * DAY)
    assert starts(emu, KLINES) == [JAN30 + 3000 * MIN, JAN30 + 4000 * MIN]
    assert starts(emu, MARK) == [JAN30 + 3000 * MIN, JAN30 + 4000 * MIN]
    assert summary.kinds["candles"].rows == 1500
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)


def test_hole_in_the_middle_is_the_only_thing_fetched(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 3 * 1440)
    run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("candles",))
    run(emu, tmp_path, JAN30 + 2 * DAY, JAN30 + 3 * DAY, kinds=("candles",))
    emu.state.clear_log()
    summary = run(emu, tmp_path, JAN30, JAN30 + 3 * DAY, kinds=("candles",))
    assert summary.kinds["candles"].missing_ranges == [(JAN30 + DAY, JAN30 + 2 * DAY)]
    # The 1440-bar hole: pages from 00:00 and from 00:00 + 1000 bars, both bounded by the hole's end.
    assert starts(emu, KLINES) == [JAN30 + DAY, JAN30 + DAY + 1000 * MIN]
    assert {r.query["endTime"] for r in emu.state.requests(KLINES)} == {str(JAN30 + 2 * DAY - 1)}
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)


def test_resume_after_retries_run_out_mid_way(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 4320)
    # Pages start at JAN30 + k*1000 min; page 3 (k=3) starts 2024-02-01 02:00, the first in February.
    # Pages 0..2 succeed, then page 3 fails 1 + 2 times: more than max_retries=2 allows.
    emu.state.inject("status", path=KLINES, status=503, skip=3, times=3)
    with pytest.raises(GridctlError) as err:
        run(emu, tmp_path, JAN30, JAN30 + 3 * DAY, kinds=("candles",), max_retries=2, sleep=Sleeps())
    message = str(err.value)
    assert SYM in message and "2024-02-01 02:00:00 UTC" in message and "after 2 retries" in message
    # January (complete) was written; the February rows of page 2 were still buffered and are not.
    assert [p.name for p in store.candle_partitions(tmp_path, EX, SYM, "1m")] == ["2024-01.parquet"]
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed.filter(pl.col("ts") < FEB1))
    assert temp_files(tmp_path) == []

    emu.state.clear_log()
    run(emu, tmp_path, JAN30, JAN30 + 3 * DAY, kinds=("candles",))
    assert starts(emu, KLINES) == [FEB1, FEB1 + 1000 * MIN]  # 1440 February bars: 2 pages
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)


def test_resume_after_keyboard_interrupt(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 4320)
    client = ccxt_client_for(emu)
    real_fetch = client.fetch_ohlcv
    calls = []

    def interrupted(*args: object, **kwargs: object) -> list:
        calls.append(kwargs["since"])
        if len(calls) == 4:
            raise KeyboardInterrupt  # the user presses Ctrl-C while page 3 is in flight
        return real_fetch(*args, **kwargs)

    client.fetch_ohlcv = interrupted
    with pytest.raises(KeyboardInterrupt):
        run(emu, tmp_path, JAN30, JAN30 + 3 * DAY, client=client, kinds=("candles",))
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed.filter(pl.col("ts") < FEB1))
    assert temp_files(tmp_path) == []
    emu.state.clear_log()
    run(emu, tmp_path, JAN30, JAN30 + 3 * DAY, kinds=("candles",))
    assert starts(emu, KLINES) == [FEB1, FEB1 + 1000 * MIN]
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)


@pytest.mark.parametrize("status", [429, 418])
def test_rate_limit_retry_after_is_honoured(emu: BinanceUsdmEmulator, tmp_path: Path, status: int) -> None:
    closed = load_generated(emu, JAN30, 1500)
    emu.state.inject("status", path=KLINES, status=status, retry_after=7, skip=1)
    sleeps = Sleeps()
    summary = run(emu, tmp_path, JAN30, JAN30 + 2 * DAY, kinds=("candles",), sleep=sleeps, backoff_s=0.5)
    assert sleeps == [7.0]  # the server's Retry-After, not the 0.5 s backoff
    log = emu.state.requests(KLINES)
    assert [(r.status, int(r.query["startTime"])) for r in log] == [
        (200, JAN30),
        (status, JAN30 + 1000 * MIN),
        (200, JAN30 + 1000 * MIN),  # the same page again
    ]
    assert summary.kinds["candles"].retries == 1 and summary.kinds["candles"].requests == 3
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)


def test_retry_after_beyond_limit_fails_without_waiting(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    load_generated(emu, JAN30, 100)
    emu.state.inject("status", path=KLINES, status=418, retry_after=7200)  # a 2 h IP ban
    sleeps = Sleeps()
    with pytest.raises(GridctlError, match="wait 7200 s"):
        run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("candles",), sleep=sleeps)
    assert sleeps == []


def test_server_errors_back_off_exponentially(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 500)
    emu.state.inject("status", path=KLINES, status=500)  # JSON body {"code": -1001, ...}
    emu.state.inject("status", path=KLINES, status=503, times=2)  # an HTML gateway page
    sleeps = Sleeps()
    run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("candles",), sleep=sleeps, backoff_s=0.5)
    assert sleeps == [0.5, 1.0, 2.0]  # 0.5 * 2**attempt for attempts 0, 1, 2
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)


def test_retry_after_on_503_is_honoured(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    load_generated(emu, JAN30, 100)
    emu.state.inject("status", path=FUNDING, status=503, retry_after=3)
    sleeps = Sleeps()
    run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("funding",), sleep=sleeps, backoff_s=0.5)
    assert sleeps == [3.0]


def test_backoff_is_capped(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    load_generated(emu, JAN30, 100)
    emu.state.inject("status", path=KLINES, status=502, times=3)
    sleeps = Sleeps()
    run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("candles",), sleep=sleeps, backoff_s=40.0)
    assert sleeps == [40.0, 60.0, 60.0]  # 40, 80 -> 60, 160 -> 60: never above MAX_BACKOFF_S = 60


def test_timeout_is_retried(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 500)
    emu.state.inject("timeout", path=MARK, delay_s=1.5)  # longer than the client's 0.3 s timeout
    sleeps = Sleeps()
    summary = run(
        emu, tmp_path, JAN30, JAN30 + DAY, kinds=("mark",), client=ccxt_client_for(emu, 300), sleep=sleeps
    )
    assert summary.kinds["mark"].retries == 1 and len(sleeps) == 1
    got = store.read_candles(tmp_path, EX, SYM, "1m", kind="mark")
    assert got.drop("volume").equals(mark_from_trade(closed).drop("volume"))


def test_short_pages_do_not_end_the_download(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 2000)
    emu.state.inject("short", path=KLINES, rows=7, times=2)
    run(emu, tmp_path, JAN30, JAN30 + 2 * DAY, kinds=("candles",))
    # Two 7-bar pages, then full pages from bar 14: 1000 + 986 bars.
    assert starts(emu, KLINES) == [JAN30, JAN30 + 7 * MIN, JAN30 + 14 * MIN, JAN30 + 1014 * MIN]
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)


def test_short_funding_pages_do_not_end_the_download(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    load_generated(emu, JAN30, 4320)
    emu.state.inject("short", path=FUNDING, rows=4)
    summary = run(emu, tmp_path, JAN30, JAN30 + 10 * DAY, kinds=("funding",))
    assert summary.kinds["funding"].rows == 10  # 4 from the short page + 6 from the next
    assert len(emu.state.requests(FUNDING)) == 3  # short page, the rest, the empty page that ends it


def test_bad_json_is_retried(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    closed = load_generated(emu, JAN30, 1440)
    emu.state.inject("bad_json", path=KLINES, skip=1)
    emu.state.inject("bad_json", path=FUNDING)
    summary = run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("candles", "funding"), sleep=Sleeps())
    assert summary.kinds["candles"].retries == 1 and summary.kinds["funding"].retries == 1
    assert store.read_candles(tmp_path, EX, SYM, "1m").equals(closed)
    assert store.read_funding(tmp_path, EX, SYM).height == 3  # 00:00, 08:00, 16:00


def test_persistent_bad_json_fails_clearly_and_writes_nothing(
    emu: BinanceUsdmEmulator, tmp_path: Path
) -> None:
    load_generated(emu, JAN30, 100)
    emu.state.inject("bad_json", path=KLINES, times=4)
    with pytest.raises(GridctlError) as err:
        run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("candles",), max_retries=3, sleep=Sleeps())
    message = str(err.value)
    assert "not valid JSON" in message and SYM in message and "2024-01-30 00:00:00 UTC" in message
    assert len(emu.state.requests(KLINES)) == 4  # 1 try + 3 retries
    assert store.candle_partitions(tmp_path, EX, SYM, "1m") == [] and temp_files(tmp_path) == []


def test_invalid_bars_are_never_stored(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    bars = random_walk_bars(JAN30, 200, MIN)
    # Bar 150's high below its close: impossible OHLC. Nothing of that page may reach the store.
    broken = bars.with_columns(
        pl.when(pl.col("ts") == JAN30 + 150 * MIN)
        .then(pl.col("close") - 1)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    emu.state.now_ms = JAN30 + DAY
    emu.state.set_klines("BTCUSDT", "1m", broken)
    with pytest.raises(GridctlError, match="inconsistent OHLC") as err:
        run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("candles",), max_retries=1, sleep=Sleeps())
    assert "2024-01-30 02:30:00 UTC" in str(err.value)  # bar 150 = 150 minutes after midnight
    assert store.candle_partitions(tmp_path, EX, SYM, "1m") == []


def test_funding_rerun_and_extension_follow_the_schedule(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    load_generated(emu, JAN30, 3 * 1440)
    run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("funding",))  # stores Jan 30 00:00, 08:00, 16:00
    emu.state.clear_log()
    summary = run(emu, tmp_path, JAN30, JAN30 + 3 * DAY, kinds=("funding",))
    # Nothing can be missing before Jan 30 16:00 + 8 h, so the request starts at Jan 31 00:00 (less
    # the 1 s pad for early-stamped settlements) and ends at the clock.
    assert summary.kinds["funding"].missing_ranges == [(JAN30 + DAY, JAN30 + 3 * DAY)]
    assert starts(emu, FUNDING)[0] == JAN30 + DAY - 1000
    assert summary.kinds["funding"].rows == 6  # Jan 31 and Feb 1, three each


def test_funding_on_a_4h_schedule_is_complete_after_one_run(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    emu.state.now_ms = JAN30 + 2 * DAY
    emu.state.set_funding("BTCUSDT", funding_settlements(JAN30, JAN30 + 3 * DAY, interval_ms=4 * HOUR))
    summary = run(emu, tmp_path, JAN30, JAN30 + 2 * DAY, kinds=("funding",))
    assert summary.kinds["funding"].rows == 12  # 2 days x 6 settlements
    emu.state.clear_log()
    run(emu, tmp_path, JAN30, JAN30 + 2 * DAY, kinds=("funding",))
    assert emu.state.requests(FUNDING) == []


def test_funding_without_mark_price_is_nan(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    settlements = funding_settlements(JAN30, JAN30 + DAY)
    emu.state.now_ms = JAN30 + DAY
    emu.state.set_funding("BTCUSDT", settlements.with_columns(pl.lit(None, pl.Float64).alias("mark_price")))
    run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("funding",))
    got = store.read_funding(tmp_path, EX, SYM)
    assert got["rate"].to_list() == settlements["rate"].to_list() and got["mark_price"].is_nan().all()


def test_bad_arguments_name_the_option(emu: BinanceUsdmEmulator, tmp_path: Path) -> None:
    load_generated(emu, JAN30, 10)
    cases = [
        ({"symbol": "DOGE/EUR:EUR"}, "symbol"),
        ({"timeframe": "7m"}, "timeframe"),
        ({"kinds": ("candles", "trades")}, "kinds"),
        ({"end": JAN30}, "range"),
    ]
    for change, option in cases:
        args = {"symbol": SYM, "timeframe": "1m", "end": JAN30 + DAY, "kinds": ("candles",)} | change
        with pytest.raises(OptionError) as err:
            download(
                EX,
                args["symbol"],
                args["timeframe"],
                JAN30,
                args["end"],
                tmp_path,
                FetchOptions(kinds=args["kinds"], progress=False, client=ccxt_client_for(emu)),
            )
        assert err.value.option == option
    with pytest.raises(OptionError) as err:
        download("nosuchexchange", SYM, "1m", JAN30, JAN30 + DAY, tmp_path, FetchOptions(progress=False))
    assert err.value.option == "exchange"


def test_progress_bar_runs(
    emu: BinanceUsdmEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_generated(emu, JAN30, 1200)
    run(emu, tmp_path, JAN30, JAN30 + DAY, kinds=("candles", "funding"), progress=True)
    err = capsys.readouterr().err
    assert "candles" in err and "1200/1200" in err and "funding" in err
    assert np.all(store.read_candles(tmp_path, EX, SYM, "1m")["ts"].to_numpy() % MIN == 0)
