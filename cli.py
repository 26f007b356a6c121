"""gridctl: one command line for data, backtests, optimization, studies and the live bridge.

This module only wires sub-commands together; every command is a thin shell over library functions
that notebooks can call directly.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from configs.errors import GridctlError


def _render_flags_as_flags(command: typer.core.TyperCommand | TyperGroup) -> None:
    """Give every on/off flag (``--json``, ``--force``, ``--help``) an empty metavar, recursively.

    typer 0.29 prints each option's type in --help, so a flag would read ``--json <bool>`` as if it
    took a value; an empty metavar makes it render as the bare flag it is.
    """
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, typer.core.TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _render_flags_as_flags(sub)


class _GridctlGroup(TyperGroup):
    """Top-level group: a user error anywhere below becomes a one-line message and exit code 2."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        _render_flags_as_flags(self)

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


_mount()


if __name__ == "__main__":
    app()
