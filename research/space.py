"""Search space: drawing a profile's parameters from an Optuna trial and turning draws into overrides.

A *draw* is what Optuna stores (``trial.params``): for a plain parameter the strategy value itself,
for a ``fraction_of`` parameter the fraction (stored under ``<key>@fraction``). :func:`resolve_draw`
maps a draw to strategy overrides (``{"regime.ema_fast": 12, ...}``) that always satisfy the
schema's cross-field rules, because dependent values are computed from the values they depend on.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import optuna

from gridctl.configs.loader import _field_paths
from gridctl.configs.overrides import split_symbol_key, symbol_strategy
from gridctl.configs.schema import StrategyConfig

if TYPE_CHECKING:  # the profile model is above this module (profiles checks a space with it at load)
    from gridctl.research.profiles import ParamSpec, Profile

FRACTION_SUFFIX = "@fraction"


@functools.cache
def tunable_fields() -> dict[str, Any]:
    """``section.key`` -> pydantic FieldInfo of every strategy field a search space may tune (read only)."""
    out = {}
    for path in _field_paths(StrategyConfig):
        if "." not in path or path.startswith("strategy."):
            continue
        section, name = path.split(".")
        model = StrategyConfig.model_fields[section].annotation
        info = model.model_fields[name]  # type: ignore[union-attr]
        if info.annotation in (int, float, bool) or "Literal" in str(info.annotation):
            out[path] = info
    return out


def field_of(key: str) -> str:
    """The strategy field (``section.key``) a search-space key sets: itself, or the field of a per-symbol
    key ``symbol_overrides.<SYMBOL>.<section.key>``."""
    split = split_symbol_key(key)
    return key if split is None else split[1]


def base_value(base: Any, key: str) -> Any:
    """The value ``key`` has before any draw: the base strategy's field, or (per-symbol key) that
    basket symbol's value with the strategy's own symbol overrides applied."""
    split = split_symbol_key(key)
    if split is not None:
        base = symbol_strategy(base, split[0])
    section, name = field_of(key).split(".")
    return getattr(getattr(base, section), name)


def draw_name(key: str, spec: ParamSpec) -> str:
    """Optuna parameter name of a search-space key."""
    return key + FRACTION_SUFFIX if spec.fraction_of is not None else key


def distribution(spec: ParamSpec) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution a parameter is drawn from (fractions are floats)."""
    if spec.type == "categorical":
        return optuna.distributions.CategoricalDistribution(list(spec.choices or []))
    assert spec.low is not None and spec.high is not None
    if spec.type == "int" and spec.fraction_of is None:
        return optuna.distributions.IntDistribution(
            int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1)
        )
    return optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)


def distributions(profile: Profile) -> dict[str, optuna.distributions.BaseDistribution]:
    """Draw name -> distribution, in draw order (a fixed search space: every trial draws the same)."""
    return {
        draw_name(k, profile.search_space[k]): distribution(profile.search_space[k])
        for k in profile.ordered_params()
    }


def suggest(trial: optuna.Trial, profile: Profile) -> dict[str, Any]:
    """Draw every parameter of ``profile`` on ``trial`` (in dependency order); returns the draw."""
    raw: dict[str, Any] = {}
    for name, dist in distributions(profile).items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            raw[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, optuna.distributions.IntDistribution):
            raw[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            raw[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return raw


def resolve_draw(profile: Profile, raw: dict[str, Any], base: Any = None) -> dict[str, Any]:
    """Strategy overrides (``section.key -> value``) for a draw; dependent values from their parents.

    A ``fraction_of`` value is ``fraction * scale * parent``, capped at ``scale * parent - gap`` and
    kept inside the field's own range. The batch driver applies overrides one key at a time, so with
    ``base`` (the profile's base StrategyConfig) the dict is ordered so every intermediate step is
    valid too: a parent goes first unless the base child would break the parent's new cap.
    """
    fields = tunable_fields()
    out: dict[str, Any] = {}
    for key in profile.ordered_params():
        spec = profile.search_space[key]
        value = raw[draw_name(key, spec)]
        if spec.fraction_of is not None:
            info = fields[field_of(key)]
            parent = float(out[spec.fraction_of])
            is_int = info.annotation is int
            ceiling = spec.scale * parent - spec.gap
            top = _field_bound(info, upper=True)
            if top is not None:
                ceiling = min(ceiling, top)
            floor = spec.min_value if spec.min_value is not None else _field_bound(info, upper=False)
            target = value * spec.scale * parent
            if is_int:
                value = min(round(target), math.floor(ceiling))
                if floor is not None:
                    value = max(value, math.ceil(floor))
            else:
                value = min(target, ceiling)
                if floor is not None:
                    value = max(value, float(floor))
        elif spec.type == "int":
            value = int(value)
        out[key] = value
    if base is None:
        return out
    return _safe_order(profile, out, base)


def _safe_order(profile: Profile, values: dict[str, Any], base: Any) -> dict[str, Any]:
    order = list(values)
    for key in profile.ordered_params():
        spec = profile.search_space[key]
        if spec.fraction_of is None:
            continue
        child_base = base_value(base, key)
        cap = spec.scale * float(values[spec.fraction_of]) - spec.gap
        if child_base > cap:  # the parent's new value would break the base child: child first
            order.remove(key)
            order.insert(order.index(spec.fraction_of), key)
    return {k: values[k] for k in order}


def _field_bound(info: Any, upper: bool) -> float | None:
    names = ("le", "lt") if upper else ("ge", "gt")
    for meta in info.metadata:
        for attr in names:
            bound = getattr(meta, attr, None)
            if bound is not None:
                strict = attr in ("lt", "gt")
                if not strict:
                    return float(bound)
                nudge = 1 if info.annotation is int else 1e-9
                return float(bound) - nudge if upper else float(bound) + nudge
    return None


def corner_draws(profile: Profile) -> list[dict[str, Any]]:
    """All-low, all-high, and alternating corners of the space (for the load-time schema check)."""
    dists = distributions(profile)

    def end(dist: Any, high: bool) -> Any:
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return dist.choices[-1 if high else 0]
        return dist.high if high else dist.low

    names = list(dists)
    patterns = [
        [False] * len(names),
        [True] * len(names),
        [i % 2 == 0 for i in range(len(names))],
        [i % 2 == 1 for i in range(len(names))],
    ]
    return [{n: end(dists[n], h) for n, h in zip(names, pat, strict=True)} for pat in patterns]


def neighbours(profile: Profile, raw: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(draw name, -1 or +1, neighbour draw) for each parameter moved one step either way (in range)."""
    out = []
    for name, dist in distributions(profile).items():
        for sign in (-1, 1):
            moved = _move(dist, raw[name], sign, _spec_of(profile, name))
            if moved is not None:
                out.append((name, sign, {**raw, name: moved}))
    return out


def _spec_of(profile: Profile, name: str) -> ParamSpec:
    return profile.search_space[name.removesuffix(FRACTION_SUFFIX)]


def _move(dist: Any, value: Any, sign: int, spec: ParamSpec) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        i = list(dist.choices).index(value) + sign
        return dist.choices[i] if 0 <= i < len(dist.choices) else None
    step = spec.neighbour_step()
    moved = math.exp(math.log(value) + sign * step) if spec.log else value + sign * step
    if isinstance(dist, optuna.distributions.IntDistribution):
        moved = round(moved)
        if moved == value:
            moved = value + sign
    if moved < dist.low - 1e-12 or moved > dist.high + 1e-12:
        return None
    return moved
