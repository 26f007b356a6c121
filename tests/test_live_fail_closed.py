"""Fail closed: a stale bar feed or a missing funding rate pauses new entries (exits stay), says why on
the status snapshot and the metrics, and lifts when the input is healthy again."""

from __future__ import annotations

from dataclasses import replace

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
