"""Glue for tests: a ccxt client aimed at a running emulator, and listing stray temp files."""

from __future__ import annotations

from pathlib import Path

import ccxt

from gridctl.data.download import make_client

from emulator.binance_usdm import BinanceUsdmEmulator


def ccxt_client_for(emu: BinanceUsdmEmulator, timeout_ms: int = 5_000) -> ccxt.Exchange:
    """The real ccxt binanceusdm client with every API host pointed at ``emu``.

    ccxt's own request throttle is switched off: the emulator has no rate limit and tests stay fast.
    """
    client = make_client("binanceusdm", emu.url)
    client.enableRateLimit = False
    client.timeout = timeout_ms
    return client


def temp_files(root: Path) -> list[Path]:
    """Files an interrupted atomic write could leave behind (``data.atomic`` names them ``.<name>.*.tmp``)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp"))
