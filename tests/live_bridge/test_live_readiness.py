"""Readiness: a failed item stops the start, the message lists EVERY failure, exit 2, no order is sent."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.live_bridge import readiness
from gridctl.live_bridge.options import LiveOptions
from gridctl.live_bridge.runner import prepare

from live_helpers import EMU_ENV, emulator_with_sample

runner = CliRunner()


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_every_failure_is_listed_and_exit_is_2(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "GRIDCTL_OPS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    url = _closed_port()
    r = runner.invoke(
        app,
        [
            "live",
            "--live",
            "--testnet",
            "--venue-set",
            f"api.base_url={url}",
            "--set",
            "risk_management.enable_circuit_breaker=false",
            "--journal",
            str(tmp_path / "j.sqlite"),
            "--ops-port",
            "0",
        ],
    )
    assert r.exit_code == 2, r.output
    err = r.output
    assert "not ready to start" in err and "no order was sent" in err
    for item in (
        "[venue kind]",
        "[credentials]",
        "[risk gates]",
        "[ops token]",
        "[exchange reachable, clock skew]",
        "[symbol and filters]",
        "[warm-up / restart]",
        "[gateway]",
    ):
        assert item in err, item
    assert "--testnet given but" in err and "enable_circuit_breaker" in err and "$GRIDCTL_OPS_TOKEN" in err
    # the unreachable exchange is named with its host:port and the cause
    host = url.removeprefix("http://")
    assert f"{host}: connection refused" in err, err


@contextmanager
def _silent_port() -> Iterator[str]:
    """A port that accepts connections (kernel backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


def _prepare_paper(url: str, tmp_path, sleeps: list[float]):  # type: ignore[no-untyped-def]
    venue = load_venue("binance_futures", [f"api.base_url={url}"])
    return prepare(
        load_strategy("default"),
        venue,
        LiveOptions(
            mode="paper",
            symbol="BTC/USDT:USDT",
            journal=tmp_path / "j.sqlite",
            ops_port=0,
            min_balance=0.0,
            max_skew_ms=1000,
        ),
        None,
        feed_kw={"sleep": sleeps.append},
    )


def test_a_strategy_that_does_not_fit_the_venue_is_refused_before_the_run(tmp_path) -> None:
    """``gridctl backtest`` and ``config validate --venue`` refuse a rung below the symbol's minimum
    notional; ``live`` refuses it too, in its "config valid" item, before anything is read or sent: BTC's
    min notional is 100 and ETH's 20 in the shipped snapshot, so 10 USDT rungs fit neither (a basket names
    each symbol). Found walking issue #16: ``live --live --symbols BTC,ETH --set grid.base_notional=10``
    passed every readiness item and ran."""
    url = _closed_port()
    args = ["--api-url", url, "--set", "grid.base_notional=10", "--ops-port", "0"]
    r = runner.invoke(app, ["live", "--paper", *args, "--journal", str(tmp_path / "a.sqlite")])
    assert r.exit_code == 2, r.output
    assert "FAIL config valid: " in r.output
    assert "grid.base_notional 10 USDT is below BTC/USDT:USDT's minimum order notional 100" in r.output
    basket = ["--symbols", "BTC/USDT:USDT,ETH/USDT:USDT"]
    r = runner.invoke(app, ["live", "--paper", *basket, *args, "--journal", str(tmp_path / "b.sqlite")])
    assert r.exit_code == 2, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("FAIL config valid: "))
    assert (
        "BTC/USDT:USDT: grid.base_notional 10 USDT is below BTC/USDT:USDT's minimum order notional 100"
        in line
    )
    assert (
        "; ETH/USDT:USDT: grid.base_notional 10 USDT is below ETH/USDT:USDT's minimum order notional 20"
        in line
    )
    assert "exchange reachable" not in r.output  # refused before any request


@pytest.mark.parametrize("retries", [0, 3])
def test_readiness_uses_its_own_retry_budget_not_the_feeds(
    retries: int, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "READY_RETRIES", retries)
    monkeypatch.setattr(readiness, "READY_RETRY_WAIT_S", 0.25)
    sleeps: list[float] = []
    ready, ctx = _prepare_paper(_closed_port(), tmp_path, sleeps)
    try:
        failures = dict(ready.failures)
        assert "exchange reachable, clock skew" in failures
        assert f"after {retries + 1} failed attempts" in failures["exchange reachable, clock skew"]
        assert sleeps == [0.25] * retries  # the venue file's reconnect_timeout is 60 s x 5 attempts
        # the bar loop gets the venue's policy back
        assert (ctx.feed.max_attempts, ctx.feed.reconnect_wait_s) == (5, 60.0)
    finally:
        ctx.close()


def test_a_silent_exchange_times_out_on_the_readiness_timeout(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "READY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(readiness, "READY_RETRIES", 0)
    with _silent_port() as url:
        ready, ctx = _prepare_paper(url, tmp_path, [])
        try:
            detail = dict(ready.failures)["exchange reachable, clock skew"]
            host = url.removeprefix("http://")
            assert f"{host}: no answer within 0.3 s (timed out)" in detail, detail
            assert ctx.feed.client.timeout == 10_000  # ccxt's default is back for the bar loop
        finally:
            ctx.close()


def test_failures_against_a_reachable_exchange_send_nothing(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    emu = emulator_with_sample(history=10)  # fewer closed bars than the warm-up needs
    try:
        r = runner.invoke(
            app,
            [
                "live",
                "--live",
                "--venue-set",
                f"api.base_url={emu.url}",
                "--venue-set",
                "symbol_rules.BTC/USDT:USDT.min_notional=5",
                "--min-balance",
                "1000000",
                "--journal",
                str(tmp_path / "j.sqlite"),
                "--ops-port",
                "0",
                "--max-clock-skew-ms",
                str(10**13),
            ],
        )
        assert r.exit_code == 2, r.output
        err = r.output
        # the venue's BTC min_notional set to 5 is below the emulator's BTCUSDT filter (100)
        assert "[symbol and filters]" in err and "min_notional 5 is below the exchange's 100" in err
        assert "[balance]" in err and "below --min-balance 1000000" in err
        assert "[warm-up / restart]" in err and "warm-up needs 30 closed bars, the exchange gave 10" in err
        posted = [
            q for q in emu.state.requests() if q.method in ("POST", "DELETE") and "order" in q.path.lower()
        ]
        assert posted == []
    finally:
        emu.stop()


def test_paper_needs_no_credentials_and_clock_skew_is_checked(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("BINANCE_API_KEY", "BINANCE_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    emu = emulator_with_sample()
    try:
        r = runner.invoke(
            app,
            [
                "live",
                "--paper",
                "--venue-set",
                f"api.base_url={emu.url}",
                "--journal",
                str(tmp_path / "j.sqlite"),
                "--ops-port",
                "0",
            ],
        )
        assert r.exit_code == 2, r.output
        # the emulator's clock is at the sample's 2024 bars: far from the local clock
        assert (
            "[exchange reachable, clock skew]" in r.output and "exceeds --max-clock-skew-ms 1000" in r.output
        )
        assert "[credentials]" not in r.output
    finally:
        emu.stop()


def test_poll_period_must_be_positive() -> None:
    r = runner.invoke(app, ["live", "--paper", "--poll-s", "0"])
    assert r.exit_code == 2 and r.output == "error: --poll-s takes a number in 0.01..3600, got 0\n"


def test_every_exchange_filter_is_compared_with_the_venue_file(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emulator advertises Binance's BTCUSDT filters (MARKET_LOT_SIZE 0.001..120, PERCENT_PRICE
    1.05 / 0.95, MAX_NUM_ORDERS 200, MAX_NUM_ALGO_ORDERS 10); a venue file that differs in any of them
    would backtest another exchange: the start is refused, each one named, nothing sent."""
    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    emu = emulator_with_sample()
    try:
        sets = ["market_min_qty=0.002", "market_max_qty=100", "percent_price_up=1.1",
                "percent_price_down=0.9", "max_num_orders=300", "max_num_algo_orders=20"]  # fmt: skip
        args = ["live", "--live", "--venue-set", f"api.base_url={emu.url}", "--ops-port", "0",
                "--journal", str(tmp_path / "j.sqlite"), "--max-clock-skew-ms", str(10**13)]  # fmt: skip
        for s in sets:
            args += ["--venue-set", f"symbol_rules.BTC/USDT:USDT.{s}"]
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        assert "[symbol and filters]" in r.output, r.output
        row = r.output.split("[symbol and filters]")[1].split("; [")[0]
        for expected in (
            "market_min_qty is 0.002 but the exchange says 0.001",
            "market_max_qty is 100 but the exchange says 120",
            "percent_price_up is 1.1 but the exchange says 1.05",
            "percent_price_down is 0.9 but the exchange says 0.95",
            "max_num_orders is 300 but the exchange says 200",
            "max_num_algo_orders is 20 but the exchange says 10",
        ):
            assert expected in row, row
        posted = [
            q for q in emu.state.requests() if q.method in ("POST", "DELETE") and "order" in q.path.lower()
        ]
        assert posted == []
    finally:
        emu.stop()
