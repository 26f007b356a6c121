"""What a `gridctl live` run was asked to do: one frozen options object, its defaults and ranges written once.

The command shell (``live_bridge/cli.py``) only parses flags into a ``LiveOptions``; the library
(``runner.load_run_configs``, ``runner.prepare``, ``runner.run_loop``, ``runner.run_replay``) reads it.
This module stays light (no numpy, numba, ccxt): it is imported whenever a command line is parsed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridctl.configs.errors import GridctlError

DEFAULT_TOKEN_ENV = "GRIDCTL_OPS_TOKEN"

#: The closed range of every numeric option, as (flag, lowest, highest): the shell shows it in --help and
#: refuses a value outside it; ``LiveOptions`` checks it again for callers that build options in Python.
#: The clock-skew bound is wide on purpose: an emulator replaying stored bars runs years behind the clock.
RANGES: dict[str, tuple[str, float, float]] = {
    "ops_port": ("--ops-port", 0, 65535),
    "min_balance": ("--min-balance", 0.0, 1e9),
    "max_skew_ms": ("--max-clock-skew-ms", 1, 10**13),
    "max_bars": ("--max-bars", 1, 10**9),
    "poll_s": ("--poll-s", 0.01, 3600.0),
    "fills_poll_s": ("--fills-poll-s", 0.01, 3600.0),
}


def bounds(name: str) -> dict[str, Any]:
    """``min``/``max`` keyword arguments of a typer option for the numeric option ``name``."""
    _flag, lo, hi = RANGES[name]
    return {"min": lo, "max": hi}


@dataclass(frozen=True)
class LiveOptions:
    """Every flag of `gridctl live`, parsed; defaults here and nowhere else.

    ``mode`` is ``paper`` (simulated fills) or ``live`` (real orders); ``replay`` plays a stored market
    through the paper bridge instead of the exchange. Combinations that cannot run and numbers outside
    ``RANGES`` raise ``GridctlError`` (one line naming the flag) when the object is built.
    """

    mode: str = "paper"
    strategy: str = "default"
    venue: str = "binance_futures"
    overrides: tuple[str, ...] = ()
    venue_overrides: tuple[str, ...] = ()
    replay: Path | None = None
    exchange: str = "sample"
    symbol: str | None = None
    symbols: tuple[str, ...] = ()  # --symbols: a basket on one account
    timeframe: str = "1m"
    start: str | None = None  # --start/--end: the replay's window (YYYY-MM-DD, UTC, end exclusive)
    end: str | None = None
    out: Path | None = None
    testnet: bool = False
    api_url: str | None = None
    journal: Path | None = None
    ops_port: int = 8787
    token_env: str = DEFAULT_TOKEN_ENV
    min_balance: float = 50.0
    allow_gate_off: tuple[str, ...] = ()
    max_skew_ms: int = 1000
    max_bars: int | None = None
    poll_s: float = 1.0
    fills_poll_s: float = 5.0
    as_json: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("paper", "live"):
            raise GridctlError(f"live mode must be 'paper' or 'live', got {self.mode!r}")
        if self.replay is not None and self.mode == "live":
            raise GridctlError("--replay works with --paper only (a replay never sends orders)")
        if (self.start is not None or self.end is not None) and self.replay is None:
            raise GridctlError(
                "--start/--end select a --replay's window; a live or paper run trades from now"
            )
        self.window()  # a bad --start/--end fails when the options are built
        if self.out is not None and self.replay is None:
            raise GridctlError("--out is for --replay runs; a live run journals to --journal")
        if self.symbols and self.symbol is not None:
            raise GridctlError(
                "--symbol and --symbols: give one (--symbol trades one symbol, --symbols a basket)"
            )
        for name, (flag, lo, hi) in RANGES.items():
            value = getattr(self, name)
            if value is None and name == "max_bars":
                continue  # no limit: run until Ctrl-C
            if not (isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi):
                raise GridctlError(f"{flag} must be within {lo}..{hi}, got {value}")

    def window(self) -> tuple[int | None, int | None]:
        """``start``/``end`` as epoch ms, parsed as `gridctl backtest` parses them (same bars selected)."""
        from gridctl.data.timeframes import window_ms

        return window_ms(self.start, self.end)

    def check_journal(self) -> None:
        """``journal`` as a usable journal (checked before any config is read); a replay keeps none."""
        if self.journal is not None and self.replay is None:
            check_journal_path(self.journal)


#: Virtual file systems a journal can never live on.
_VIRTUAL_ROOTS = ("proc", "sys", "dev")


def check_journal_path(path: Path) -> None:
    """``--journal`` as a usable journal: an existing SQLite file we may write, or a new file in a
    writable folder; anything else (a folder, a corrupt file, /proc, ...) is one GridctlError line."""
    import sqlite3

    from gridctl.data.paths import require_writable_dir

    target = path.expanduser()
    resolved = target.resolve()
    if len(resolved.parts) > 1 and resolved.parts[1] in _VIRTUAL_ROOTS:
        raise GridctlError(f"--journal: {target} is on /{resolved.parts[1]}, not a file system for a journal")
    if target.is_dir():
        raise GridctlError(f"--journal: {target} is a folder; give the journal file's path")
    if not target.exists():
        require_writable_dir(target.parent, "--journal")
        return
    if not target.is_file():
        raise GridctlError(f"--journal: {target} is not a regular file")
    if not os.access(target, os.R_OK | os.W_OK):
        raise GridctlError(f"--journal: {target} is not readable and writable by this user")
    try:
        db = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=5)
        try:
            db.execute("SELECT name FROM sqlite_master").fetchall()
        finally:
            db.close()
    except sqlite3.Error as err:
        raise GridctlError(f"--journal: {target} is not a journal (SQLite: {err})") from None
