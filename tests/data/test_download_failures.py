"""`data.download` when the exchange cannot be reached or refuses: which failures are retried, how long
an unreachable host is tried (a budget measured on an injected clock, never by waiting), and what the
message names. Only the emulator on 127.0.0.1, a closed local port and a reserved `.invalid` name are
contacted; never a real host."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridctl.configs.errors import GridctlError
from gridctl.data.download import MIN_LAST_TRY_S, FetchOptions, OptionError, download, make_client

from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
from emulator.datasets import funding_settlements, mark_from_trade, random_walk_bars
from emulator.harness import ccxt_client_for

EX, SYM = "binanceusdm", "BTC/USDT:USDT"
MIN = 60_000
DAY = 86_400_000
JAN30 = 1_706_572_800_000  # 2024-01-30 00:00 UTC
KLINES, EXCHANGE_INFO = "/fapi/v1/klines", "/fapi/v1/exchangeInfo"


class FakeTime:
    """A clock that only moves when the downloader sleeps; records every wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def emu() -> Iterator[BinanceUsdmEmulator]:
    with BinanceUsdmEmulator(EmulatorState()) as server:
        bars = random_walk_bars(JAN30, 2 * 1440, MIN)
        server.state.now_ms = JAN30 + 1440 * MIN + 30_000
        server.state.set_klines("BTCUSDT", "1m", bars)
        server.state.set_klines("BTCUSDT", "1m", mark_from_trade(bars), kind="mark")
        server.state.set_funding("BTCUSDT", funding_settlements(JAN30, JAN30 + 2 * DAY))
        yield server


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def offline_client(url: str) -> object:
    client = make_client(EX, url)
    client.enableRateLimit = False
    client.timeout = 2_000
    return client


def run(client: object, tmp_path: Path, fake: FakeTime, **kw: object):
    return download(
        EX, SYM, "1m", JAN30, JAN30 + DAY, tmp_path, FetchOptions(kinds=("candles",), progress=False,
        client=client, sleep=fake.sleep, clock=fake.clock, **kw),
    )  # fmt: skip


@pytest.mark.parametrize("status", [400, 401, 403, 404, 451])
def test_a_4xx_answer_is_not_retried(emu: BinanceUsdmEmulator, tmp_path: Path, status: int) -> None:
    emu.state.inject("status", path=KLINES, status=status, times=5)
    fake = FakeTime()
    with pytest.raises(GridctlError) as err:
        run(ccxt_client_for(emu), tmp_path, fake)
    assert fake.sleeps == []
    assert [r.status for r in emu.state.requests(KLINES)] == [status]
    message = str(err.value)
    assert f"127.0.0.1:{emu.port}" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status", [418, 429, 500, 502, 503])
def test_rate_limits_and_server_errors_are_retried(
    emu: BinanceUsdmEmulator, tmp_path: Path, status: int
) -> None:
    emu.state.inject("status", path=KLINES, status=status, times=2)
    fake = FakeTime()
    summary = run(ccxt_client_for(emu), tmp_path, fake, backoff_s=0.5)
    assert summary.kinds["candles"].retries == 2 and summary.kinds["candles"].rows == 1440
    assert [r.status for r in emu.state.requests(KLINES)][:3] == [status, status, 200]


def test_an_unresolvable_host_fails_at_once_naming_it(tmp_path: Path) -> None:
    fake = FakeTime()
    with pytest.raises(GridctlError) as err:
        run(offline_client("http://nonexistent.invalid:8080"), tmp_path, fake)
    message = str(err.value)
    assert "nonexistent.invalid" in message and "resolve" in message and "not retried" in message
    assert fake.sleeps == [] and list(tmp_path.iterdir()) == []


# Backoff 1, 2, 4, 8, ... s, each wait cut so the last try still has MIN_LAST_TRY_S (1 s) of the budget:
# 5 s: waits 1, 2 (t=3), then min(4, 5-3-1)=1 (t=4), then 1 s left: give up.
# 20 s: 1, 2, 4, 8 (t=15), min(16, 4)=4 (t=19), give up. 30 s: 1, 2, 4, 8, min(16, 14)=14 (t=29).
@pytest.mark.parametrize(
    ("timeout_s", "waits"),
    [(5.0, [1.0, 2.0, 1.0]), (20.0, [1.0, 2.0, 4.0, 8.0, 4.0]), (30.0, [1.0, 2.0, 4.0, 8.0, 14.0])],
)
def test_a_refused_connection_is_retried_within_the_budget(
    tmp_path: Path, timeout_s: float, waits: list[float]
) -> None:
    port = closed_port()
    fake = FakeTime()
    with pytest.raises(GridctlError) as err:
        run(offline_client(f"http://127.0.0.1:{port}"), tmp_path, fake, timeout_s=timeout_s, max_retries=50)
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "connection refused" in message
    assert f"timeout {timeout_s:g} s" in message
    assert fake.sleeps == waits
    assert sum(fake.sleeps) <= timeout_s - MIN_LAST_TRY_S  # the clock only moves by the sleeps


def test_no_answer_within_the_budget_is_a_timeout_naming_the_host(
    emu: BinanceUsdmEmulator, tmp_path: Path
) -> None:
    emu.state.inject("timeout", path=EXCHANGE_INFO, delay_s=1.0, times=20)
    with pytest.raises(GridctlError) as err:
        download(
            EX, SYM, "1m", JAN30, JAN30 + DAY, tmp_path, FetchOptions(kinds=("candles",), progress=False,
            client=ccxt_client_for(emu, 200), sleep=lambda _s: None, timeout_s=1.1),
        )  # fmt: skip
    message = str(err.value)
    assert "loading markets" in message and f"127.0.0.1:{emu.port}" in message and "timed out" in message


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_timeout_must_be_positive(tmp_path: Path, bad: float) -> None:
    with pytest.raises(OptionError) as err:
        download(EX, SYM, "1m", JAN30, JAN30 + DAY, tmp_path, FetchOptions(progress=False, timeout_s=bad))
    assert err.value.option == "timeout"


def test_retries_show_on_the_progress_bar(
    emu: BinanceUsdmEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu.state.inject("status", path=KLINES, status=503, times=2)
    fake = FakeTime()
    download(
        EX, SYM, "1m", JAN30, JAN30 + DAY, tmp_path, FetchOptions(kinds=("candles",), progress=True,
        client=ccxt_client_for(emu), sleep=fake.sleep, clock=fake.clock, backoff_s=0.5),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert "2 retries" in err and "1440/1440" in err


def test_cli_download_with_no_network_fails_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gridctl.cli import app

    port = closed_port()
    result = CliRunner().invoke(
        app,
        ["data", "download", "--symbol", SYM, "--start", "2024-01-30", "--end", "2024-01-31",
         "--data-dir", str(tmp_path / "store"), "--api-url", f"http://127.0.0.1:{port}",
         "--timeout", "1.5", "--json"],
    )  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"127.0.0.1:{port}" in lines[0]
    assert "connection refused" in lines[0] and not (tmp_path / "store").exists()


def test_the_cli_defaults_are_the_library_defaults() -> None:
    """`data download` with no --timeout/--kinds passes what FetchOptions() holds, and those are the
    documented defaults (README: --timeout default 20; every kind)."""
    import typer

    from gridctl.cli import app
    from gridctl.data.download_options import FetchOptions

    root = typer.main.get_command(app)
    data = root.get_command(typer.Context(root), "data")  # type: ignore[attr-defined]
    command = data.get_command(typer.Context(data), "download")
    shown = {p.name: p.default for p in command.params}
    assert (shown["timeout"], shown["kinds"]) == (FetchOptions().timeout_s, ",".join(FetchOptions().kinds))
    assert (shown["timeout"], shown["kinds"]) == (20.0, "candles,mark,funding")
