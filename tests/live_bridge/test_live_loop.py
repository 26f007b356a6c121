"""live_bridge.runner.run_loop: the control loop polls fills between bars at its own pace and applies
ops commands every tick while the feed's I/O (a poll that hangs, an outage's retries) runs elsewhere."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import gridctl.live_bridge.runner as runner
from gridctl.live_bridge.feed import FeedHealth
from gridctl.live_bridge.ops import OpsState


class _StopError(Exception):
    pass


class _Bridge:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.o = SimpleNamespace(mode="live")
        self.ops = OpsState()
        self.applied: list[tuple[str, float]] = []
        self.stop = False

    def protect_fills(self) -> int:
        self.calls.append("fills")
        return 0

    def on_bar(self, bar: object) -> None:
        self.calls.append("bar")

    def set_input_health(self, name: str, problem: str | None) -> None:
        pass

    def apply_commands(self) -> None:
        for cmd in self.ops.drain():
            self.applied.append((cmd.kind, time.monotonic()))

    def check_stale(self) -> None:
        if self.stop:
            raise _StopError

    def publish(self) -> None:
        pass


class _Feed:
    """Serves ``polls`` one per poll; a poll given as a number of seconds hangs that long first."""

    bar_ms = 60_000

    def __init__(self, polls: list[object]) -> None:
        self.polls = polls
        self.health = FeedHealth()
        self.last_ts = None
        self._sleep = time.sleep

    def poll(self) -> list[object]:
        item = self.polls.pop(0) if self.polls else []
        if isinstance(item, float):
            time.sleep(item)
            return []
        return item  # type: ignore[return-value]

    def keep_alive(self) -> bool:
        return True


def _ctx(bridge: _Bridge, feed: _Feed) -> SimpleNamespace:
    return SimpleNamespace(bridge=bridge, feed=feed, clock=SimpleNamespace(now_ms=lambda: 0))


def test_fills_are_polled_between_bars_every_fills_poll_s() -> None:
    bridge = _Bridge()
    # 12 empty polls 0.05 s apart (0.6 s without bars), then a bar; then a bar at once
    feed = _Feed([[] for _ in range(12)] + [["bar1"], ["bar2"]])
    assert runner.run_loop(_ctx(bridge, feed), max_bars=2, poll_s=0.05, fills_poll_s=0.25) == 2
    first_bar = bridge.calls.index("bar")
    # >= 0.6 s without bars at a 0.25 s fills period: fills looked at before the first bar (twice when
    # the machine keeps pace, more on a slow one); both bars processed
    assert bridge.calls[:first_bar].count("fills") >= 1, bridge.calls
    assert bridge.calls.count("bar") == 2, bridge.calls


def test_commands_are_applied_while_a_poll_hangs() -> None:
    bridge = _Bridge()
    feed = _Feed([[], 5.0])  # the second poll hangs 5 s (a request that never answers)
    done: list[BaseException] = []

    def run() -> None:
        try:
            runner.run_loop(_ctx(bridge, feed), max_bars=None, poll_s=0.05, fills_poll_s=60.0)
        except BaseException as err:
            done.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.5)  # the loop runs and the feed worker is inside the hanging poll
    assert not feed.polls, "the hanging poll has started"
    sent = time.monotonic()
    bridge.ops.enqueue("pause")
    deadline = sent + 3.0
    while not bridge.applied and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bridge.applied and bridge.applied[0][0] == "pause"
    # applied within a control tick, while the poll still hangs (4.5 s of it left)
    assert bridge.applied[0][1] - sent < runner.CONTROL_TICK_S + 0.4
    bridge.stop = True
    t.join(timeout=3)
    assert not t.is_alive() and isinstance(done[0], _StopError)
