"""Download trade candles, mark-price candles and funding settlements from an exchange through ccxt.

What a download guarantees:

- **Incremental.** Only the parts of ``[start_ms, end_ms)`` the store does not hold yet are requested
  (``data.store.coverage``); re-running a finished download sends no data requests.
- **Closed bars only.** The exchange clock is read first; a candle still open (``ts + bar > server
  time``) is never stored, and funding settlements after the server time do not exist yet.
- **Validated before stored.** Each page is checked (parsable JSON, inside the requested window, on the
  bar grid, strictly ascending, finite positive prices, consistent OHLC; funding within 1 s of the hour)
  before it goes near the store. A bad page counts as a failed request: retried, then a GridctlError.
- **Retried.** Transient failures (``ccxt.OperationFailed``: network errors, timeouts, 418/429 rate
  limits, 5xx, exchange maintenance) are retried with exponential backoff; a ``Retry-After`` header is
  honoured. After ``max_retries`` retries the download stops with a GridctlError naming symbol and range.
- **Atomic and resumable.** Rows are written through ``data.store`` (atomic per partition) as soon as a
  calendar month (candles) or year (funding) is complete, so an interruption leaves only complete,
  valid partitions and the next run fetches only what is missing.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ccxt
import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gridctl.configs.errors import GridctlError
from gridctl.data import store
from gridctl.data.download_options import DEFAULT_TIMEOUT_S, KINDS, FetchOptions
from gridctl.data.timeframes import timeframe_ms
from gridctl.data.validate import check_candles, check_funding, fmt_ts, normalise_funding_ts

# Rows per kline request (ccxt's binance driver caps futures klines at 1000) and per funding request
# (Binance's documented maximum for /fapi/v1/fundingRate).
CANDLE_PAGE_LIMIT = 1000
FUNDING_PAGE_LIMIT = 1000
# Backoff doubles from ``backoff_s`` per retry up to this ceiling.
MAX_BACKOFF_S = 60.0
# A Retry-After longer than this is an IP ban, not a pause: stop instead of sleeping for hours.
MAX_RETRY_AFTER_S = 900.0
# Funding settlements happen at most this far apart on Binance USD-M (1 h, 4 h or 8 h schedules).
FUNDING_MAX_INTERVAL_MS = store.FUNDING_MAX_INTERVAL_MS
# Request funding this much beyond each end of a range, so settlements stamped a few ms before the hour
# are still seen; rows are then kept by their snapped time.
FUNDING_WINDOW_PAD_MS = 1_000
_MONTH = "datetime64[M]"
_YEAR = "datetime64[Y]"


class OptionError(GridctlError):
    """A bad argument; ``option`` names it (``exchange``, ``symbol``, ``timeframe``, ``kinds``, ``range``)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class _BadPayloadError(Exception):
    """A response that cannot be stored (unparsable JSON, rows outside the window or invalid)."""


@dataclass
class KindSummary:
    """What one kind of data cost and produced."""

    kind: str
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)
    rows: int = 0
    requests: int = 0
    retries: int = 0
    files: set[str] = field(default_factory=set)
    funding_snapped: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "missing_ranges": [[a, b] for a, b in self.missing_ranges],
            "rows": self.rows,
            "requests": self.requests,
            "retries": self.retries,
            "files": sorted(self.files),
        }
        if self.kind == "funding":
            out["funding_snapped"] = self.funding_snapped
        return out


@dataclass
class DownloadSummary:
    """The outcome of ``download``: per kind rows written, requests sent, retries; timing."""

    exchange: str
    symbol: str
    timeframe: str
    start_ms: int
    end_ms: int
    server_time_ms: int
    kinds: dict[str, KindSummary]
    elapsed_s: float = 0.0

    @property
    def candle_rows(self) -> int:
        """Trade plus mark bars written."""
        return sum(s.rows for k, s in self.kinds.items() if k != "funding")

    @property
    def bars_per_s(self) -> float:
        """Throughput of this run in written bars (trade + mark) per second of wall time."""
        return self.candle_rows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "start": fmt_ts(self.start_ms),
            "end": fmt_ts(self.end_ms),
            "server_time_ms": self.server_time_ms,
            "kinds": {k: s.to_dict() for k, s in self.kinds.items()},
            "elapsed_s": round(self.elapsed_s, 3),
            "bars_per_s": round(self.bars_per_s, 1),
        }

    def describe(self) -> str:
        """A few human-readable lines for the terminal."""
        span = f"[{fmt_ts(self.start_ms)} .. {fmt_ts(self.end_ms)})"
        lines = [f"{self.exchange} {self.symbol} {self.timeframe} {span}"]
        for kind, s in self.kinds.items():
            if not s.missing_ranges:
                lines.append(f"  {kind}: up to date, nothing fetched")
                continue
            lines.append(
                f"  {kind}: {s.rows:,} rows written in {len(s.files)} file(s), "
                f"{s.requests} request(s), {s.retries} retr{'y' if s.retries == 1 else 'ies'}"
            )
        lines.append(f"  {self.elapsed_s:.1f} s, {self.bars_per_s:,.0f} bars/s")
        return "\n".join(lines)


def make_client(exchange: str, api_url: str | None = None) -> ccxt.Exchange:
    """A ccxt client for ``exchange``; ``api_url`` (scheme://host:port) replaces every API host it uses."""
    cls = getattr(ccxt, exchange, None)
    if exchange not in ccxt.exchanges or not isinstance(cls, type):
        raise OptionError("exchange", f"exchange {exchange!r} is not a ccxt exchange id (e.g. binanceusdm)")
    # Currencies need a private endpoint on binance and are not needed for market data.
    client: ccxt.Exchange = cls({"options": {"fetchCurrencies": False}})
    if api_url is not None:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise OptionError("api-url", f"api url {api_url!r} must look like http://host:port")
        root = f"{parts.scheme}://{parts.netloc}"
        client.urls["api"] = _rebase_urls(client.urls["api"], root)
    return client


def _rebase_urls(urls: Any, root: str) -> Any:
    if isinstance(urls, str):
        return root + urlsplit(urls).path
    if isinstance(urls, dict):
        return {k: _rebase_urls(v, root) for k, v in urls.items()}
    return urls


# HTTP answers worth asking again: rate limits and server-side trouble. Any other 4xx says the request
# itself is wrong (or forbidden), and sending it again cannot help.
_RETRYABLE_4XX = (408, 418, 429)
# Within the budget, the last try gets at least this long to answer; less left means give up now.
MIN_LAST_TRY_S = 1.0


@dataclass(frozen=True)
class Failure:
    """Why one attempt failed, for messages and the retry decision."""

    cause: str  # "name resolution", "connection refused", "timeout", "connection", "http 503", ...
    host: str
    detail: str
    retryable: bool
    unreachable: bool  # no answer from the exchange at all (the network budget applies)

    def describe(self) -> str:
        return f"{self.host}: {self.detail}"


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and every exception it wraps (cause, context, urllib3 ``reason``, exception args)."""
    seen: list[BaseException] = []
    todo = [err]
    while todo and len(seen) < 50:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        todo += [x for x in linked if isinstance(x, BaseException)]
    return seen


def _http_status(err: BaseException) -> int | None:
    for item in _chain(err):
        response = getattr(item, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def _host_of(err: BaseException, fallback: str) -> str:
    for item in _chain(err):
        match = re.search(r"https?://[^\s/'\"]+", str(item))
        if match:
            parts = urlsplit(match.group(0))
            if parts.hostname:
                return parts.netloc
    return fallback


def classify(err: BaseException, fallback_host: str, timeout_s: float | None = None) -> Failure:
    """Tell a name-resolution failure, a refused connection, a timeout and an HTTP error apart."""
    host = _host_of(err, fallback_host)
    chain = _chain(err)
    names = {type(x).__name__ for x in chain}
    text = " ".join(str(x) for x in chain)
    if any(isinstance(x, socket.gaierror) for x in chain) or "NameResolutionError" in names:
        name = host.rsplit(":", 1)[0]
        return Failure("name resolution", host, f"cannot resolve the host name {name!r} (DNS)", False, True)
    if any(isinstance(x, ConnectionRefusedError) for x in chain) or "Connection refused" in text:
        return Failure("connection refused", host, "connection refused (nothing listens there)", True, True)
    status = _http_status(err)
    timed_out = isinstance(err, ccxt.RequestTimeout) or any(isinstance(x, TimeoutError) for x in chain)
    if timed_out and status is None:
        within = f" within {timeout_s:g} s" if timeout_s is not None else ""
        return Failure("timeout", host, f"no answer{within} (timed out)", True, True)
    if status is not None:
        retry = status >= 500 or status in _RETRYABLE_4XX
        reason = "" if retry else "; the request is refused, retrying cannot help"
        return Failure(f"http {status}", host, f"HTTP {status} ({_short(err)}){reason}", retry, False)
    if isinstance(err, _BadPayloadError):
        return Failure("bad payload", host, str(err), True, False)
    if isinstance(err, ccxt.NetworkError) and not isinstance(
        err, (ccxt.DDoSProtection, ccxt.ExchangeNotAvailable)
    ):
        return Failure("connection", host, f"connection failed ({_short(err)})", True, True)
    return Failure("error", host, _short(err), isinstance(err, ccxt.OperationFailed), False)


class _Requester:
    """Sends one logical request with retries; counts requests and retries into a KindSummary.

    Retried: rate limits (418/429, honouring Retry-After), 5xx and maintenance, timeouts, refused or
    reset connections, unparsable pages: at most ``max_retries`` times, and for failures that got no
    answer at all only within ``timeout_s`` of the first one. Not retried: a host name that does not
    resolve, and any other 4xx answer. ``on_retry(what, attempt, failure, delay)`` reports each retry.
    """

    def __init__(
        self,
        client: ccxt.Exchange,
        max_retries: int,
        backoff_s: float,
        sleep: Callable[[float], None],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[str, int, Failure, float], None] | None = None,
    ) -> None:
        self.client = client
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.timeout_s = timeout_s
        self.clock = clock
        self.on_retry = on_retry
        self.request_timeout_ms = int(client.timeout)
        self.host = _api_host(client)

    def call(self, what: str, fn: Callable[[], Any], tally: KindSummary | None = None) -> Any:
        """Run ``fn`` (a ccxt call plus checks) until it succeeds; GridctlError naming ``what`` otherwise."""
        first_failure: float | None = None
        for attempt in range(self.max_retries + 1):
            if tally is not None:
                tally.requests += 1
            self.client.last_json_response = None
            budget_left = (
                self.timeout_s if first_failure is None else self.timeout_s - (self.clock() - first_failure)
            )
            # One request never waits longer than the network budget has left.
            self.client.timeout = max(100, min(self.request_timeout_ms, int(budget_left * 1000)))
            try:
                result = fn()
                if self.client.last_json_response is None:
                    raise _BadPayloadError("the response body is not valid JSON")
                return result
            except (ccxt.OperationFailed, _BadPayloadError) as err:
                failure = classify(err, self.host, self.client.timeout / 1000)
            except ccxt.BaseError as err:
                raise GridctlError(
                    f"{what}: {self.host}: the exchange refused the request: {_short(err)}"
                ) from None
            except (TypeError, ValueError, KeyError, AttributeError, IndexError):
                if self.client.last_json_response is not None:
                    raise  # ccxt choked on valid JSON: a bug, not a bad payload
                # ccxt hands an unparsable body on as text and then fails while parsing it.
                failure = classify(_BadPayloadError("the response body is not valid JSON"), self.host)
            finally:
                self.client.timeout = self.request_timeout_ms
            if first_failure is None:
                first_failure = self.clock()
            if not failure.retryable:
                raise GridctlError(f"{what}: {failure.describe()}; not retried")
            delay = self._delay(failure, attempt, what)
            if attempt == self.max_retries:
                raise GridctlError(
                    f"{what}: failed after {self.max_retries} retries; last error: {failure.describe()}"
                )
            if failure.unreachable:
                waited = self.clock() - first_failure
                remaining = self.timeout_s - waited
                if remaining <= MIN_LAST_TRY_S:
                    raise GridctlError(
                        f"{what}: {failure.describe()}; gave up after {waited:.0f} s and {attempt + 1} "
                        f"attempt(s) (timeout {self.timeout_s:g} s)"
                    )
                delay = min(delay, remaining - MIN_LAST_TRY_S)  # leave the last try a second to answer
            if tally is not None:
                tally.retries += 1
            if self.on_retry is not None:
                self.on_retry(what, attempt + 1, failure, delay)
            self.sleep(delay)
        raise AssertionError("unreachable")  # the last attempt either returned or raised

    def _delay(self, failure: Failure, attempt: int, what: str) -> float:
        backoff = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
        if failure.cause not in ("http 418", "http 429") and not failure.cause.startswith("http 5"):
            return backoff  # only 418/429/5xx answers are fresh responses that may carry Retry-After
        headers = self.client.last_response_headers or {}
        value = headers.get("Retry-After")
        try:
            retry_after = float(value) if value is not None else None
        except ValueError:
            retry_after = None
        if retry_after is None:
            return backoff
        if retry_after > MAX_RETRY_AFTER_S:
            raise GridctlError(
                f"{what}: the exchange asks to wait {retry_after:.0f} s (Retry-After; an IP ban?); "
                "try again later"
            )
        return max(retry_after, 0.0)


def _api_host(client: ccxt.Exchange) -> str:
    """host:port of the client's futures API (for messages about failures without a URL)."""
    urls = client.urls.get("api", {}) if isinstance(client.urls, dict) else {}
    candidates = [urls] if isinstance(urls, str) else [urls.get(k) for k in ("fapiPublic", "public")]
    for url in candidates:
        if isinstance(url, str) and urlsplit(url).netloc:
            return urlsplit(url).netloc
    return client.id


def _short(err: Exception, limit: int = 300) -> str:
    """An error for a message: our own payload findings in full, ccxt's (which quote bodies) cut short."""
    if isinstance(err, _BadPayloadError):
        return str(err)
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[:limit] + "..."


def missing_ranges(start: int, end: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``[start, end)`` minus the half-open ``covered`` ranges (any order, may overlap), sorted, disjoint."""
    gaps: list[tuple[int, int]] = []
    cursor = start
    for lo, hi in sorted(covered):
        if hi <= lo or hi <= cursor or lo >= end:
            continue  # empty, already passed, or beyond the request
        if lo > cursor:
            gaps.append((cursor, lo))
        cursor = max(cursor, hi)
        if cursor >= end:
            break
    if cursor < end:
        gaps.append((cursor, end))
    return gaps


def _candle_gaps(
    data_dir: Path, exchange: str, symbol: str, timeframe: str, kind: str, start: int, end: int
) -> list[tuple[int, int]]:
    bar = timeframe_ms(timeframe)
    covered = [(a, b + bar) for a, b in store.coverage(data_dir, exchange, symbol, timeframe, kind)]
    return missing_ranges(start, end, covered)


def _funding_gaps(data_dir: Path, exchange: str, symbol: str, start: int, end: int) -> list[tuple[int, int]]:
    """Parts of ``[start, end)`` where a settlement may exist that the store does not hold.

    Around each stored run (settlements at most 8 h apart) nothing can be missing closer than one
    funding interval (the smallest step stored, at most 8 h) before its first or after its last row.
    """
    runs = store.coverage(data_dir, exchange, symbol, "1h", kind="funding")
    ts = store.read_funding(data_dir, exchange, symbol)["ts"].to_numpy()
    steps = np.diff(ts)
    interval = int(min(steps.min(), FUNDING_MAX_INTERVAL_MS)) if steps.size else FUNDING_MAX_INTERVAL_MS
    covered = [(a - interval + 1, b + interval) for a, b in runs]
    return missing_ranges(start, end, covered)


def _candle_page(
    rows: list[list[Any]], since: int, until: int, bar: int, now: int, mark: bool, source: str
) -> pl.DataFrame:
    """Check one page of ccxt OHLCV rows and return it as a candle frame (mark: volume NaN)."""
    try:
        arr = np.array([[r[0], r[1], r[2], r[3], r[4], r[5]] for r in rows], dtype=object).reshape(
            len(rows), 6
        )
        ts = arr[:, 0].astype(np.int64)
        values = arr[:, 1:5].astype(np.float64)
        volume = np.full(len(rows), np.nan) if mark else arr[:, 5].astype(np.float64)
    except (TypeError, ValueError, IndexError) as err:
        raise _BadPayloadError(f"{source}: malformed kline rows ({err})") from None
    if ts.size and (ts[0] < since or ts[-1] >= until):
        raise _BadPayloadError(
            f"{source}: page holds bars outside the requested [{fmt_ts(since)}, {fmt_ts(until)})"
        )
    if ts.size and ts[-1] + bar > now:
        raise _BadPayloadError(f"{source}: page holds the bar {fmt_ts(ts[-1])}, which is still open")
    try:
        check_candles(
            ts,
            values[:, 0],
            values[:, 1],
            values[:, 2],
            values[:, 3],
            volume,
            bar,
            source,
            "mark" if mark else "trade",
        )
    except GridctlError as err:
        raise _BadPayloadError(str(err)) from None
    return pl.DataFrame(
        {
            "ts": ts,
            "open": values[:, 0],
            "high": values[:, 1],
            "low": values[:, 2],
            "close": values[:, 3],
            "volume": volume,
        }
    )


def _funding_page(rows: list[dict[str, Any]], source: str) -> tuple[pl.DataFrame, np.ndarray]:
    """Check one page of ccxt funding entries; return (frame on the hour grid, raw exchange times)."""
    try:
        raw = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
        rate = np.array([float(r["fundingRate"]) for r in rows], dtype=np.float64)
        mark = np.array([_mark_price(r.get("info")) for r in rows], dtype=np.float64)
    except (TypeError, ValueError, KeyError) as err:
        raise _BadPayloadError(f"{source}: malformed funding rows ({err})") from None
    try:
        snapped, _ = normalise_funding_ts(raw, source)
        check_funding(snapped, rate, mark, source)
    except GridctlError as err:
        raise _BadPayloadError(str(err)) from None
    return pl.DataFrame({"ts": snapped, "rate": rate, "mark_price": mark}), raw


def _mark_price(info: Any) -> float:
    """``markPrice`` of a raw fundingRate entry; NaN when absent or empty (Binance's oldest rows)."""
    value = info.get("markPrice") if isinstance(info, dict) else None
    if value is None or value == "":
        return float("nan")
    return float(value)


class _Progress:
    """A rich progress bar on stderr (one task per kind, plus a status line for retries), or nothing."""

    def __init__(self, enabled: bool) -> None:
        self._bar = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}"),
                console=Console(stderr=True),
                transient=False,
            )
            if enabled
            else None
        )
        self._tasks: dict[str, Any] = {}
        self._retries: dict[str, int] = {}
        self._current = "connect"

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def add(self, kind: str, total: int) -> None:
        self._current = kind
        if self._bar is not None:
            self._tasks[kind] = self._bar.add_task(kind, total=max(total, 1), note="")

    def advance(self, kind: str, rows: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._tasks[kind], rows)

    def finish(self, kind: str) -> None:
        if self._bar is not None:
            task = self._tasks[kind]
            count = self._retries.get(kind, 0)
            note = f"{count} retr{'y' if count == 1 else 'ies'}" if count else ""
            self._bar.update(task, completed=self._bar.tasks[task].total, note=note)

    def retry(self, what: str, attempt: int, failure: Failure, delay: float) -> None:
        """Show a retry on the current task's line: count, cause and the wait before the next try."""
        kind = self._current
        self._retries[kind] = self._retries.get(kind, 0) + 1
        if self._bar is None:
            return
        if kind not in self._tasks:
            self._tasks[kind] = self._bar.add_task(kind, total=1, note="")
        note = (
            f"[yellow]retry {self._retries[kind]} ({failure.cause} at {failure.host}); "
            f"next try in {delay:.1f} s[/yellow]"
        )
        self._bar.update(self._tasks[kind], note=note)


def _check_arguments(
    timeframe: str, kinds: tuple[str, ...], start_ms: int, end_ms: int, max_retries: int, timeout_s: float
) -> int:
    """Check a download's arguments (before any request); returns the bar length in ms."""
    try:
        bar = timeframe_ms(timeframe)
    except GridctlError as err:
        raise OptionError("timeframe", str(err)) from None
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise OptionError("kinds", f"kinds {list(kinds)!r}: choose one or more of {', '.join(KINDS)}")
    if start_ms >= end_ms:
        raise OptionError(
            "range", f"range is empty: end {fmt_ts(end_ms)} is not after start {fmt_ts(start_ms)}"
        )
    if max_retries < 0:
        raise OptionError("max_retries", f"max_retries must be >= 0, got {max_retries}")
    if not timeout_s > 0:
        raise OptionError("timeout", f"timeout must be a positive number of seconds, got {timeout_s}")
    return bar


#: What ``download`` and ``download_symbols`` fetch, and how, when the caller gives no ``FetchOptions``.
DEFAULT_FETCH = FetchOptions()


def download(
    exchange: str,
    symbol: str,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    data_dir: Path,
    fetch: FetchOptions = DEFAULT_FETCH,
) -> DownloadSummary:
    """Fetch what the store lacks of ``[start_ms, end_ms)`` for ``symbol`` and write it through the store
    (what to fetch and how: ``fetch``)."""
    started = time.perf_counter()
    f = fetch
    bar = _check_arguments(timeframe, f.kinds, start_ms, end_ms, f.max_retries, f.timeout_s)
    data_dir = Path(data_dir)
    try:
        store.symbol_key(symbol)
    except GridctlError as err:
        raise OptionError("symbol", str(err)) from None
    client = f.client if f.client is not None else make_client(exchange, f.api_url)
    client.enableLastJsonResponse = True  # lets _Requester tell an unparsable body from an empty page
    with _Progress(f.progress) as bars:
        requester = _Requester(client, f.max_retries, f.backoff_s, f.sleep, f.timeout_s, f.clock, bars.retry)
        summary = _download_with(
            client, requester, bars, exchange, symbol, timeframe, bar, start_ms, end_ms, data_dir, f.kinds
        )
    summary.elapsed_s = time.perf_counter() - started
    return summary


def symbol_problem(client: ccxt.Exchange, exchange: str, symbol: str, kinds: tuple[str, ...]) -> str | None:
    """Why ``symbol`` cannot be downloaded from the client's (loaded) markets, or None when it can."""
    try:
        store.symbol_key(symbol)
    except GridctlError as err:
        return str(err)
    market = client.markets.get(symbol)
    if market is None:
        listed = ", ".join(sorted(client.markets)[:5])
        return f"symbol {symbol!r} is not a market on {exchange} (e.g. {listed})"
    if not market.get("swap") and ("mark" in kinds or "funding" in kinds):
        return f"symbol {symbol!r} is not a perpetual swap; it has no mark price or funding"
    return None


def download_symbols(
    exchange: str,
    symbols: tuple[str, ...],
    timeframe: str,
    start_ms: int,
    end_ms: int,
    data_dir: Path,
    fetch: FetchOptions = DEFAULT_FETCH,
    on_symbol: Callable[[int, str], None] | None = None,
) -> list[DownloadSummary]:
    """``download`` for several symbols, one after another over one client (markets loaded once).

    Every symbol is checked against the exchange's markets before anything is fetched: bad symbols are
    one ``OptionError("symbol")`` with one line per symbol, and nothing is written. ``on_symbol(i, s)``
    is called before symbol ``i`` (0-based) starts (the CLI prints a progress line there).
    """
    if not symbols:
        raise OptionError("symbol", "no symbol given")
    f = fetch
    _check_arguments(timeframe, f.kinds, start_ms, end_ms, f.max_retries, f.timeout_s)
    client = f.client if f.client is not None else make_client(exchange, f.api_url)
    client.enableLastJsonResponse = True
    if not client.markets:
        requester = _Requester(client, f.max_retries, f.backoff_s, f.sleep, f.timeout_s, f.clock)
        requester.call(f"{exchange}: loading markets", client.load_markets)
    problems = [p for s in symbols if (p := symbol_problem(client, exchange, s, f.kinds)) is not None]
    if problems:
        raise OptionError("symbol", "\n".join(problems))
    out = []
    for i, symbol in enumerate(symbols):
        if on_symbol is not None:
            on_symbol(i, symbol)
        out.append(
            download(exchange, symbol, timeframe, start_ms, end_ms, data_dir, replace(f, client=client))
        )
    return out


def _download_with(
    client: ccxt.Exchange,
    requester: _Requester,
    bars: _Progress,
    exchange: str,
    symbol: str,
    timeframe: str,
    bar: int,
    start_ms: int,
    end_ms: int,
    data_dir: Path,
    kinds: tuple[str, ...],
) -> DownloadSummary:
    """The body of ``download`` once the arguments are checked: markets, server time, then each kind."""
    connect = f"{exchange} at {requester.host}"
    bars.add(connect, 2)
    if not client.markets:  # a reused client keeps its markets; ccxt then sends no request
        requester.call(f"{exchange}: loading markets", client.load_markets)
    bars.advance(connect, 1)
    problem = symbol_problem(client, exchange, symbol, kinds)
    if problem is not None:
        raise OptionError("symbol", problem)
    if timeframe not in (client.timeframes or {}):
        raise OptionError("timeframe", f"timeframe {timeframe!r} is not offered by {exchange}")
    now = int(requester.call(f"{exchange}: reading the server time", client.fetch_time))
    bars.finish(connect)

    summary = DownloadSummary(exchange, symbol, timeframe, start_ms, end_ms, now, {})
    first_bar = -(-start_ms // bar) * bar
    candle_end = min(end_ms, now // bar * bar)  # the bar opening at now // bar * bar is still open
    for kind in kinds:
        tally = summary.kinds[kind] = KindSummary(kind)
        if kind == "funding":
            gaps = _funding_gaps(data_dir, exchange, symbol, start_ms, min(end_ms, now + 1))
            tally.missing_ranges = gaps
            bars.add(kind, sum(-(-(b - a) // FUNDING_MAX_INTERVAL_MS) for a, b in gaps))
            for a, b in gaps:
                _fetch_funding(client, requester, data_dir, exchange, symbol, a, b, tally, bars)
        else:
            store_kind = "trade" if kind == "candles" else "mark"
            gaps = (
                _candle_gaps(data_dir, exchange, symbol, timeframe, store_kind, first_bar, candle_end)
                if first_bar < candle_end
                else []
            )
            tally.missing_ranges = gaps
            bars.add(kind, sum((b - a) // bar for a, b in gaps))
            for a, b in gaps:
                _fetch_candles(
                    client, requester, data_dir, exchange, symbol, timeframe, kind, a, b, now, tally, bars
                )
        bars.finish(kind)
    return summary


def _fetch_candles(
    client: ccxt.Exchange,
    requester: _Requester,
    data_dir: Path,
    exchange: str,
    symbol: str,
    timeframe: str,
    kind: str,
    start: int,
    end: int,
    now: int,
    tally: KindSummary,
    bars: _Progress,
) -> None:
    """Page through ``[start, end)``, writing each calendar month as soon as it is complete."""
    bar = timeframe_ms(timeframe)
    mark = kind == "mark"
    store_kind = "mark" if mark else "trade"
    fetch = client.fetch_mark_ohlcv if mark else client.fetch_ohlcv
    buffer: list[pl.DataFrame] = []
    since = start
    while since < end:
        what = f"{symbol} {kind} {timeframe} [{fmt_ts(since)} .. {fmt_ts(end)})"

        def page(since: int = since, what: str = what) -> pl.DataFrame:
            rows = fetch(symbol, timeframe, since=since, limit=CANDLE_PAGE_LIMIT, params={"until": end - 1})
            return _candle_page(rows, since, end, bar, now, mark, "the page received")

        frame = requester.call(what, page, tally)
        if frame.height == 0:
            break  # nothing more in [since, end) on the exchange
        buffer.append(frame)
        last = int(frame["ts"][-1])
        since = last + bar
        bars.advance(kind, frame.height)
        month_of_last = np.datetime64(last, "ms").astype(_MONTH)
        month_start = int(month_of_last.astype("datetime64[ms]").astype(np.int64))
        if int(buffer[0]["ts"][0]) < month_start:
            pending = pl.concat(buffer)
            done = pending.filter(pl.col("ts") < month_start)
            buffer = [pending.filter(pl.col("ts") >= month_start)]
            _write_candles(data_dir, exchange, symbol, timeframe, store_kind, done, tally)
    if buffer:
        _write_candles(data_dir, exchange, symbol, timeframe, store_kind, pl.concat(buffer), tally)


def _write_candles(
    data_dir: Path,
    exchange: str,
    symbol: str,
    timeframe: str,
    kind: str,
    df: pl.DataFrame,
    tally: KindSummary,
) -> None:
    if df.height == 0:
        return
    paths = store.write_candles(data_dir, exchange, symbol, timeframe, df, kind=kind)
    tally.rows += df.height
    tally.files.update(str(p) for p in paths)


def _fetch_funding(
    client: ccxt.Exchange,
    requester: _Requester,
    data_dir: Path,
    exchange: str,
    symbol: str,
    start: int,
    end: int,
    tally: KindSummary,
    bars: _Progress,
) -> None:
    """Page through settlements in ``[start, end)`` (by snapped time), writing each finished year."""
    buffer: list[pl.DataFrame] = []
    since = start - FUNDING_WINDOW_PAD_MS
    until = end - 1 + FUNDING_WINDOW_PAD_MS
    while since <= until:
        what = f"{symbol} funding [{fmt_ts(max(since, start))} .. {fmt_ts(end)})"

        def page(since: int = since, what: str = what) -> tuple[pl.DataFrame, np.ndarray]:
            rows = client.fetch_funding_rate_history(
                symbol, since=since, limit=FUNDING_PAGE_LIMIT, params={"until": until}
            )
            frame, raw = _funding_page(rows, "the page received")
            if raw.size and (raw[0] < since or raw[-1] > until):
                raise _BadPayloadError(f"{what}: page holds settlements outside the requested window")
            return frame, raw

        frame, raw = requester.call(what, page, tally)
        if frame.height == 0:
            break
        since = int(raw[-1]) + 1
        snapped = frame["ts"].to_numpy()
        keep = (snapped >= start) & (snapped < end)
        tally.funding_snapped += int(np.count_nonzero(raw[keep] != snapped[keep]))
        frame = frame.filter(pl.Series(keep))
        bars.advance("funding", frame.height)
        if frame.height == 0:
            continue
        buffer.append(frame)
        year_of_last = np.datetime64(int(frame["ts"][-1]), "ms").astype(_YEAR)
        year_start = int(year_of_last.astype("datetime64[ms]").astype(np.int64))
        if int(buffer[0]["ts"][0]) < year_start:
            pending = pl.concat(buffer)
            buffer = [pending.filter(pl.col("ts") >= year_start)]
            _write_funding(data_dir, exchange, symbol, pending.filter(pl.col("ts") < year_start), tally)
    if buffer:
        _write_funding(data_dir, exchange, symbol, pl.concat(buffer), tally)


def _write_funding(data_dir: Path, exchange: str, symbol: str, df: pl.DataFrame, tally: KindSummary) -> None:
    if df.height == 0:
        return
    paths = store.write_funding(data_dir, exchange, symbol, df)
    tally.rows += df.height
    tally.files.update(str(p) for p in paths)
