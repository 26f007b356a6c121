"""What `gridctl optimize` and `gridctl study ...` were asked: one options object per command family, its
defaults and ranges written once.

The command shell (``research/optimize_cli.py``) only parses flags into an ``OptimizeOptions`` or a
``StudyOptions``; the library (``research/commands.py``) reads them. This module stays light (no numpy,
optuna, numba): it is imported whenever a command line is parsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridctl.configs.errors import GridctlError

#: Seconds between heartbeats of a worker on shared storage (``--heartbeat``).
DEFAULT_HEARTBEAT_S = 10
#: Rows of the `study show` leaderboard, and of the report's and notebook's top-trials tables (``--top``).
SHOW_TOP = 10
REPORT_TOP = 5

#: The closed range of every numeric option, as (flag, lowest, highest): the shell shows it in --help and
#: refuses a value outside it; the options objects check it again for callers that build them in Python.
#: ``--jobs`` is checked against the cores numba may use when the batch driver starts.
RANGES: dict[str, tuple[str, int, int]] = {
    "trials": ("--trials", 1, 1_000_000),
    "jobs": ("--jobs", 1, 1024),
    "heartbeat_s": ("--heartbeat", 1, 3600),
    "top": ("--top", 1, 1000),
    "trial": ("--trial", 0, 10**9),
}


def bounds(name: str) -> dict[str, Any]:
    """``min``/``max`` keyword arguments of a typer option for the numeric option ``name``."""
    _flag, lo, hi = RANGES[name]
    return {"min": lo, "max": hi}


def check_range(name: str, value: float | None) -> None:
    """Raise GridctlError (one line naming the flag and its range) unless ``value`` is None or in range."""
    if value is None:
        return
    flag, lo, hi = RANGES[name]
    if not (isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi):
        raise GridctlError(f"{flag} must be within {lo}..{hi}, got {value}")


@dataclass(frozen=True)
class OptimizeOptions:
    """Every flag of `gridctl optimize`, parsed; defaults here and nowhere else in the command.

    ``trials`` (the study's target count) and ``study_name`` default to the profile's; ``jobs`` to every
    core numba may use; storage to a journal file in ``studies_dir``.
    """

    profile: str
    trials: int | None = None
    data_dir: Path | None = None
    storage: str | None = None
    study_name: str | None = None
    jobs: int | None = None
    studies_dir: Path | None = None
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    as_json: bool = False

    def __post_init__(self) -> None:
        for name in ("trials", "jobs", "heartbeat_s"):
            check_range(name, getattr(self, name))


@dataclass(frozen=True)
class StudyOptions:
    """Where the studies live and which market they are re-scored on: shared by every `study` command."""

    studies_dir: Path | None = None
    storage: str | None = None
    data_dir: Path | None = None
    as_json: bool = False


@dataclass(frozen=True)
class BacktestOptions:
    """Every flag of `gridctl backtest`, parsed; defaults here and nowhere else in the command.

    ``symbols`` (``--symbols``, parsed) makes the run a basket in one wallet; ``overrides`` are the
    ``--set`` strings in order; ``start``/``end`` the YYYY-MM-DD days as typed (checked when the run
    starts, with ``timeframe`` and ``detail``); ``data_dir`` None means the default data directory.
    """

    strategy: str = "default"
    venue: str = "binance_futures"
    data_dir: Path | None = None
    exchange: str = "sample"
    symbol: str | None = None
    symbols: tuple[str, ...] = ()
    timeframe: str = "1m"
    start: str | None = None
    end: str | None = None
    overrides: tuple[str, ...] = ()
    detail: str | None = None
    out: Path | None = None
    force: bool = False
    as_json: bool = False
