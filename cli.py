"""gridctl: one command line for data, backtests, optimization, studies and the live bridge.

This module only wires sub-commands together; every command is a thin shell over library functions
that notebooks can call directly.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from configs.errors import GridctlError


class _GridctlGroup(TyperGroup):
    """Top-level group: a user error anywhere below becomes a one-line message and exit code 2."""

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except GridctlError as err:
            typer.echo(f"error: {err}", err=True)
            ctx.exit(2)


app = typer.Typer(
    cls=_GridctlGroup,
    name="gridctl",
    help="Hedge-grid research platform and live bridge for crypto perpetual futures (Binance USD-M).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount() -> None:
    from configs.cli import app as config_app
    from data.cli import app as data_app

    app.add_typer(config_app, name="config", help="Show and validate strategy and venue configs.")
    app.add_typer(data_app, name="data", help="Download, import, generate and inspect market data.")
    from research.cli import register as register_research

    register_research(app)
    from live_bridge.cli import register as register_live

    register_live(app, _replay_results)


def _replay_results() -> tuple:
    """research's stats and result writers for `gridctl live --replay` (imported only when used)."""
    from research.results import stats_json, write_results
    from research.stats import compute_stats

    return compute_stats, write_results, stats_json


_mount()


if __name__ == "__main__":
    app()
