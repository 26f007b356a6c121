"""The Binance USD-M emulator answers like Binance: parameter rules, error bodies, faults, request log."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
from emulator.datasets import funding_settlements, random_walk_bars
from emulator.harness import ccxt_client_for

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
N_BARS = 3_000


@pytest.fixture
def emu() -> Iterator[BinanceUsdmEmulator]:
    # Clock 30 s into bar N_BARS - 1: that bar is the still-open one, bars after it do not exist yet.
    state = EmulatorState(now_ms=T0 + (N_BARS - 1) * MIN + 30_000)
    state.set_klines("BTCUSDT", "1m", random_walk_bars(T0, N_BARS + 50, MIN))
    state.set_funding("BTCUSDT", funding_settlements(T0, T0 + 30 * 86_400_000))
    with BinanceUsdmEmulator(state) as server:
        yield server


def get(emu: BinanceUsdmEmulator, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], object]:
    """(status, headers, parsed JSON body or raw text) of one GET."""
    try:
        with urllib.request.urlopen(emu.url + path, timeout=timeout) as resp:
            status, headers, raw = resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, dict(err.headers), err.read().decode()
    try:
        return status, headers, json.loads(raw)
    except json.JSONDecodeError:
        return status, headers, raw


def test_klines_limit_rules(emu: BinanceUsdmEmulator) -> None:
    # Binance: limit defaults to 500 and may be at most 1500; more is error -1130.
    status, _, rows = get(emu, f"/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={T0}")
    assert status == 200 and len(rows) == 500
    status, _, rows = get(emu, f"/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={T0}&limit=1500")
    assert status == 200 and len(rows) == 1500
    status, _, body = get(emu, f"/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={T0}&limit=1501")
    assert status == 400 and body["code"] == -1130


def test_klines_window_semantics(emu: BinanceUsdmEmulator) -> None:
    # startTime and endTime both inclusive on the open time; ascending from startTime.
    q = f"symbol=BTCUSDT&interval=1m&startTime={T0 + 10 * MIN}&endTime={T0 + 14 * MIN}"
    _, _, rows = get(emu, "/fapi/v1/klines?" + q)
    assert [r[0] for r in rows] == [T0 + k * MIN for k in range(10, 15)]
    # Row layout: open time, o, h, l, c, volume as strings, close time = open + 1m - 1 ms.
    assert rows[0][6] == T0 + 11 * MIN - 1 and isinstance(rows[0][1], str)
    # Only endTime: the `limit` most recent bars ending there.
    _, _, rows = get(emu, f"/fapi/v1/klines?symbol=BTCUSDT&interval=1m&endTime={T0 + 9 * MIN}&limit=3")
    assert [r[0] for r in rows] == [T0 + 7 * MIN, T0 + 8 * MIN, T0 + 9 * MIN]
    # Neither: the most recent bars up to the clock; the dataset's 50 future bars are never served.
    _, _, rows = get(emu, "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=2")
    assert [r[0] for r in rows] == [T0 + (N_BARS - 2) * MIN, T0 + (N_BARS - 1) * MIN]
    _, _, rows = get(emu, f"/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={T0 + N_BARS * MIN}")
    assert rows == []


def test_bad_parameters_get_binance_error_codes(emu: BinanceUsdmEmulator) -> None:
    assert get(emu, "/fapi/v1/klines?symbol=XRPDOGE&interval=1m")[2]["code"] == -1121
    assert get(emu, "/fapi/v1/klines?symbol=BTCUSDT&interval=7m")[2]["code"] == -1120
    assert get(emu, "/fapi/v1/klines?interval=1m")[2]["code"] == -1102
    assert get(emu, "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime=abc")[2]["code"] == -1100
    status, _, body = get(emu, f"/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={T0 + 1}&endTime={T0}")
    assert status == 400 and body["code"] == -1023
    assert get(emu, "/fapi/v1/nothingHere")[0] == 404


def test_funding_rate_limits_and_payload(emu: BinanceUsdmEmulator) -> None:
    # fundingRate: default limit 100, max 1000; 30 days x 3 settlements = 90 rows exist.
    status, _, rows = get(emu, f"/fapi/v1/fundingRate?symbol=BTCUSDT&startTime={T0}")
    assert status == 200 and len(rows) == 90
    _, _, rows = get(emu, f"/fapi/v1/fundingRate?symbol=BTCUSDT&startTime={T0}&limit=4")
    # Settlements every 8 h carrying 1..47 ms of jitter, with the markPrice field.
    assert [r["fundingTime"] // 3_600_000 * 3_600_000 for r in rows] == [
        T0 + k * 8 * 3_600_000 for k in range(4)
    ]
    assert all(0 < r["fundingTime"] % 3_600_000 < 48 for r in rows)
    assert set(rows[0]) == {"symbol", "fundingTime", "fundingRate", "markPrice"}
    assert get(emu, "/fapi/v1/fundingRate?symbol=BTCUSDT&limit=1001")[2]["code"] == -1130


def test_ccxt_parses_exchange_info_filters(emu: BinanceUsdmEmulator) -> None:
    client = ccxt_client_for(emu)
    client.load_markets()
    btc, eth = client.market("BTC/USDT:USDT"), client.market("ETH/USDT:USDT")
    assert btc["swap"] and btc["linear"] and btc["settle"] == "USDT"
    assert (btc["precision"]["price"], btc["precision"]["amount"], btc["limits"]["cost"]["min"]) == (
        0.1,
        0.001,
        100,
    )
    assert (eth["precision"]["price"], eth["limits"]["cost"]["min"]) == (0.01, 20)
    assert client.fetch_time() == emu.state.now_ms
    # load_markets with fetchCurrencies off touches exchangeInfo only (no spot or sapi endpoints).
    assert [r.path for r in emu.state.requests()] == ["/fapi/v1/exchangeInfo", "/fapi/v1/time"]


def test_status_fault_with_retry_after_then_normal(emu: BinanceUsdmEmulator) -> None:
    emu.state.inject("status", path="/fapi/v1/klines", status=429, retry_after=7)
    status, headers, body = get(emu, "/fapi/v1/klines?symbol=BTCUSDT&interval=1m")
    assert status == 429 and headers["Retry-After"] == "7" and body["code"] == -1003
    assert get(emu, "/fapi/v1/klines?symbol=BTCUSDT&interval=1m")[0] == 200
    log = emu.state.requests("/fapi/v1/klines")
    assert [(r.status, r.fault) for r in log] == [(429, "status"), (200, None)]


def test_fault_skip_path_and_times(emu: BinanceUsdmEmulator) -> None:
    # skip=1: the first matching request passes, the next two fail; other paths are never affected.
    emu.state.inject("status", path="/fapi/v1/klines", status=503, skip=1, times=2)
    codes = [get(emu, "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1")[0] for _ in range(4)]
    assert get(emu, "/fapi/v1/time")[0] == 200
    assert codes == [200, 503, 503, 200]


def test_short_page_and_bad_json_faults(emu: BinanceUsdmEmulator) -> None:
    emu.state.inject("short", path="/fapi/v1/klines", rows=3)
    rows = get(emu, f"/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={T0}&limit=10")[2]
    assert [r[0] for r in rows] == [T0, T0 + MIN, T0 + 2 * MIN]
    emu.state.inject("bad_json", path="/fapi/v1/fundingRate")
    status, _, body = get(emu, f"/fapi/v1/fundingRate?symbol=BTCUSDT&startTime={T0}")
    assert status == 200 and isinstance(body, str) and body.startswith("[{")  # truncated, unparsable


def test_timeout_fault_outlasts_client_timeout(emu: BinanceUsdmEmulator) -> None:
    emu.state.inject("timeout", path="/fapi/v1/time", delay_s=1.5)
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        get(emu, "/fapi/v1/time", timeout=0.2)
    assert get(emu, "/fapi/v1/time")[0] == 200  # the fault was used up


def test_unknown_fault_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        EmulatorState().inject("gremlins")


def test_a_fault_with_a_method_fires_only_for_that_method() -> None:
    """``method="POST"`` refuses a placement on a path and lets that path's cancels (DELETE) through,
    without using up the fault; a fault without a method fires for any."""
    state = EmulatorState()
    refuse = state.inject("reject", "/fapi/v1/algoOrder", method="POST", code=-2021)
    assert state.take_fault("/fapi/v1/algoOrder", "DELETE") is None
    assert refuse.times == 1
    assert state.take_fault("/fapi/v1/algoOrder", "POST") is refuse
    assert refuse.times == 0 and state.take_fault("/fapi/v1/algoOrder", "POST") is None
    anyway = state.inject("status", "/fapi/v1/order", status=503)
    assert state.take_fault("/fapi/v1/order", "DELETE") is anyway
