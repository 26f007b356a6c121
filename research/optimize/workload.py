"""The workload of a study: the profile's base configs, its market and the windows trials are scored on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.research.optimize.folds import DAY_MS, check_no_leakage, fold_bounds
from gridctl.research.optimize.markets import BasketMarket
from gridctl.research.profiles import Profile


@dataclass(frozen=True)
class Window:
    """One scored stretch of data: ``full`` (no validation), or a walk-forward ``train``/``test``."""

    kind: str
    fold: int
    start_ms: int
    end_ms: int
    market: Any  # a data.market.Market, or a BasketMarket for a basket study
    detail: Any = None  # the same window's backtest.detail_timeframe bars (a basket: symbol -> bars)


@dataclass
class Workload:
    """Everything a batch evaluation needs: the profile, base configs, market and windows."""

    profile: Profile
    strategy: Any
    venue: Any
    market: Any
    windows: list[Window]
    data_dir: Path
    symbol: str
    regime_cache: Any = None  # engine.batch.RegimeCache shared by every batch of this workload
    detail: Any = None  # the whole window's detail bars (backtest.detail_timeframe), else None
    holdout: Window | None = None  # validation.holdout_days: never scored by a trial, reported apart

    def regimes(self) -> Any:
        """The batch driver's regime-series cache (one per workload: every window, every batch)."""
        if self.regime_cache is None:
            from gridctl.engine.batch import RegimeCache

            self.regime_cache = RegimeCache()
        return self.regime_cache

    @property
    def folds(self) -> int:
        """Number of walk-forward folds (1 without validation)."""
        return max(w.fold for w in self.windows) + 1

    def describe(self) -> dict[str, Any]:
        """The data window and folds, as stored on the study (for reports and resume checks).

        A basket's ``symbol`` is its symbols joined by commas, ``bars`` its aligned rows and
        ``prices_sha256`` covers every symbol's closes.
        """
        if isinstance(self.market, BasketMarket):
            prices = self.market.prices_sha256()
        else:
            prices = hashlib.sha256(np.ascontiguousarray(self.market.close).tobytes()).hexdigest()[:16]
        return {
            "exchange": self.profile.data.exchange,
            "symbol": self.symbol,
            "timeframe": self.profile.data.timeframe,
            "start_ms": int(self.market.ts[0]),
            "end_ms": int(self.market.ts[-1] + self.market.bar_ms),
            "bars": len(self.market.ts),
            "prices_sha256": prices,
            "windows": [
                {"kind": w.kind, "fold": w.fold, "start_ms": w.start_ms, "end_ms": w.end_ms}
                for w in self.windows
            ],
            "holdout": None
            if self.holdout is None
            else {"start_ms": self.holdout.start_ms, "end_ms": self.holdout.end_ms},
        }


def _day_ms(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    from datetime import UTC, datetime

    try:
        return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        raise GridctlError(f"{what}: {text!r} is not a date (expected YYYY-MM-DD)") from None


def load_workload(profile: Profile, data_dir: Path | None = None) -> Workload:
    """Load the profile's base configs and market and cut its scored windows."""
    from gridctl.configs.loader import load_venue
    from gridctl.data.market import load_market as load_one
    from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, ensure_sample
    from gridctl.data.store import default_data_dir
    from gridctl.research.profiles import profile_basket, profile_strategy

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    strategy = profile_strategy(profile)
    venue = load_venue(profile.base.venue)
    spec = profile.data
    basket = profile_basket(strategy)
    symbol = ",".join(basket) if basket is not None else (spec.symbol or strategy.ccxt_symbol)
    if spec.exchange == SAMPLE_EXCHANGE and SAMPLE_SYMBOL in (basket or (symbol,)):
        ensure_sample(data_dir)

    def load_market(root: Path, exchange: str, sym: str, timeframe: str, a: Any, b: Any) -> Any:
        """One market, or every basket symbol's bars over the same window (a ``BasketMarket``)."""
        if basket is None:
            return load_one(root, exchange, sym, timeframe, a, b)
        return BasketMarket({s: load_one(root, exchange, s, timeframe, a, b) for s in basket})

    start = _day_ms(spec.start, f"profile {profile.name}: data.start")
    end = _day_ms(spec.end, f"profile {profile.name}: data.end")
    market = load_market(data_dir, spec.exchange, symbol, spec.timeframe, start, end)
    if len(market.ts) < 2:
        raise GridctlError(f"profile {profile.name}: the data window holds {len(market.ts)} bars")
    first = int(market.ts[0])
    last = int(market.ts[-1] + market.bar_ms)
    detail_tf = strategy.backtest.detail_timeframe

    def detail_of(part: Any) -> Any:
        """The detail bars over ``part``'s bars (fills walk them, as in ``gridctl backtest``)."""
        if detail_tf is None:
            return None
        end_ms = int(part.ts[-1]) + part.bar_ms
        fine = load_market(data_dir, spec.exchange, symbol, detail_tf, int(part.ts[0]), end_ms)
        return fine.markets if isinstance(fine, BasketMarket) else fine  # a basket's: symbol -> bars

    full_detail = detail_of(market)
    windows: list[Window] = []
    val = profile.validation

    def cut(kind: str, fold: int, a: int, b: int) -> Window:
        part = load_market(data_dir, spec.exchange, symbol, spec.timeframe, a, b)
        return Window(kind, fold, a, b, part, detail_of(part))

    select_end = last  # the end of the data any trial is scored on
    holdout = None
    if val.holdout_days is not None:
        select_end = -(-last // DAY_MS) * DAY_MS - val.holdout_days * DAY_MS
        if select_end - first < DAY_MS:
            raise GridctlError(
                f"profile {profile.name}: validation.holdout_days {val.holdout_days} leaves less than a day "
                f"of the {(last - first) / DAY_MS:.1f}-day data window to select on"
            )
        holdout = cut("holdout", -1, select_end, last)
    if val.scheme == "none":
        if holdout is None:
            windows.append(Window("full", 0, first, last, market, full_detail))
        else:
            windows.append(cut("full", 0, first, select_end))
    else:
        bounds = fold_bounds(first, select_end, val)
        check_no_leakage(bounds, select_end if holdout is not None else None)
        windows = [cut(kind, fold, a, b) for kind, fold, a, b in bounds]
        if not windows:
            days = (select_end - first) / DAY_MS
            raise GridctlError(
                f"profile {profile.name}: walk-forward needs train_days + purge_days + test_days = "
                f"{val.train_days + val.purge_days + val.test_days} days, the data window "
                f"{'before the hold-out ' if holdout is not None else ''}has {days:.1f}"
            )
    work = Workload(
        profile, strategy, venue, market, windows, data_dir, symbol, detail=full_detail, holdout=holdout
    )
    _check_limits_reachable(work)
    return work


#: A generous bound on exit fills per rung and bar: a rung closes at most its lot and one lot entered in
#: the bar (its entry order is placed at decisions, once per bar), doubled for margin; plus a flatten or
#: liquidation fill per side. Only a limit above this bound is refused, so it errs towards admitting.
EXITS_PER_RUNG_PER_BAR = 4


def _check_limits_reachable(work: Workload) -> None:
    """Refuse hard limits no trial could ever satisfy on this data (every trial would be infeasible)."""
    profile = work.profile
    space = profile.search_space

    from gridctl.research.profiles import profile_basket
    from gridctl.research.space import base_value

    def most(key: str, symbol: str | None) -> int:
        own = f"symbol_overrides.{symbol}.{key}"
        for k in (own, key) if symbol is not None else (key,):
            if k in space and space[k].type != "categorical" and space[k].fraction_of is None:
                return int(space[k].high or 0)
        return int(base_value(work.strategy, own if symbol is not None else key))

    symbols = profile_basket(work.strategy) or (None,)
    rungs = sum(most("grid.grid_levels_long", s) + most("grid.grid_levels_short", s) for s in symbols)
    scored = scored_windows(work)
    bars = sum(len(w.market.ts) for w in scored)
    bound = bars * (EXITS_PER_RUNG_PER_BAR * rungs + 2 * len(symbols))
    if profile.limits.min_trades > bound:
        raise GridctlError(
            f"profile {profile.name}: limits.min_trades {profile.limits.min_trades} can never hold: "
            f"the {len(scored)} scored window(s) hold {bars} bars, in which at most {bound} lots can close"
        )


def scored_windows(work: Workload) -> list[Window]:
    """The windows a trial's objective and limits are computed on (train windows in walk-forward)."""
    if work.profile.validation.scheme == "none":
        return [w for w in work.windows if w.kind == "full"]
    kind = "test" if work.profile.objective.target == "out_of_sample" else "train"
    return [w for w in work.windows if w.kind == kind]
