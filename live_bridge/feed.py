"""Exchange bar feed: closed bars and funding settlements polled over REST with the real ccxt client.

There is no websocket stream: the feed polls the exchange's public REST endpoints (klines, funding
history, premium index). The venue's stream settings map onto this connection as follows:

* ``api.ws_url`` - the market-data endpoint the feed connects to, an http(s) URL (a ``ws://`` or
  ``wss://`` stream URL is refused, naming the file and field); when unset, ``api.base_url``
  (when both are unset: ccxt's own Binance hosts).
* ``websocket.ping_interval`` (s) - keep-alive: between bar closes the feed asks the exchange for
  its time every ``ping_interval`` seconds; a failed ping starts reconnecting at once, before the
  next bar is due.
* ``websocket.reconnect_timeout`` (s) - the wait between reconnect attempts after a failed request.
* ``websocket.max_reconnect_attempts`` - consecutive failed attempts after which the feed is
  declared down: the bridge pauses new entries (fail closed) and says so on the ops API and metrics;
  the feed keeps trying every ``reconnect_timeout`` and the pause lifts with the first good answer.

A premium index older than ``PREMIUM_MAX_AGE_BARS`` bars at a poll (the exchange stopped updating it)
marks the bar's funding input as stale: the bridge pauses new entries until it is current again.

A live run shares the order gateway's ``RequestPacer`` with the feed (``feed.pacer``, set by the
runner): every feed request passes it first, so a 429 or a 418 ban seen by either stops both (Binance
counts weight and bans per IP); a request it refuses counts as a failed attempt, and nothing is sent.

Start-up checks do not wait that long: ``retry_policy`` swaps in a short budget for their duration
(``live_bridge.readiness.READY_*``), so an unreachable exchange fails the readiness checklist in seconds.
A failure names the host:port and the cause (connection refused, timeout, HTTP status, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import VenueConfig
from gridctl.data.download import classify
from gridctl.data.timeframes import timeframe_ms
from gridctl.live_bridge.replay import ClosedBar

#: The premium index (next settlement time, mark) must be at most this many bar lengths old at a poll;
#: older, the funding input counts as stale and new entries pause (Binance refreshes it every few seconds).
PREMIUM_MAX_AGE_BARS = 2
#: Binance request weights of the feed's requests, for the pacer (klines: ``klines_weight`` of its limit).
FEED_WEIGHTS: dict[str, int] = {
    "time": 1,
    "exchangeInfo": 1,
    "klines": 5,
    "fundingRate": 1,
    "premiumIndex": 1,
}
#: Rows per klines request at most (ccxt's binanceusdm driver sends at most 1000).
KLINES_MAX_LIMIT = 1000


def klines_weight(limit: int) -> int:
    """Binance USD-M's request weight of ``GET /fapi/v1/klines`` with ``limit`` rows: 1 below 100, 2 below
    500, 5 up to 1000, 10 above."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class FeedDown(GridctlError):  # noqa: N818 - reads as a state
    """The feed failed ``max_reconnect_attempts`` times in a row."""


@dataclass
class FeedHealth:
    """Whether the last request got an answer, and the last failure (named in FeedDown).

    ``failures`` counts the failed attempts since the last answer: above 0 an outage is in progress
    (the feed is retrying), before ``up`` turns False at ``max_reconnect_attempts``.
    """

    up: bool = True
    last_error: str = ""
    failures: int = 0
    wait_s: float = 0.0

    def problem(self) -> str | None:
        """Why the feed is not delivering now (None: the last request was answered)."""
        if self.failures == 0:
            return None
        if not self.up:
            return f"bar feed down, retrying every {self.wait_s:g} s ({self.last_error})"
        return (
            f"outage in progress: {self.failures} failed attempt(s), retrying every {self.wait_s:g} s "
            f"({self.last_error})"
        )


class ExchangeFeed:
    """Polls closed bars and funding for one symbol; ``client`` is a ccxt exchange (binanceusdm)."""

    def __init__(
        self,
        client: Any,
        symbol: str,
        timeframe: str,
        ping_interval_s: float,
        reconnect_wait_s: float,
        max_reconnect_attempts: int,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.symbol = symbol
        self.timeframe = timeframe
        self.bar_ms = timeframe_ms(timeframe)
        self.ping_interval_s = float(ping_interval_s)
        self.reconnect_wait_s = float(reconnect_wait_s)
        self.max_attempts = int(max_reconnect_attempts)
        self._sleep = sleep
        self._clock = clock
        self.health = FeedHealth()
        self.last_ts: int | None = None
        self._last_settled: int | None = None
        self._last_ping = clock()
        self.on_server_time: Callable[[int], None] | None = None  # the bridge's clock follows the exchange
        self.pacer: Any = None  # live: the gateway's RequestPacer (live_bridge.pacing)

    @classmethod
    def for_venue(
        cls, venue: VenueConfig, symbol: str, timeframe: str, api_url: str | None = None, **kw: Any
    ) -> ExchangeFeed:
        """The feed a venue file describes (``api.ws_url``, else ``api.base_url``; ``api_url`` overrides)."""
        from gridctl.data.download import make_client

        ws = venue.api.ws_url
        if api_url is None and ws is not None and urlsplit(ws).scheme not in ("http", "https"):
            raise GridctlError(
                f"{venue.origin}: api.ws_url: {ws} is not an http(s) URL; the bar feed polls the exchange's "
                "REST API: give its http(s) market-data host, or remove api.ws_url to use api.base_url"
            )
        url = api_url or ws or venue.api.base_url
        client = make_client("binanceusdm", url)
        client.enableRateLimit = False
        ws = venue.websocket
        return cls(
            client, symbol, timeframe, ws.ping_interval, ws.reconnect_timeout, ws.max_reconnect_attempts, **kw
        )

    # --- connection policy

    @property
    def host(self) -> str:
        """host:port of the futures API the feed polls (for failure messages)."""
        urls = self.client.urls.get("api", {}) if isinstance(self.client.urls, dict) else {}
        url = urls.get("fapiPublic") if isinstance(urls, dict) else urls
        return urlsplit(url).netloc if isinstance(url, str) and urlsplit(url).netloc else str(self.client.id)

    @contextmanager
    def retry_policy(self, retries: int, wait_s: float, timeout_s: float) -> Iterator[ExchangeFeed]:
        """In the block: ``retries`` retries ``wait_s`` apart, ``timeout_s`` per request; restored after."""
        saved = (self.max_attempts, self.reconnect_wait_s, self.client.timeout)
        self.max_attempts, self.reconnect_wait_s = int(retries), float(wait_s)
        self.client.timeout = int(timeout_s * 1000)
        try:
            yield self
        finally:
            self.max_attempts, self.reconnect_wait_s, self.client.timeout = saved

    def call(self, what: str, fn: Callable[[], Any], weight: int | None = None) -> Any:
        """Run one request (of ``weight``, default ``FEED_WEIGHTS[what]``); on failure wait
        ``reconnect_wait_s`` and retry, up to ``max_attempts`` retries."""
        attempt = 0
        while True:
            try:
                if self.pacer is not None:
                    # market data never spends the weight kept for protection (pacing: reserve)
                    w = FEED_WEIGHTS.get(what, 1) if weight is None else weight
                    self.pacer.acquire(w, 0, what, essential=False)
                out = fn()
            except Exception as err:  # ccxt raises many kinds; all mean "no answer"
                failure = classify(err, self.host, self.client.timeout / 1000.0)
                self.health.last_error = f"{what}: {failure.describe()}"
                self.health.wait_s = self.reconnect_wait_s
                self.health.failures += 1
                if attempt >= self.max_attempts:
                    self.health.up = False
                    raise FeedDown(
                        f"bar feed down after {attempt + 1} failed attempts ({self.health.last_error})"
                    ) from None
                attempt += 1
                self._sleep(self.reconnect_wait_s)
                continue
            self.health.up = True
            self.health.failures = 0
            return out

    def server_time_ms(self) -> int:
        t = int(self.call("time", self.client.fetch_time))
        if self.on_server_time is not None:
            self.on_server_time(t)
        return t

    def keep_alive(self) -> bool:
        """Ping when ``ping_interval_s`` has passed since the last request; False while the feed is down."""
        now = self._clock()
        if now - self._last_ping < self.ping_interval_s:
            return self.health.up
        self._last_ping = now
        try:
            self.server_time_ms()
        except FeedDown:
            return False
        return True

    # --- data

    def load_rules(self) -> dict[str, Any]:
        """The symbol's market entry (filters) from exchangeInfo."""
        markets = self.call("exchangeInfo", self.client.load_markets)
        if self.symbol not in markets:
            raise GridctlError(f"symbol {self.symbol} is not listed by the exchange")
        return markets[self.symbol]

    def _bars(self, since: int, limit: int, now_ms: int) -> list[tuple[int, float, float, float, float]]:
        limit = max(1, min(int(limit), KLINES_MAX_LIMIT))
        rows = self.call(
            "klines",
            lambda: self.client.fetch_ohlcv(self.symbol, self.timeframe, since=since, limit=limit),
            klines_weight(limit),
        )
        return [
            (int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]))
            for r in rows
            if int(r[0]) + self.bar_ms <= now_ms
        ]

    def history(self, n: int) -> list[tuple[int, float, float, float, float]]:
        """The last ``n`` closed bars (fewer when the exchange has fewer)."""
        now = self.server_time_ms()
        last_open = (now // self.bar_ms) * self.bar_ms - self.bar_ms  # the newest closed bar
        since = last_open - (n - 1) * self.bar_ms
        bars: list[tuple[int, float, float, float, float]] = []
        while len(bars) < n:
            chunk = self._bars(since, min(1500, n - len(bars)), now)
            if not chunk:
                break
            bars.extend(chunk)
            since = chunk[-1][0] + self.bar_ms
            if since > last_open:
                break
        if bars:
            self.last_ts = bars[-1][0]
        return bars[-n:] if n else []

    def funding_settled(self, since_ms: int | None, now_ms: int) -> list[tuple[int, float, float]]:
        """Settlements at or before ``now_ms`` (time, rate, mark NaN when unknown)."""
        rows = self.call(
            "fundingRate",
            lambda: self.client.fetch_funding_rate_history(self.symbol, since=since_ms, limit=1000),
        )
        out = []
        for r in rows:
            t = int(r["timestamp"])
            if t > now_ms:
                continue
            mark = (r.get("info") or {}).get("markPrice")
            try:
                m = float(mark) if mark not in (None, "") else float("nan")
            except (TypeError, ValueError):
                m = float("nan")
            out.append((t, float(r["fundingRate"]), m))
        return out

    def premium(self) -> tuple[int | None, int | None]:
        """(next settlement time, the premium index snapshot's own time) from the exchange; None if absent."""
        info = self.call("premiumIndex", lambda: self.client.fetch_funding_rate(self.symbol))
        nxt = info.get("nextFundingTimestamp") or info.get("fundingTimestamp")
        stamp = info.get("timestamp")
        return (int(nxt) if nxt else None), (int(stamp) if stamp else None)

    def next_funding_ms(self) -> int | None:
        """The next settlement time from the premium index; None when the exchange gives none."""
        return self.premium()[0]

    def premium_problem(self, stamp: int | None, now_ms: int) -> str | None:
        """Why a premium index snapshot taken at ``stamp`` is not current at ``now_ms`` (None: it is)."""
        limit = PREMIUM_MAX_AGE_BARS * self.bar_ms
        if stamp is None:
            return "the premium index carries no time (next settlement unverifiable)"
        if now_ms - stamp > limit:
            return (
                f"premium index stale: its snapshot is {(now_ms - stamp) / 1000:.0f} s old "
                f"(limit {limit / 1000:.0f} s)"
            )
        return None

    def poll(self) -> list[ClosedBar]:
        """New closed bars since the last one delivered, each with the funding known at its close."""
        now = self.server_time_ms()
        self._last_ping = self._clock()
        since = (
            (self.last_ts + self.bar_ms)
            if self.last_ts is not None
            else (now // self.bar_ms - 1) * self.bar_ms
        )
        # Only the bars that can have closed by now are asked for: none before the next close (a poll
        # between closes costs the clock read alone), one at a close (weight 1, not 5 for 1000 rows: a
        # basket polls every symbol every --poll-s on the account's one request-weight budget).
        closed = (now - since) // self.bar_ms
        if closed < 1:
            return []
        bars = self._bars(since, closed, now)
        if not bars:
            return []
        lookback = self._last_settled + 1 if self._last_settled is not None else bars[0][0] - 3 * 86_400_000
        settled = self.funding_settled(lookback, now)
        nxt, stamp = self.premium()
        problem = self.premium_problem(stamp, now)
        out = []
        for t, o, h, lo, c in bars:
            close = t + self.bar_ms
            mine = [
                s
                for s in settled
                if s[0] <= close and (self._last_settled is None or s[0] > self._last_settled)
            ]
            if mine:
                self._last_settled = mine[-1][0]
            later = [s[0] for s in settled if s[0] > close]
            out.append(ClosedBar(t, o, h, lo, c, mine, later[0] if later else nxt, problem))
        self.last_ts = bars[-1][0]
        return out
