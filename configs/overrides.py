"""The one override engine: ``section.key -> value`` changes applied to validated configs.

``--set`` on the command line, optimizer profiles (their parameter draws and fixed values), the batch
driver (one parameter set per run) and the live bridge all change a loaded config through
``apply_overrides``; the result is validated by the same schema as a file. (``--set`` text is parsed and
applied to the YAML tree by ``configs.loader`` before the first validation, so its errors can point at
the ``--set`` that caused them.)
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import StrategyConfig, VenueConfig, ccxt_to_instrument, size_unit_changes


def _coerce(current: Any, value: Any, key: str) -> Any:
    """Override value in the type of the config field it replaces (numbers arrive as floats)."""
    if isinstance(current, bool):
        if value in (0, 1, True, False):
            return bool(value)
        raise GridctlError(f"override {key}={value!r}: expected 0/1 (a switch)")
    if isinstance(current, int):
        if float(value) != int(value):
            raise GridctlError(f"override {key}={value!r}: expected a whole number")
        return int(value)
    if isinstance(current, str) and not isinstance(value, str):
        raise GridctlError(f"override {key}={value!r}: expected a name, not a number")
    if isinstance(current, float | None) and not isinstance(value, str):
        return float(value)
    return value


def _override(cfg: BaseModel, key: str, value: Any) -> BaseModel:
    section, _, name = key.partition(".")
    sub = getattr(cfg, section)
    data = {f: getattr(cfg, f) for f in type(cfg).model_fields}
    fields = sub.model_dump()
    fields[name] = _coerce(fields[name], value, key)
    if section == "grid":  # one rung size unit: setting base_qty clears base_notional and back
        fields.update(size_unit_changes({name: fields[name]}))
    data[section] = fields
    try:
        new = type(cfg).model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise GridctlError(f"override {key}={value!r}: {first['msg']}") from None
    for attr in ("_origin", "_credentials", "_rules_file"):
        if attr in (cfg.__private_attributes__ or {}):
            setattr(new, attr, getattr(cfg, attr))
    return new


#: Prefix of a per-symbol override key: ``symbol_overrides.<SYMBOL>.<section.key>`` (a basket symbol's own
#: value, merged into ``strategy.symbol_overrides``; ccxt symbols hold no dot).
SYMBOL_KEY_PREFIX = "symbol_overrides."


def split_symbol_key(key: str) -> tuple[str, str] | None:
    """``(symbol, "section.key")`` of a per-symbol override key, None for any other key."""
    if not key.startswith(SYMBOL_KEY_PREFIX):
        return None
    symbol, dot, field = key[len(SYMBOL_KEY_PREFIX) :].partition(".")
    if not symbol or not dot or field.count(".") != 1 or not all(field.split(".")):
        raise GridctlError(f"override key {key!r} must look like 'symbol_overrides.<SYMBOL>.section.key'")
    return symbol, field


def symbol_override_sets(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--set`` texts split into (shared ones, per-symbol ones ``symbol_overrides.<SYMBOL>.section.key=v``):
    a ``--symbols`` basket is made from the shared ones, then the per-symbol ones apply to it."""
    shared, own = [], []
    for text in overrides:
        key = text.partition("=")[0].strip()
        (own if key.startswith(SYMBOL_KEY_PREFIX) else shared).append(text)
    return shared, own


def apply_overrides(
    strategy: StrategyConfig, venue: VenueConfig, overrides: Mapping[str, Any]
) -> tuple[StrategyConfig, VenueConfig]:
    """Strategy and venue with ``overrides`` (``"section.key" -> value``) applied and re-validated.

    Each config is validated once with all of its overrides in place (the result does not depend on
    the order of the keys). When that fails, the keys are applied one at a time, each step
    validated, to name the first key that breaks the config. A per-symbol key
    (``symbol_overrides.<SYMBOL>.<section.key>``) sets that basket symbol's own value: it is merged
    into ``strategy.symbol_overrides`` (replacing the file's value of that key) and checked as the
    strategy file's overrides are (``basket_strategies``).
    """
    plain: dict[str, Any] = {}
    per_symbol: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        split = split_symbol_key(key)
        if split is None:
            plain[key] = value
        else:
            per_symbol.setdefault(split[0], {})[split[1]] = value
    new_strategy, new_venue = _apply_section_overrides(strategy, venue, plain)
    if per_symbol:
        new_strategy = _with_symbol_overrides(new_strategy, per_symbol)
    return new_strategy, new_venue


def _with_symbol_overrides(
    strategy: StrategyConfig, given: Mapping[str, Mapping[str, Any]]
) -> StrategyConfig:
    """``strategy`` with ``given`` (symbol -> ``{"section.key": value}``) merged into its symbol overrides."""
    basket = strategy.basket_symbols
    for symbol, keys in given.items():
        if symbol not in basket:
            key = f"{SYMBOL_KEY_PREFIX}{symbol}.{next(iter(keys))}"
            raise GridctlError(f"override key {key!r}: {symbol} is not in the basket {list(basket)}")
    merged = {sym: dict(keys) for sym, keys in strategy.symbol_overrides.items()}
    for symbol, keys in given.items():
        merged.setdefault(symbol, {}).update(keys)
    data = {f: getattr(strategy, f) for f in type(strategy).model_fields}
    data["symbol_overrides"] = merged
    try:
        new = type(strategy).model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise GridctlError(f"override symbol_overrides {dict(given)}: {first['msg']}") from None
    new._origin = strategy._origin
    basket_strategies(new)  # each symbol's overrides checked as the file's are (one line naming the key)
    return new


def _apply_section_overrides(
    strategy: StrategyConfig, venue: VenueConfig, overrides: Mapping[str, Any]
) -> tuple[StrategyConfig, VenueConfig]:
    """``apply_overrides`` of ``section.key`` keys."""
    changes: dict[str, dict[str, dict[str, Any]]] = {"strategy": {}, "venue": {}}
    for key, value in overrides.items():
        section, dot, name = key.partition(".")
        if not dot or "." in name:
            raise GridctlError(f"override key {key!r} must look like 'section.key'")
        if section in StrategyConfig.model_fields and name in _fields_of(strategy, section):
            which, cfg = "strategy", strategy
        elif section in VenueConfig.model_fields and name in _fields_of(venue, section):
            which, cfg = "venue", venue
        else:
            raise GridctlError(f"override key {key!r} is not a strategy or venue setting")
        current = getattr(getattr(cfg, section), name)
        changes[which].setdefault(section, {})[name] = _coerce(current, value, key)
    if "grid" in changes["strategy"]:
        changes["strategy"]["grid"] = size_unit_changes(changes["strategy"]["grid"])
    try:
        new_strategy = _with_sections(strategy, changes["strategy"])
        new_venue = _with_sections(venue, changes["venue"])
    except ValidationError:
        _raise_for_first_breaking_key(strategy, venue, overrides)
        raise  # pragma: no cover - the key-by-key pass always raises
    return new_strategy, new_venue  # type: ignore[return-value]


def _with_sections(cfg: BaseModel, sections: Mapping[str, Mapping[str, Any]]) -> BaseModel:
    """``cfg`` with the given fields of its sections replaced, validated once (private attrs kept)."""
    if not sections:
        return cfg
    data = {f: getattr(cfg, f) for f in type(cfg).model_fields}
    for section, fields in sections.items():
        data[section] = {**getattr(cfg, section).model_dump(), **fields}
    new = type(cfg).model_validate(data)
    for attr in ("_origin", "_credentials", "_rules_file"):
        if attr in (cfg.__private_attributes__ or {}):
            setattr(new, attr, getattr(cfg, attr))
    return new


def _raise_for_first_breaking_key(
    strategy: StrategyConfig, venue: VenueConfig, overrides: Mapping[str, Any]
) -> None:
    """Apply ``overrides`` key by key, validating each step; raises naming the first key that fails."""
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section in StrategyConfig.model_fields and name in _fields_of(strategy, section):
            strategy = _override(strategy, key, value)  # type: ignore[assignment]
        else:
            venue = _override(venue, key, value)  # type: ignore[assignment]
    raise GridctlError(f"overrides {dict(overrides)}: the config they make is invalid")  # pragma: no cover


def _fields_of(cfg: BaseModel, section: str) -> set[str]:
    sub = getattr(cfg, section)
    return set(type(sub).model_fields) if isinstance(sub, BaseModel) else set()


#: What a symbol override may not change: one per account or run, not per symbol (section -> why; a
#: section listed with keys refuses only those keys).
ACCOUNT_SECTIONS = {
    "strategy": "the strategy's identity and basket",
    "backtest": "one run: one balance, path rule and detail timeframe for the basket",
}
ACCOUNT_KEYS = {
    f"risk_management.{name}": (
        "the account's gates: one drawdown halt, one daily loss limit and one circuit breaker per basket"
    )
    for name in (
        "max_errors_per_minute",
        "circuit_breaker_cooldown_seconds",
        "max_drawdown_pct",
        "circuit_breaker_window_seconds",
        "enable_circuit_breaker",
        "enable_drawdown_protection",
        "max_daily_loss_pct",
    )
}


def strategy_keys() -> list[str]:
    """Every ``section.key`` a symbol override may set (strategy fields not the account's)."""
    keys = []
    for section, field in StrategyConfig.model_fields.items():
        inner = field.annotation
        if section in ACCOUNT_SECTIONS or not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            continue
        keys += [
            f"{section}.{name}" for name in inner.model_fields if f"{section}.{name}" not in ACCOUNT_KEYS
        ]
    return keys


def symbol_strategy(strategy: StrategyConfig, symbol: str) -> StrategyConfig:
    """The strategy ``symbol`` trades in its basket: ``instrument_id`` set to it, its overrides applied.

    Overrides come from ``strategy.symbol_overrides[symbol]`` and go through ``apply_overrides`` like
    ``--set``; an unknown key names the closest valid one, an account-wide section is refused.
    """
    from gridctl.configs.schema import ccxt_to_instrument

    if symbol not in strategy.basket_symbols:
        raise GridctlError(f"{symbol} is not in the basket {list(strategy.basket_symbols)}")
    given = strategy.symbol_overrides.get(symbol, {})
    valid = strategy_keys()
    for key in given:
        section = key.partition(".")[0]
        if section in ACCOUNT_SECTIONS or key in ACCOUNT_KEYS:
            why = ACCOUNT_KEYS.get(key) or f"{section} is {ACCOUNT_SECTIONS[section]}"
            raise GridctlError(
                f"symbol_overrides.{symbol}.{key}: {why}; set it for the whole strategy, not per symbol"
            )
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "not a strategy setting"
            raise GridctlError(f"symbol_overrides.{symbol}.{key}: unknown key; {hint}")
    changes = {"strategy.instrument_id": ccxt_to_instrument(symbol), **given}
    try:
        out = _apply_strategy_overrides(strategy, changes)
    except GridctlError as err:
        raise GridctlError(f"symbol_overrides.{symbol}: {err}") from None
    out._origin = f"{strategy.origin} [{symbol}]" if given else strategy.origin
    return out


def basket_strategies(strategy: StrategyConfig) -> dict[str, StrategyConfig]:
    """Each basket symbol's strategy (``symbol_strategy``), keyed by ccxt symbol in step order."""
    return {symbol: symbol_strategy(strategy, symbol) for symbol in strategy.basket_symbols}


def basket_overrides(strategy: StrategyConfig, symbols: tuple[str, ...]) -> list[str]:
    """``--set`` texts that make ``strategy`` trade the basket ``symbols`` (``--symbols``): the symbols,
    an instrument among them, and the file's ``symbol_overrides`` of those symbols only."""
    for symbol in symbols:
        ccxt_to_instrument(symbol)  # a clear error for a malformed symbol before the schema's
    out = [f"strategy.symbols={json.dumps(list(symbols))}"]
    if strategy.ccxt_symbol not in symbols:
        out.append(f"strategy.instrument_id={ccxt_to_instrument(symbols[0])}")
    kept = {s: keys for s, keys in strategy.symbol_overrides.items() if s in symbols}
    if len(kept) != len(strategy.symbol_overrides):  # overrides of symbols left out of this basket go
        out.append(f"symbol_overrides={json.dumps(kept)}")
    return out


def _apply_strategy_overrides(strategy: StrategyConfig, overrides: Mapping[str, Any]) -> StrategyConfig:
    """``apply_overrides`` for strategy keys only (every key checked by the caller)."""
    changes: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        current = getattr(getattr(strategy, section), name)
        changes.setdefault(section, {})[name] = _coerce(current, value, key)
    if "grid" in changes:
        changes["grid"] = size_unit_changes(changes["grid"])
    try:
        return _with_sections(strategy, changes)  # type: ignore[return-value]
    except ValidationError:
        for key, value in overrides.items():
            strategy = _override(strategy, key, value)  # type: ignore[assignment]
        raise  # pragma: no cover - the key-by-key pass always raises
