"""Basket driver: several symbols' hedge grids against one cross-margin wallet (DESIGN.md "Baskets").

Each symbol keeps its own kernel state, ladder, funding and exchange rules; the account (wallet, the
other symbols' unrealized PnL and maintenance margin, the error and order rings) is shared. The
single-symbol kernels (``bar_open_nb``, the path, ``bar_close_nb``) are the one copy of the trading
logic; the driver only sets each symbol's "rest of the account" slots before it steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.engine.run import RunOutput


@dataclass(frozen=True)
class BasketOutput:
    """A basket run: each symbol's ledgers and summary, the account's equity curve and summary."""

    symbols: tuple[str, ...]
    per_symbol: dict[str, RunOutput]  # each symbol's fills, funding, events, equity rows, summary, meta
    account_equity: np.ndarray  # ACCOUNT_EQUITY_DTYPE rows, one per aligned timestamp
    summary: dict[str, float]  # records.SUMMARY_FIELDS names where they apply to the account
    meta: dict[str, Any] = field(default_factory=dict)


def run_basket(
    markets: Mapping[str, Any],
    strategies: Mapping[str, StrategyConfig],
    venue: VenueConfig,
    curves: bool = True,
    detail: Mapping[str, Any] | None = None,
) -> BasketOutput:
    """Backtest the basket ``markets`` (ccxt symbol -> Market, in basket order) in one wallet.

    ``strategies`` holds each symbol's strategy (overrides applied); ``detail`` the finer markets
    named by ``backtest.detail_timeframe`` per symbol (a symbol left out walks its own OHLC).
    """
    raise NotImplementedError("run_basket: the driver lands in the next commit of branch s9-kernel")
