"""Fail closed: a stale bar feed or a missing funding rate pauses new entries (exits stay), says why on
the status snapshot and the metrics, and lifts when the input is healthy again."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from gridctl.live_bridge.metrics import metrics_registry, render
from gridctl.live_bridge.ops import OpsState
from gridctl.live_bridge.orders import desired_orders

from live_helpers import paper_bridge, sample_bars


def _kinds(bridge) -> set[str]:
    return {w.kind for w in desired_orders(bridge.s.slots, True)}


def _run_until_lot(bridge, bars, now):
    k = 0
    while not ({"tp", "sl"} <= _kinds(bridge) and "entry" in _kinds(bridge)):
        now[0] = bars[k].ts + 60_000
        bridge.on_bar(bars[k])
        k += 1
        assert k < len(bars), "the sample must open a lot"
    return k


def test_stale_feed_pauses_entries_keeps_exits_and_recovers() -> None:
    ops = OpsState()
    now = [0]
    bridge = paper_bridge(ops=ops, now_ms=lambda: now[0])
    bars = sample_bars(1)
    k = _run_until_lot(bridge, bars, now)
    assert bridge.entries_allowed
    now[0] = bars[k - 1].ts + 60_000 + 3 * 60_000  # three bars late (the limit is two bars)
    assert bridge.check_stale() is True
    assert "entry" not in _kinds(bridge) and {"tp", "sl"} <= _kinds(bridge)
    snap = ops.snapshot()
    assert snap["entries_paused"] == 1.0 and any(r.startswith("bar feed:") for r in snap["pause_reasons"])
    text = render(metrics_registry(ops.snapshot)).decode()
    assert "gridctl_entries_paused" in text and 'gridctl_pause_reason{reason="bar feed"} 1.0' in text
    assert "bar feed: no closed bar for 180 s (limit 120 s)" in snap["pause_reasons"]
    # the feed delivers again: the next bars are processed and entries come back
    for b in bars[k : k + 3]:
        now[0] = b.ts + 60_000
        bridge.on_bar(b)
    assert bridge.entries_allowed and "entry" in _kinds(bridge)
    assert not any(r.startswith("bar feed") for r in ops.snapshot()["pause_reasons"])


def test_missing_funding_pauses_entries_until_a_rate_is_known() -> None:
    ops = OpsState()
    now = [0]
    bridge = paper_bridge(ops=ops, now_ms=lambda: now[0])
    bars = [replace(b, settled=[], next_funding_ms=None) for b in sample_bars(1)]
    for b in bars[:40]:
        now[0] = b.ts + 60_000
        bridge.on_bar(b)
        assert "entry" not in _kinds(bridge)
    assert "funding: no settled funding rate known" in ops.snapshot()["pause_reasons"]
    assert ops.snapshot()["funding_rate"] is None
    # a settlement becomes known but the next settlement time is still unknown: still paused
    b = replace(bars[40], settled=[(bars[0].ts, 0.0001, float("nan"))])
    now[0] = b.ts + 60_000
    bridge.on_bar(b)
    assert "funding: next funding settlement time unknown" in ops.snapshot()["pause_reasons"]
    assert "entry" not in _kinds(bridge)
    b = replace(bars[41], next_funding_ms=bars[0].ts + 8 * 3_600_000)
    now[0] = b.ts + 60_000
    bridge.on_bar(b)
    assert bridge.entries_allowed and "entry" in _kinds(bridge)
    assert ops.snapshot()["funding_rate"] == 0.0001


def test_stale_limit_is_stale_after_bars_bar_lengths(monkeypatch) -> None:
    from gridctl.live_bridge import bridge as bridge_mod

    monkeypatch.setattr(bridge_mod, "STALE_AFTER_BARS", 4)
    now = [0]
    bridge = paper_bridge(now_ms=lambda: now[0])
    bars = sample_bars(1)
    bridge.on_bar(bars[0])
    now[0] = bars[0].ts + 60_000 + 3 * 60_000  # three bars late: stale with 2, not with 4
    assert bridge.check_stale() is False and bridge.entries_allowed
    now[0] = bars[0].ts + 60_000 + 5 * 60_000
    assert bridge.check_stale() is True
    assert "bar feed: no closed bar for 300 s (limit 240 s)" in bridge.pause_reasons()


def _samples(ops) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = render(metrics_registry(ops.snapshot)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_open_breaker_shows_as_paused_with_its_reason() -> None:
    from gridctl.engine.state import S_CB_ACTIVE

    ops = OpsState()
    now = [0]
    bridge = paper_bridge(ops=ops, now_ms=lambda: now[0])
    bars = sample_bars(1)
    k = _run_until_lot(bridge, bars, now)
    assert _samples(ops)[("gridctl_entries_paused", (("reason", ""),))] == 0.0
    # 10 errors within the 60 s window (default max_errors_per_minute: 10): the 10th (at t + 9 ms) trips it
    t = bars[k].ts
    for i in range(10):
        bridge.s.record_error(float(t + i), t)
    now[0] = bars[k].ts + 60_000
    bridge.on_bar(bars[k])
    assert bridge.s.state[S_CB_ACTIVE] == 1.0 and "entry" not in _kinds(bridge)
    snap = ops.snapshot()
    assert snap["entries_paused"] == 1.0 and "circuit breaker" in snap["pause_keys"]
    [reason] = [r for r in snap["pause_reasons"] if r.startswith("circuit breaker")]
    # blocked for circuit_breaker_cooldown_seconds = 300 s from the trip (t + 9 ms; shown to the second)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((t + 9) // 1000 + 300))
    assert reason == f"circuit breaker: 10 errors counted, entries blocked until {until}"
    m = _samples(ops)
    assert m[("gridctl_entries_paused", (("reason", ""),))] == 1.0
    assert m[("gridctl_pause_reason", (("reason", "circuit breaker"),))] == 1.0
    assert m[("gridctl_circuit_breaker_active", (("reason", ""),))] == 1.0


def test_metric_labels_come_from_a_fixed_set_never_the_raw_error() -> None:
    from gridctl.live_bridge.metrics import PAUSE_LABELS, UNKNOWN_LABELS

    ops = OpsState()
    bridge = paper_bridge(ops=ops)
    for b in sample_bars(1)[:3]:
        bridge.on_bar(b)
    raw = 'account unreadable: binanceusdm {"code":-1001,"msg":"Internal error; unable to process"}'
    bridge.set_input_health("margin", raw)
    bridge.publish()
    snap = ops.snapshot()
    assert snap["unknown"]["margin_ratio"] == raw and f"margin: {raw}" in snap["pause_reasons"]
    m = _samples(ops)
    labels = {v for key in m for k, v in key[1] if k == "reason"}
    assert labels <= (UNKNOWN_LABELS | PAUSE_LABELS | {""}), labels
    assert m[("gridctl_pause_reason", (("reason", "margin"),))] == 1.0
    [margin] = [key for key in m if key[0] == "gridctl_margin_ratio"]
    assert dict(margin[1])["reason"] == "account unreadable"
    # a reason or pause key outside the fixed sets is exported as "other"
    ops.publish(
        {**snap, "margin_ratio": None, "unknown_labels": {"margin_ratio": raw}, "pause_keys": [raw, "margin"]}
    )
    m = _samples(ops)
    assert dict(next(k for k in m if k[0] == "gridctl_margin_ratio")[1])["reason"] == "other"
    assert {dict(k[1])["reason"] for k in m if k[0] == "gridctl_pause_reason"} == {"margin", "other"}


def test_frozen_premium_index_makes_the_funding_rate_unknown_and_pauses_entries(tmp_path) -> None:
    from gridctl.configs.loader import load_strategy
    from gridctl.live_bridge.options import LiveOptions
    from gridctl.live_bridge.runner import prepare

    from live_helpers import SYMBOL_ID, emulator_venue, emulator_with_sample

    emu = emulator_with_sample()
    ctx = None
    try:
        ready, ctx = prepare(
            load_strategy("default", []),
            emulator_venue(emu.url),
            LiveOptions(
                mode="paper",
                symbol="BTC/USDT:USDT",
                journal=tmp_path / "j.sqlite",
                ops_port=0,
                max_skew_ms=10**13,
            ),
            "tok",
        )
        ready.require()
        bridge, feed, ops = ctx.bridge, ctx.feed, ctx.bridge.ops

        def bar() -> None:
            emu.state.advance_bar(SYMBOL_ID)
            for b in feed.poll():
                bridge.on_bar(b)

        for _ in range(3):
            bar()
        assert ops.snapshot()["funding_rate"] is not None and bridge.entries_allowed
        emu.state.account.freeze_premium()
        bar()
        bar()  # 2 bars old: at the limit (PREMIUM_MAX_AGE_BARS = 2), still current
        assert ops.snapshot()["funding_rate"] is not None
        bar()  # 3 bars (180 s) old: stale
        snap = ops.snapshot()
        assert snap["funding_rate"] is None and snap["funding_projected_cost"] is None
        assert snap["unknown"]["funding_rate"].startswith("premium index stale: its snapshot is 180 s old")
        assert not bridge.entries_allowed and "entry" not in _kinds(bridge)
        assert "funding" in snap["pause_keys"]
        m = _samples(ops)
        assert m[("gridctl_entries_paused", (("reason", ""),))] == 1.0
        [rate] = [(k, v) for k, v in m.items() if k[0] == "gridctl_funding_rate"]
        assert dict(rate[0][1])["reason"] == "funding input stale" and rate[1] != rate[1]  # NaN
        emu.state.account.freeze_premium(False)
        bar()
        assert ops.snapshot()["funding_rate"] is not None and bridge.entries_allowed
    finally:
        if ctx is not None:
            ctx.close()
        emu.stop()


# --- bad inputs on the `gridctl live` command line: one line naming the option, exit code 2 -------------


def _live(args: list[str]):
    from typer.testing import CliRunner

    from gridctl.cli import app

    return CliRunner().invoke(app, ["live", *args])


def _one_line(r, *needles: str) -> str:
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--min-balance", "nan"], "--min-balance"),
        (["--min-balance", "inf"], "--min-balance"),
        (["--min-balance", "-1"], "--min-balance"),
        (["--ops-port", "70000"], "--ops-port"),
        (["--ops-port", "-1"], "--ops-port"),
        (["--max-bars", "-1"], "--max-bars"),
        (["--max-bars", "0"], "--max-bars"),
    ],
)
def test_bad_numbers_are_refused_in_one_line(args: list[str], needle: str) -> None:
    _one_line(_live(["--live", *args]), needle, args[1])


def test_bad_journal_paths_are_refused_in_one_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database, it only looks like one" * 200)
    line = _one_line(_live(["--paper", "--journal", str(corrupt)]), "--journal", str(corrupt))
    assert "not a journal" in line
    _one_line(_live(["--paper", "--journal", str(tmp_path)]), "--journal", "is a folder")
    _one_line(_live(["--paper", "--journal", "/proc/self/status"]), "--journal", "/proc")
    _one_line(_live(["--paper", "--journal", "/proc/gridctl.sqlite"]), "--journal", "/proc")
    _one_line(_live(["--paper", "--journal", str(corrupt / "j.sqlite")]), "--journal")
    assert corrupt.read_bytes().startswith(b"this is not a database")  # untouched


def test_replay_of_an_empty_folder_is_refused_and_generates_nothing(tmp_path: Path) -> None:
    _one_line(_live(["--paper", "--replay", str(tmp_path)]), "no 1m candles", str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_shipped_testnet_venue_starts_paper_and_live(tmp_path: Path, monkeypatch) -> None:
    from gridctl.configs.loader import load_strategy, load_venue
    from gridctl.live_bridge.options import LiveOptions
    from gridctl.live_bridge.runner import prepare

    from live_helpers import emulator_with_sample

    monkeypatch.setenv("BINANCE_TESTNET_API_KEY", "emu-api-key")
    monkeypatch.setenv("BINANCE_TESTNET_API_SECRET", "emu-api-secret")
    emu = emulator_with_sample()
    try:
        # the shipped file, only aimed at the emulator (BTC's min notional is 100, as the emulator's)
        venue = load_venue("binance_futures_testnet", [f"api.base_url={emu.url}"])
        assert venue.api.testnet and venue.api.ws_url is None
        for mode in ("paper", "live"):
            ready, ctx = prepare(
                load_strategy("default", []),
                venue,
                LiveOptions(
                    mode=mode,
                    symbol="BTC/USDT:USDT",
                    testnet=mode == "live",
                    journal=tmp_path / f"{mode}.sqlite",
                    ops_port=0,
                    max_skew_ms=10**13,
                ),
                "tok",
            )
            try:
                ready.require()
            finally:
                ctx.close()
    finally:
        emu.stop()
    # a stream URL where the feed needs a REST host: the file and the field named, in one line
    line = _one_line(
        _live(
            [
                "--paper",
                "--venue",
                "binance_futures_testnet",
                "--venue-set",
                "api.ws_url=wss://x.example:9443",
            ]
        ),
        "binance_futures_testnet.yaml",
        "api.ws_url",
        "wss://x.example:9443",
    )
    assert "http(s)" in line


def test_a_gate_holding_entries_shows_as_paused_with_its_reason() -> None:
    # The daily loss limit (a holding gate of configs/gates.py) at 0.01 %: the first small loss on the
    # day stops entries; the status's gate field, pause key and reason and the metric label all come
    # from the gate's table row.
    ops = OpsState()
    now = [0]
    bridge = paper_bridge(["risk_management.max_daily_loss_pct=0.01"], ops=ops, now_ms=lambda: now[0])
    for k, b in enumerate(sample_bars(1)):
        now[0] = b.ts + 60_000
        bridge.on_bar(b)
        if k == 0:
            assert ops.snapshot()["gates"]["daily_loss_stopped"] is False
        if ops.snapshot()["gates"]["daily_loss_stopped"]:
            break
    else:
        pytest.fail("the sample day never lost 0.01 %")
    snap = ops.snapshot()
    assert snap["entries_paused"] == 1.0 and "daily_loss" in snap["pause_keys"]
    assert "Daily loss limit: entries blocked by the engine's gate" in snap["pause_reasons"]
    assert "entry" not in _kinds(bridge)
    assert _samples(ops)[("gridctl_pause_reason", (("reason", "daily_loss"),))] == 1.0
