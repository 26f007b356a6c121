"""gridctl: one command line for data, backtests, optimization, studies and the live bridge.

This module only wires sub-commands together; every command is a thin shell over library functions
that notebooks can call directly. Sub-command groups are imported only when a command line reaches
them, so ``gridctl --help`` starts without pydantic, polars, numba & co.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import typer
from typer.core import TyperGroup

from gridctl.configs.errors import GridctlError

#: click's UsageError as typer raises it: typer >= 0.29 vendors click in a private module, so the class is
#: found through the public ``typer.BadParameter``, which derives from it in every typer version.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

#: Sub-command groups loaded on first use: name -> (module holding a typer app ``app``, one-line help).
LAZY_GROUPS: dict[str, tuple[str, str]] = {
    "config": ("gridctl.configs.cli", "Show and validate strategy and venue configs."),
    "data": ("gridctl.data.cli", "Download, import, generate and inspect market data."),
}


def _readable_metavar(param: typer.core.TyperOption | typer.core.TyperArgument) -> str:
    """A plain word for what an option or argument takes: TEXT, PATH, INTEGER, NUMBER or the choices.

    typer 0.29 prints Python type tags (``<str>``, ``<list[str]>``, ``<int range>``, ``{file}``); these
    read as code. A repeatable option ends in ``...``. Ranges are still printed after the word
    (``INTEGER [1<=x<=3650]``).
    """
    desc = param.type_descriptor
    if desc.is_choice and desc.choices is not None:
        word = "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    else:
        inner = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
        words = {int: "INTEGER", float: "NUMBER", Path: "PATH"}
        word = words.get(inner, "PATH" if desc.is_path else "TEXT")
    return word + ("..." if desc.is_list else "")


#: Docstring paragraphs for the code's readers (tests/cli/test_function_size.py), not for --help.
DEVELOPER_NOTES = ("Wide because:", "Long because:")


def unwrap_help(text: str) -> str:
    """A command's docstring as --help should print it: each paragraph on one line, for the terminal
    to wrap (typer 0.29 keeps a docstring's line breaks after its first paragraph, so text wrapped at
    100 columns in the source broke mid-sentence on any other width).

    A paragraph whose lines are a list (each starting with ``-``, ``*`` or a digit and ``.``) or are
    indented (an example) keeps its lines; developer notes (``DEVELOPER_NOTES``) are left out.
    """
    import inspect

    kept = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines = para.splitlines()
        if not lines or lines[0].startswith(DEVELOPER_NOTES):
            continue
        listed = len(lines) > 1 and all(
            line.lstrip().startswith(("- ", "* ")) or line.lstrip()[:2].rstrip(".").isdigit()
            for line in lines
            if not line.startswith("  ")
        )
        if listed or lines[0].startswith(("  ", "\b")):
            kept.append(para)
        else:
            kept.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(kept)


def _tidy_help(command: typer.core.TyperCommand | TyperGroup) -> None:
    """Make --help read plainly, recursively: each help paragraph on one line (``unwrap_help``), on/off
    flags (``--json``, ``--force``, ``--help``) with an empty metavar, every other option and argument
    a plain word (see ``_readable_metavar``).

    typer 0.29 prints each option's type in --help, so a flag would read ``--json <bool>`` as if it
    took a value; an empty metavar makes it render as the bare flag it is.
    """
    if command.help:
        command.help = unwrap_help(command.help)
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if param.metavar is not None:
            continue
        if isinstance(param, typer.core.TyperOption) and param.is_flag:
            param.metavar = ""
        elif isinstance(param, typer.core.TyperOption):
            param.metavar = _readable_metavar(param)
        elif isinstance(param, typer.core.TyperArgument):
            # Usage reads ``FILE`` (``[FILE]`` when optional), not ``{file}``; the type column a word.
            word, name = _readable_metavar(param), (param.name or "value").upper()
            param.metavar = name
            shown = name if param.required else f"[{name}]"
            param.display_type_rich = lambda ctx, word=word: word  # type: ignore[method-assign]
            param._usage_display_name = lambda shown=shown: shown  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


#: Old and foreign spellings of options, rewritten before parsing (hidden: --help shows only the new name).
#: ``--data`` was the backtest's and optimizer's name; ``--datadir`` is freqtrade's; ``--config`` was the
#: strategy file's name on `backtest` and `live` (`config show` and `config validate` said ``--strategy``).
OPTION_ALIASES: dict[str, str] = {
    "--data": "--data-dir",
    "--datadir": "--data-dir",
    "--config": "--strategy",
}
#: freqtrade command names and the gridctl command that does that job.
FREQTRADE_COMMANDS: dict[str, str] = {
    "backtesting": "backtest",
    "hyperopt": "optimize",
    "hyperopt-list": "study show",
    "hyperopt-show": "study show",
    "download-data": "data download",
    "list-data": "data info",
    "show-config": "config show",
    "trade": "live",
    "list-strategies": "config list",
    "list-exchanges": "data download --exchange ID",
    "lookahead-analysis": "backtest --detail 1m",
    "plot-dataframe": "backtest --out DIR",
    "plot-profit": "backtest --out DIR",
}
#: freqtrade option spellings gridctl does not take, and what to give instead (answered when unknown).
FREQTRADE_OPTIONS: dict[str, str] = {
    "--timeframe-detail": "--detail",
    "--strategy-list": "--strategy (one strategy per run)",
    "--epochs": "--trials",
    "--spaces": "--profile (a profile names the parameters searched)",
    "--hyperopt-loss": "--profile (a profile names the objective)",
    "--stake-amount": "--set backtest.initial_balance=VALUE",
    "--dry-run-wallet": "--set backtest.initial_balance=VALUE",
    "--starting-balance": "--set backtest.initial_balance=VALUE",
    "--pairs": "--symbol (or --symbols)",
    "--userdir": "--data-dir",
    "--user-data-dir": "--data-dir",
    "--export": "--out DIR",
    "--export-filename": "--out DIR",
    "--random-state": "the profile's seed: field",
    "--job-workers": "--jobs",
}


def _timerange_hint(value: str) -> str:
    """freqtrade's ``--timerange 20240101-20240201`` as gridctl's ``--start 2024-01-01 --end 2024-02-01``."""
    start, sep, end = value.partition("-")
    parts = []
    for option, day in (("--start", start), ("--end", end)):
        if len(day) == 8 and day.isdigit():
            parts.append(f"{option} {day[:4]}-{day[4:6]}-{day[6:]}")
    suggestion = " ".join(parts) if parts and sep else "--start YYYY-MM-DD --end YYYY-MM-DD"
    return f"gridctl has no --timerange (a freqtrade option); give the range as {suggestion} (end exclusive)"


def _given_value(args: list[str], opts: Sequence[str]) -> str | None:
    """The last value given for an option spelled any of ``opts`` (``--x V`` or ``--x=V``), if any."""
    value = None
    for i, token in enumerate(args):
        if token == "--":
            break
        name, eq, rest = token.partition("=")
        if name in opts:
            value = rest if eq else (args[i + 1] if i + 1 < len(args) else None)
    return value


def _bad_value_line(err: typer.BadParameter, args: list[str]) -> str | None:
    """One line for a number typer refused for its range: the flag, its range and what was given (typer's
    own answer is a usage line plus a boxed message); None for any other refused value."""
    param = err.param
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if isinstance(param, typer.core.TyperOption) and lo is not None and hi is not None:
        inner = param.type_descriptor.annotation
        kinds = [a for a in get_args(inner) if a is not type(None)] or [inner]
        what = "an integer" if kinds == [int] else "a number"
        span = "..".join(f"{b:g}" if isinstance(b, float) else str(b) for b in (lo, hi))
        return f"{param.opts[0]} takes {what} in {span}, got {_given_value(args, param.opts)}"
    return None


def _command_path(group: TyperGroup, args: list[str]) -> str:
    """``gridctl backtest`` or ``gridctl study show``: the command a command line reaches (by its words).

    ``_usage_line`` names it where click's error carries no context (``err.ctx`` None): its parser raises
    BadOptionUsage ("Option '--x' requires an argument", "does not take a value") and BadArgumentUsage
    without one. tests/cli/test_cli_habits.py checks an option without its value on every command.
    """
    words, command = ["gridctl"], group
    for token in args:
        if not isinstance(command, TyperGroup):
            break
        sub = command.commands.get(token)
        if sub is None:
            continue
        words.append(token)
        command = sub
    return " ".join(words)


def _near_options(name: str, command: Any) -> list[str]:
    """The command's options spelled like ``name`` (compared without their dashes, so ``--bogus`` is not
    "close" to ``--out`` through the shared ``--``)."""
    opts = [o for p in getattr(command, "params", []) for o in getattr(p, "opts", []) if o.startswith("--")]
    by_word = {o.lstrip("-"): o for o in opts}
    return [by_word[w] for w in difflib.get_close_matches(name.lstrip("-"), list(by_word), n=3, cutoff=0.6)]


def _usage_line(err: Any, where: str) -> str:
    """One line for a usage error (unknown option or command, missing value, extra argument): typer's own
    answer is a usage line, a hint line and a boxed message. freqtrade spellings get gridctl's name."""
    if err.ctx is not None:
        where = err.ctx.command_path
    if type(err).__name__ == "NoSuchOption":
        name = err.option_name
        if name in FREQTRADE_OPTIONS:
            text = f"no option {name} (a freqtrade option); gridctl's is {FREQTRADE_OPTIONS[name]}"
        else:
            near = _near_options(name, err.ctx.command) if err.ctx is not None else []
            text = f"no such option {name}" + (f" (did you mean {' or '.join(near)}?)" if near else "")
    else:
        text = " ".join(err.format_message().split()).rstrip(".")
        if len(text) > 200:  # 1,000 stray words are not repeated back
            text = text[:196].rsplit(" ", 1)[0] + " ...)"
    return f"{text}; see {where} --help"


def _rewrite_aliases(args: list[str]) -> list[str]:
    """Apply ``OPTION_ALIASES`` (``--data X`` and ``--data=X`` alike) and answer ``--timerange``.

    Tokens after ``--`` are values, never rewritten.
    """
    out: list[str] = []
    for i, token in enumerate(args):
        if token == "--":
            return out + args[i:]
        name, eq, value = token.partition("=")
        if name == "--timerange":
            raise GridctlError(_timerange_hint(value if eq else (args[i + 1] if i + 1 < len(args) else "")))
        out.append(OPTION_ALIASES[name] + eq + value if name in OPTION_ALIASES else token)
    return out


class _GridctlGroup(TyperGroup):
    """Top-level group: a user error anywhere below becomes a one-line message and exit code 2."""

    _listing = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._args: list[str] = []  # the command line main() parsed (named in one-line value errors)
        # Stand-ins that carry the name and one-line help until a command line reaches the group.
        for name, (_module, help_text) in LAZY_GROUPS.items():
            self.commands.setdefault(name, _Unloaded(name=name, help=help_text))
        _tidy_help(self)

    def main(self, args: Sequence[str] | None = None, *rest: Any, **extra: Any) -> Any:
        """Rewrite hidden option aliases before parsing; ``--timerange`` is answered with --start/--end."""
        try:
            rewritten = _rewrite_aliases(list(sys.argv[1:] if args is None else args))
        except GridctlError as err:
            typer.echo(f"error: {err}", err=True)
            sys.exit(2)
        self._args = rewritten
        return super().main(rewritten, *rest, **extra)

    def make_context(self, info_name: str | None, args: list[str], **extra: Any) -> typer.Context:
        # The top level's own parse errors (`gridctl --bogus`) are raised here, outside invoke().
        try:
            return super().make_context(info_name, args, **extra)
        except UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `gridctl` alone: click prints the help
                raise
            typer.echo(f"error: {_usage_line(err, _command_path(self, args))}", err=True)
            sys.exit(2)

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> tuple[Any, Any, list[str]]:
        name = args[0] if args else ""
        if name in FREQTRADE_COMMANDS and super().get_command(ctx, name) is None:
            equivalent = FREQTRADE_COMMANDS[name]
            raise GridctlError(
                f"no command {name!r} (a freqtrade command); gridctl's is `gridctl {equivalent}`"
            )
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except GridctlError as err:
            typer.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except UsageError as err:  # typer.BadParameter (a value, a missing option) is one of these
            if type(err).__name__ == "NoArgsIsHelpError":  # `gridctl study` alone: click prints the help
                raise
            ranged = _bad_value_line(err, self._args) if isinstance(err, typer.BadParameter) else None
            if ranged is not None:
                typer.echo(f"error: {ranged}", err=True)
                ctx.exit(2)
            typer.echo(f"error: {_usage_line(err, _command_path(self, self._args))}", err=True)
            ctx.exit(2)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        # The top-level help only needs each group's name and one-line help: no import for that.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if isinstance(cmd, _Unloaded) and not self._listing:
            cmd = typer.main.get_group(importlib.import_module(LAZY_GROUPS[cmd_name][0]).app)
            cmd.name, cmd.help = cmd_name, LAZY_GROUPS[cmd_name][1]
            _tidy_help(cmd)
            self.add_command(cmd, cmd_name)
        return cmd


class _Unloaded(TyperGroup):
    """Placeholder of a sub-command group whose module is not imported yet."""


app = typer.Typer(
    cls=_GridctlGroup,
    name="gridctl",
    help="Hedge-grid research platform and live bridge for crypto perpetual futures (Binance USD-M).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount() -> None:
    from gridctl.research.cli import register as register_research

    register_research(app)
    from gridctl.research.optimize_cli import register as register_optimize

    register_optimize(app)
    from gridctl.live_bridge.cli import register as register_live

    register_live(app, _replay_results)


def _replay_results() -> tuple:
    """research's stats and result writers for `gridctl live --replay` (imported only when used)."""
    from types import SimpleNamespace

    from gridctl.research.basket import run_basket_backtest
    from gridctl.research.cli import load_basket_strategy
    from gridctl.research.results import stats_json, write_basket_results, write_results
    from gridctl.research.stats import backtest_stats

    basket = SimpleNamespace(
        load_strategy=load_basket_strategy, run=run_basket_backtest, write=write_basket_results
    )
    return backtest_stats, write_results, stats_json, basket


_mount()


if __name__ == "__main__":
    app()
