"""Start-up (readiness, warm-up or restart + reconcile) and the polling loop of `gridctl live`.

``prepare`` builds the session, feed, gateway, journal and ops server and runs every readiness item
(all of them, so the message lists every failure). ``run_loop`` is the control loop: it feeds each closed
bar to ``Bridge.on_bar`` and, every ``CONTROL_TICK_S``, applies ops commands and checks the feed's health
and staleness; the feed's own I/O (polls aimed at each bar's close, ``poll_wait_s``, keep-alive pings,
retries) runs on a ``FeedWorker`` thread so that no feed request or retry wait can hold up a command.
The bridge's clock is the exchange's: local time plus the offset measured at each server-time read.
A basket (several symbols on one account) starts with ``prepare_basket`` and runs ``run_basket_loop``
(one feed worker per symbol, ``live_bridge.basket.BasketBridge`` stepping the account).
"""

from __future__ import annotations

import math
import queue
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.engine.state import SL_ORD_ON, SL_ORD_PRICE, SL_ORD_QTY
from gridctl.live_bridge import readiness
from gridctl.live_bridge.bridge import Bridge, BridgeOptions
from gridctl.live_bridge.feed import ExchangeFeed, FeedDown
from gridctl.live_bridge.journal import BasketJournal, Journal, OpsLog
from gridctl.live_bridge.ops import OpsServer, OpsState
from gridctl.live_bridge.options import LiveOptions
from gridctl.live_bridge.readiness import Checklist, filters_match
from gridctl.live_bridge.session import EngineSession


@dataclass
class ExchangeClock:
    """Exchange time = local time + offset (updated whenever the exchange's time is read)."""

    offset_ms: int = 0

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    def follow(self, exchange_ms: int) -> None:
        """The exchange said it is ``exchange_ms`` now."""
        self.offset_ms = int(exchange_ms) - int(time.time() * 1000)


@dataclass
class RunContext:
    bridge: Any = None
    feed: Any = None
    server: Any = None
    journal: Any = None
    gateway: Any = None
    clock: ExchangeClock = field(default_factory=ExchangeClock)
    ops_log: Any = None
    ops_url: str = ""
    restarted: bool = False
    restored: dict[str, Any] | None = None  # a restart's journaled extras (``Journal.restore``)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.ops_log is not None:
            self.ops_log.close()
            self.ops_log = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None


def _follow_both(clock: ExchangeClock, gw: Any) -> Any:
    """The feed's server-time hook: the bridge's clock and the gateway's request timestamps follow it."""

    def on_server_time(exchange_ms: int) -> None:
        clock.follow(exchange_ms)
        gw.follow_time(exchange_ms)

    return on_server_time


def new_run_id() -> str:
    """A new run's id (8 hex digits): the prefix of its client order ids."""
    return secrets.token_hex(4)


def bridge_options(strategy: Any, mode: str, run_id: str) -> BridgeOptions:
    """The bridge's per-run settings: the mode, the run id and the strategy's execution fields."""
    ex = strategy.execution
    return BridgeOptions(
        mode=mode,
        run_id=run_id,
        maker_only=bool(ex.maker_only),
        retry_delay_ms=int(ex.retry_delay_ms),
        unexplained_position=str(ex.unexplained_position),
    )


def load_run_configs(opts: LiveOptions) -> tuple[Any, Any, str]:
    """(strategy, venue, symbol) of a run: the journal path is checked first, then both configs load
    with their overrides; the symbol is ``opts.symbol`` or the strategy's instrument. A ``--symbol``
    other than a one-symbol strategy's instrument retargets it (``strategy.instrument_id``), as
    `gridctl backtest --symbol` does, so the run trades that symbol under its own rules."""
    from gridctl.configs.loader import (
        load_strategy,
        load_venue,
        refuse_inert_symbol_overrides,
        retarget_strategy,
    )
    from gridctl.configs.overrides import symbol_override_sets

    opts.check_journal()
    # With --symbols the basket loader applies per-symbol --set values (research.cli.load_basket_strategy).
    sets = symbol_override_sets(opts.overrides)[0] if opts.symbols else list(opts.overrides)
    strategy = load_strategy(opts.strategy, sets)
    strategy = retarget_strategy(opts.strategy, strategy, opts.symbol, sets)
    if not opts.symbols:
        refuse_inert_symbol_overrides(strategy)
    venue = load_venue(opts.venue, list(opts.venue_overrides), option="--venue-set")
    return strategy, venue, opts.symbol or strategy.ccxt_symbol


def run_replay(
    strategy: Any, venue: Any, opts: LiveOptions, compute_stats: Callable[..., dict[str, Any]]
) -> tuple[Any, Any, dict[str, Any], Bridge]:
    """Replay the stored market ``opts.replay`` through the paper bridge: (run output, market, stats, bridge).

    ``opts.exchange`` / ``opts.symbol`` (default: the strategy's) / ``opts.timeframe`` select the stored
    series when ``opts.replay`` is a data directory, ``opts.start``/``opts.end`` its window (as
    `gridctl backtest` reads them). ``compute_stats`` is ``research.stats``' function (passed in:
    research is the same layer). The output's meta holds ``replay_seconds``.
    """
    from gridctl.live_bridge.replay import ReplayFeed, load_replay_market

    source = opts.replay
    if source is None:
        raise GridctlError("a replay needs --replay PATH")
    if opts.out is not None and opts.out.exists() and not opts.out.is_dir():
        raise GridctlError(f"--out: {opts.out} exists and is not a directory")
    if not source.exists():
        raise GridctlError(f"--replay: {source} does not exist")
    symbol = opts.symbol or strategy.ccxt_symbol
    # A replay plays what is stored; it never generates a market (an empty folder is refused by the load).
    market = load_replay_market(source, None, opts.exchange, symbol, opts.timeframe, opts.window())
    session = EngineSession(strategy, venue, market.symbol, market.timeframe, capacity=len(market.ts) + 16)
    bridge = Bridge(session, bridge_options(strategy, "replay", new_run_id()))
    t0 = time.perf_counter()
    for bar in ReplayFeed(market):
        bridge.on_bar(bar)
        if session.liquidated:
            break
    elapsed = time.perf_counter() - t0
    output = session.output()
    output.meta["bars_total"] = len(market.ts)
    output.meta["replay_seconds"] = elapsed
    return output, market, compute_stats(output, market, strategy, venue), bridge


def default_journal(mode: str, symbol: str, timeframe: str) -> Path:
    from gridctl.data.store import default_data_dir, symbol_key

    return default_data_dir() / "live" / f"{mode}_{symbol_key(symbol)}_{timeframe}.sqlite"


def make_gateway(venue: Any, api_url: str | None) -> Any:
    """The ccxt gateway for ``venue`` (credentials from its env-var references; ``api_url`` replaces
    every API host). Testnet or production follows ``venue.api.testnet`` (``--testnet`` is checked
    against it in readiness)."""
    from gridctl.data.download import make_client
    from gridctl.live_bridge.exchange import CcxtGateway, exchange_id_for, make_exchange_client

    if api_url is None:
        return CcxtGateway(venue, live=True)
    # --api-url (an emulator, a proxy): same wiring, every API host replaced.
    template = make_exchange_client(venue, live=True)
    client = make_client(exchange_id_for(venue), api_url)
    client.enableRateLimit = False
    client.apiKey, client.secret = template.apiKey, template.secret
    return CcxtGateway(venue, live=True, client=client)


def prepare(
    strategy: Any,
    venue: Any,
    opts: LiveOptions,
    token: str | None,
    gateway: Any = None,
    feed_kw: dict[str, Any] | None = None,
    clock: ExchangeClock | None = None,
) -> tuple[Checklist, RunContext]:
    """Build everything a run needs and check every readiness item; nothing is sent to the exchange.

    ``opts`` is the run's ``LiveOptions`` (mode, symbol, journal, ops port, limits); ``token`` the ops API
    bearer token read from ``opts.token_env``. ``gateway``, ``feed_kw`` and ``clock`` replace the
    exchange gateway, the feed's keyword arguments and the clock (tests and emulators).
    """
    mode, timeframe = opts.mode, opts.timeframe
    symbol = opts.symbol or strategy.ccxt_symbol
    ready = Checklist()
    ctx = RunContext(clock=clock or ExchangeClock())
    live = mode == "live"
    try:
        session = EngineSession(strategy, venue, symbol, timeframe)
        _fits_venue(strategy, venue, symbol)
    except GridctlError as err:
        ready.add("config valid", False, str(err))
        return ready, ctx
    ready.add("config valid", True, f"{strategy.origin}; {venue.origin}")
    if live:
        _live_start_items(ready, venue, opts, token, _gates_off(strategy, opts))
    feed = ExchangeFeed.for_venue(venue, symbol, timeframe, opts.api_url, **(feed_kw or {}))
    feed.on_server_time = ctx.clock.follow
    ctx.feed = feed
    # The start-up checks run on readiness' short budget; the bar loop on the venue's reconnect policy.
    with feed.retry_policy(readiness.READY_RETRIES, readiness.READY_RETRY_WAIT_S, readiness.READY_TIMEOUT_S):
        reachable = ready.run(
            "exchange reachable, clock skew", lambda: _reach(feed, ctx.clock, opts.max_skew_ms)
        )
        if reachable:
            ready.run("symbol and filters", lambda: filters_match(venue, feed.load_rules()))
        else:
            ready.add("symbol and filters", False, "exchange not reachable")
        journal, run_id = _open_journal(ready, ctx, opts, symbol)
        if live:
            session = _live_account_items(ready, ctx, gateway, strategy, venue, opts, session, reachable)
        _restore_or_warm(ready, ctx, session, journal, reachable)
        if reachable:
            ready.run("funding rate", lambda: _read_funding(feed, session, session.set_funding))
        ready.run("engine kernels loaded", lambda: prime_kernels(strategy, venue, symbol, timeframe, mode))
        if live and ctx.gateway is None:
            return ready, ctx  # no gateway: nothing more can be checked (the failure is listed)
        ops = OpsState()
        ops.attach(ctx.ops_log)  # commands journaled but not applied before a kill are queued again
        options = bridge_options(strategy, mode, run_id)
        bridge = Bridge(
            session, options, ops, journal, ctx.gateway if live else None, now_ms=ctx.clock.now_ms
        )
        ctx.bridge = bridge
        _bridge_items(ready, ctx, bridge, journal, live, reachable)
        _start_ops_server(ready, ctx, ops, token, opts.ops_port)
        if ctx.restarted and not ready.failures:
            bridge.checkpoint()  # the restart's bookings and order settlements, in one transaction
        elif live and not ready.failures:
            # a new run's first checkpoint, before its first order: a kill in the first bar restarts
            # from the warmed-up engine (and reconciles) instead of finding no state and positions
            journal.save_bar(session, {"operator_paused": False, "warm_ts": feed.last_ts})
        bridge.publish()
        return ready, ctx


def _reach(feed: Any, clock: ExchangeClock, max_skew_ms: int) -> str:
    """Read the exchange's clock: the clock follows it; a skew beyond ``max_skew_ms`` is refused."""
    local = int(time.time() * 1000)
    t = feed.server_time_ms()
    skew = t - (local + int(time.time() * 1000)) // 2
    clock.offset_ms = t - int(time.time() * 1000)
    if abs(skew) > max_skew_ms:
        raise GridctlError(f"clock skew {skew} ms exceeds --max-clock-skew-ms {max_skew_ms}")
    return f"skew {skew} ms"


def _open_journal(ready: Checklist, ctx: RunContext, opts: LiveOptions, symbol: str) -> tuple[Journal, str]:
    """Open the run's journal and ops log (``ctx``): (journal, run id). A journal of another mode or of a
    basket is a failed item; a journal holding state makes the run a restart (``ctx.restarted``)."""
    mode = opts.mode
    path = opts.journal or default_journal(mode, symbol, opts.timeframe)
    journal = Journal(path)
    ctx.journal = journal
    ctx.ops_log = OpsLog(path)  # the operator's commands, durable before the ops API answers 202
    restart = journal.has_state()
    if restart and journal.meta("mode") not in (None, mode):
        ready.add("journal", False, f"{path} belongs to a --{journal.meta('mode')} run, not --{mode}")
    basket = journal.meta("basket")
    if basket is not None:
        ready.add("journal", False, f"{path} is the journal of the basket {basket}")
    run_id = journal.meta("run_id") or new_run_id()
    if not restart and basket is None:  # a basket's journal is refused: its meta stays the basket's
        journal.set_meta("run_id", run_id)
        journal.set_meta("mode", mode)
        journal.set_meta("symbol", symbol)
    ctx.restarted = restart
    # a refused restart (or a basket's journal) must be left as it was found
    journal.hold = restart or basket is not None
    return journal, run_id


def _connect_gateway(gateway: Any, venue: Any, api_url: str | None, feeds: list[Any], ctx: Any) -> Any:
    """The run's exchange gateway (``gateway``, else built for ``venue``), kept in ``ctx.gateway``: the
    feeds share its request pacer and its signed requests follow the exchange's clock (recvWindow)."""
    gw = gateway or make_gateway(venue, api_url)
    ctx.gateway = gw
    if getattr(gw, "pacer", None) is not None:  # one pacer for every request of the account
        for feed in feeds:
            feed.pacer = gw.pacer
            gw.pacer.watch(feed.client)
    if hasattr(gw, "follow_time"):
        for feed in feeds:
            feed.on_server_time = _follow_both(ctx.clock, gw)
        gw.follow_time(ctx.clock.now_ms())
    return gw


def _gateway_and_account(
    ready: Checklist,
    ctx: Any,
    gateway: Any,
    venue: Any,
    opts: LiveOptions,
    feeds: dict[str, Any],
    reachable: bool,
) -> Any:
    """``--live``, one symbol or a basket: the gateway, then the account items (hedge mode, per symbol
    leverage and margin type, balance). Returns the gateway, or None when it could not be built or the
    exchange is not reachable (the failed items are listed)."""
    try:
        gw = _connect_gateway(gateway, venue, opts.api_url, list(feeds.values()), ctx)
    except Exception as err:
        ready.add("gateway", False, f"cannot build the exchange gateway: {err}")
        return None
    if not reachable:
        for item in ACCOUNT_ITEMS:
            ready.add(item, False, "exchange not reachable")
        return None
    _account_checks(ready, gw, venue, tuple(feeds), opts.min_balance)
    return gw


def _live_account_items(
    ready: Checklist,
    ctx: RunContext,
    gateway: Any,
    strategy: Any,
    venue: Any,
    opts: LiveOptions,
    session: EngineSession,
    reachable: bool,
) -> EngineSession:
    """``--live``: the gateway, the account items and, for a new run, the engine sized from the account's
    wallet; returns the session to run (the one given unless it was sized from the account)."""
    symbol = opts.symbol or strategy.ccxt_symbol
    gw = _gateway_and_account(ready, ctx, gateway, venue, opts, {symbol: ctx.feed}, reachable)
    if gw is None:
        return session
    if not ctx.restarted:
        sized: list[EngineSession] = []

        def seed() -> str:
            new, text = _session_from_account(gw, strategy, venue, symbol, opts.timeframe)
            sized.append(new)
            return text

        ready.run("engine sized from the account", seed)
        if sized:
            return sized[0]
    return session


def _fits_venue(strategy: Any, venue: Any, symbol: str | None) -> None:
    """The strategy checked against the venue's rules of the symbol it trades (a basket: of every symbol,
    with its overrides), as ``gridctl backtest`` and ``config validate --venue`` check it: a rung below the
    symbol's minimum notional, sizes off its lot, too many orders, a leverage outside its brackets are
    refused before the run instead of never being placed or being rejected by the exchange."""
    from gridctl.configs.crosscheck import check_strategy_on_venue

    try:
        check_strategy_on_venue(strategy, venue, symbol)
    except GridctlError as err:
        raise GridctlError(str(err).replace("\nerror: ", "; ")) from None


def _restore_or_warm(
    ready: Checklist, ctx: RunContext, session: EngineSession, journal: Journal, reachable: bool
) -> None:
    """The "warm-up / restart" item: a restart restores the engine from the journal, a new run warms it
    up on the exchange's last closed bars."""
    feed = ctx.feed
    if ctx.restarted:

        def restore() -> str:
            extra = journal.restore(session)
            ctx.restored = extra
            # no bar traded yet (a kill in the first bar): the feed resumes after the warm-up
            feed.last_ts = session.last_ts if session.n else extra.get("warm_ts")
            journaled = ctx.ops_log.paused()
            paused = bool(extra.get("operator_paused")) if journaled is None else journaled
            return f"restarted from {journal.path} at bar {session.last_ts} ({session.n} bars journaled)" + (
                "; operator pause kept" if paused else ""
            )

        ready.run("warm-up / restart", restore)
    elif reachable:
        ready.run("warm-up / restart", lambda: _warm(session, feed))
    else:
        ready.add("warm-up / restart", False, "exchange not reachable")


def _warm(session: Any, feed: Any) -> str:
    """Warm an engine session up on the exchange's last closed bars (``engine.regime.warmup_bars``)."""
    need = session.warmup_needed
    bars = feed.history(need)
    if len(bars) < need:
        raise GridctlError(f"warm-up needs {need} closed bars, the exchange gave {len(bars)}")
    arr = np.array(bars, dtype=np.float64)
    session.warm(arr[:, 0], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 1])
    return f"{need} bars (engine.regime.warmup_bars)"


def _read_funding(feed: Any, session: Any, set_funding: Callable[[Any, Any], Any]) -> str:
    """Read the funding settled since the session's last (or the last three days) and the next funding
    time; ``set_funding(settled, next)`` gives them to the session. Entries stay blocked without a rate."""
    now = feed.server_time_ms()
    since = session.funding.ts[-1] + 1 if session.funding.ts else now - 3 * 86_400_000
    settled = feed.funding_settled(since, now)
    nxt = feed.next_funding_ms()
    set_funding(settled, nxt)
    if not session.funding.ts:
        raise GridctlError("the exchange gave no settled funding rate (entries would stay blocked)")
    if nxt is None:
        raise GridctlError("the exchange gave no next funding time")
    return f"last rate {session.funding.rate[-1]:.6f} at {session.funding.ts[-1]}, next {nxt}"


def _orders_read(bridge: Bridge) -> str:
    """The "open orders read" item: the exchange's open orders, read into the bridge before its first bar."""
    return f"{len(bridge.open_orders)} open" if bridge.refresh_orders() else _raise(bridge)


def _bridge_items(
    ready: Checklist, ctx: RunContext, bridge: Bridge, journal: Journal, live: bool, reachable: bool
) -> None:
    """The bridge's start: the account read (live), the open orders read (a new live run), or a
    restart's operator pause, fills cursor and reconciliation with the exchange."""
    restart = ctx.restarted
    if live and reachable:
        bridge.read_account()  # status and metrics show the exchange's account from the start
    if live and not restart and reachable:
        # the first bar's diff starts from this read instead of reading the books on the critical path
        ready.run("open orders read", lambda: _orders_read(bridge))
    if not restart or ctx.restored is None:
        return  # a new run, or a restart whose restore failed (its item says why: the run is refused)
    extra = ctx.restored
    journaled = ctx.ops_log.paused()  # the operator's last pause / flatten / resume, if any
    bridge.operator_paused = bool(extra.get("operator_paused")) if journaled is None else journaled
    bridge.fills_cursor = extra.get("fills_cursor")
    if live and ctx.gateway is not None:
        ready.run("reconcile with the exchange", lambda: reconcile(bridge))
    elif not live:
        journal.hold = False  # paper / replay: nothing on an exchange to reconcile


def _start_ops_server(ready: Checklist, ctx: Any, ops: Any, token: str | None, port: int) -> None:
    """Start the ops API and metrics server (``ctx.server``, ``ctx.ops_url``) and probe both endpoints."""
    try:
        server = OpsServer(ops, token, port).start()
        ctx.server = server
        ctx.ops_url = server.url
        ready.run("ops and metrics endpoints", lambda: _probe(server.url, token))
    except GridctlError as err:
        ready.add("ops and metrics endpoints", False, str(err))


def _raise(bridge: Bridge) -> str:
    raise GridctlError(f"cannot read the open orders: {bridge.log[-1] if bridge.log else 'unknown error'}")


def _gates_off(strategy: Any, opts: LiveOptions) -> list[str]:
    """The strategy's risk gates that are off without ``--allow-gate-off`` naming them."""
    return [
        g
        for g in strategy.gates_disabled()
        if g not in opts.allow_gate_off and g.split(".")[-1] not in opts.allow_gate_off
    ]


def _live_start_items(
    ready: Checklist, venue: Any, opts: LiveOptions, token: str | None, off: list[str]
) -> None:
    """The account's ``--live`` readiness items, one symbol or a basket: venue kind, credentials, risk
    gates (``off``: the gates off without ``--allow-gate-off``) and the ops token."""
    is_testnet = bool(venue.api.testnet)
    if is_testnet and not opts.testnet:
        ready.add("venue kind", False, f"{venue.origin} is a testnet venue: pass --testnet to trade it")
    elif opts.testnet and not is_testnet:
        ready.add(
            "venue kind",
            False,
            f"--testnet given but {venue.origin} is a production venue (api.testnet false)",
        )
    else:
        ready.add("venue kind", True, "testnet" if is_testnet else "production")
    from gridctl.configs.secrets import require_live_credentials

    ready.run(
        "credentials",
        lambda: (require_live_credentials(venue), "api key and secret from the environment")[1],
    )
    ready.add(
        "risk gates",
        not off,
        f"disabled without --allow-gate-off: {off}" if off else "all enabled (or explicitly allowed off)",
    )
    ready.add(
        "ops token", bool(token), "set" if token else f"--live needs an ops API token in ${opts.token_env}"
    )


def prime_kernels(strategy: Any, venue: Any, symbol: str, timeframe: str, mode: str) -> str:
    """Run every kernel a bar can reach once, on a scratch session, before the first live bar.

    numba loads each kernel's machine code from its cache at its first call (~10 ms each); without
    this the first bar, and the first fill, error or flatten, would pay that on the critical path.
    The scratch session is thrown away: the run's own state is untouched.
    """
    from gridctl.engine.enums import Liquidity

    t0 = time.perf_counter()
    scratch = EngineSession(strategy, venue, symbol, timeframe, capacity=16)
    bar_ms = scratch.bar_ms
    # a price at which the first rung's entry clears the venue's minimum notional (so it is placed)
    rules = venue.rules_for(symbol)
    floor = max(float(rules.min_notional), float(venue.risk.min_order_size_usdt), 1.0)
    tick = float(rules.tick_size)
    if strategy.grid.base_qty is not None:
        px = round(4.0 * floor / float(strategy.grid.base_qty) / tick) * tick
    else:  # quote-notional rungs: a price at which rung 1 holds 4x the minimum quantity
        px = round(float(strategy.grid.base_notional) / (4.0 * rules.min_qty) / tick) * tick
    ones = np.full(2, px)
    scratch.warm(np.array([0, bar_ms], np.int64), ones, ones, ones, ones)
    scratch.set_funding([(bar_ms, 0.0, px)], 1000 * bar_ms)
    t = 2 * bar_ms
    if mode == "live":
        scratch.step_close(t, px, px, px, px, True)
        sl = scratch.slots
        on = np.argwhere(sl[:, :, SL_ORD_ON] != 0.0)
        if len(on):
            side, idx = (int(x) for x in on[0])
            p0 = float(sl[side, idx, SL_ORD_PRICE])
            # the post-only retry ladder's kernels (the entry rests again at the end)
            scratch.post_only_rejected(side, idx + 1, p0, 0, float(t), t)
            scratch.retry_price(side, idx + 1, p0, 1, float(t), t)
            scratch.retry_rests(side, idx + 1, p0)
            scratch.book_fill(
                side, idx + 1, "entry", float(sl[side, idx, SL_ORD_PRICE]), float(sl[side, idx, SL_ORD_QTY]),
                Liquidity.MAKER, t + 1,
            )  # fmt: skip
            scratch.book_flatten(side, px, t + 2)
        scratch.record_error(float(t + 3), t)
        scratch.trip_breaker(float(t + 4), t)  # a protection failure's breaker
        scratch.step_close(t + bar_ms, px, px, px, px, False)
        fill_path = (
            "the fill path too" if len(on) else "no entry was placed: the fill path loads at its first fill"
        )
    else:
        scratch.step_paper(t, px, px, px, px)
        scratch.paper_flatten(t)
        fill_path = "paper step and flatten"
    return f"{(time.perf_counter() - t0) * 1000:.0f} ms ({fill_path})"


def _probe(url: str, token: str | None) -> str:
    """GET /metrics (no auth) and /health (with the token) from the running server."""
    import urllib.error
    import urllib.request

    def get(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(f"{url}{path}", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, b""

    status, body = get("/metrics", {})
    if status != 200 or b"gridctl_equity" not in body:
        raise GridctlError(f"{url}/metrics answered {status}")
    status, _ = get("/health", {"Authorization": f"Bearer {token or 'none'}"})
    expected = 200 if token else 401
    if status != expected:
        raise GridctlError(f"{url}/health answered {status}, expected {expected}")
    return f"{url} (/metrics, /health{'' if token else ': no token set, every ops route answers 401'})"


ACCOUNT_ITEMS = ("hedge mode", "leverage", "margin type", "balance")


def _session_from_account(
    gw: Any, strategy: Any, venue: Any, symbol: str, timeframe: str
) -> tuple[EngineSession, str]:
    """A new live run's engine session, starting from the account's wallet, not a configured guess.

    ``backtest.initial_balance`` is replaced by the exchange's wallet balance (sizes, the drawdown gate's
    peak and every percentage then refer to the real account). A new run must start flat: positions the
    engine does not know of would be managed by no lot, so they stop the start.
    """
    from gridctl.configs.overrides import apply_overrides

    acct = gw.account(symbol)
    held = {side: p.qty for side, p in acct.positions.items() if p.qty > 0.0}
    if held:
        raise GridctlError(
            f"the account holds {symbol} positions {held} and this is a new run (no journal): close them "
            "first, or restart with the journal of the run that opened them"
        )
    wallet = float(acct.wallet_balance)
    if not math.isfinite(wallet) or wallet <= 0.0:
        raise GridctlError(f"the exchange reports a wallet balance of {wallet}: nothing to size from")
    seeded, seeded_venue = apply_overrides(strategy, venue, {"backtest.initial_balance": wallet})
    session = EngineSession(seeded, seeded_venue, symbol, timeframe)
    return session, f"wallet {wallet:,.2f} USDT (in place of backtest.initial_balance)"


def _account_checks(
    ready: Checklist, gw: Any, venue: Any, symbols: tuple[str, ...], min_balance: float
) -> None:
    """The account items: hedge mode and the balance once, leverage and margin type per symbol (named
    ``<SYMBOL>: leverage`` in a basket of several)."""
    t = venue.trading

    def name(item: str, sym: str) -> str:
        return f"{sym}: {item}" if len(symbols) > 1 else item

    def hedge() -> str:
        if not gw.hedge_mode():
            gw.set_hedge_mode(True)
            if not gw.hedge_mode():
                raise GridctlError("the account is not in hedge (dual-side) mode and switching failed")
            return "switched on"
        return "on"

    ready.run("hedge mode", hedge)
    for sym in symbols:
        ready.run(
            name("leverage", sym), lambda s=sym: (gw.set_leverage(s, t.leverage), f"{t.leverage}x set")[1]
        )
        ready.run(
            name("margin type", sym),
            lambda s=sym: (gw.set_margin_type(s, t.margin_type), f"{t.margin_type} set")[1],
        )

    def balance() -> str:
        acct = gw.account(symbols[0])
        if not math.isfinite(acct.available) or acct.available < min_balance:
            raise GridctlError(f"available balance {acct.available} is below --min-balance {min_balance}")
        if acct.margin_ratio is None:
            raise GridctlError("the exchange reports no margin ratio for the account")
        return f"available {acct.available:,.2f}"

    ready.run("balance", balance)


def reconcile(bridge: Bridge) -> str:
    """After a restart: explain the exchange's trades, orders and positions from the journal's checkpoint.

    First every journaled order still ``sending``/``open`` is settled against the exchange's open orders:
    resting (kept ``open``) or gone (``canceled``: it can fill no more); an entry with a journaled fill
    not booked joins the partly filled entries (``_settle_journaled_orders``). Then every trade since the
    checkpoint's fills cursor that the journal does not hold is booked, in the order it happened, exactly
    once (an entry and the stop that closed it are two bookings, not a net zero); a gone order's fills
    are final, so a partly filled entry is booked at its fill, before its lot's exits. A gone entry
    with a journaled fill not booked is booked in the walk too, at all its fills, before the first
    trade after its last one (its lot's TP or SL, a flatten of its side) or at the walk's end; a resting
    one waits for its rest's cancel (``sync_fills``). Any other gone order whose fills were journaled
    before the crash but not booked is booked after the walk; one without fills is ``gone`` (it rested)
    or ``never-arrived``.
    Finally the exchange's positions are compared with the engine's. What is left unexplained (a foreign
    or unbookable trade, a position the bookings do not account for) does not stop the start: entries
    are refused under the ``reconcile`` reason and the exposure is guarded once the run starts
    (``Bridge.guard_exposure``). Nothing here is written until the start-up checkpoint (``prepare``);
    an exchange request that fails raises, and the refused restart leaves the journal untouched.
    """
    gw, journal, s = bridge.gw, bridge.journal, bridge.s
    assert gw is not None and journal is not None
    resting = gw.open_orders(s.symbol)
    open_ids = {o.client_id for o in resting}
    gone = _settle_journaled_orders(bridge, open_ids)
    booked = _fills_while_down(bridge)
    extra, lost = _book_gone_orders(bridge, gone)
    booked += extra + _positions_compared(bridge)
    verdict = (
        "positions agree"
        if not bridge.unexplained
        else f"UNEXPLAINED, entries refused and exposure guarded: {'; '.join(bridge.unexplained)}"
    )
    return (
        f"{len(open_ids)} open orders on the exchange, {booked} fills booked while down, "
        f"{lost} journaled orders gone without a fill; {verdict}"
    )


def _fills_while_down(bridge: Bridge) -> int:
    """``Bridge.sync_fills`` for ``reconcile``: the trades booked; a failed trade-history read raises."""
    before = bridge.errors["fills"]
    n = bridge.sync_fills()
    if bridge.errors["fills"] != before:
        raise GridctlError(f"cannot read the exchange's trade history: {bridge.log[-1]}")
    return n


def _settle_journaled_orders(bridge: Bridge, open_ids: set[Any]) -> list[Any]:
    """``reconcile``'s first step: each journaled ``sending``/``open`` order against the exchange's open
    orders; returns the journal rows of those gone.

    Before the walk, every journaled order gone from the exchange is over (it can fill no more), so the
    walk books each at its fills as they come, in time order (a partly filled entry whose rest the last
    run cancelled is booked at its fill, before the exits of its lot). An entry with a journaled fill not
    booked (the checkpoint came while its rest's cancel had not got through) joins
    ``_partial_entries``. Gone (the last run's cancel went through after the checkpoint, or the rest
    filled or was cancelled while down), the walk skips its journaled trades and books it with all its
    fills before the first trade after its last one, or at the walk's end
    (``Bridge._book_gone_entries``): its lot's TP or SL filled while down is booked after it. Still
    resting, it waits for its rest's cancel again, as it did (``Bridge._settle_partial_entries``; a
    flatten of its side met on the way books it first: ``Bridge._book_waiting_entries``).
    """
    journal = bridge.journal
    assert journal is not None
    gone = []
    for row in journal.orders(("sending", "open")):
        cid = row["client_id"]
        if cid in open_ids:
            journal.order_status(cid, "open", bridge.now_ms())
        else:
            journal.order_status(cid, "canceled", bridge.now_ms())
            gone.append(row)
        if row["kind"] == "entry" and journal.unbooked_fills(cid):
            bridge._partial_entries.add(cid)
    return gone


def _book_gone_orders(bridge: Bridge, gone: list[Any]) -> tuple[int, int]:
    """``reconcile`` after the walk: a gone order's fills journaled before the crash but not booked (the
    walk skips known trades) are booked; one without fills is ``gone`` (it rested) or ``never-arrived``.
    Returns (fills booked, orders gone without a fill)."""
    from gridctl.live_bridge.orders import parse_client_id

    journal = bridge.journal
    assert journal is not None
    booked = lost = 0
    for row in gone:
        cid = row["client_id"]
        if journal.fills_for(cid):
            parsed = parse_client_id(cid)
            if parsed is not None:
                booked += bridge._maybe_book(cid, parsed)
        else:
            journal.order_status(cid, "gone" if row["status"] == "open" else "never-arrived", bridge.now_ms())
            lost += 1
    return booked, lost


def _positions_compared(bridge: Bridge) -> int:
    """``reconcile``'s last step: the exchange's positions against the engine's; a difference is flagged
    unexplained. Positions are compared with every trade up to the account read booked: a trade between
    the fills read and the account read is fetched again and booked first. Returns the fills booked."""
    gw, s = bridge.gw, bridge.s
    assert gw is not None
    booked = 0
    for _ in range(3):
        acct = gw.account(s.symbol)
        extra = _fills_while_down(bridge)
        booked += extra
        if extra == 0:
            break
    else:
        raise GridctlError("the exchange kept trading during reconcile: positions could not be compared")
    bridge.open_orders = gw.open_orders(s.symbol)
    bridge._orders_unknown = False
    bridge.account = acct
    gap = bridge.position_gap(acct)
    bridge.unexplained_qty = gap
    if gap != [0.0, 0.0]:
        lq, sq = s.position()
        bridge._flag_unexplained(
            f"positions differ after booking every trade: engine long {lq} short {sq}, exchange long "
            f"{lq + gap[0]:g} short {sq + gap[1]:g}"
        )
    return booked


#: At a stop, the entries' cancels wait up to this long for the rate limits (a full weight window).
STOP_CANCEL_WAIT_S = 61.0


def cancel_entries_at_stop(bridges: dict[str, Bridge]) -> str:
    """A stopped ``--live`` run (Ctrl-C, SIGTERM): cancel every symbol's resting entry orders of this run
    on the exchange, so no entry can fill while nothing attaches its stops; exits and stops stay. Nothing
    is journaled: the restart settles the cancelled orders by client id (``reconcile``) and the first
    order diff sends the entries again. Returns what was done, or which symbols' entries may still rest."""
    from gridctl.live_bridge import gateway as gwmod
    from gridctl.live_bridge.orders import parse_client_id, stop_coverage

    done: list[str] = []
    failed: list[str] = []
    bare: list[str] = []
    for sym, bridge in bridges.items():
        if bridge.o.mode != "live" or bridge.gw is None:
            continue
        pacer = getattr(bridge.gw, "pacer", None)
        saved = pacer.max_wait_s if pacer is not None else None
        if pacer is not None:  # a spent weight window frees within a minute: wait for it, not refuse
            pacer.max_wait_s = max(saved, STOP_CANCEL_WAIT_S)
        try:
            n = 0
            for order in bridge.gw.open_orders(sym):
                parsed = parse_client_id(order.client_id)
                if parsed is not None and parsed.run_id == bridge.o.run_id and parsed.kind == "entry":
                    bridge.gw.cancel(sym, order.client_id)
                    n += 1
            done.append(f"{sym} {n}")
            # an entry that filled since the last fills poll (or partly, before its cancel) has no stop
            # until a restart books it: read the positions again and say so
            try:
                covered = stop_coverage(bridge.gw.open_orders(sym), bridge.o.run_id)
                for pos, p in bridge.gw.account(sym).positions.items():
                    if p.qty - covered.get(pos, 0.0) > float(bridge.s.venue.rules_for(sym).step_size) / 2.0:
                        bare.append(f"{sym} {pos} {round(p.qty - covered.get(pos, 0.0), 12)}")
            except gwmod.GatewayError as err:
                bare.append(f"{sym} unknown, positions unreadable: {err}")
        except gwmod.GatewayError as err:
            failed.append(f"{sym}: {err}")
        finally:
            if pacer is not None:
                pacer.max_wait_s = saved
    if not done and not failed:
        return ""
    text = f"resting entries cancelled ({', '.join(done)}), exits and stops stay" if done else ""
    if bare:
        text += (
            "; POSITION WITHOUT A STOP (" + ", ".join(bare) + "): filled since the last fills poll; "
            "restart now (it books the fill and sends its stop) or close it on the exchange"
        )
    if failed:
        text += ("; " if text else "") + (
            "COULD NOT cancel the resting entries of " + "; ".join(failed) + " (cancel them on the exchange, "
            "or restart: an entry filled while stopped has no stop until then)"
        )
    return text


#: Polling around a bar close: the first poll goes out CLOSE_GRACE_S after the expected close; while the
#: bar is not served yet, polls repeat every FAST_POLL_S for at most FAST_POLL_WINDOW_S, then every poll_s.
CLOSE_GRACE_S = 0.05
FAST_POLL_S = 0.1
FAST_POLL_WINDOW_S = 5.0


def poll_wait_s(last_ts: int | None, bar_ms: int, now_ms: int, poll_s: float) -> float:
    """Seconds to wait before the next poll: aimed at the next bar's close instead of a fixed period.

    With a fixed ``poll_s`` a closed bar waited up to ``poll_s`` before the bridge saw it; this waits
    until just after the expected close (``last_ts + 2 * bar_ms``: the next bar's close), never longer
    than ``poll_s`` (keep-alive, staleness and ops commands run between polls).
    """
    if last_ts is None:
        return poll_s
    due_ms = last_ts + 2 * bar_ms
    if now_ms < due_ms:
        return min(poll_s, (due_ms - now_ms) / 1000.0 + CLOSE_GRACE_S)
    if now_ms - due_ms < FAST_POLL_WINDOW_S * 1000.0:
        return min(poll_s, FAST_POLL_S)
    return poll_s


#: The control loop's tick (s): ops commands are applied, and the feed's health shown, at least this often
#: while the loop is not inside an exchange request.
CONTROL_TICK_S = 0.1


class FeedWorker:
    """The bar feed's I/O on its own thread: polls (aimed at each bar's close), keep-alive pings, and
    the retries and waits of an outage, none of which can hold up the control loop.

    Each poll's closed bars, or the ``FeedDown`` that ended a poll, are handed over through a queue;
    the feed's health (an outage in progress, the feed down) goes to the ops state at once.
    """

    def __init__(self, feed: Any, clock: ExchangeClock, poll_s: float, ops: OpsState | None) -> None:
        self.feed = feed
        self.clock = clock
        self.poll_s = poll_s
        self.ops = ops
        self.out: queue.Queue[list[Any] | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._feed_sleep = feed._sleep
        feed._sleep = self._wait  # a failed attempt is shown at once; its retry wait ends when we stop
        self.thread = threading.Thread(target=self._run, name="gridctl-feed", daemon=True)

    def start(self) -> FeedWorker:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2.0)
        self.feed._sleep = self._feed_sleep

    def _health(self) -> None:
        if self.ops is not None:
            self.ops.set_live_reason("bar feed connection", self.feed.health.problem())

    def _wait(self, seconds: float) -> None:
        self._health()
        self._stop.wait(seconds)

    def _run(self) -> None:
        feed = self.feed
        while not self._stop.is_set():
            try:
                bars = feed.poll()
            except FeedDown as err:
                self.out.put(err)
            except Exception as err:  # a bug, not an outage: the control loop raises it
                self.out.put(err)
                return
            else:
                if bars:
                    self.out.put(bars)
                feed.keep_alive()
            self._health()
            self._idle(poll_wait_s(feed.last_ts, feed.bar_ms, self.clock.now_ms(), self.poll_s))

    def _idle(self, seconds: float) -> None:
        """The wait between two polls (aimed at the next bar's close); ends at once when stopped."""
        self._stop.wait(seconds)

    def take(self, timeout: float) -> list[Any] | BaseException | None:
        """The next poll's bars or failure, waiting at most ``timeout`` s (None: nothing yet)."""
        try:
            return self.out.get(timeout=timeout)
        except queue.Empty:
            return None


#: The options' defaults (poll periods): written once, in ``LiveOptions``.
_DEFAULTS = LiveOptions()


def run_loop(
    ctx: RunContext,
    max_bars: int | None = None,
    poll_s: float = _DEFAULTS.poll_s,
    fills_poll_s: float = _DEFAULTS.fills_poll_s,
) -> int:
    """The control loop: bars from the feed worker until ``max_bars`` were processed (or forever).

    Every ``CONTROL_TICK_S`` it applies the ops commands, shows the feed's health as a pause reason and
    checks staleness, whatever the feed is doing (its requests, retries and waits run on the
    ``FeedWorker`` thread). Between bars a ``--live`` run also looks for fills every ``fills_poll_s`` and
    protects new lots (``Bridge.protect_fills``), so a lot never waits for the bar close for its stop-loss.
    """
    bridge, feed = ctx.bridge, ctx.feed
    worker = FeedWorker(feed, ctx.clock, poll_s, bridge.ops).start()
    done = 0
    fills_due = time.monotonic() + fills_poll_s
    try:
        while max_bars is None or done < max_bars:
            bars = _control_tick(bridge, feed, worker.take(CONTROL_TICK_S))
            for bar in bars:
                bridge.on_bar(bar)
                done += 1
                if max_bars is not None and done >= max_bars:
                    break
            if not bars:
                fills_due = _between_bars([bridge], fills_due, fills_poll_s)
    finally:
        worker.stop()
    return done


# The two control loops' shared ticks (``run_loop``, ``run_basket_loop``); they differ in how bars step.


def _control_tick(bridge: Bridge, feed: Any, got: list[Any] | BaseException | None) -> list[Any]:
    """One symbol's part of every tick: its ops commands applied, its feed's health shown as a pause
    reason, a feed outage pausing entries (``--live``: resting entries cancelled), a feed worker's bug
    raised. Returns the closed bars the poll brought (``got``: ``FeedWorker.take``'s answer)."""
    bridge.apply_commands()
    bridge.set_input_health("bar feed connection", feed.health.problem())
    if isinstance(got, FeedDown):
        if bridge.o.mode == "live":
            bridge._block_entries()
    elif isinstance(got, BaseException):
        raise got
    return got if isinstance(got, list) else []


def _between_bars(
    bridges: list[Bridge],
    fills_due: float,
    fills_poll_s: float,
    shared_read: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> float:
    """A tick that stepped no bar: every bridge looks for fills when they are due (``protect_fills``;
    a basket's on one account read for all its symbols, ``shared_read``), then checks staleness and
    publishes its state. Returns when the fills are due next (monotonic s)."""
    if time.monotonic() >= fills_due:
        with shared_read():
            for b in bridges:
                b.protect_fills()
        fills_due = time.monotonic() + fills_poll_s
    for b in bridges:
        b.check_stale()
        b.publish()
    return fills_due


# --- baskets: several symbols on one account (live_bridge.basket)


@dataclass
class BasketRunContext:
    """What a basket run holds: the ``BasketBridge`` (``bridge``), one feed per symbol and each symbol's
    journal (its tables in the basket's one journal file, ``journal.BasketJournal``),
    the account's one gateway (one request pacer), the basket's ops state and its one ops server."""

    bridge: Any = None
    feeds: dict[str, Any] = field(default_factory=dict)
    journals: dict[str, Any] = field(default_factory=dict)
    ops: Any = None
    server: Any = None
    journal: Any = None  # journal.BasketJournal (--journal): meta, ops log, account, every symbol's tables
    ops_log: Any = None
    gateway: Any = None
    clock: ExchangeClock = field(default_factory=ExchangeClock)
    ops_url: str = ""
    restarted: bool = False

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        for res in (self.ops_log, self.journal, *self.journals.values()):
            if res is not None:
                res.close()
        self.ops_log = self.journal = None
        self.journals = {}


def default_basket_journal(mode: str, symbols: tuple[str, ...], timeframe: str) -> Path:
    """The journal of a basket run without --journal: the symbols' keys joined in basket order."""
    from gridctl.data.store import default_data_dir, symbol_key

    keys = "+".join(symbol_key(s) for s in symbols)
    return default_data_dir() / "live" / f"{mode}_basket_{keys}_{timeframe}.sqlite"


def member_prefix(symbol: str) -> str:
    """The prefix of symbol ``symbol``'s tables in a basket's journal: ``s_<SYMBOL-KEY>_`` (e.g.
    ``s_BTC_USDT_USDT_orders``); they hold that symbol's orders, fills, bars, ledgers and engine row."""
    from gridctl.data.store import symbol_key

    return f"s_{symbol_key(symbol)}_"


def prepare_basket(
    strategy: Any,
    venue: Any,
    opts: LiveOptions,
    token: str | None,
    gateway: Any = None,
    feed_kw: dict[str, Any] | None = None,
    clock: ExchangeClock | None = None,
) -> tuple[Checklist, BasketRunContext]:
    """``prepare`` for a basket (``strategy.symbols``): every readiness item, per symbol where it is a
    symbol's (``<SYMBOL>: <item>``: rules and filters, leverage, margin type, a flat start, warm-up,
    funding, the open orders read), once for the account (clock, credentials, gates, hedge mode,
    balance, ops endpoints). Nothing is sent to the exchange but the account settings.

    A start on a journal whose basket checkpointed is a restart: every symbol's engine state and the
    account's restored from the one basket checkpoint, funding read since, each symbol reconciled with
    the exchange (``reconcile``; live), nothing written until the restart's checkpoint.
    """
    from gridctl.configs.overrides import basket_strategies
    from gridctl.live_bridge.basket import BasketSession

    mode, timeframe = opts.mode, opts.timeframe
    ready = Checklist()
    ctx = BasketRunContext(clock=clock or ExchangeClock())
    symbols = tuple(strategy.basket_symbols)
    try:
        strategies = basket_strategies(strategy)
        session = BasketSession(strategies, venue, timeframe)
        _fits_venue(strategy, venue, None)
    except GridctlError as err:
        ready.add("config valid", False, str(err))
        return ready, ctx
    ready.add("config valid", True, f"{strategy.origin}; {venue.origin}; basket {', '.join(symbols)}")
    if mode == "live":
        off = sorted({f"{sym}: {g}" for sym, strat in strategies.items() for g in _gates_off(strat, opts)})
        _live_start_items(ready, venue, opts, token, off)
    ctx.feeds = {
        sym: ExchangeFeed.for_venue(venue, sym, timeframe, opts.api_url, **(feed_kw or {})) for sym in symbols
    }
    for feed in ctx.feeds.values():
        feed.on_server_time = ctx.clock.follow
    reachable = _basket_reach(ready, ctx, venue, opts.max_skew_ms)
    opened = _open_basket_journal(ready, ctx, opts, symbols)
    if opened is None:
        return ready, ctx
    journal, run_id = opened
    gw = None
    if mode == "live":
        started = _basket_account_items(ready, ctx, gateway, strategy, venue, opts, reachable)
        if started is None:
            return ready, ctx
        gw, sized = started
        if sized is not None:
            strategies, session = sized
    extras = _basket_restore(ready, ctx, session) if ctx.restarted else {}
    _basket_market_items(ready, ctx, session, reachable)
    ready.run(
        "engine kernels loaded",
        lambda: prime_kernels(strategies[symbols[0]], venue, symbols[0], timeframe, mode),
    )
    _basket_bridges(ready, ctx, session, strategies, gw, mode, run_id, extras)
    _start_ops_server(ready, ctx, ctx.ops, token, opts.ops_port)
    if not ready.failures:
        if not ctx.restarted:
            journal.set_meta("run_id", run_id)
            journal.set_meta("mode", mode)
            journal.set_meta("basket", ",".join(symbols))
            if journal.initial_balance is not None:
                journal.set_meta("initial_balance", repr(journal.initial_balance))
        # a restart's bookings and order settlements, or a new run's first checkpoint before its first
        # order: every symbol and the account, one transaction
        ctx.bridge.checkpoint()
    for bridge in ctx.bridge.bridges.values():
        bridge.publish()
    return ready, ctx


def _basket_reach(ready: Checklist, ctx: BasketRunContext, venue: Any, max_skew_ms: int) -> bool:
    """The exchange's clock read once (the first symbol's feed), then every symbol's rules and filters;
    True when the exchange answered."""
    policy = (readiness.READY_RETRIES, readiness.READY_RETRY_WAIT_S, readiness.READY_TIMEOUT_S)
    first = next(iter(ctx.feeds.values()))
    with first.retry_policy(*policy):
        reachable = ready.run("exchange reachable, clock skew", lambda: _reach(first, ctx.clock, max_skew_ms))
    for sym, feed in ctx.feeds.items():
        if reachable:
            with feed.retry_policy(*policy):
                ready.run(f"{sym}: symbol and filters", lambda f=feed: filters_match(venue, f.load_rules()))
        else:
            ready.add(f"{sym}: symbol and filters", False, "exchange not reachable")
    return reachable


def _open_basket_journal(
    ready: Checklist, ctx: BasketRunContext, opts: LiveOptions, symbols: tuple[str, ...]
) -> tuple[Any, str] | None:
    """Open the basket's one journal file (``ctx``): (journal, run id), or None (a failed item) when it
    belongs to a single-symbol run, another basket or another mode. A committed basket checkpoint makes
    the run a restart (``ctx.restarted``)."""
    mode = opts.mode
    base = opts.journal or default_basket_journal(mode, symbols, opts.timeframe)
    journal = BasketJournal(base, {sym: member_prefix(sym) for sym in symbols})
    ctx.journal = journal
    ctx.ops_log = OpsLog(base)
    ctx.journals = dict(journal.members)
    if journal.has_state():
        ready.add("journal", False, f"{base} is the journal of a single-symbol run, not of a basket")
        return None
    earlier = journal.meta("basket")
    restart = journal.has_account()  # a basket checkpoint committed: restart from it
    if earlier is not None and earlier != ",".join(symbols):
        ready.add("journal", False, f"{base} belongs to the basket {earlier}, not {','.join(symbols)}")
        return None
    if restart and journal.meta("mode") != mode:
        ready.add("journal", False, f"{base} belongs to a --{journal.meta('mode')} run, not --{mode}")
        return None
    run_id = (journal.meta("run_id") if restart else None) or new_run_id()
    ctx.restarted = restart
    for member_j in journal.members.values():
        member_j.hold = restart  # a refused restart must leave the journal as it found it
    how = "restart from its last basket checkpoint" if restart else "new run"
    ready.add("journal", True, f"{base}: the account and every symbol's tables in one file ({how})")
    return journal, run_id


def _basket_account_items(
    ready: Checklist,
    ctx: BasketRunContext,
    gateway: Any,
    strategy: Any,
    venue: Any,
    opts: LiveOptions,
    reachable: bool,
) -> tuple[Any, tuple[dict[str, Any], Any] | None] | None:
    """``--live``: the account's gateway and items, then the engine sized from the account (a new run:
    every symbol flat, the wallet) or from the journal's first wallet (a restart). Returns (gateway,
    (per-symbol strategies, session) when sized), or None when the start cannot go on."""
    from gridctl.configs.overrides import apply_overrides, basket_strategies
    from gridctl.live_bridge.basket import BasketSession

    symbols = tuple(ctx.feeds)
    journal = ctx.journal
    gw = _gateway_and_account(ready, ctx, gateway, venue, opts, ctx.feeds, reachable)
    if gw is None:
        return None
    sized: list[tuple[dict[str, Any], Any]] = []

    def size_from(wallet: float) -> None:
        seeded, seeded_venue = apply_overrides(strategy, venue, {"backtest.initial_balance": wallet})
        strategies = basket_strategies(seeded)
        sized.append((strategies, BasketSession(strategies, seeded_venue, opts.timeframe)))

    def resize() -> str:
        wallet = float(journal.meta("initial_balance") or "nan")
        if not math.isfinite(wallet):
            raise GridctlError(f"{journal.path}: the basket's journal holds no initial balance")
        size_from(wallet)
        return f"initial balance {wallet:,.2f} USDT from the journal (the run's first wallet)"

    def seed() -> str:
        open_pos = {}
        for sym in symbols:
            acct = gw.account(sym)
            pos = {side: p.qty for side, p in acct.positions.items() if p.qty > 0.0}
            if pos:
                open_pos[sym] = pos
        if open_pos:
            raise GridctlError(
                f"the account holds positions {open_pos} and this is a new basket run: close them first"
            )
        wallet = float(gw.account(symbols[0]).wallet_balance)
        if not math.isfinite(wallet) or wallet <= 0.0:
            raise GridctlError(f"the exchange reports a wallet balance of {wallet}: nothing to size from")
        size_from(wallet)
        journal.initial_balance = wallet
        return f"wallet {wallet:,.2f} USDT (in place of backtest.initial_balance), every symbol flat"

    ready.run("engine sized from the account", resize if ctx.restarted else seed)
    return gw, (sized[0] if sized else None)


def _basket_restore(ready: Checklist, ctx: BasketRunContext, session: Any) -> dict[str, dict[str, Any]]:
    """The "warm-up / restart" item of a basket restart: every symbol's engine and the account restored
    from the basket checkpoint; returns each symbol's journaled extras (pause, fills cursor, warm-up)."""
    extras: dict[str, dict[str, Any]] = {}
    journal = ctx.journal

    def restore() -> str:
        for sym in ctx.feeds:
            extras[sym] = journal.members[sym].restore(session.sessions[sym])
        journal.restore_account(session)
        for sym in ctx.feeds:  # no bar traded yet (a kill in the first bar): resume after the warm-up
            member = session.sessions[sym]
            ctx.feeds[sym].last_ts = member.last_ts if member.n else extras[sym].get("warm_ts")
        last = session.ts[session.n - 1] if session.n else None
        return f"every symbol and the account at bar {last} ({session.n} bars journaled)"

    ready.run("warm-up / restart", restore)
    return extras


def _basket_market_items(ready: Checklist, ctx: BasketRunContext, session: Any, reachable: bool) -> None:
    """Per symbol: the warm-up (a new run; a restart's engines come from the account's restore item)
    and the funding rate."""
    policy = (readiness.READY_RETRIES, readiness.READY_RETRY_WAIT_S, readiness.READY_TIMEOUT_S)
    for sym, feed in ctx.feeds.items():
        member = session.sessions[sym]
        if not reachable:
            if not ctx.restarted:
                ready.add(f"{sym}: warm-up", False, "exchange not reachable")
            ready.add(f"{sym}: funding rate", False, "exchange not reachable")
            continue
        with feed.retry_policy(*policy):
            if not ctx.restarted:
                ready.run(f"{sym}: warm-up", lambda m=member, f=feed: _warm(m, f))

            def set_funding(settled: Any, nxt: Any, sym: str = sym) -> None:
                session.set_funding(sym, settled, nxt)

            ready.run(f"{sym}: funding rate", lambda m=member, f=feed, s=set_funding: _read_funding(f, m, s))


def _basket_bridges(
    ready: Checklist,
    ctx: BasketRunContext,
    session: Any,
    strategies: dict[str, Any],
    gw: Any,
    mode: str,
    run_id: str,
    extras: dict[str, dict[str, Any]],
) -> None:
    """One bridge per symbol on the basket's ops state, then the ``BasketBridge`` (``ctx.bridge``): live,
    each reads the account and its open orders (a new run) or is reconciled with the exchange (a
    restart); a restart keeps each symbol's operator pause and fills cursor."""
    from gridctl.live_bridge.basket import BasketBridge
    from gridctl.live_bridge.ops import BasketOps

    symbols, restart, journal = tuple(ctx.feeds), ctx.restarted, ctx.journal
    live = mode == "live"
    # a restart whose restore failed (its "warm-up / restart" item says why: the run is refused) has no
    # journaled extras: its bridges are built for the ops server and status only, never reconciled
    restored = restart and all(sym in extras for sym in symbols)
    ops = BasketOps(symbols)
    ops.attach(ctx.ops_log)
    ctx.ops = ops
    bridges = {}
    for sym in symbols:
        options = bridge_options(strategies[sym], mode, run_id)
        bridge = Bridge(
            session.sessions[sym], options, ops.members[sym], ctx.journals[sym], gw, now_ms=ctx.clock.now_ms
        )
        bridges[sym] = bridge
        if restored:
            paused = ctx.ops_log.paused()  # the operator's last pause / flatten / resume, if any
            bridge.operator_paused = bool(extras[sym].get("operator_paused")) if paused is None else paused
            bridge.fills_cursor = extras[sym].get("fills_cursor")
        if live:
            bridge.read_account()
            if restored:
                ready.run(f"{sym}: reconcile with the exchange", lambda b=bridge: reconcile(b))
            elif not restart:
                ready.run(f"{sym}: open orders read", lambda b=bridge: _orders_read(b))
        elif restored:
            journal.members[sym].hold = False  # paper: nothing on an exchange to reconcile
    ctx.bridge = BasketBridge(session, bridges, journal, ops)
    ctx.bridge.warm_ts = {
        sym: (extras.get(sym, {}).get("warm_ts") if restart else ctx.feeds[sym].last_ts) for sym in symbols
    }


def run_basket_loop(
    ctx: BasketRunContext,
    max_bars: int | None = None,
    poll_s: float = _DEFAULTS.poll_s,
    fills_poll_s: float = _DEFAULTS.fills_poll_s,
) -> int:
    """``run_loop`` for a basket: one ``FeedWorker`` per symbol; a bar time goes to
    ``BasketBridge.on_bars`` once every symbol's feed has served a bar at or after it (a symbol without
    a bar there steps it as missing input). Every tick each symbol's bridge applies its ops commands and
    shows its feed's health; between bars each looks for fills (``protect_fills``) and staleness.
    Returns the bar times processed; stops when the account is liquidated."""
    basket = ctx.bridge
    bridges = basket.bridges
    workers = {
        sym: FeedWorker(ctx.feeds[sym], ctx.clock, poll_s, bridges[sym].ops).start() for sym in bridges
    }
    pending: dict[int, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    done = 0
    fills_due = time.monotonic() + fills_poll_s
    try:
        while (max_bars is None or done < max_bars) and not basket.session.liquidated:
            got = {sym: w.take(CONTROL_TICK_S / len(workers)) for sym, w in workers.items()}
            for sym, b in bridges.items():
                for bar in _control_tick(b, ctx.feeds[sym], got[sym]):
                    pending.setdefault(bar.ts, {})[sym] = bar
                    seen[sym] = max(seen.get(sym, bar.ts), bar.ts)
            stepped = False
            while pending and len(seen) == len(bridges) and min(pending) <= min(seen.values()):
                t = min(pending)
                basket.on_bars(t, pending.pop(t))
                done += 1
                stepped = True
                if (max_bars is not None and done >= max_bars) or basket.session.liquidated:
                    break
            if not stepped:
                fills_due = _between_bars(list(bridges.values()), fills_due, fills_poll_s, basket.shared_read)
    finally:
        for w in workers.values():
            w.stop()
    return done
