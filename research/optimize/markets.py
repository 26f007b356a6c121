"""What a study trades: one market, or a basket of markets in one wallet, and running configs on it.

A basket study's windows hold a :class:`BasketMarket` (every basket symbol's bars over the window);
:func:`run_sets` and :func:`equity_rows` run parameter sets or one config on either kind, through
``engine.batch.run_batch`` / ``run_basket_batch`` and ``engine.run.run_single`` /
``engine.basket.run_basket``, so every caller (evaluation, walk-forward, hold-out, the overfitting
statistics, the study report) scores a basket as the account it is.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class BasketMarket:
    """Every basket symbol's bars over one window (``markets``: ccxt symbol -> Market, basket order)."""

    markets: dict[str, Any]

    @property
    def symbols(self) -> tuple[str, ...]:
        """The basket's symbols in step order."""
        return tuple(self.markets)

    @property
    def symbol(self) -> str:
        """The symbols joined by commas (how a study's data names a basket)."""
        return ",".join(self.markets)

    @property
    def timeframe(self) -> str:
        """The one timeframe of every symbol."""
        return next(iter(self.markets.values())).timeframe

    @property
    def bar_ms(self) -> int:
        """Bar length in milliseconds."""
        return int(next(iter(self.markets.values())).bar_ms)

    @functools.cached_property
    def ts(self) -> np.ndarray:
        """The aligned bar open times: the union of the symbols' timestamps (the account's rows)."""
        return np.unique(np.concatenate([np.asarray(m.ts, np.int64) for m in self.markets.values()]))

    def prices_sha256(self) -> str:
        """A short hash of every symbol's closes, in basket order."""
        h = hashlib.sha256()
        for sym, m in self.markets.items():
            h.update(sym.encode())
            h.update(np.ascontiguousarray(m.close).tobytes())
        return h.hexdigest()[:16]


def run_sets(
    market: Any,
    strategy: Any,
    venue: Any,
    sets: Sequence[Mapping[str, Any]],
    detail: Any = None,
    regimes: Any = None,
) -> np.ndarray:
    """Summary rows of ``sets`` (overrides of ``strategy``) on ``market``: one batch-driver call.

    A basket's rows are its account's (``engine.batch.run_basket_batch``).
    """
    from gridctl.engine.batch import run_basket_batch, run_batch

    if isinstance(market, BasketMarket):
        return run_basket_batch(
            market.markets, strategy, venue, sets, detail=detail, regimes=regimes, cache_key=market
        )
    return run_batch(market, strategy, venue, sets, detail=detail, regimes=regimes)


def equity_rows(market: Any, strategy: Any, venue: Any, detail: Any = None) -> np.ndarray:
    """One full backtest of ``strategy`` on ``market``: its equity rows (fields ``ts`` and ``equity``).

    A basket's rows are the account's (``engine.basket.run_basket``: ``account_equity``), ``strategy``
    the basket strategy (its symbols' own strategies by ``configs.overrides.basket_strategies``).
    """
    if isinstance(market, BasketMarket):
        from gridctl.configs.overrides import basket_strategies
        from gridctl.engine.basket import run_basket

        run = run_basket(market.markets, basket_strategies(strategy), venue, curves=True, detail=detail)
        return run.account_equity
    from gridctl.engine.run import run_single

    return run_single(market, strategy, venue, curves=True, detail=detail).equity
