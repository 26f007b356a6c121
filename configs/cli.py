"""``gridctl config show|validate|list``: inspect the configs a run would use, before running it."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml

from gridctl.configs import secrets
from gridctl.configs.crosscheck import check_strategy_on_venue
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import (
    SHIPPED_DIRS,
    detect_kind,
    dump_resolved,
    load_strategy,
    load_venue,
    refuse_inert_symbol_overrides,
    retarget_strategy,
    shipped_names,
)
from gridctl.configs.overrides import basket_overrides
from gridctl.configs.schema import StrategyConfig, VenueConfig

app = typer.Typer(
    no_args_is_help=True,
    help="Show, validate and list strategy and venue configs.",
)


class KindChoice(StrEnum):
    """What ``config validate`` should treat the file as."""

    auto = "auto"
    strategy = "strategy"
    venue = "venue"


@app.command("show")
def show(
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy", "-s", help="Strategy config: shipped name (see `config list`) or YAML path."
        ),
    ] = None,
    venue: Annotated[
        str | None, typer.Option("--venue", "-v", help="Venue config: shipped name or YAML path.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override one value, SECTION.KEY=VALUE (value parsed as YAML); repeatable. "
            "Keys of venue sections go to the venue, all others to the strategy.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the fully resolved config: defaults filled in, ${VAR} expanded, overrides applied.

    With neither --strategy nor --venue, shows the `default` strategy. API credentials are masked and
    say where they came from (env, a backtest-only default, or missing).

    Example: gridctl config show -s default -v binance_futures --set grid.grid_step_bps=30 --json
    """
    if strategy is None and venue is None:
        strategy = "default"
    venue_overrides, strategy_overrides = _route_overrides(
        overrides or [], strategy is not None, venue is not None
    )
    shown: dict[str, dict[str, Any]] = {}
    if strategy is not None:
        cfg = load_strategy(strategy, strategy_overrides)
        shown["strategy"] = {
            "source": cfg.origin,
            "gates_disabled": cfg.gates_disabled(),
            "config": dump_resolved(cfg),
        }
    if venue is not None:
        vcfg = load_venue(venue, venue_overrides)
        if strategy is not None:
            check_strategy_on_venue(cfg, vcfg)
        shown["venue"] = {
            "source": vcfg.origin,
            "fees_source": vcfg.fees_source,
            "config": dump_resolved(vcfg),
        }
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    documents = []
    for kind, info in shown.items():
        notes = [f"# {kind} config: {info['source']}"]
        if "gates_disabled" in info:
            notes.append(f"# risk gates switched off: {', '.join(info['gates_disabled']) or 'none'}")
        if "fees_source" in info:
            notes.append(f"# fees from: {info['fees_source']}")
        documents.append("\n".join(notes) + "\n" + yaml.safe_dump(info["config"], sort_keys=False))
    typer.echo("---\n".join(documents), nl=False)


@app.command("validate")
def validate(
    file: Annotated[str, typer.Argument(help="YAML path (or shipped name) of a strategy or venue config.")],
    kind: Annotated[
        KindChoice, typer.Option("--kind", help="auto: decide by the file's top-level sections.")
    ] = KindChoice.auto,
    live: Annotated[
        bool, typer.Option("--live", help="Also require real API credentials from env (venue configs only).")
    ] = False,
    venue: Annotated[
        str | None,
        typer.Option(
            "--venue",
            "-v",
            help="With a strategy FILE: also check it against this venue (filters, brackets).",
        ),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option("--strategy", "-s", help="With a venue FILE: also check this strategy against it."),
    ] = None,
    symbol: Annotated[
        str | None,
        typer.Option(
            "--symbol",
            help="With the pair: check the strategy trading this ccxt symbol (its rules from the venue), "
            "as `gridctl backtest --symbol` would run it.",
        ),
    ] = None,
    symbols: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols",
            help="With the pair: check the strategy as this basket (comma list or repeated), every symbol "
            "with its own rules and symbol_overrides, as `gridctl backtest --symbols` would run it.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")] = False,
) -> None:
    """Check a config file; exit 0 if it is valid, else print every problem and exit 2.

    With --live, a venue's credentials must come from set environment variables: a `${VAR:-default}`
    default (fine for backtests) or an unset variable fails. With the other file (--venue for a
    strategy, --strategy for a venue) the pair is checked as a backtest would: rung quantities within
    the venue's min/max quantity, leverage within the symbol's brackets. --symbol or --symbols check
    the pair for other symbols than the strategy's own, each against that symbol's rules.
    """
    resolved = detect_kind(file) if kind is KindChoice.auto else kind.value
    basket = parse_symbols_flag(symbols, example="BTC/USDT:USDT,XRP/USDT:USDT", basket=True)
    if (symbol is not None or basket) and venue is None and strategy is None:
        raise GridctlError(
            "--symbol/--symbols check a strategy against a venue's rules for those symbols; give the other "
            "file (--venue with a strategy, --strategy with a venue)"
        )
    if symbol is not None and basket:
        raise GridctlError("--symbol and --symbols: give one (--symbol one symbol, --symbols a basket)")
    if resolved == "strategy":
        if live:
            raise GridctlError(f"{file}: --live checks venue credentials, but this is a strategy config")
        if strategy is not None:
            raise GridctlError(f"--strategy: {file} is itself a strategy config; pass a venue with --venue")
        _validate_strategy(file, venue, (symbol, basket), as_json)
        return
    if venue is not None:
        raise GridctlError(f"--venue: {file} is itself a venue config; pass a strategy with --strategy")
    _validate_venue(file, strategy, (symbol, basket), live, as_json)


def _validate_strategy(
    file: str, venue: str | None, symbols: tuple[str | None, tuple[str, ...]], as_json: bool
) -> None:
    """`config validate STRATEGY [--venue V [--symbol S | --symbols A,B]]`: load, cross-check, print."""
    cfg = load_strategy(file)
    if not symbols[1]:  # a one-symbol run of it; with --symbols each symbol's overrides apply
        refuse_inert_symbol_overrides(cfg)
    gates = cfg.gates_disabled()
    traded, checked = cfg.ccxt_symbol, None
    if venue is not None:
        pair = _strategy_for(file, cfg, *symbols)
        check_strategy_on_venue(pair, load_venue(venue))
        traded, checked = _what_it_trades(pair), _checked_symbols(pair)
    if as_json:
        result = {"valid": True, "kind": "strategy", "source": cfg.origin, "name": cfg.strategy.name}
        result |= {"symbol": cfg.ccxt_symbol, "gates_disabled": gates, "fits_venue": venue}
        if checked is not None:
            result["checked_symbols"] = checked
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"ok: {cfg.origin} is a valid strategy config ({cfg.strategy.name}, {cfg.ccxt_symbol})")
    if venue is not None:
        typer.echo(
            f"ok: it fits venue {venue} for {traded} (sizes within its filters, open orders and "
            "stops within its limits, leverage within its brackets)"
        )
    if gates:
        typer.echo(f"note: risk gates switched off: {', '.join(gates)}")


def _validate_venue(
    file: str,
    strategy: str | None,
    symbols: tuple[str | None, tuple[str, ...]],
    live: bool,
    as_json: bool,
) -> None:
    """`config validate VENUE [--strategy S [--symbol S | --symbols A,B]] [--live]`: load, check, print."""
    vcfg = load_venue(file)
    traded, checked = "", None
    if strategy is not None:
        pair = _strategy_for(strategy, load_strategy(strategy), *symbols)
        check_strategy_on_venue(pair, vcfg)
        traded, checked = f" for {_what_it_trades(pair)}", _checked_symbols(pair)
    if live:
        secrets.require_live_credentials(vcfg)
    if as_json:
        result = {"valid": True, "kind": "venue", "source": vcfg.origin, "name": vcfg.venue.name}
        result |= {"fees_source": vcfg.fees_source, "fits_strategy": strategy, "live_credentials": live}
        if checked is not None:
            result["checked_symbols"] = checked
        result["credentials"] = {path: secrets.mask(vcfg, path) for path in secrets.CREDENTIAL_PATHS}
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"ok: {vcfg.origin} is a valid venue config ({vcfg.venue.name}, fees from {vcfg.fees_source})")
    for path in secrets.CREDENTIAL_PATHS:
        typer.echo(f"  {path}: {secrets.mask(vcfg, path)}")
    if strategy is not None:
        typer.echo(
            f"ok: strategy {strategy} fits it{traded} "
            "(quantities within the filters, leverage within brackets)"
        )
    if live:
        typer.echo("live credentials: ok")


def parse_symbols(
    values: list[str] | tuple[str, ...], flag: str = "--symbols", basket: bool = False
) -> tuple[str, ...]:
    """Symbols from repeated options and/or comma lists, stripped, in order, each once. For a
    ``basket`` (backtest, live, config validate) a symbol named twice is refused, as
    ``strategy.symbols`` refuses it: a basket trades each symbol once and a mistyped list must not
    shrink silently."""
    parts = [part.strip() for value in values for part in value.split(",")]
    found = [part for part in parts if part]
    twice = list(dict.fromkeys(s for s in found if found.count(s) > 1))
    if basket and twice:
        raise GridctlError(f"{flag}: {', '.join(twice)} given more than once; name each symbol once")
    return tuple(dict.fromkeys(found))


def parse_symbols_flag(
    values: list[str] | None,
    flag: str = "--symbols",
    example: str = "BTC/USDT:USDT,ETH/USDT:USDT",
    basket: bool = False,
) -> tuple[str, ...]:
    """A symbols option as typed (None: not given) -> its symbols; given but naming none is refused,
    and for a ``basket`` so is a symbol named twice.

    Every command's ``--symbols`` (and `data import --symbol`) is parsed here.
    """
    symbols = parse_symbols(values or [], flag, basket)
    if values is not None and not symbols:
        raise GridctlError(f"{flag}: {' '.join(values)!r} names no symbol (e.g. {example})")
    return symbols


def _strategy_for(
    ref: str, strategy: StrategyConfig, symbol: str | None, basket: tuple[str, ...]
) -> StrategyConfig:
    """The strategy ``ref`` as `gridctl backtest --symbol`/`--symbols` would trade it (unchanged without)."""
    if basket:
        return load_strategy(ref, basket_overrides(strategy, basket))
    if symbol not in (None, strategy.ccxt_symbol) and strategy.strategy.symbols is not None:
        raise GridctlError(
            f"--symbol {symbol}: strategy {strategy.origin} trades the basket "
            f"{list(strategy.basket_symbols)} (strategy.symbols); give --symbols {symbol} to check it alone"
        )
    return retarget_strategy(ref, strategy, symbol)


def _checked_symbols(strategy: StrategyConfig) -> list[str]:
    """The symbols whose rules the cross-check applied: the basket's, else the strategy's instrument."""
    return list(strategy.basket_symbols) if strategy.strategy.symbols is not None else [strategy.ccxt_symbol]


def _what_it_trades(strategy: StrategyConfig) -> str:
    symbols = _checked_symbols(strategy)
    return symbols[0] if len(symbols) == 1 else f"the basket {', '.join(symbols)}"


@app.command("list")
def list_configs(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")] = False,
) -> None:
    """List the strategy and venue configs shipped with gridctl (use the names with --strategy/--venue)."""
    if as_json:
        payload = {
            title: {"folder": str(SHIPPED_DIRS[kind]), "names": shipped_names(kind)}  # type: ignore[index, arg-type]
            for kind, title in (("strategy", "strategies"), ("venue", "venues"))
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    for kind, title in (("strategy", "strategies"), ("venue", "venues")):
        typer.echo(f"{title} ({SHIPPED_DIRS[kind]}):")  # type: ignore[index]
        for name in shipped_names(kind):  # type: ignore[arg-type]
            typer.echo(f"  {name}")


def _route_overrides(
    overrides: list[str], has_strategy: bool, has_venue: bool
) -> tuple[list[str], list[str]]:
    """Split ``--set`` values between venue and strategy by their first key segment."""
    if not has_venue:
        return [], list(overrides)
    if not has_strategy:
        return list(overrides), []
    venue_sections = set(VenueConfig.model_fields)
    to_venue = [o for o in overrides if o.split("=", 1)[0].split(".", 1)[0].strip() in venue_sections]
    return to_venue, [o for o in overrides if o not in to_venue]
