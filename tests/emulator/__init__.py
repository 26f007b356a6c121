"""Binance USD-M HTTP emulator and the datasets tests load into it (see ``binance_usdm`` for the design)."""

from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState, Fault, LoggedRequest

__all__ = ["BinanceUsdmEmulator", "EmulatorState", "Fault", "LoggedRequest"]
