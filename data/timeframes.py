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


def day_ms(value: str | None, option: str) -> int | None:
    """Epoch ms of a YYYY-MM-DD option value (UTC midnight); None stays None."""
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise GridctlError(f"{option}: {value!r} is not a date (expected YYYY-MM-DD)") from None
    return int(day.timestamp() * 1000)


def window_ms(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """``--start``/``--end`` (YYYY-MM-DD, UTC; end exclusive) as epoch ms, end after start.

    One parser for every command that takes a window (`backtest`, `optimize`, `live --replay`), so the
    same flags select the same bars everywhere.
    """
    start_ms, end_ms = day_ms(start, "--start"), day_ms(end, "--end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise GridctlError(f"--end ({end}) must be after --start ({start})")
    return start_ms, end_ms
