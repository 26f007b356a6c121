"""Ops API (real uvicorn on 127.0.0.1, httpx): auth, bad input, queueing; metrics never say 0 for unknown."""

from __future__ import annotations

import math

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gridctl.engine.state import S_THROTTLE
from gridctl.live_bridge.ops import OpsServer, OpsState
from gridctl.live_bridge.orders import desired_orders

from live_helpers import paper_bridge, sample_bars

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def served():
    ops = OpsState()
    now = [0]
    # rungs in base units (0.004 BTC, about 240 USDT): half of one is still above BTC's 100 USDT minimum
    bridge = paper_bridge(["grid.base_qty=0.004"], ops=ops, now_ms=lambda: now[0])
    server = OpsServer(ops, TOKEN, port=0).start()
    try:
        yield bridge, ops, server.url, now
    finally:
        server.stop()


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _entries(bridge) -> list:
    return [w for w in desired_orders(bridge.s.slots, True) if w.kind == "entry"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic " + TOKEN}],
)
def test_no_or_wrong_token_is_401_and_changes_nothing(served, headers) -> None:
    bridge, ops, url, _ = served
    for method, path, body in (
        ("get", "/status", None),
        ("get", "/health", None),
        ("post", "/throttle", {"value": 0.5}),
        ("post", "/pause", None),
        ("post", "/resume", None),
        ("post", "/flatten", None),
    ):
        r = httpx.request(method.upper(), f"{url}{path}", json=body, headers=headers, timeout=5)
        assert r.status_code == 401, (path, r.status_code)
    assert ops.commands.empty()
    assert bridge.apply_commands() == []


def test_server_without_token_refuses_everything() -> None:
    ops = OpsState()
    server = OpsServer(ops, None, port=0).start()
    try:
        r = httpx.post(f"{server.url}/pause", headers={"Authorization": "Bearer anything"}, timeout=5)
        assert r.status_code == 401 and ops.commands.empty()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "body",
    [
        {"value": 1.5},
        {"value": -0.1},
        {"value": "abc"},
        {"value": True},
        {"value": None},
        {"value": float("nan")},
        {"throttle": 0.5},
        [0.5],
    ],
)
def test_bad_throttle_is_4xx_and_changes_nothing(served, body) -> None:
    bridge, ops, url, _ = served
    content = (
        str(body).replace("nan", "NaN").replace("'", '"').replace("True", "true").replace("None", "null")
    )
    r = httpx.post(
        f"{url}/throttle", content=content, headers={**AUTH, "content-type": "application/json"}, timeout=5
    )
    assert 400 <= r.status_code < 500, r.text
    assert "throttle" in r.text or "value" in r.text
    assert ops.commands.empty()
    before = bridge.s.state[S_THROTTLE]
    bridge.apply_commands()
    assert bridge.s.state[S_THROTTLE] == before == 1.0


def test_not_json_is_400(served) -> None:
    _, ops, url, _ = served
    r = httpx.post(
        f"{url}/throttle", content="0.5", headers={**AUTH, "content-type": "application/json"}, timeout=5
    )
    assert r.status_code == 400 and ops.commands.empty()


def test_mutations_are_queued_and_applied_by_the_bar_loop(served) -> None:
    bridge, _ops, url, _ = served
    bars = sample_bars(1)
    for b in bars[:30]:
        bridge.on_bar(b)
    qty_full = {w.level: w.qty for w in _entries(bridge) if w.side == 0}
    assert qty_full, "the ladder must hold entries to see the throttle"
    r = httpx.post(f"{url}/throttle", json={"value": 0.5}, headers=AUTH, timeout=5)
    assert r.status_code == 202 and r.json()["queued"] >= 1
    assert bridge.s.state[S_THROTTLE] == 1.0, "the API thread must not touch the engine"
    assert httpx.get(f"{url}/status", headers=AUTH, timeout=5).json()["throttle"] == 1.0
    bridge.on_bar(bars[30])
    assert bridge.s.state[S_THROTTLE] == 0.5
    half = {w.level: w.qty for w in _entries(bridge) if w.side == 0}
    step = 0.001
    assert half and set(half) <= set(qty_full)
    for level, q in half.items():  # sized again: floor_step(full * 0.5), hand-checked against the full qty
        assert abs(q - math.floor(qty_full[level] * 0.5 / step + 1e-9) * step) < 1e-12, (level, q)
    status = httpx.get(f"{url}/status", headers=AUTH, timeout=5).json()
    assert status["throttle"] == 0.5
    # what the bar loop did with the command, by the id the API answered with
    assert status["commands"][-1] == {
        "id": r.json()["queued"],
        "kind": "throttle",
        "throttle": 0.5,
        "ok": True,
    }

    assert httpx.post(f"{url}/pause", headers=AUTH, timeout=5).status_code == 202
    assert _entries(bridge), "not applied until the loop runs"
    bridge.on_bar(bars[31])
    assert _entries(bridge) == [] and bridge.operator_paused
    status = httpx.get(f"{url}/status", headers=AUTH, timeout=5).json()
    assert status["gates"]["operator_paused"] is True and "operator pause" in status["pause_reasons"]
    health = httpx.get(f"{url}/health", headers=AUTH, timeout=5).json()
    assert health["ok"] is False
    for b in bars[32:40]:
        bridge.on_bar(b)
    assert _entries(bridge) == []
    assert httpx.post(f"{url}/resume", headers=AUTH, timeout=5).status_code == 202
    bridge.on_bar(bars[40])
    assert _entries(bridge) and not bridge.operator_paused


def test_flatten_closes_both_sides_and_pauses(served) -> None:
    bridge, _ops, url, _ = served
    bars = sample_bars(1)
    k = 0
    while bridge.s.position() == (0.0, 0.0) and k < len(bars) - 1:
        bridge.on_bar(bars[k])
        k += 1
    assert bridge.s.position() != (0.0, 0.0), "the sample must open a position"
    n_fills = int(bridge.s.cnt[0])
    assert httpx.post(f"{url}/flatten", headers=AUTH, timeout=5).status_code == 202
    assert bridge.s.position() != (0.0, 0.0)
    bridge.on_bar(bars[k])
    assert bridge.s.position() == (0.0, 0.0)
    kinds = bridge.s.fills[n_fills : int(bridge.s.cnt[0])]["kind"].tolist()
    assert 3 in kinds  # FillKind.FLATTEN
    assert bridge.operator_paused and _entries(bridge) == []


def test_metrics_unknown_is_nan_with_reason_never_zero(served) -> None:
    bridge, _, url, now = served
    m = _metrics(url)
    for name in (
        "gridctl_equity",
        "gridctl_margin_ratio",
        "gridctl_funding_rate",
        "gridctl_last_bar_age_seconds",
    ):
        [(key, value)] = [(k, v) for k, v in m.items() if k[0] == name]
        assert math.isnan(value), name
        assert dict(key[1])["reason"], name
    bars = sample_bars(1)
    for b in bars[:5]:
        bridge.on_bar(b)
    now[0] = bars[4].ts + 60_000 + 5_000
    bridge.publish()
    m = _metrics(url)
    assert m[("gridctl_equity", (("reason", ""),))] == pytest.approx(10_000.0, rel=0.01)
    assert m[("gridctl_last_bar_age_seconds", (("reason", ""),))] == pytest.approx(5.0)
    assert m[("gridctl_throttle", (("reason", ""),))] == 1.0
    assert m[("gridctl_funding_rate", (("reason", ""),))] == bridge.s.funding.rate[-1]
    assert m[("gridctl_open_orders", (("reason", ""),))] == len(desired_orders(bridge.s.slots, True)) > 0


def test_applied_command_results_are_bounded() -> None:
    from gridctl.live_bridge.ops import APPLIED_KEPT

    ops = OpsState()
    for i in range(APPLIED_KEPT + 10):
        ops.record([{"id": i, "kind": "pause", "ok": True}])
    assert [r["id"] for r in ops.applied] == list(range(10, APPLIED_KEPT + 10))


@pytest.mark.parametrize(
    ("content", "status"),
    [
        ('{"value": 1' + "0" * 400 + "}", 422),  # an integer no float can hold (was 500 OverflowError)
        ('{"value": 1e400}', 422),  # parses as infinity
        ("[" * 60_000, 400),  # nested deeper than the JSON parser goes (was 500 RecursionError)
        ("[" * 100_000, 413),  # the same, past the body cap
        ('{"value": 0.5, "pad": "' + "x" * (64 * 1024) + '"}', 413),  # a valid command, too long
    ],
    ids=["400-digit int", "1e400", "nested 60k", "nested 100k", "over 64 KB"],
)
def test_hostile_throttle_bodies_are_4xx_and_change_nothing(served, content: str, status: int) -> None:
    bridge, ops, url, _ = served
    r = httpx.post(
        f"{url}/throttle", content=content, headers={**AUTH, "content-type": "application/json"}, timeout=10
    )
    assert r.status_code == status, r.text
    assert ops.commands.empty()
    bridge.apply_commands()
    assert bridge.s.state[S_THROTTLE] == 1.0


def test_body_cap_is_64_kb_on_every_route_declared_or_streamed(served) -> None:
    from gridctl.live_bridge.ops import MAX_BODY_BYTES

    assert MAX_BODY_BYTES == 64 * 1024
    _bridge, ops, url, _ = served
    # exactly the cap is read (and refused as a throttle for what it says, not for its size)
    at_cap = '{"value": 0.5, "pad": "' + "x" * (MAX_BODY_BYTES - 25) + '"}'
    assert len(at_cap) == MAX_BODY_BYTES
    r = httpx.post(f"{url}/throttle", content=at_cap, headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text
    ops.drain()
    # one byte more: 413, and a pause with a 30 MB body is not queued
    r = httpx.post(f"{url}/throttle", content=at_cap + " ", headers=AUTH, timeout=10)
    assert r.status_code == 413
    r = httpx.post(f"{url}/pause", content=b"x" * (30 << 20), headers=AUTH, timeout=30)
    assert r.status_code == 413

    def chunks():  # no Content-Length: the cap is counted as the body streams in
        for _ in range(3):
            yield b"y" * 40_000

    r = httpx.post(f"{url}/pause", content=chunks(), headers=AUTH, timeout=10)
    assert r.status_code == 413
    assert ops.commands.empty() and not ops.entries_held()
    # a small body on a route that takes none is still fine
    assert httpx.post(f"{url}/pause", content=b"{}", headers=AUTH, timeout=5).status_code == 202
    assert ops.entries_held()


def test_journaled_commands_survive_a_restart_in_order(tmp_path) -> None:
    from gridctl.live_bridge.journal import OpsLog

    path = tmp_path / "j.sqlite"
    log = OpsLog(path)
    ops = OpsState()
    ops.attach(log)
    assert not ops.entries_held() and log.paused() is None
    first = ops.enqueue("throttle", 0.5)
    ops.enqueue("pause")
    assert ops.entries_held()  # held from the moment it is accepted, before any loop applies it
    ops.settle(ops.drain()[0], {"id": first.id, "kind": "throttle", "ok": True})
    ops.enqueue("flatten")
    # a kill now: no close, a fresh process opens the same file
    again = OpsState()
    again.attach(OpsLog(path))
    assert again.entries_held()
    assert [(c.kind, c.value) for c in again.drain()] == [("pause", None), ("flatten", None)]
    snap = again.snapshot()
    assert snap["entries_paused"] == 1.0 and snap["pause_keys"] == ["operator pause"]
    # a resume lifts the hold at once and is what a later restart reads
    again.enqueue("resume")
    assert not again.entries_held()
    assert OpsLog(path).paused() is False
    log.close()


def test_a_command_the_journal_cannot_take_is_503_and_not_accepted(tmp_path) -> None:
    from gridctl.live_bridge.journal import OpsLog

    ops = OpsState()
    log = OpsLog(tmp_path / "j.sqlite")
    ops.attach(log)
    server = OpsServer(ops, TOKEN, port=0).start()
    try:
        assert (
            httpx.post(f"{server.url}/throttle", json={"value": 0.5}, headers=AUTH, timeout=5).status_code
            == 202
        )
        log.close()  # the journal is gone (disk trouble): nothing may be acknowledged
        r = httpx.post(f"{server.url}/pause", headers=AUTH, timeout=5)
        assert r.status_code == 503 and "not journaled" in r.json()["detail"]
        assert [c.kind for c in ops.drain()] == ["throttle"] and not ops.entries_held()
    finally:
        server.stop()
