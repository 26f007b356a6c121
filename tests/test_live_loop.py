"""live_bridge.runner.run_loop: between bar closes it polls fills for the live bridge at its own pace."""

from __future__ import annotations

from types import SimpleNamespace

import gridctl.live_bridge.runner as runner


class _Bridge:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.o = SimpleNamespace(mode="live")

    def protect_fills(self) -> int:
        self.calls.append("fills")
        return 0

    def on_bar(self, bar: object) -> None:
        self.calls.append("bar")

    def set_input_health(self, name: str, problem: str | None) -> None:
        pass

    def apply_commands(self) -> None:
        pass

    def check_stale(self) -> None:
        pass

    def publish(self) -> None:
        pass


class _Feed:
    last_ts = None
    bar_ms = 60_000

    def __init__(self, polls: list[list[object]]) -> None:
        self.polls = polls

    def poll(self) -> list[object]:
        return self.polls.pop(0)

    def keep_alive(self) -> None:
        pass


def test_fills_are_polled_between_bars_every_fills_poll_s(monkeypatch) -> None:
    now = [0.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])

    def sleep(s: float) -> None:
        now[0] += 1.0  # each empty poll: one second later

    monkeypatch.setattr(runner.time, "sleep", sleep)
    bridge = _Bridge()
    feed = _Feed([[], [], [], [], [], ["bar1"], [], [], ["bar2"]])
    ctx = SimpleNamespace(bridge=bridge, feed=feed, clock=SimpleNamespace(now_ms=lambda: 0))
    assert runner.run_loop(ctx, max_bars=2, poll_s=1.0, fills_poll_s=2.0) == 2
    # Empty polls at t = 0, 1, 2, 3, 4: fills looked at from t = 2 on, every 2 s (t = 2 and 4); then
    # the bar; empty polls at t = 5 and 6: fills at t = 6; then the second bar.
    assert bridge.calls == ["fills", "fills", "bar", "fills", "bar"]
