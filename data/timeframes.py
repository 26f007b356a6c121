"""Candle timeframes gridctl understands, as bar lengths in milliseconds (UTC-aligned bars)."""

from __future__ import annotations

from gridctl.configs.errors import GridctlError

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

TIMEFRAMES: dict[str, int] = {
    "1m": MINUTE_MS,
    "3m": 3 * MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": HOUR_MS,
    "2h": 2 * HOUR_MS,
    "4h": 4 * HOUR_MS,
    "8h": 8 * HOUR_MS,
    "1d": DAY_MS,
}


def timeframe_ms(tf: str) -> int:
    """Bar length of timeframe ``tf`` in ms; a GridctlError listing the valid names otherwise."""
    try:
        return TIMEFRAMES[tf]
    except (KeyError, TypeError):
        raise GridctlError(f"unknown timeframe {tf!r} (valid: {', '.join(TIMEFRAMES)})") from None
