"""The live side's one request pacer: the venue's rate limits as Binance enforces and reports them.

One ``RequestPacer`` serves every request of a live run (the order gateway's client and the bar feed's:
Binance counts weight per IP and bans the IP, not a client). What it enforces, from the venue file's
``rate_limits`` section:

* **Request weight**: at most ``weight_per_minute`` in any 60 s. The pacer counts the weight it lets
  through and reads the exchange's own count, ``X-MBX-USED-WEIGHT-1M``, from every answer.
* **Order count** (every placement: entries, exits, flattens; cancels are not orders): at most
  ``orders_per_minute`` in any 60 s and ``10 * orders_per_second`` in any 10 s, Binance's two order
  windows, checked against the pacer's own count and the exchange's ``X-MBX-ORDER-COUNT-1M`` /
  ``X-MBX-ORDER-COUNT-10S``. (Which entries are submitted per bar close is the engine's decision, paced
  by the same two fields in the kernel, shared with the backtest; the pacer only keeps the sends within
  the exchange's windows and never re-decides per bar.)
* **429** with ``Retry-After``: no request of that kind until it has passed. An order-count 429
  (Binance ``-1015``, or any 429 answering an order placement without ``-1003``) stops placements; a
  weight 429 (``-1003``) stops every request. Without ``Retry-After``, 1 s.
* **418** (the IP is banned; Binance escalates ignored 429s to bans of 2 min up to 3 days): no request
  at all until ``Retry-After`` has passed (120 s, the shortest ban, when the answer carries none).
  ``ban()`` names the ban while it lasts; the bridge pauses entries with that reason.

* **Protection first**: the last ``weight_per_minute // 10`` of the weight window (``reserve``) is kept
  for the requests that keep positions covered (fills, positions, open orders, placements, cancels);
  market data (the bar feed: clock, klines, funding, premium index) and the funding-income report may
  not spend it (``essential=False``), so a starved budget delays the next bar (entries then pause on
  the stale feed) rather than a stop.

A counter read from an answer holds for its window from when it was read (Binance's windows are fixed,
so this never under-counts). A request that does not fit waits (``sleep``) when it fits within
``max_wait_s`` and is otherwise refused with ``RateLimited`` before anything is sent.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gridctl.live_bridge.gateway import RateLimited

MINUTE_S = 60.0
ORDER_SHORT_WINDOW_S = 10.0
BAN_DEFAULT_S = 120.0
RETRY_DEFAULT_S = 1.0
_ORDER_PATHS = ("/fapi/v1/order", "/fapi/v1/algoOrder", "/fapi/v1/batchOrders")
_CODE_RE = re.compile(r'"code"\s*:\s*"?(-?\d+)')


@dataclass
class _Window:
    """A sliding window of ``span_s`` with a limit, and the exchange's count of the same window."""

    name: str
    limit: int
    span_s: float
    header: str
    events: deque[tuple[float, int, int]] = field(default_factory=deque)  # (time, count, sequence)
    seen: tuple[float, int, int] | None = None  # (when read, the exchange's count, our sequence then)
    seq: int = 0

    def add(self, now: float, n: int) -> None:
        self.seq += 1
        self.events.append((now, n, self.seq))

    def read(self, now: float, value: int) -> None:
        """The exchange's count, which includes every request we let through before this answer."""
        self.seen = (now, value, self.seq)

    def used(self, at: float) -> int:
        """Count at time ``at``: ours in the window, or the exchange's plus ours sent after it was read."""
        own = sum(n for t, n, _ in self.events if t > at - self.span_s)
        if self.seen is not None and at < self.seen[0] + self.span_s:
            since = sum(n for _, n, q in self.events if q > self.seen[2])
            return max(own, self.seen[1] + since)
        return own

    def wait(self, now: float, n: int, limit: int | None = None) -> float:
        """Seconds until ``n`` more fit under ``limit`` (default the window's; inf when ``n`` exceeds it)."""
        limit = self.limit if limit is None else limit
        if n <= 0 or self.used(now) + n <= limit:
            return 0.0
        if n > limit:
            return float("inf")
        ends = {t + self.span_s for t, _, _ in self.events}
        if self.seen is not None:
            ends.add(self.seen[0] + self.span_s)
        for end in sorted(e for e in ends if e > now):
            if self.used(end) + n <= limit:
                return end - now
        return self.span_s

    def prune(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - self.span_s:
            self.events.popleft()


def _header(headers: Any, name: str) -> str | None:
    if not hasattr(headers, "get"):
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):  # a plain dict: look case-insensitively
        value = next((v for k, v in headers.items() if str(k).lower() == name.lower()), None)
    return None if value is None else str(value)


def _seconds(value: str | None) -> float | None:
    try:
        out = float(value) if value is not None else None
    except ValueError:
        return None
    return out if out is not None and out >= 0.0 and out == out else None


class RequestPacer:
    """Request weight, order count, Retry-After blocks and IP bans for one live run (module doc)."""

    def __init__(
        self,
        weight_per_minute: int,
        orders_per_second: int,
        orders_per_minute: int,
        max_wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.weight = _Window(
            "rate_limits.weight_per_minute", int(weight_per_minute), MINUTE_S, "X-MBX-USED-WEIGHT-1M"
        )
        self.orders_10s = _Window(
            "10 x rate_limits.orders_per_second",
            10 * int(orders_per_second),
            ORDER_SHORT_WINDOW_S,
            "X-MBX-ORDER-COUNT-10S",
        )
        self.orders_1m = _Window(
            "rate_limits.orders_per_minute", int(orders_per_minute), MINUTE_S, "X-MBX-ORDER-COUNT-1M"
        )
        self.reserve = int(weight_per_minute) // 10  # weight only essential requests may spend
        self.max_wait_s = float(max_wait_s)
        self.clock = clock
        self.sleep = sleep
        self._blocks: dict[str, tuple[float, str]] = {}  # "all" | "orders" -> (until, why)
        self._ban: tuple[float, str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_venue(cls, venue: Any, **kw: Any) -> RequestPacer:
        """The pacer of ``venue.rate_limits`` (``kw``: max_wait_s, clock, sleep)."""
        r = venue.rate_limits
        return cls(r.weight_per_minute, r.orders_per_second, r.orders_per_minute, **kw)

    # -- before a request --------------------------------------------------------------------------
    def _wait(self, now: float, weight: int, orders: int, essential: bool = True) -> tuple[float, str]:
        waits: list[tuple[float, str]] = []
        for kind, (until, why) in self._blocks.items():
            if until > now and (kind == "all" or orders):
                waits.append((until - now, why))
        checks = [(self.weight, weight), (self.orders_10s, orders), (self.orders_1m, orders)]
        for window, n in checks:
            limit = window.limit if essential or window is not self.weight else window.limit - self.reserve
            w = window.wait(now, n, limit)
            if w > 0:
                kept = "" if limit == window.limit else f", the last {self.reserve} kept for protection"
                waits.append(
                    (
                        w,
                        f"{window.name}: {window.limit} per {window.span_s:g} s reached "
                        f"({window.used(now)} used, {n} more{kept})",
                    )
                )
        return max(waits, default=(0.0, ""))

    def acquire(self, weight: int, orders: int = 0, what: str = "request", essential: bool = True) -> None:
        """Reserve ``weight`` (and ``orders`` placements), waiting up to ``max_wait_s``; else RateLimited.
        ``essential=False`` (market data, reports): the window's last ``reserve`` weight is not for it."""
        while True:
            with self._lock:
                now = self.clock()
                for window in (self.weight, self.orders_10s, self.orders_1m):
                    window.prune(now)
                wait, why = self._wait(now, weight, orders, essential)
                if wait <= 0.0:
                    self.weight.add(now, weight)
                    if orders:
                        self.orders_10s.add(now, orders)
                        self.orders_1m.add(now, orders)
                    return
            if wait > self.max_wait_s:
                shown = wait if wait != float("inf") else MINUTE_S
                raise RateLimited(f"{what}: not sent, {why}", retry_after_s=shown)
            self.sleep(wait)

    def orders_available(self) -> int:
        """Order placements that fit now without waiting (0 while placements are blocked)."""
        with self._lock:
            now = self.clock()
            if any(u > now for u, _ in self._blocks.values()):
                return 0
            return max(0, min(w.limit - w.used(now) for w in (self.orders_10s, self.orders_1m)))

    # -- after an answer ---------------------------------------------------------------------------
    def watch(self, client: Any) -> None:
        """Observe every answer ``client`` (a ccxt exchange) receives: counters, 429 and 418."""
        inner = client.on_rest_response

        def on_rest_response(
            code: Any, reason: Any, url: Any, method: Any, headers: Any, body: Any, *rest: Any
        ) -> Any:
            self.observe(str(method), str(url), int(code or 0), headers, body)
            return inner(code, reason, url, method, headers, body, *rest)

        client.on_rest_response = on_rest_response

    def observe(self, method: str, url: str, status: int, headers: Any, body: Any = "") -> None:
        """Read one answer's counters; start a Retry-After block on 429 and a ban on 418."""
        with self._lock:
            now = self.clock()
            for window in (self.weight, self.orders_10s, self.orders_1m):
                value = _header(headers, window.header)
                if value is not None and value.strip().isdigit():
                    window.read(now, int(value))
            if status not in (418, 429):
                return
            retry = _seconds(_header(headers, "Retry-After"))
            if status == 418:
                secs = retry if retry is not None else BAN_DEFAULT_S
                why = f"IP banned by the exchange (HTTP 418, Retry-After {secs:.0f} s)"
                until = max(now + secs, self._ban[0] if self._ban is not None else 0.0)
                self._ban = (until, why)
                self._blocks["all"] = (max(until, self._blocks.get("all", (0.0, ""))[0]), why)
                return
            match = _CODE_RE.search(str(body or ""))
            code = int(match.group(1)) if match else None
            placing = method.upper() == "POST" and any(url.split("?")[0].endswith(p) for p in _ORDER_PATHS)
            kind = "orders" if code == -1015 or (placing and code != -1003) else "all"
            secs = retry if retry is not None else RETRY_DEFAULT_S
            why = f"HTTP 429 ({code}) on {kind} requests, Retry-After {secs:.0f} s"
            until = max(now + secs, self._blocks.get(kind, (0.0, ""))[0])
            self._blocks[kind] = (until, why)

    # -- state -------------------------------------------------------------------------------------
    def ban(self) -> str | None:
        """The ban's reason while a 418 ban lasts (the same text all along; the seconds left are in
        ``describe``), else None."""
        with self._lock:
            if self._ban is None:
                return None
            until, why = self._ban
            if until <= self.clock():
                self._ban = None
                return None
            return f"{why}: no request until it ends"

    def blocked_for(self, orders: bool) -> float:
        """Seconds until a request (an order placement when ``orders``) may go out; 0 when it may now."""
        with self._lock:
            now = self.clock()
            return max([0.0] + [u - now for k, (u, _) in self._blocks.items() if k == "all" or orders])

    def describe(self) -> dict[str, Any]:
        """Counters, limits and blocks for ``/status``."""
        with self._lock:
            now = self.clock()
            return {
                "weight_1m": {"used": self.weight.used(now), "limit": self.weight.limit},
                "orders_10s": {"used": self.orders_10s.used(now), "limit": self.orders_10s.limit},
                "orders_1m": {"used": self.orders_1m.used(now), "limit": self.orders_1m.limit},
                "blocked": {
                    k: {"seconds_left": round(u - now, 1), "why": why}
                    for k, (u, why) in self._blocks.items()
                    if u > now
                },
            }
