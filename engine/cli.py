"""`gridctl backtest` and `gridctl bench`: thin shells over engine.run and engine.bench."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the engine's top-level commands to the gridctl app."""
