"""The shipped leverage brackets (configs/venues/symbols/binance_usdm.yaml): complete and self-consistent.

Checked on the raw YAML, independently of the schema's own validator: every symbol with exchange rules
(and every symbol ../shared/data/real holds) has brackets; floors and caps chain; the maintenance margin
ratio rises and the max leverage falls; and each ``cum`` keeps the maintenance margin ``notional * mmr -
cum`` continuous, i.e. equal to the integral of the tier ratios from 0 (Binance's definition of cum).
Arithmetic is exact (fractions of the decimal figures as written). Spot values are derived by hand.
"""

from __future__ import annotations

import re
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import yaml

from gridctl.configs import loader
from gridctl.configs.loader import load_venue
from gridctl.configs.schema import instrument_to_ccxt
from gridctl.engine.margin import maint_margin_nb

SNAPSHOT = loader.SHIPPED_DIRS["venue"] / "symbols" / "binance_usdm.yaml"
RAW = yaml.safe_load(SNAPSHOT.read_text())
SYMBOLS = list(RAW["symbols"])


def tiers(symbol: str) -> list[tuple[Fraction, Fraction, Fraction, Fraction, Fraction]]:
    """(floor, cap, mmr, cum, max_leverage) of each bracket, exact, bracket 1 first."""
    keys = ("notional_floor", "notional_cap", "maint_margin_ratio", "cum", "max_leverage")
    return [tuple(Fraction(str(row[k])) for k in keys) for row in RAW["brackets"][symbol]]


def integral_mm(table: list[tuple[Fraction, ...]], notional: Fraction) -> Fraction:
    """Maintenance margin as the integral of the tier ratio over [0, notional] (no cum involved)."""
    total = Fraction(0)
    for floor, cap, mmr, _cum, _lev in table:
        if notional > floor:
            total += (min(notional, cap) - floor) * mmr
    return total


def engine_brackets(symbol: str) -> np.ndarray:
    """The symbol's brackets as the loaded shipped venue gives them, in the engine's row layout."""
    rows = load_venue("binance_futures").brackets_for(symbol)
    return np.array(
        [[b.notional_floor, b.notional_cap, b.maint_margin_ratio, b.cum, b.max_leverage] for b in rows]
    )


def test_every_symbol_with_rules_and_every_real_data_symbol_has_brackets(real_data: Path) -> None:
    assert set(RAW["brackets"]) == set(SYMBOLS)
    held = {
        f"{m.group(1)}/USDT:USDT"
        for p in real_data.glob("binanceusdm_*USDT_1h_*.parquet")
        if (m := re.match(r"binanceusdm_([A-Z0-9]+)USDT_1h_", p.name))
    }
    assert held == {f"{s}/USDT:USDT" for s in ("BTC", "ETH", "SOL", "XRP", "BNB", "DOGE")}
    assert held <= set(RAW["brackets"])
    for name in ("binance_futures", "binance_futures_testnet"):
        venue = load_venue(name)
        for listed in venue.symbols:
            assert venue.brackets_for(instrument_to_ccxt(f"{listed}.BINANCE")), (name, listed)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_brackets_chain_with_rising_mmr_and_falling_leverage(symbol: str) -> None:
    table = tiers(symbol)
    assert len(table) >= 2
    assert table[0][0] == 0 and table[0][3] == 0
    for (f0, c0, m0, _k0, l0), (f1, c1, m1, _k1, l1) in pairwise(table):
        assert f0 < c0 == f1 < c1
        assert m1 > m0
        assert l1 < l0
    assert table[-1][4] == 1 and table[-1][2] == Fraction(1, 2)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_cum_keeps_the_maintenance_margin_continuous_at_every_floor(symbol: str) -> None:
    table = tiers(symbol)
    for k in range(1, len(table)):
        floor, _cap, mmr, cum, _lev = table[k]
        _pf, _pc, prev_mmr, prev_cum, _pl = table[k - 1]
        # at the floor the tier below and the tier above owe the same maintenance margin
        assert floor * prev_mmr - prev_cum == floor * mmr - cum, (symbol, k + 1)
    for floor, cap, mmr, cum, _lev in table:
        for n in (floor, (floor + cap) / 2, cap):
            assert n * mmr - cum == integral_mm(table, n), (symbol, float(n))


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_the_engine_margin_just_below_and_at_each_floor_agrees(symbol: str) -> None:
    br = engine_brackets(symbol)
    for floor in br[1:, 0]:
        below = maint_margin_nb(br, float(np.nextafter(floor, 0.0)))
        at = maint_margin_nb(br, float(floor))
        assert below == pytest.approx(at, rel=1e-12, abs=1e-6), (symbol, floor)


@pytest.mark.parametrize(
    ("symbol", "notional", "margin"),
    [
        # SOL tier 4 (800k..4M, 2 %, cum 8,380): 20,000 - 8,380 = 11,620
        #   = 20,000*0.5 % + 80,000*0.65 % + 700,000*1 % + 200,000*2 % = 100 + 520 + 7,000 + 4,000
        ("SOL/USDT:USDT", 1_000_000.0, 11_620.0),
        # BNB tier 5 (1.5M..3M, 2.5 %, cum 9,710): 50,000 - 9,710 = 40,290
        #   = 10,000*0.5 % + 40,000*0.6 % + 150,000*1 % + 1.3M*2 % + 500,000*2.5 %
        #   = 50 + 240 + 1,500 + 26,000 + 12,500
        ("BNB/USDT:USDT", 2_000_000.0, 40_290.0),
        # DOGE tier 4 (750k..800k, 2 %, cum 7,670): 15,600 - 7,670 = 7,930
        #   = 10,000*0.5 % + 40,000*0.7 % + 700,000*1 % + 30,000*2 % = 50 + 280 + 7,000 + 600
        ("DOGE/USDT:USDT", 780_000.0, 7_930.0),
        # SOL tier 1: 10,000 * 0.5 % = 50
        ("SOL/USDT:USDT", 10_000.0, 50.0),
    ],
)
def test_hand_derived_maintenance_margins_of_sol_bnb_and_doge(
    symbol: str, notional: float, margin: float
) -> None:
    br = engine_brackets(symbol)
    assert maint_margin_nb(br, notional) == pytest.approx(margin, abs=1e-6)
